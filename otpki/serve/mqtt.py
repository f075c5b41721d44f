"""The MQTT side as startable, stoppable parts: the embedded broker + enrollment (`otpki mqtt serve`) and the
Mosquitto sync + bootstrap listener + enrollment (`otpki mqtt sync`). The CLI commands and `otpki serve` run the
same parts; `announce` receives the lines an operator reads (the listen address, the CA file devices trust).

Heavy modules (amqtt, gmqtt, the dynsec client) are imported when a part starts, not with this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from otpki.config import Settings
from trustlists.engine import Engine
from trustlists.errors import OtpkiError

if TYPE_CHECKING:
    from mqtt_broker_auth.embedded.broker import EmbeddedBroker
    from mqtt_broker_auth.enrollment.service import EnrollmentService
    from mqtt_broker_auth.mosquitto.config import MosquittoSettings
    from mqtt_broker_auth.mosquitto.sync import MosquittoSync

Announce = Callable[[str], None]

CRL_REFRESH_EVERY_S = 3600.0  # long-running services keep CRLs fresh: Mosquitto locks everyone out on an expired one


def mqtt_dir(s: Settings) -> Path:
    return s.data_dir / "mqtt"


def ensure_service_identity(eng: Engine, s: Settings, directory: Path) -> tuple[Path, Path]:
    """The enrollment service's certificate and key files: reused while valid, else (re)issued. Blocking."""
    from mqtt_broker_auth.tls_identity import ensure_tls_identity
    from trustlists.models import OwnerRole

    cfg = s.file.mqtt
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_file, key_file = directory / "service.crt", directory / "service.key"
    owner = eng.registry.find(cfg.group, name=cfg.service_name)
    if owner is None:
        owner = eng.registry.register(group=cfg.group, name=cfg.service_name, actor=s.actor(),
                                      role=OwnerRole.ENROLLMENT_SERVICE)
    elif owner.role is not OwnerRole.ENROLLMENT_SERVICE:
        raise ValueError(f"{cfg.group}/{cfg.service_name} is registered but is not the enrollment service "
                         f"(role {owner.attributes.get('role')!r}); choose another [mqtt] service_name")
    ensure_tls_identity(eng, owner, cert_file, key_file, eku="clientAuth", actor=s.actor())
    return cert_file, key_file


def mosquitto_settings(s: Settings, workdir: Path | None = None, *, password: bool = True) -> MosquittoSettings:
    """The library's MosquittoSettings from [mqtt.mosquitto]; the admin password from its file or env."""
    from pydantic import SecretStr

    from mqtt_broker_auth.mosquitto.config import MosquittoSettings

    m = s.file.mqtt.mosquitto
    values: dict[str, object] = {
        "workdir": (workdir or s.mosquitto_workdir()).resolve(), "host": m.host, "port": m.port,
        "admin_host": m.admin_host, "admin_port": m.admin_port, "admin_username": m.admin_username,
        "binary": m.binary, "openssl_binary": m.openssl_binary,
        "dynsec_plugin": m.dynsec_plugin, "crl_min_remaining_s": m.crl_min_remaining_s, "tls_version": m.tls_version,
    }
    if m.run_as_user:
        values["run_as_user"] = m.run_as_user
    if password:
        values["admin_password"] = SecretStr(s.mqtt_admin_password())
    return MosquittoSettings.model_validate(values)


def reload_command(s: Settings) -> Callable[[], None] | None:
    """How the sync tells Mosquitto to reload: the configured command, else SIGHUP via the pid file."""
    command = s.file.mqtt.mosquitto.reload_command
    if not command:
        return None  # MosquittoSync's default: hup_from_pid_file

    def run() -> None:
        import subprocess

        try:
            res = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OtpkiError(f"reload command {command} failed: {exc}", reason="mosquitto_reload_failed") from None
        if res.returncode != 0:
            raise OtpkiError(f"reload command {command} exited {res.returncode}: "
                             f"{(res.stderr or res.stdout).strip()[-300:]}", reason="mosquitto_reload_failed")
    return run


