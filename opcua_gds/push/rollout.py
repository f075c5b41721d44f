"""Fleet rollout: push certificates and trust lists to every PLC that needs them, many at a time.

The targets and what each one last received live in the engine's store (`trustlists.targets`), so a
rollout only touches targets that need it (idempotent), picks up where it stopped after a restart, and
leaves an unreachable PLC to a later attempt with backoff while the others go on. Each push is
`client.push_certificate`: trust list first, then CSR -> engine issuance -> UpdateCertificate ->
ApplyChanges, then a reconnect that must show the new certificate. Before any of it, the server at the
target's address must prove to be the target (`server_identity`); a refusal is the target's error, retried
with the same backoff, and the password never leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from opcua_gds.push.client import PushError, PushResult, push_certificate, push_trust_list
from opcua_gds.push.server_identity import TargetServerIdentity
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.models import KeyType
from trustlists.targets import DeliveryTarget, DeliveryTargets

KIND = "opcua-push"


class CredentialsMissing(LookupError):
    """A target names credentials otpki.toml does not have (a LookupError: its message prints unquoted)."""


class PushCredential(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(description="A user with the SecurityAdmin role on the PLC")
    password_env: str | None = Field(None, description="Environment variable holding the password")
    password_file: Path | None = Field(None, description="File holding the password (never otpki.toml itself); "
                                                          "relative to the data directory")


class PushSettings(BaseModel):
    """[push] in otpki.toml."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(16, ge=1, le=512, description="PLCs pushed to at the same time")
    timeout_s: float = Field(120.0, gt=0, description="Give up on one PLC's push after this long")
    application_uri: str = Field("urn:otpki:push", description="ApplicationUri of otpki's push client")
    credentials: dict[str, PushCredential] = Field(
        default_factory=dict, description="Admin logins on PLCs, referenced by `otpki targets add --credentials`")

    def resolve(self, ref: str) -> tuple[str, str]:
        """(username, password) for a target's credentials reference."""
        import os

        cred = self.credentials.get(ref)
        if cred is None:
            raise CredentialsMissing(f"no [push.credentials.{ref}] in otpki.toml")
        if cred.password_file is not None:
            return cred.username, Path(cred.password_file).read_text().strip()
        if cred.password_env and os.environ.get(cred.password_env):
            return cred.username, os.environ[cred.password_env]
        raise CredentialsMissing(f"[push.credentials.{ref}] has no password: set password_env or password_file")


class TargetOutcome(BaseModel):
    target_id: str
    address: str
    reason: str
    ok: bool
    serial: str | None = None
    trust_version: int | None = None
    trust_list_applied: bool | None = None
    error: str | None = None
    # Set when this push pinned the server's certificate at the target's first contact (trust on first use):
    # the operator should compare it with the fingerprint the PLC displays.
    first_contact_sha256: str | None = None
    seconds: float


class RolloutReport(BaseModel):
    attempted: int
    delivered: int
    failed: int
    seconds: float
    outcomes: list[TargetOutcome] = Field(default_factory=list)


Credentials = Callable[[str], tuple[str, str]]  # credentials_ref -> (username, password)


