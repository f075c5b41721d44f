"""The demo's MQTT side: a broker, the enrollment service on it, and a fleet of devices with IDevIDs.

Devices come from `simulators.device_fleet` (IDevIDs from a simulated manufacturer; `register_fleet` is the
operator's part: trust the manufacturer CA, allow-list each IDevID). Most devices use gmqtt (asyncio, cheap);
a tenth use paho-mqtt, which costs a thread per client. Every fifth asks for server-side key generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from mqtt_broker_auth.enrollment.service import EnrollmentService, EnrollmentSettings
from mqtt_broker_auth.tls_identity import server_ca_pem
from simulators.device_fleet import FleetConfig, bring_online, prepare, register_fleet
from simulators.mqtt_device import DeviceConfig, MqttDevice
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.models import OwnerRole
from trustlists.safe_files import private_directory, write_public, write_secret

if TYPE_CHECKING:
    from mqtt_broker_auth.mosquitto.process import MosquittoProcess
    from mqtt_broker_auth.mosquitto.sync import MosquittoSync

ACTOR = "otpki-demo"
GROUP = "mqtt-device"
SERVICE_OWNER = "otpki-enrollment"
TELEMETRY_INTERVAL_S = 2.0
TELEMETRY_PER_S = 25.0  # whole-fleet budget: 500 devices every 2 s would keep the shared broker core busy


class Broker(Protocol):
    host: str
    port: int
    ca_file: Path  # what devices and the service trust for the broker's server certificate
    description: str
    # Where devices make their first enrollment, when not on the broker itself (Mosquitto: otpki's bootstrap
    # listener, because Mosquitto never trusts the manufacturer CA).
    bootstrap_port: int | None

    async def start(self) -> None: ...

    async def settle(self) -> None:
        """Called once the operator's registrations are in the engine, before anyone connects."""

    async def stop(self) -> None: ...


class EmbeddedDemoBroker:
    description = "embedded amqtt broker"

    def __init__(self, engine: Engine, workdir: Path) -> None:
        self._broker = EmbeddedBroker(engine, workdir=workdir, port=0)
        self.host = "127.0.0.1"
        self.port = 0
        self.ca_file = workdir / "server-ca.pem"
        self.bootstrap_port: int | None = None  # the embedded broker's gate handles bootstrap identities itself

    async def start(self) -> None:
        await self._broker.start()
        self.port = self._broker.port
        ca_pem = await run_blocking(self._broker.server_ca_pem)
        await run_blocking(write_public, self.ca_file, ca_pem)

    async def settle(self) -> None:
        """The gate reuses its trust-list validator for `validator_ttl` seconds (revocations are live, imported
        CAs are not): the manufacturer CA just imported is seen by connects after that, so wait it out once."""
        await asyncio.sleep(self._broker.gate.validator_ttl)

    async def stop(self) -> None:
        await self._broker.stop()


class MosquittoDemoBroker:
    """A Mosquitto process provisioned by otpki, with MosquittoSync running beside it for the whole demo."""

    description = "Mosquitto broker + otpki bootstrap listener"

    def __init__(self, engine: Engine, workdir: Path, binary: Path) -> None:
        from pydantic import SecretStr

        from mqtt_broker_auth.mosquitto.config import MosquittoSettings
        from trustlists.testing import free_port

        self.engine = engine
        self.host = "127.0.0.1"
        self.settings = MosquittoSettings(workdir=workdir, port=free_port(), admin_port=free_port(),
                                          admin_password=SecretStr(secrets.token_urlsafe(18)), binary=binary)
        self.port = self.settings.port
        self.ca_file = workdir / "server-ca.pem"
        self._process: MosquittoProcess | None = None
        self._sync: MosquittoSync | None = None
        self._task: asyncio.Task[None] | None = None
        self._bootstrap = EmbeddedBroker(engine, workdir=workdir / "bootstrap", port=0, mode="bootstrap")
        self.bootstrap_port: int | None = None

    async def start(self) -> None:
        from mqtt_broker_auth.mosquitto.process import MosquittoProcess, provision_broker

        await run_blocking(provision_broker, self.engine, self.settings, actor=ACTOR)
        ca_pem = await run_blocking(server_ca_pem, self.engine, "mqtt-broker")
        await run_blocking(write_public, self.ca_file, ca_pem)
        self._process = MosquittoProcess(self.settings)
        await run_blocking(self._process.start)
        await self._bootstrap.start()
        self.bootstrap_port = self._bootstrap.port

    async def settle(self) -> None:
        """One sync round now (dynsec clients for the registered devices), then keep syncing; the bootstrap
        listener's gate picks up the manufacturer CA just imported (see EmbeddedDemoBroker.settle)."""
        from mqtt_broker_auth.mosquitto.sync import MosquittoSync

        await asyncio.sleep(self._bootstrap.gate.validator_ttl)
        assert self._process is not None
        self._sync = MosquittoSync(self.engine, self.settings, reload=self._process.hup)
        report = await self._sync.sync_once()
        if report.refused is not None:
            raise RuntimeError(f"MosquittoSync refused to install the device trust list: {report.refused}")
        self._task = asyncio.get_running_loop().create_task(self._sync.run(), name="mosquitto-sync")

    async def stop(self) -> None:
        if self._sync is not None:
            self._sync.stop()
        if self._task is not None:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(self._task, 10)
        await self._bootstrap.stop()
        if self._process is not None:
            process, self._process = self._process, None
            await run_blocking(process.stop)