async def keep_crls_fresh(eng: Engine, actor: str) -> None:
    """CRL upkeep, on the one instance elected among those on this store (trustlists.maintenance)."""
    from trustlists.maintenance import run_maintenance

    await run_maintenance(eng, interval_s=CRL_REFRESH_EVERY_S, actor=actor)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class EmbeddedMqtt:
    """The embedded broker (mTLS, live revocation) and, with `enrollment`, the enrollment service on it.

    `crl_upkeep`: keep CRLs fresh here (the stand-alone command); under `otpki serve` the maintenance part does.
    """

    name = "mqtt"

    def __init__(self, eng: Engine, s: Settings, *, host: str, port: int, enrollment: bool = True,
                 crl_upkeep: bool = True, announce: Announce | None = None) -> None:
        self._eng, self._s = eng, s
        self.host, self._port = host, port
        self._enrollment = enrollment
        self._crl_upkeep = crl_upkeep
        self._announce = announce or (lambda _text: None)
        self.broker: EmbeddedBroker | None = None
        self.service: EnrollmentService | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._dead = asyncio.Event()

    @property
    def address(self) -> str | None:
        return None if self.broker is None else f"{self.host}:{self.broker.port}"

    async def start(self) -> None:
        from mqtt_broker_auth.embedded.broker import EmbeddedBroker
        from mqtt_broker_auth.enrollment.service import EnrollmentService
        from trustlists.blocking import run_blocking
        from trustlists.safe_files import write_public

        cfg = self._s.file.mqtt
        workdir = mqtt_dir(self._s)
        self._dead.clear()
        self.broker = EmbeddedBroker(self._eng, workdir=workdir / "broker", host=self.host, port=self._port,
                                     group=cfg.group, broker_group=cfg.broker_group,
                                     revocation_interval=cfg.revocation_interval_s, limits=cfg.limits)
        await self.broker.start()
        if self._port == 0:
            self._port = self.broker.port  # a restart binds the port the devices were told
        ca_file = workdir / "server-ca.pem"
        await run_blocking(write_public, ca_file, self.broker.server_ca_pem())
        self._announce(f"MQTT broker listening on {self.host}:{self.broker.port} (mTLS, group {cfg.group}); "
                       f"devices trust {ca_file}")
        if self._enrollment:
            cert_file, key_file = await run_blocking(ensure_service_identity, self._eng, self._s,
                                                     workdir / "enrollment")
            self.service = EnrollmentService(self._eng, host=self.host, port=self.broker.port, ca_file=ca_file,
                                             cert_file=cert_file, key_file=key_file, group=cfg.group,
                                             settings=cfg.enrollment)
            await self.service.start()
            self._announce(f"enrollment service {self.service.client_id} answering {self.service.prefix}/+/csr")
        if self._crl_upkeep:
            self._refresher = asyncio.create_task(keep_crls_fresh(self._eng, self._s.actor()))

    async def wait(self) -> None:
        await self._dead.wait()

    # The console's device presence (otpki.web.presence.DevicePresence): the broker's live sessions; None (unknown,
    # not "all offline") while the part is down. A restart starts a new broker: what the old one saw goes with it.
    def online_devices(self) -> dict[str, datetime] | None:
        return None if self.broker is None else self.broker.online_devices()

    def last_seen(self) -> dict[str, datetime] | None:
        return None if self.broker is None else self.broker.last_seen()

    async def stop(self) -> None:
        await _cancel(self._refresher)
        self._refresher = None
        if self.service is not None:
            service, self.service = self.service, None
            await service.stop()
        if self.broker is not None:
            broker, self.broker = self.broker, None
            await broker.stop()


