"""`otpki doctor`: is this deployment healthy? Each check gives findings at ok, warn or fail level.

A fail is something that breaks the plant now or soon without anyone acting (an issuing CA key that cannot
sign, an expired CRL that Mosquitto treats as "revoke everyone", a PLC that has not taken its push); a warn
is something an operator should plan for (certificates entering their renewal window, an offline root).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import stat
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

from cryptography import x509
from pydantic import BaseModel, Field

from mqtt_broker_auth.mosquitto.bundle import mosquitto_bundle
from opcua_gds.access import PasswordUser, current_parameters, needs_rehash
from trustlists.engine import Engine
from trustlists.models import CARecord
from trustlists.targets import TargetState

if TYPE_CHECKING:
    from otpki.config import Settings

Level = Literal["ok", "warn", "fail"]
_CRL_PEM = re.compile(rb"-----BEGIN X509 CRL-----\r?\n.+?-----END X509 CRL-----\r?\n?", re.S)


class Finding(BaseModel):
    check: str
    subject: str
    level: Level
    detail: str


class DoctorReport(BaseModel):
    findings: list[Finding] = Field(default_factory=list)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "fail"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warn"]


def _live_cas(engine: Engine) -> list[CARecord]:
    now = engine.now()
    return [status.record for status in engine.ca_statuses() if status.live_at(now)]


def check_ca_keys(engine: Engine) -> Iterable[Finding]:
    """Every live CA key is reachable and signs something its certificate verifies."""
    for ca in _live_cas(engine):
        probe = engine.probe_ca_key(ca.id)
        if not probe.ok:
            if ca.parent_id is None:
                yield Finding(check="ca-key", subject=ca.id, level="warn",
                              detail=f"root key not reachable ({probe.problem}); expected when the root is kept "
                                     "offline, needed for new issuing CAs and the root CRL")
            else:
                yield Finding(check="ca-key", subject=ca.id, level="fail",
                              detail=f"cannot sign: {probe.problem}; issuance and CRL updates for this CA stop")
            continue
        yield Finding(check="ca-key", subject=ca.id, level="ok", detail=f"{ca.key_backend} key signs and verifies")


def check_ca_lifetimes(engine: Engine, window: timedelta) -> Iterable[Finding]:
    now = engine.now()
    for ca in _live_cas(engine):
        left = ca.not_after - now
        if left < window * 12:  # a CA needs far more lead time than a leaf: everything below it must move
            yield Finding(check="ca-lifetime", subject=ca.id, level="warn",
                          detail=f"CA certificate ends {ca.not_after:%Y-%m-%d} ({left.days} days): create the next "
                                 "generation with `otpki ca create` and roll devices over")


def check_crls(engine: Engine) -> Iterable[Finding]:
    now = engine.now()
    config = engine.config
    for ca in _live_cas(engine):
        margin = timedelta(days=config.root.crl_refresh_margin_days if ca.parent_id is None
                           else config.group(ca.group or "").crl_refresh_margin_days)
        crl = engine.latest_crl(ca.id)
        if crl is None:
            yield Finding(check="crl", subject=ca.id, level="fail", detail="no CRL published: run `otpki crl refresh`")
        elif crl.next_update <= now:
            yield Finding(check="crl", subject=ca.id, level="fail",
                          detail=f"CRL #{crl.crl_number} expired {crl.next_update:%Y-%m-%d %H:%M} UTC: validators "
                                 "(and Mosquitto) refuse every certificate of this CA; run `otpki crl refresh`")
        elif crl.next_update - margin <= now:
            yield Finding(check="crl", subject=ca.id, level="warn",
                          detail=f"CRL #{crl.crl_number} nextUpdate {crl.next_update:%Y-%m-%d %H:%M} UTC is within "
                                 f"{margin.days} days: run `otpki crl refresh` (or keep `otpki gds serve` running)")
        else:
            yield Finding(check="crl", subject=ca.id, level="ok",
                          detail=f"CRL #{crl.crl_number} valid until {crl.next_update:%Y-%m-%d} UTC")


def check_expiring(engine: Engine, window: timedelta) -> Iterable[Finding]:
    expiring = engine.inventory.expiring(window)
    if not expiring:
        yield Finding(check="expiry", subject="certificates", level="ok",
                      detail=f"no live certificate ends within {window.days} days")
        return
    now = engine.now()
    for cert in expiring:
        days = (cert.not_after - now).days
        yield Finding(check="expiry", subject=f"{cert.group}/{cert.subject}", level="warn",
                      detail=f"serial {cert.serial[:16]}… ends {cert.not_after:%Y-%m-%d} ({days} days): renew it "
                             "(`otpki certs renew`, a push, or the device's own renewal)")


async def _reachable(address: str, timeout_s: float) -> str | None:
    url = urlparse(address)
    if not url.hostname or not url.port:
        return f"cannot tell host and port from {address!r}"
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, url.port), timeout_s)
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return None


def check_targets(engine: Engine, *, probe: bool, timeout_s: float = 2.0) -> Iterable[Finding]:
    targets = engine.targets.list()
    unreachable: dict[str, str | None] = {}
    if probe and targets:
        async def probe_all() -> list[str | None]:
            return await asyncio.gather(*(_reachable(t.address, timeout_s) for t in targets))
        unreachable = dict(zip((t.id for t in targets), asyncio.run(probe_all()), strict=True))
    for target in targets:
        subject = f"{target.kind} {target.address}"
        if unreachable.get(target.id):
            yield Finding(check="push-target", subject=subject, level="fail",
                          detail=f"not reachable: {unreachable[target.id]}")
        elif target.state is TargetState.RETRYING:
            yield Finding(check="push-target", subject=subject, level="fail",
                          detail=f"{target.attempts} failed attempt(s), next {target.next_attempt_at:%Y-%m-%d %H:%M} "
                                 f"UTC; last error: {target.last_error}")
        elif target.state is TargetState.NOT_APPLIED:
            # It holds its certificate and answers Good, but keeps an older trust list: it may trust what was
            # revoked since. Not a fail: it is retried, and the plant runs; an operator should look at the PLC.
            name = engine.registry.get(target.owner_id).name
            yield Finding(check="push-target", subject=subject, level="warn",
                          detail=f"{name}: {target.last_error}; pushed again after "
                                 f"{target.next_attempt_at:%Y-%m-%d %H:%M} UTC (`otpki push {name}` pushes it now)")
        elif target.state is TargetState.DELIVERED:
            yield Finding(check="push-target", subject=subject, level="ok", detail="up to date when last pushed")
        else:
            yield Finding(check="push-target", subject=subject, level="warn", detail="never pushed yet: `otpki push`")


def check_audit(engine: Engine) -> Iterable[Finding]:
    result = engine.verify_audit()
    if result.ok:
        yield Finding(check="audit", subject="audit log", level="ok", detail=f"{result.records} records, chain intact")
    else:
        yield Finding(check="audit", subject="audit log", level="fail", detail=f"chain broken: {result.problem}")


def check_mosquitto_files(engine: Engine, *, cafile: Path, crlfile: Path, group: str,
                          min_remaining: timedelta) -> Iterable[Finding]:
    """The cafile/crlfile Mosquitto reads: present, what the engine exports now, CRLs not near nextUpdate.

    Mosquitto fails open on a bad CRL at reload and locks every device out on an expired one, and it only
    learns about a revocation when the files change; a stale pair means revoked devices still connect.
    """
    subject = f"mosquitto {cafile.parent}"
    try:
        installed_ca, installed_crl = cafile.read_bytes(), crlfile.read_bytes()
    except OSError as exc:
        yield Finding(check="mqtt-broker-files", subject=subject, level="fail",
                      detail=f"cannot read {exc.filename}: {exc.strerror}; run `otpki mqtt mosquitto-config` "
                             "(first time) or `otpki mqtt sync --once`")
        return
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get(group, imported=False))
    if (installed_ca, installed_crl) != (ca_pem, crl_pem):
        stale = " and ".join(n for n, a, b in (("cafile", installed_ca, ca_pem), ("crlfile", installed_crl, crl_pem))
                             if a != b)
        yield Finding(check="mqtt-broker-files", subject=subject, level="fail",
                      detail=f"out of sync: the installed {stale} differ from what the engine exports now (a "
                             "revocation or trust change has not reached the broker); run `otpki mqtt sync --once` "
                             "or keep `otpki mqtt sync` running")
    in_sync = (installed_ca, installed_crl) == (ca_pem, crl_pem)
    now = engine.now()
    margin = timedelta(days=engine.config.group(group).crl_refresh_margin_days)
    worst: Finding | None = None
    failed = False
    for block in _CRL_PEM.findall(installed_crl):
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as exc:
            yield Finding(check="mqtt-broker-files", subject=subject, level="fail",
                          detail=f"the installed crlfile holds an unreadable CRL ({exc}): Mosquitto would run "
                                 "without CRL checks after its next reload; run `otpki mqtt sync --once`")
            return
        issuer = crl.issuer.rfc4514_string()
        next_update = crl.next_update_utc
        if next_update is None or next_update <= now:
            failed = True
            yield Finding(check="mqtt-broker-files", subject=subject, level="fail",
                          detail=f"the installed CRL of {issuer} expired ({next_update}): Mosquitto refuses every "
                                 "device of that CA; run `otpki crl refresh` and `otpki mqtt sync --once`")
        elif next_update - now < min_remaining:
            failed = True
            yield Finding(check="mqtt-broker-files", subject=subject, level="fail",
                          detail=f"the installed CRL of {issuer} expires {next_update:%Y-%m-%d %H:%M} UTC, closer "
                                 f"than the {min_remaining} the sync requires; run `otpki crl refresh` and "
                                 "`otpki mqtt sync --once`")
        elif next_update - now < margin and worst is None:
            worst = Finding(check="mqtt-broker-files", subject=subject, level="warn",
                            detail=f"the installed CRL of {issuer} reaches nextUpdate {next_update:%Y-%m-%d %H:%M} "
                                   f"UTC within {margin.days} days: refresh CRLs and sync")
    if worst is not None and not failed:
        yield worst
    elif in_sync and not failed:
        yield Finding(check="mqtt-broker-files", subject=subject, level="ok",
                      detail=f"cafile and crlfile match trust list v{engine.trustlists.get(group).version}")


FOREIGN_LOOKBACK = timedelta(days=7)


def check_mosquitto_dynsec(engine: Engine, *, dynsec_file: Path, admin_username: str, group: str) -> Iterable[Finding]:
    """Mosquitto's saved dynsec state holds exactly what the engine wants, and nothing foreign was found lately.

    A client, role, ACL or group the engine never made means someone administers the broker besides otpki
    (or did, through a hole): the sync removes it, and this says it happened.
    """
    import json

    from mqtt_broker_auth.mosquitto import dynsec_state as ds_state
    from mqtt_broker_auth.mosquitto.sync import FOREIGN_REMOVED_ACTION, desired_dynsec
    from mqtt_broker_auth.policy import mqtt_policy

    subject = f"mosquitto dynsec {dynsec_file}"
    try:
        current = ds_state.DynsecState.from_file(json.loads(dynsec_file.read_bytes()))
    except OSError as exc:
        yield Finding(check="mqtt-broker-dynsec", subject=subject, level="fail",
                      detail=f"cannot read {dynsec_file}: {exc.strerror}; run `otpki mqtt mosquitto-config`")
        return
    except (ValueError, AttributeError) as exc:
        yield Finding(check="mqtt-broker-dynsec", subject=subject, level="fail",
                      detail=f"{dynsec_file} is not a dynsec file ({exc})")
        return
    desired, once = desired_dynsec(admin_username, mqtt_policy(engine.config, group), group,
                                   engine.registry.list(group))
    drifts = ds_state.drift(current, desired, once_managed=once)
    for d in drifts:
        if d.foreign:
            yield Finding(check="mqtt-broker-dynsec", subject=subject, level="fail",
                          detail=f"foreign {d.kind.replace('_', ' ')} {d.name!r}: {d.detail}; the engine never put "
                                 "it there: `otpki mqtt sync` removes it; find out who else holds the admin password")
    pending = [d for d in drifts if not d.foreign]
    if pending:
        yield Finding(check="mqtt-broker-dynsec", subject=subject, level="warn",
                      detail=f"{len(pending)} change(s) not on the broker yet (e.g. "
                             f"{pending[0].kind.replace('_', ' ')} {pending[0].name!r}); keep `otpki mqtt sync` "
                             "running")
    since = engine.now() - FOREIGN_LOOKBACK
    for event in engine.audit_records(action=FOREIGN_REMOVED_ACTION, since=since):
        names = ", ".join(f"{r.get('kind', '?').replace('_', ' ')} {r.get('name')!r}"
                          for r in event.details.get("removed", []))
        yield Finding(check="mqtt-broker-dynsec", subject=subject, level="warn",
                      detail=f"on {event.at:%Y-%m-%d %H:%M} UTC the sync removed foreign dynsec entries ({names}): "
                             "someone administered the broker besides otpki")
    if not drifts:
        yield Finding(check="mqtt-broker-dynsec", subject=subject, level="ok",
                      detail=f"{len(current.clients)} clients and {len(current.roles)} roles, all the engine's")


def check_bootstrap_anchors(engine: Engine, *, group: str) -> Iterable[Finding]:
    """Fingerprint-only bootstrap entries whose certificate is not in the trust list: refused at TLS if self-signed."""
    for owner, fp in engine.bootstrap.unanchored_fingerprints(group):
        yield Finding(check="mqtt-bootstrap", subject=f"{group}/{owner.name}", level="warn",
                      detail=f"allow-listed by sha256 {fp[:16]}… only, and no such certificate is in the trust "
                             f"list: a self-signed factory certificate is refused in the TLS handshake until it is "
                             f"imported (otpki trustlist import {group} CERT.pem)")


def mqtt_checks(engine: Engine, settings: Settings) -> list[Check]:
    """The broker checks `[mqtt]` asks for: with `broker = "mosquitto"`, the installed files and dynsec state."""
    mqtt = settings.file.mqtt
    anchors: Check = lambda: check_bootstrap_anchors(engine, group=mqtt.group)  # noqa: E731
    if mqtt.broker != "mosquitto":
        return [anchors]
    workdir = settings.mosquitto_workdir()
    return [anchors, lambda: check_mosquitto_files(engine, cafile=workdir / "ca.pem", crlfile=workdir / "crl.pem",
                                          group=mqtt.group,
                                          min_remaining=timedelta(seconds=mqtt.mosquitto.crl_min_remaining_s)),
            lambda: check_mosquitto_dynsec(engine, dynsec_file=workdir / "dynamic-security.json",
                                           admin_username=mqtt.mosquitto.admin_username, group=mqtt.group)]


Check = Callable[[], Iterable[Finding]]


def check_gds_password_hashes(users: Iterable[PasswordUser]) -> Iterable[Finding]:
    """Password hashes made with other argon2 parameters than otpki's current ones (never below the floor:
    the configuration would not have loaded)."""
    for user in users:
        if needs_rehash(user.password_hash):
            yield Finding(check="gds-password", subject=user.name, level="warn",
                          detail=f"hash made with other parameters than otpki's ({current_parameters()}): replace "
                                 "it in otpki.toml with the output of `otpki users hash-password`")
        else:
            yield Finding(check="gds-password", subject=user.name, level="ok", detail=current_parameters())


# Files that hold a secret, by name, wherever otpki wrote them (data directory, Mosquitto workdir).
_SECRET_NAMES = re.compile(r"(\.key|\.key\.pem|\.p12|\.pfx)$|^(dynamic-security\.json|demo-passphrase)$")


def check_secret_file_modes(directories: Iterable[Path]) -> Iterable[Finding]:
    """A key or the dynsec file readable by group or others (written by an older otpki, or by hand).

    Mosquitto rewrites its dynsec file in place and keeps its mode, so a world-readable one stays so.
    """
    exposed: list[str] = []  # in the order found; the Mosquitto workdir is often inside the data directory
    for directory in directories:
        for path in sorted(Path(directory).rglob("*")) if Path(directory).is_dir() else []:
            if not (_SECRET_NAMES.search(path.name) or path.parent.name == "private"):
                continue
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
                mode = path.lstat()
                if stat.S_ISREG(mode.st_mode) and mode.st_mode & 0o077 and str(path) not in exposed:
                    exposed.append(str(path))
    for shown in exposed:
        yield Finding(check="secret-file", subject=shown, level="fail",
                      detail="readable by group or others: `chmod 600` it (and replace the secret if others may "
                             "have read it)")
    if not exposed:
        yield Finding(check="secret-file", subject="keys and dynsec file", level="ok",
                      detail="readable by their owner only")


def secret_checks(settings: Settings) -> list[Check]:
    """Password hashes of the GDS users and the modes of secret files in the data and Mosquitto directories."""
    directories = list(dict.fromkeys([settings.data_dir, settings.mosquitto_workdir()]))
    return [lambda: check_gds_password_hashes(settings.file.gds.access.users),
            lambda: check_secret_file_modes(directories)]


def examine(engine: Engine, *, expiry_window: timedelta = timedelta(days=30), probe_targets: bool = False,
            extra: Iterable[Check] = ()) -> DoctorReport:
    report = DoctorReport()
    checks: list[Check] = [
        lambda: check_ca_keys(engine),
        lambda: check_ca_lifetimes(engine, expiry_window),
        lambda: check_crls(engine),
        lambda: check_expiring(engine, expiry_window),
        lambda: check_targets(engine, probe=probe_targets),
        lambda: check_audit(engine),
        *extra,
    ]
    for check in checks:
        report.findings.extend(check())
    return report