def _service_identity(engine: Engine, directory: Path, site: str) -> tuple[Path, Path]:
    """The enrollment service's own engine-issued client certificate (leaf + issuing CA) and key, 0600."""
    owner = engine.registry.find(GROUP, name=SERVICE_OWNER) or engine.registry.register(
        group=GROUP, name=SERVICE_OWNER, site=site, actor=ACTOR, role=OwnerRole.ENROLLMENT_SERVICE)
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    assert issued.private_key is not None
    private_directory(directory)
    cert_file, key_file = directory / f"{SERVICE_OWNER}.crt", directory / f"{SERVICE_OWNER}.key"
    pems = [x509.load_der_x509_certificate(d) for d in [issued.certificate_der, *issued.chain_der]]
    write_public(cert_file, b"".join(c.public_bytes(Encoding.PEM) for c in pems if c.subject != c.issuer))
    write_secret(key_file, issued.private_key)
    return cert_file, key_file


class DeviceFleet:
    def __init__(self, engine: Engine, broker: Broker, workdir: Path, sites: list[str], count: int) -> None:
        self.engine = engine
        self.broker = broker
        self.workdir = workdir
        self.sites = sites
        self.count = count
        self.services: list[EnrollmentService] = []
        self.devices: list[MqttDevice] = []
        self._service_files: tuple[Path, Path] | None = None

    @property
    def service(self) -> EnrollmentService | None:
        """The service on the broker itself (renewals; on the embedded broker first enrollments too)."""
        return self.services[0] if self.services else None

    async def start_service(self) -> None:
        assert self._service_files is not None, "prepare() first"
        cert_file, key_file = self._service_files
        ports = [self.broker.port] + ([self.broker.bootstrap_port] if self.broker.bootstrap_port else [])
        for port in ports:
            # Many devices enroll at once in the demo: let the service sign more in parallel than its default.
            service = EnrollmentService(self.engine, host=self.broker.host, port=port, ca_file=self.broker.ca_file,
                                        cert_file=cert_file, key_file=key_file,
                                        settings=EnrollmentSettings(max_concurrency=8, max_pending=4096))
            await service.start()
            self.services.append(service)

    def _prepare(self) -> None:
        self._service_files = _service_identity(self.engine, self.workdir / "service", self.sites[0])
        if self.count == 0:
            return
        config = FleetConfig(devices=self.count, workdir=self.workdir, port=self.broker.port,
                             ca_file=self.broker.ca_file, prefix="dev")
        manifest = prepare(config)
        manifest.devices = [d.model_copy(update={"site": self.sites[i % len(self.sites)]})
                            for i, d in enumerate(manifest.devices)]
        register_fleet(self.engine, manifest)
        interval = max(TELEMETRY_INTERVAL_S, self.count / TELEMETRY_PER_S)
        # paho's network loop uses select(), which cannot watch a descriptor numbered 1024 or more; in one process
        # with hundreds of devices and the broker's end of each connection, late sockets get such numbers. So the
        # paho devices (a tenth) are started first, while descriptors are low, and the two devices that reconnect
        # later in the demo (the first renews, the last is revoked) are gmqtt, which uses the event loop's epoll.
        paho = set(range(1, 1 + max(1, self.count // 10))) - {0, self.count - 1} if self.count > 2 else {1}
        for i, entry in enumerate(manifest.devices):
            self.devices.append(MqttDevice(DeviceConfig(
                name=entry.name, site=entry.site, library="paho" if i in paho else "gmqtt",
                host=self.broker.host, port=self.broker.port, bootstrap_port=self.broker.bootstrap_port,
                ca_file=self.broker.ca_file, workdir=entry.workdir,
                bootstrap_cert_file=entry.bootstrap_cert_file, bootstrap_key_file=entry.bootstrap_key_file,
                enrollment="server_keygen" if i % 5 == 1 else "csr", telemetry_interval_s=interval,
                request_timeout_s=120, connect_timeout_s=30, enroll_attempts=5)))

    async def prepare(self) -> None:
        """The service's identity, IDevIDs from the manufacturer, the operator's registration (CA, CRL, allow-list)."""
        await run_blocking(self._prepare)

    async def bring_online(self, on_settled: Callable[[MqttDevice], None]) -> None:
        await bring_online(self.devices, concurrency=16, timeout_s=300, on_settled=on_settled)

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(d.stop() for d in self.devices), return_exceptions=True), 30)
        services, self.services = self.services, []
        for service in services:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(service.stop(), 15)
