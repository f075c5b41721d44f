"""`otpki demo`: a whole plant on embedded defaults, its certificate lifecycle run as numbered, checked steps.

1 CA hierarchy -> 2 GDS + SCADA servers pull -> 3 PLCs pushed -> 4 MQTT devices enroll and publish ->
5 renewal before expiry -> 6 revocation seen refused -> 7 summary. Every step ends with a check made from
outside the component that did the work (what a PLC presents, what the inventory says, what a peer refuses);
the first failed check stops the run. Everything is built on the public APIs of trustlists, opcua_gds,
mqtt_broker_auth and simulators; this module only orchestrates and observes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from asyncua import Client
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.certificate_chain import first_certificate
from opcua_gds.gds.server import GdsServer
from opcua_gds.gds.settings import GdsSettings
from opcua_gds.own_identity import ensure_identity
from opcua_gds.push.client import PushClient, connect_push_session
from opcua_gds.push.rollout import KIND, Rollout, TargetOutcome
from opcua_gds.push.server_identity import TargetServerIdentity
from otpki.demo.devices import Broker, DeviceFleet, EmbeddedDemoBroker, MosquittoDemoBroker
from otpki.demo.display import QuietDisplay
from otpki.demo.est import EstDemo
from otpki.demo.plcs import ADMIN_USER, PlcPlant
from otpki.demo.report import ConsoleHint, DemoCounts, DemoReport, DemoStep, EndpointTally
from otpki.demo.workspace import console_hint, demo_settings
from otpki.runtime import open_engine
from otpki.web.tls import key_password
from simulators.mqtt_device import DeviceState, MqttDevice
from simulators.scada import ScadaSettings, ScadaSimulator
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.models import CertificateRecord, CertificateStatus, RevocationReason
from trustlists.testing import free_port

ACTOR = "otpki-demo"
APP_GROUP = "opcua-application"
PUSH_URI = "urn:otpki:push"
REGISTRAR = "demo-registrar"
BrokerKind = Literal["embedded", "mosquitto"]


@dataclass
class DemoOptions:
    data_dir: Path
    sites: list[str]
    plcs: int = 20
    scada: int = 2
    devices: int = 50
    broker: BrokerKind = "embedded"
    mosquitto: Path | None = None  # the mosquitto executable when broker == "mosquitto"
    store_url: str | None = None  # an empty PostgreSQL (or SQLite) store instead of <data_dir>/otpki.db


class CheckFailed(Exception):
    """A step's check did not hold: the message says what was expected and what was seen."""


_T = TypeVar("_T")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def required(value: _T | None, message: str) -> _T:
    """`value`, which the demo cannot go on without."""
    if value is None:
        raise CheckFailed(message)
    return value


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