class Rollout:
    def __init__(self, engine: Engine, *, client_cert_path: Path, client_key_path: Path, client_app_uri: str,
                 credentials: Credentials, concurrency: int = 16, timeout_s: float = 120.0,
                 reconnect_attempts: int = 15, reconnect_delay_s: float = 1.0, actor: str = "otpki-push") -> None:
        self.engine = engine
        self._client = {"client_cert_path": client_cert_path, "client_key_path": client_key_path,
                        "client_app_uri": client_app_uri}
        self._credentials = credentials
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s
        self._reconnect = {"reconnect_attempts": reconnect_attempts, "reconnect_delay_s": reconnect_delay_s}
        self._actor = actor

    async def run(self, *, group: str | None = None, site: str | None = None, address: str | None = None,
                  force: bool = False, on_done: Callable[[TargetOutcome], None] | None = None,
                  on_planned: Callable[[int], None] | None = None) -> RolloutReport:
        due = await run_blocking(self.engine.targets.needing_delivery, kind=KIND, group=group, site=site, force=force)
        if address is not None:
            due = [(t, r) for t, r in due if t.address == address]
        if on_planned is not None:
            on_planned(len(due))
        start = time.perf_counter()

        async def one(target: DeliveryTarget, reason: str) -> TargetOutcome:
            async with self._limit:
                outcome = await self.push_one(target, reason)
            if on_done is not None:
                on_done(outcome)
            return outcome

        outcomes = await asyncio.gather(*(one(t, r) for t, r in due))
        delivered = sum(1 for o in outcomes if o.ok)
        return RolloutReport(attempted=len(outcomes), delivered=delivered, failed=len(outcomes) - delivered,
                             seconds=round(time.perf_counter() - start, 3), outcomes=list(outcomes))

    async def push_one(self, target: DeliveryTarget, reason: str) -> TargetOutcome:
        """One target, start to finish; the result is recorded in the store either way.

        A target whose certificate is current gets only the trust list; otherwise trust list and a new
        certificate (from the PLC's CSR, or with an engine-made key when the PLC cannot make keys).
        """
        start = time.perf_counter()
        issued_serials: list[str] = []
        identity = TargetServerIdentity(self.engine, target.id, actor=self._actor)
        try:
            trust = await run_blocking(self.engine.trustlists.get, target.group)
            username, password = self._credentials(target.credentials_ref)
            session: dict[str, Any] = {"username": username, "password": password, "trust_list": trust.content,
                                       "server_check": identity, **self._client, **self._reconnect}
            if target.delivered_serial is not None and not DeliveryTargets.needs_certificate(reason):
                result: PushResult = await asyncio.wait_for(
                    push_trust_list(target.address, **session), timeout=self._timeout_s)
                issued_serials.append(target.delivered_serial)
            else:
                result = await asyncio.wait_for(self._push_certificate(target, session, issued_serials),
                                                timeout=self._timeout_s)
                if not result.certificate_presented:
                    raise PushError("verify", "NotPresented", "the server does not present the new certificate")
        except Exception as exc:  # one PLC's failure, whatever it is, must not stop the fleet: record it, go on
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, PushError) else str(exc)
            await run_blocking(self.engine.targets.record_failure, target.id, error=error, actor=self._actor)
            return TargetOutcome(target_id=target.id, address=target.address, reason=reason, ok=False, error=error,
                                 first_contact_sha256=_first_contact(identity),
                                 seconds=round(time.perf_counter() - start, 3))
        serial = issued_serials[-1]
        await run_blocking(self.engine.targets.record_success, target.id, serial=serial, trust_version=trust.version,
                           actor=self._actor)
        return TargetOutcome(target_id=target.id, address=target.address, reason=reason, ok=True, serial=serial,
                             trust_version=trust.version, trust_list_applied=result.trust_list_applied,
                             first_contact_sha256=_first_contact(identity),
                             seconds=round(time.perf_counter() - start, 3))

    async def _push_certificate(self, target: DeliveryTarget, session: dict[str, Any],
                                issued_serials: list[str]) -> PushResult:
        async def issue(csr: bytes) -> tuple[bytes, list[bytes]]:
            issued = await run_blocking(self.engine.authority.issue_from_csr, csr, owner_id=target.owner_id,
                                        actor=self._actor, delivered=False)
            issued_serials.append(issued.record.serial)
            # The issuing CA goes with the certificate; the root is in the trust list pushed first.
            return issued.certificate_der, issued.chain_der[:-1]

        async def issue_with_key() -> tuple[bytes, list[bytes], bytes]:
            # The PLC's certificate type is RsaSha256ApplicationCertificateType: the key must be RSA.
            issued = await run_blocking(self.engine.authority.issue_with_new_key, owner_id=target.owner_id,
                                        actor=self._actor, key_type=KeyType.RSA2048, key_format="pem",
                                        delivered=False)
            issued_serials.append(issued.record.serial)
            assert issued.private_key is not None
            return issued.certificate_der, issued.chain_der[:-1], issued.private_key

        return await push_certificate(target.address, issue=issue, issue_with_key=issue_with_key, **session)

    async def serve(self, *, interval_s: float = 60.0, stop: asyncio.Event | None = None,
                    on_report: Callable[[RolloutReport], None] | None = None, group: str | None = None,
                    site: str | None = None) -> None:
        """The scheduler: every interval, push to whatever is due (new, renewal window, trust list, retry).

        Renewal is scheduled by the store (a delivered target is due again when its certificate enters the
        group's renewal window) and a revocation or CA change bumps the group's trust-list version, which makes
        every target of the group due; failed targets come back after their backoff.
        """
        stop = stop or asyncio.Event()
        while not stop.is_set():
            report = await self.run(group=group, site=site)
            if on_report is not None and report.attempted:
                on_report(report)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)


def _first_contact(identity: TargetServerIdentity) -> str | None:
    pin = identity.first_contact
    return pin.fingerprint_sha256 if pin is not None else None
