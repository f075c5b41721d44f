"""`otpki doctor`: is this deployment healthy? Each check gives findings at ok, warn or fail level.

A fail is something that breaks the plant now or soon without anyone acting (an issuing CA key that cannot
sign, an expired CRL that Mosquitto treats as "revoke everyone", a PLC that has not taken its push); a warn
is something an operator should plan for (certificates entering their renewal window, an offline root).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Literal
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from pydantic import BaseModel, Field

from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.models import CARecord
from trustlists.targets import TargetState

Level = Literal["ok", "warn", "fail"]
PROBE = b"otpki doctor: can this key sign for its certificate?"


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


def _sign_and_verify(key: object, cert: x509.Certificate) -> None:
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(key.sign(PROBE, padding.PKCS1v15(), hashes.SHA256()),  # type: ignore[attr-defined]
                      PROBE, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(key.sign(PROBE, ec.ECDSA(hashes.SHA256())), PROBE,  # type: ignore[attr-defined]
                      ec.ECDSA(hashes.SHA256()))
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public.verify(key.sign(PROBE), PROBE)  # type: ignore[attr-defined]
    else:
        raise ValueError(f"unsupported CA key type {type(public).__name__}")


def _live_cas(engine: Engine) -> list[CARecord]:
    now = engine.ctx.clock()
    return [ca for ca in engine.hierarchy.list() if ca.active and ca.not_after > now and not engine.ctx.ca_revoked(ca)]


def check_ca_keys(engine: Engine) -> Iterable[Finding]:
    """Every live CA key is reachable and signs something its certificate verifies."""
    for ca in _live_cas(engine):
        try:
            key = engine.ctx.keys.signer(ca)
            _sign_and_verify(key, x509.load_der_x509_certificate(ca.certificate_der))
        except (OtpkiError, Exception) as exc:
            message = exc.message if isinstance(exc, OtpkiError) else f"{type(exc).__name__}: {exc}"
            if ca.parent_id is None:
                yield Finding(check="ca-key", subject=ca.id, level="warn",
                              detail=f"root key not reachable ({message}); expected when the root is kept offline, "
                                     "needed for new issuing CAs and the root CRL")
            else:
                yield Finding(check="ca-key", subject=ca.id, level="fail",
                              detail=f"cannot sign: {message}; issuance and CRL updates for this CA stop")
            continue
        yield Finding(check="ca-key", subject=ca.id, level="ok", detail=f"{ca.key_backend} key signs and verifies")


def check_ca_lifetimes(engine: Engine, window: timedelta) -> Iterable[Finding]:
    now = engine.ctx.clock()
    for ca in _live_cas(engine):
        left = ca.not_after - now
        if left < window * 12:  # a CA needs far more lead time than a leaf: everything below it must move
            yield Finding(check="ca-lifetime", subject=ca.id, level="warn",
                          detail=f"CA certificate ends {ca.not_after:%Y-%m-%d} ({left.days} days): create the next "
                                 "generation with `otpki ca create` and roll devices over")


def check_crls(engine: Engine) -> Iterable[Finding]:
    now = engine.ctx.clock()
    config = engine.config
    for ca in _live_cas(engine):
        margin = timedelta(days=config.root.crl_refresh_margin_days if ca.parent_id is None
                           else config.group(ca.group or "").crl_refresh_margin_days)
        with engine.ctx.store.read() as tx:
            crl = tx.latest_crl(ca.id)
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
    now = engine.ctx.clock()
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


Check = Callable[[], Iterable[Finding]]


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