async def eventually(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll a condition until it holds or the (generous) bound passes; True when it held."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


@dataclass
class _Tallies:
    rows: dict[str, EndpointTally] = field(default_factory=lambda: {
        k: EndpointTally(kind=k) for k in ("GDS", "SCADA", "PLCs", "broker", "devices")})

    def move(self, kind: str, src: str | None, dst: str, n: int = 1) -> None:
        row = self.rows[kind]
        if src is not None:
            setattr(row, src, max(0, getattr(row, src) - n))
        setattr(row, dst, getattr(row, dst) + n)


class Plant:
    def __init__(self, options: DemoOptions, display: QuietDisplay | None = None) -> None:
        self.o = options
        self.tallies = _Tallies()
        self.display = display or QuietDisplay()
        self.steps: list[DemoStep] = []
        self.engine: Engine | None = None
        self.gds: GdsServer | None = None
        self.scadas: list[ScadaSimulator] = []
        self.plcs: PlcPlant | None = None
        self.rollout: Rollout | None = None
        self.push_identity: tuple[Path, Path] | None = None
        self.broker: Broker | None = None
        self.fleet: DeviceFleet | None = None
        self._plc_password = secrets.token_urlsafe(18)
        self.shutdown_seconds: dict[str, float] = {}
        self.final_counts: DemoCounts | None = None  # taken in the summary step, while devices still run
        self.est_demo: EstDemo | None = None
        self._web_key_password: bytes | None = None
        self.console: ConsoleHint | None = None  # how to open the plant in the console, once it stands

    @property
    def eng(self) -> Engine:
        assert self.engine is not None
        return self.engine

    # -- running ----------------------------------------------------------------------------------------------

    async def run(self) -> DemoReport:
        started = time.perf_counter()
        phases: list[tuple[str, Callable[[], Awaitable[str]], int | None]] = [
            ("CA hierarchy created", self.hierarchy, None),
            ("GDS up, SCADA servers registered and pulled their certificates", self.scada_pull, self.o.scada),
            ("PLCs pushed their certificate and trust list", self.push_plcs, 2 * self.o.plcs),
            ("MQTT devices enrolled with their IDevIDs and publish", self.mqtt, self.o.devices),
            ("certificates renewed before expiry", self.renewal, None),
            ("revoked SCADA and device refused", self.revocation, None),
            ("HMI enrolled and re-enrolled over EST, checked over OCSP", self.est, None),
            ("summary", self.summary, None),
        ]
        try:
            for number, (name, fn, total) in enumerate(phases, start=1):
                if not await self._step(number, name, fn, total):
                    break
            else:
                self.console = await self._console_hint()
        finally:
            await self.shutdown()
        counts = self.final_counts or DemoCounts(plcs=self.o.plcs, scada=self.o.scada, devices=self.o.devices)
        ok = len(self.steps) == len(phases) and all(s.ok for s in self.steps)
        return DemoReport(ok=ok, data_dir=str(self.o.data_dir), broker=self.o.broker, steps=self.steps,
                          counts=counts, endpoints=list(self.tallies.rows.values()),
                          phase_seconds={**{f"{s.number}. {s.name}": s.seconds for s in self.steps},
                                         **self.shutdown_seconds},
                          total_seconds=round(time.perf_counter() - started, 3), console=self.console)

    async def _console_hint(self) -> ConsoleHint:
        """The plant root written where `otpki serve` keeps it (a browser can trust it before the console runs),
        and the commands that open the plant in the console."""
        from otpki.web.tls import write_root_file

        web = self.o.data_dir / "web"
        await run_blocking(web.mkdir, mode=0o700, parents=True, exist_ok=True)
        await run_blocking(write_root_file, self.eng, web)
        return console_hint(self.o.data_dir, self._settings)

    async def _step(self, number: int, name: str, fn: Callable[[], Awaitable[str]], total: int | None) -> bool:
        self.display.step_started(number, name, total)
        start = time.perf_counter()
        try:
            detail, ok = await fn(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # a step that crashes is a failed check, reported like one
            detail, ok = f"{type(exc).__name__}: {exc}", False
        step = DemoStep(number=number, name=name, ok=ok, detail=detail, seconds=round(time.perf_counter() - start, 3))
        self.steps.append(step)
        self.display.step_finished(step)
        return ok

    async def shutdown(self) -> None:
        """Stop everything this run started, in reverse order; each part gets its own bound and may fail alone."""
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if self.est_demo is not None:
            parts.append(("est", self.est_demo.stop))
        if self.fleet is not None:
            parts.append(("devices", self.fleet.stop))
        if self.broker is not None:
            parts.append(("broker", self.broker.stop))
        if self.plcs is not None:
            parts.append(("plcs", self.plcs.stop))
        for scada in self.scadas:
            parts.append(("scada", scada.stop))
        if self.gds is not None:
            parts.append(("gds", self.gds.stop))
        for name, stop in parts:
            t0 = time.perf_counter()
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(stop(), 60)
            key = f"shutdown: {name}"
            self.shutdown_seconds[key] = round(self.shutdown_seconds.get(key, 0) + time.perf_counter() - t0, 3)
        self.fleet = self.broker = self.plcs = self.gds = None
        self.est_demo = None
        self.scadas = []
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.close()

    # -- 1. CA hierarchy ---------------------------------------------------------------------------------------

    async def hierarchy(self) -> str:
        settings = await run_blocking(demo_settings, self.o.data_dir, self.o.sites, self.o.store_url)
        self.engine = await run_blocking(open_engine, settings, key_pool=True)
        self._web_key_password = key_password(settings.passphrase)
        self._settings = settings
        cas = await run_blocking(self.eng.hierarchy.initialize, actor=ACTOR)
        missing = []
        for group, policy in self.eng.config.groups.items():
            for site in (self.o.sites if policy.per_site else [None]):
                try:
                    await run_blocking(self.eng.hierarchy.issuing_ca_for, group, site)
                except Exception:
                    missing.append(f"{group}/{site}" if site else group)
        check(not missing, f"no usable issuing CA for {', '.join(missing)}")
        check(sum(1 for c in cas if c.parent_id is None) == 1, "expected exactly one new root CA")
        return f"root + {len(cas) - 1} issuing CAs (sites: {', '.join(self.o.sites)})"

    # -- 2. GDS and SCADA pull ---------------------------------------------------------------------------------

    async def scada_pull(self) -> str:
        password = secrets.token_urlsafe(18)
        access = AccessConfig(users=[PasswordUser(
            name=REGISTRAR, password_hash=hash_password(password),
            roles=[GdsRole.DISCOVERY_ADMIN, GdsRole.CERTIFICATE_AUTHORITY_ADMIN])])
        settings = GdsSettings(endpoint=f"opc.tcp://127.0.0.1:{free_port()}/otpki/gds", access=access)
        self.gds = GdsServer(self.eng, settings, self.o.data_dir / "gds")
        await self.gds.start()
        self.tallies.rows["GDS"].total = 1
        self.tallies.move("GDS", None, "enrolled")
        self.tallies.rows["SCADA"].total = self.o.scada
        for j in range(self.o.scada):
            site = self.o.sites[j % len(self.o.sites)]
            name = f"scada-{j + 1}"
            self.scadas.append(ScadaSimulator(ScadaSettings(
                name=name, application_uri=f"urn:otpki:demo:{site}:{name}",
                endpoint=f"opc.tcp://127.0.0.1:{free_port()}/scada", pki_dir=self.o.data_dir / "scada" / name,
                gds_url=settings.endpoint, registrar_user=REGISTRAR, registrar_password=password,
                key_flow="csr" if j % 2 == 0 else "new-key")))
        slots = asyncio.Semaphore(4)

        async def one(sim: ScadaSimulator) -> None:
            async with slots:
                await sim.start()
                self.tallies.move("SCADA", None, "factory")
                await sim.enroll()
                self.tallies.move("SCADA", "factory", "enrolled")
                self.display.advance()

        await asyncio.gather(*(one(s) for s in self.scadas))
        trust = await run_blocking(self.eng.trustlists.get, APP_GROUP)
        for sim in self.scadas:
            record = await run_blocking(self.eng.inventory.by_fingerprint, fingerprint(sim.cert_path.read_bytes()))
            check(record is not None and record.san_uri == sim.settings.application_uri
                  and record.status_at(self.eng.now()) is CertificateStatus.ACTIVE,
                  f"{sim.settings.name} does not hold an active engine-issued certificate for its ApplicationUri")
            check(sim.trust_list == trust.content, f"{sim.settings.name} did not pull the current trust list")
        flows = sorted({s.settings.key_flow for s in self.scadas})
        return (f"GDS on {settings.endpoint}; {len(self.scadas)} SCADA servers registered, pulled certificates "
                f"({'/'.join(flows) or 'none'}) and trust list v{trust.version}")

    # -- 3. PLCs by push ---------------------------------------------------------------------------------------

    def _register_targets(self, plant: PlcPlant) -> None:
        for i in range(plant.count):
            owner = self.eng.registry.register(
                group=APP_GROUP, name=plant.name(i), application_uri=f"urn:otpki:plc:{plant.name(i)}",
                site=self.o.sites[i % len(self.o.sites)], dns_names=["localhost"], ip_addresses=["127.0.0.1"],
                actor=ACTOR)
            self.eng.targets.add(owner_id=owner.id, kind=KIND, address=plant.endpoint(i), credentials_ref="plc",
                                 actor=ACTOR, pin_sha256=fingerprint(plant.factory_certificate(i)))

    async def push_plcs(self) -> str:
        plant = PlcPlant(self.o.plcs, self.o.data_dir / "plcs", self._plc_password)
        self.plcs = plant
        self.tallies.rows["PLCs"].total = self.o.plcs

        def started(n: int) -> None:
            self.tallies.move("PLCs", None, "factory", n)
            self.display.advance(n)

        await plant.start(started)
        await run_blocking(self._register_targets, plant)
        self.push_identity = await run_blocking(
            ensure_identity, self.eng, self.o.data_dir / "push", name="otpki-push", application_uri=PUSH_URI,
            host="localhost")
        cert, key = self.push_identity
        self.rollout = Rollout(self.eng, client_cert_path=cert, client_key_path=key, client_app_uri=PUSH_URI,
                               credentials=lambda _ref: (ADMIN_USER, self._plc_password),
                               concurrency=16 if plant.in_process else 32, timeout_s=300)

        def done(outcome: TargetOutcome) -> None:
            if outcome.ok:
                self.tallies.move("PLCs", "factory", "enrolled")
            self.display.advance()

        report = await self.rollout.run(on_done=done)
        errors = [f"{o.address}: {o.error}" for o in report.outcomes if not o.ok][:3]
        check(report.attempted == self.o.plcs and report.failed == 0,
              f"{report.failed} of {report.attempted} pushes failed: {'; '.join(errors)}")
        trust = await run_blocking(self.eng.trustlists.get, APP_GROUP)
        check(all(o.trust_version == trust.version and o.trust_list_applied is not False for o in report.outcomes),
              "not every PLC applied the current trust list")
        await self._check_presented(plant)
        where = "in this process" if plant.in_process else f"in {plant.worker_count} worker processes"
        return (f"{report.delivered} PLCs ({where}) present engine-issued certificates and trust list "
                f"v{trust.version} (each checked against its pinned factory certificate before the login); "
                f"rollout {report.seconds:.1f} s")

    async def _presented(self, endpoint: str) -> bytes:
        """The certificate a PLC presents: the first of the chain its endpoint carries (leaf, then its CAs)."""
        client = Client(endpoint, timeout=30, watchdog_intervall=30)
        endpoints = await client.connect_and_get_server_endpoints()
        return first_certificate(bytes(endpoints[0].ServerCertificate))

    async def _check_presented(self, plant: PlcPlant) -> None:
        """Ask every PLC for its endpoints (no session needed) and look the presented certificate up."""
        slots = asyncio.Semaphore(16)

        async def one(i: int) -> str | None:
            async with slots:
                der = await self._presented(plant.endpoint(i))
            record = await run_blocking(self.eng.inventory.by_fingerprint, fingerprint(der))
            if record is None or record.status_at(self.eng.now()) is not CertificateStatus.ACTIVE:
                return plant.name(i)
            owner = await run_blocking(self.eng.registry.get, record.owner_id) if record.owner_id else None
            return None if owner is not None and owner.name == plant.name(i) else plant.name(i)

        wrong = [n for n in await asyncio.gather(*(one(i) for i in range(plant.count))) if n]
        check(not wrong, f"{len(wrong)} PLCs do not present their active engine-issued certificate: {wrong[:5]}")

    # -- 4. MQTT -----------------------------------------------------------------------------------------------

    async def mqtt(self) -> str:
        workdir = self.o.data_dir / "broker"
        broker: Broker = (EmbeddedDemoBroker(self.eng, workdir) if self.o.mosquitto is None
                          else MosquittoDemoBroker(self.eng, workdir, self.o.mosquitto))
        self.broker = broker
        await broker.start()
        self.tallies.rows["broker"].total = 1
        self.tallies.move("broker", None, "enrolled")
        fleet = DeviceFleet(self.eng, broker, self.o.data_dir / "devices", self.o.sites, self.o.devices)
        self.fleet = fleet
        await fleet.prepare()
        await broker.settle()
        await fleet.start_service()
        self.tallies.rows["devices"].total = self.o.devices
        self.tallies.move("devices", None, "factory", self.o.devices)

        def settled(device: MqttDevice) -> None:
            self.tallies.move("devices", "factory", "enrolled" if device.state is DeviceState.ONLINE else "refused")
            self.display.advance()

        await fleet.bring_online(settled)
        offline = [d for d in fleet.devices if d.state is not DeviceState.ONLINE]
        check(not offline, f"{len(offline)} devices are not online: "
              + "; ".join(f"{d.name}: {d.state} {d.last_error or ''}" for d in offline[:3]))
        published = await eventually(lambda: all(d.telemetry_sent > 0 for d in fleet.devices), 60)
        check(published, "not every device published telemetry")
        libs = {lib: sum(1 for d in fleet.devices if d.config.library == lib) for lib in ("gmqtt", "paho")}
        keygen = sum(1 for d in fleet.devices if d.config.enrollment == "server_keygen")
        return (f"{len(fleet.devices)} devices online over mTLS on the {broker.description} "
                f"(gmqtt {libs['gmqtt']}, paho {libs['paho']}; {keygen} with server-side keys), all publishing")

    # -- 5. renewal --------------------------------------------------------------------------------------------

    async def _record_of(self, der: bytes) -> CertificateRecord | None:
        return await run_blocking(self.eng.inventory.by_fingerprint, fingerprint(der))

    async def renewal(self) -> str:
        parts = []
        if self.fleet is not None and self.fleet.devices:
            device = self.fleet.devices[0]
            old_cert = device.certificate
            assert old_cert is not None
            old = await self._record_of(old_cert.public_bytes(Encoding.DER))
            await device.renew_now(timeout=120)
            new_cert = device.certificate
            assert new_cert is not None
            new = await self._record_of(new_cert.public_bytes(Encoding.DER))
            old_now = await run_blocking(self.eng.inventory.get, old.serial) if old is not None else None
            check(old is not None and new is not None and new.serial != old.serial and new.owner_id == old.owner_id
                  and old_now is not None and old_now.superseded_by == new.serial,
                  f"{device.name}: the renewal is not in the inventory as new serial, same owner, old superseded")
            assert old is not None and new is not None  # check() raised otherwise
            back = await eventually(lambda: device.state is DeviceState.ONLINE, 60)
            check(back, f"{device.name} did not come back online with its renewed certificate ({device.state})")
            self.tallies.move("devices", "enrolled", "renewed")
            parts.append(f"{device.name} renewed over MQTT ({old.serial[:10]}… -> {new.serial[:10]}…, "
                         "old superseded)")
        if self.plcs is not None and self.rollout is not None and self.o.plcs:
            parts.append(await self._renew_plc(self.plcs, self.rollout))
        check(bool(parts), "nothing to renew (no devices and no PLCs)")
        return "; ".join(parts)

    async def _renew_plc(self, plant: PlcPlant, rollout: Rollout) -> str:
        """Put plc-1 inside its renewal window and let the rollout's own scheduling find it due.

        The demo cannot wait 670 days, so it widens the group's renewal window (in memory, for this one run of
        the scheduler) beyond the certificate's lifetime: the store then reports the target as due for the same
        reason it would be in two years, and the rollout renews it exactly as then.
        """
        address = plant.endpoint(0)
        groups = self.eng.config.groups
        policy = groups[APP_GROUP]
        groups[APP_GROUP] = policy.model_copy(update={"renewal_window_days": policy.leaf_lifetime_days + 1})
        try:
            due = [r for t, r in await run_blocking(self.eng.targets.needing_delivery, kind=KIND)
                   if t.address == address]
            report = await rollout.run(address=address)
        finally:
            groups[APP_GROUP] = policy
        check(len(due) == 1 and "renewal window" in due[0], f"plc-1 was not due for renewal: {due}")
        check(report.delivered == 1, f"the renewal push to plc-1 failed: {[o.error for o in report.outcomes]}")
        outcome = report.outcomes[0]
        target = next(t for t in await run_blocking(self.eng.targets.list, kind=KIND) if t.address == address)
        check(target.delivered_serial == outcome.serial, "the inventory does not record the renewed certificate")
        records = await run_blocking(self.eng.inventory.query, owner_id=target.owner_id)
        superseded = [r for r in records if r.superseded_by == outcome.serial]
        check(len(superseded) == 1, "plc-1's previous certificate is not marked superseded by the new one")
        presented = await self._record_of(await self._presented(address))
        check(presented is not None and presented.serial == outcome.serial, "plc-1 does not present the new one")
        self.tallies.move("PLCs", "enrolled", "renewed")
        return f"plc-1 re-pushed: inside its renewal window ({superseded[0].serial[:10]}… superseded)"

    # -- 6. revocation -----------------------------------------------------------------------------------------

    async def _scada_session(self, scada: ScadaSimulator, endpoint: str) -> None:
        """A SignAndEncrypt session from the SCADA server (as an OPC UA client, with its own certificate) to a PLC."""
        client = await connect_push_session(endpoint, client_cert_path=scada.cert_path,
                                            client_key_path=scada.key_path,
                                            client_app_uri=scada.settings.application_uri,
                                            username=None, password=None, timeout_s=15,
                                            server_check=await self._plc_identity(endpoint))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 5)

    async def _plc_identity(self, endpoint: str) -> TargetServerIdentity:
        """What the PLC at `endpoint` must present: the same check the rollout makes before its password goes out."""
        targets = await run_blocking(self.eng.targets.list, kind=KIND)
        target = next(t for t in targets if t.address == endpoint)
        return TargetServerIdentity(self.eng, target.id, actor=ACTOR)

    async def _rejected_at(self, endpoint: str) -> list[bytes]:
        assert self.push_identity is not None
        cert, key = self.push_identity
        client = await connect_push_session(endpoint, client_cert_path=cert, client_key_path=key,
                                            client_app_uri=PUSH_URI, username=ADMIN_USER,
                                            password=self._plc_password, timeout_s=15,
                                            server_check=await self._plc_identity(endpoint))
        try:
            return await PushClient(client).get_rejected_list()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 5)

    async def revocation(self) -> str:
        parts = []
        if self.scadas and self.plcs is not None and self.rollout is not None and self.o.plcs:
            parts.append(await self._revoke_scada(self.scadas[0], self.plcs, self.rollout))
        if self.fleet is not None and self.fleet.devices:
            parts.append(await self._revoke_device(self.fleet.devices[-1]))
        check(bool(parts), "nothing to revoke (no SCADA/PLC pair and no devices)")
        return "; ".join(parts)

    async def _revoke_scada(self, scada: ScadaSimulator, plant: PlcPlant, rollout: Rollout) -> str:
        plc = plant.endpoint(0)
        try:
            await self._scada_session(scada, plc)  # before: accepted, so the refusal below is the revocation's
        except Exception as exc:
            raise CheckFailed(f"{scada.settings.name} could not open a session to plc-1 before revocation: "
                              f"{exc}") from exc
        der = scada.cert_path.read_bytes()
        record = required(await self._record_of(der), f"{scada.settings.name}'s certificate is not in the inventory")
        await run_blocking(self.eng.authority.revoke, record.serial, reason=RevocationReason.KEY_COMPROMISE,
                           actor=ACTOR)
        self.tallies.move("SCADA", "enrolled", "revoked")
        report = await rollout.run()  # the revocation bumped the trust list: every PLC is due
        check(report.attempted == self.o.plcs and report.failed == 0,
              f"trust list push after revocation: {report.failed} of {report.attempted} failed "
              f"(expected all {self.o.plcs} PLCs due)")
        try:
            await self._scada_session(scada, plc)
        except Exception as exc:
            refusal = str(exc).splitlines()[0][:120]
        else:
            raise CheckFailed(f"plc-1 still accepts {scada.settings.name}'s revoked certificate")
        rejected = await self._rejected_at(plc)
        check(der in rejected, f"{scada.settings.name}'s certificate is not in plc-1's rejected list")
        self.tallies.move("SCADA", None, "refused")
        others = ""
        if len(self.scadas) > 1:
            await self._scada_session(self.scadas[1], plc)  # still fine: only the revoked one is refused
            others = f"; {self.scadas[1].settings.name} still accepted"
        return (f"{scada.settings.name} revoked -> trust list pushed to {report.delivered} PLCs -> plc-1 refuses it "
                f"({refusal}) and lists it in GetRejectedList{others}")

    async def _revoke_device(self, device: MqttDevice) -> str:
        cert = device.certificate
        assert cert is not None
        record = required(await self._record_of(cert.public_bytes(Encoding.DER)),
                          f"{device.name}'s certificate is not in the inventory")
        t0 = time.monotonic()
        await run_blocking(self.eng.authority.revoke, record.serial, reason=RevocationReason.KEY_COMPROMISE,
                           actor=ACTOR)
        self.tallies.move("devices", "renewed" if device.renewals else "enrolled", "revoked")
        dropped = await eventually(lambda: not device.online.is_set(), 30, 0.01)
        drop_s = time.monotonic() - t0
        check(dropped, f"the broker did not drop {device.name} after its revocation")
        refused = await eventually(lambda: device.state is DeviceState.REVOKED, 60)
        check(refused, f"{device.name} is {device.state}, not revoked: {device.last_error}")
        self.tallies.move("devices", None, "refused")
        return f"{device.name} revoked -> dropped by the broker after {drop_s:.2f} s, reconnect refused"

    # -- 7. EST ----------------------------------------------------------------------------------------------------

    async def est(self) -> str:
        self.est_demo = EstDemo(self.eng, self.o.data_dir / "est", self.o.sites[0], self._web_key_password)
        return await self.est_demo.run()

    # -- 8. summary --------------------------------------------------------------------------------------------

    def _counts(self) -> DemoCounts:
        engine = self.eng
        by_status = {s: len(engine.inventory.query(status=s)) for s in CertificateStatus}
        return DemoCounts(
            cas=len(engine.hierarchy.list()), certificates_issued=engine.inventory.count(),
            certificates_active=by_status[CertificateStatus.ACTIVE],
            certificates_revoked=by_status[CertificateStatus.REVOKED],
            certificates_superseded=by_status[CertificateStatus.SUPERSEDED],
            plcs=self.o.plcs, scada=self.o.scada, devices=self.o.devices,
            telemetry_messages=sum(d.telemetry_sent for d in self.fleet.devices) if self.fleet else 0)

    async def summary(self) -> str:
        counts = await run_blocking(self._counts)
        self.final_counts = counts
        check(counts.certificates_revoked >= (1 if self.o.scada and self.o.plcs else 0)
              + (1 if self.o.devices else 0), "the inventory does not show the revocations")
        check(counts.certificates_superseded >= (1 if self.o.devices else 0) + (1 if self.o.plcs else 0),
              "the inventory does not show the renewals as superseded")
        return (f"{counts.cas} CAs; certificates: {counts.certificates_issued} issued, {counts.certificates_active} "
                f"active, {counts.certificates_revoked} revoked, {counts.certificates_superseded} superseded; "
                f"{counts.plcs} PLCs, {counts.scada} SCADA, {counts.devices} devices, "
                f"{counts.telemetry_messages} telemetry messages")