class MosquittoMqtt:
    """An operator's Mosquitto kept in step with the engine, the bootstrap listener beside it and the enrollment
    service on both (`enrollment`). `crl_upkeep` as for EmbeddedMqtt."""

    name = "mqtt"

    def __init__(self, eng: Engine, s: Settings, ms: MosquittoSettings, *, enrollment: bool = True,
                 crl_upkeep: bool = True, announce: Announce | None = None) -> None:
        self._eng, self._s, self._ms = eng, s, ms
        self._enrollment = enrollment
        self._crl_upkeep = crl_upkeep
        self._announce = announce or (lambda _text: None)
        self._syncer: MosquittoSync | None = None
        self._services: list[EnrollmentService] = []
        self._bootstrap: EmbeddedBroker | None = None
        self._runner: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._bootstrap_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self._ms.host}:{self._ms.port}"

    async def start(self) -> None:
        from mqtt_broker_auth.embedded.broker import EmbeddedBroker
        from mqtt_broker_auth.enrollment.service import EnrollmentService
        from mqtt_broker_auth.mosquitto.sync import MosquittoSync
        from mqtt_broker_auth.tls_identity import server_ca_pem
        from trustlists.blocking import run_blocking
        from trustlists.safe_files import write_public

        s, ms, eng = self._s, self._ms, self._eng
        cfg = s.file.mqtt
        m = cfg.mosquitto
        self._syncer = MosquittoSync(eng, ms, cfg.group, interval_s=m.sync_interval_s, reload=reload_command(s))
        if self._enrollment:
            # The service's identity first, so the first round gives it its dynsec client before it subscribes.
            cert_file, key_file = await run_blocking(ensure_service_identity, eng, s, ms.workdir / "enrollment")
        report = await self._syncer.sync_once()
        self._announce(f"Mosquitto {ms.host}:{ms.port} in sync with {cfg.group} trust list v{report.trust_version} "
                       "(engine CAs only)")
        if self._enrollment:
            ca_file = ms.workdir / "server-ca.pem"
            await run_blocking(write_public, ca_file, server_ca_pem(eng, cfg.broker_group))
            endpoints = [(ms.host, ms.port, "renewals on Mosquitto")]
            if m.bootstrap:
                # First enrollment with manufacturer or factory certificates: otpki's own listener, whose gate
                # admits such a certificate only as the device that allow-lists it, on its enrollment topics.
                port = self._bootstrap_port if self._bootstrap_port is not None else m.bootstrap_port
                self._bootstrap = EmbeddedBroker(eng, workdir=ms.workdir / "bootstrap", host=m.bootstrap_host,
                                                 port=port, group=cfg.group, broker_group=cfg.broker_group,
                                                 revocation_interval=cfg.revocation_interval_s, mode="bootstrap")
                await self._bootstrap.start()
                self._bootstrap_port = self._bootstrap.port
                self._announce(f"bootstrap listener on {m.bootstrap_host}:{self._bootstrap.port} (first enrollment "
                               "with an IDevID or factory certificate)")
                endpoints.append((m.bootstrap_host, self._bootstrap.port, "first enrollment on the bootstrap listener"))
            for host, port, what in endpoints:
                service = EnrollmentService(eng, host=host, port=port, ca_file=ca_file, cert_file=cert_file,
                                            key_file=key_file, group=cfg.group, settings=cfg.enrollment)
                await service.start()
                self._services.append(service)
                self._announce(f"enrollment service {service.client_id} answering {service.prefix}/+/csr ({what})")
        self._runner = asyncio.create_task(self._syncer.run())
        if self._crl_upkeep:
            self._refresher = asyncio.create_task(keep_crls_fresh(eng, s.actor()))

    async def wait(self) -> None:
        if self._runner is not None:
            await asyncio.shield(self._runner)  # run() returns only when stopped: on its own, that is a crash

    async def stop(self) -> None:
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.stop()
        await _cancel(self._refresher)
        self._refresher = None
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner
        elif syncer is not None:
            await syncer.close()
        services, self._services = self._services, []
        for service in services:
            await service.stop()
        bootstrap, self._bootstrap = self._bootstrap, None
        if bootstrap is not None:
            await bootstrap.stop()
