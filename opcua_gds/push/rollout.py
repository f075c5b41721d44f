"""Fleet rollout: push certificates and trust lists to every PLC that needs them, many at a time.

The targets and what each one last received live in the engine's store (`trustlists.targets`), so a
rollout only touches targets that need it (idempotent), picks up where it stopped after a restart, and
leaves an unreachable PLC to a later attempt with backoff while the others go on. Each push is
`client.push_certificate`: trust list first, then CSR -> engine issuance -> UpdateCertificate ->
ApplyChanges, then a reconnect that must show the new certificate. Before any of it, the server at the
target's address must prove to be the target (`server_identity`); a refusal is the target's error, retried
with the same backoff, and the password never leaves.

Several instances on one store push from the same targets table: each target is leased (`trustlists.leases`) by
the instance pushing it, renewed while the push runs, released when its result is recorded. Another instance
skips a leased target ("leased by ..."), and after taking a lease looks again whether the target is still due
(the previous holder may have just delivered it). A lease left by an instance that died expires after `lease_s`
of the store's clock; the next scheduler round of another instance takes the target over (audited).

Each target ends a run in one of three results: delivered; not applied (the certificate went in, but the trust
list the PLC accepted reads back different: it stays due, with a backoff); failed (with the step and the OPC UA
status the PLC answered, retried with a backoff). A run over a selection (--all, a group, a site) leaves targets
in their backoff alone and reports them as skipped; a run for one named target pushes it even during its
backoff (an operator asked for it), and reports it as skipped only when it is up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from opcua_gds.push.client import PushError, PushResult, StepOutcome, StepSink, push_certificate, push_trust_list
from opcua_gds.push.server_identity import TargetServerIdentity
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import NotFound, OtpkiError
from trustlists.leases import push_target_lease
from trustlists.models import KeyType
from trustlists.targets import DeliveryTarget, DeliveryTargets

KIND = "opcua-push"
LEASED_BY = "leased by "  # the reason of a target skipped because another instance is pushing it
log = logging.getLogger(__name__)


class TargetOutcome(BaseModel):
    target_id: str
    address: str
    reason: str
    ok: bool  # delivered: the certificate is presented and the trust list applied
    result: Literal["delivered", "not_applied", "failed"]
    serial: str | None = None
    trust_version: int | None = None
    trust_list_applied: bool | None = None
    # failed: what went wrong ("step: Status (detail)"); not_applied: what the trust list read-back showed
    error: str | None = None
    step: str | None = None  # failed: the push step that failed (connect, server_identity, update_certificate...)
    status: str | None = None  # failed: the OPC UA status the PLC answered (BadUserAccessDenied...) or a local reason
    # Set when this push pinned the server's certificate at the target's first contact (trust on first use):
    # the operator should compare it with the fingerprint the PLC displays.
    first_contact_sha256: str | None = None
    seconds: float


class SkippedTarget(BaseModel):
    """A selected target this run did not push to."""

    target_id: str
    address: str
    reason: str | None  # what it needs; None: it is up to date
    until: datetime | None = None  # backing off until then (a failure or a trust list it did not apply)
    last_error: str | None = None


class RolloutReport(BaseModel):
    attempted: int
    delivered: int
    not_applied: int = 0
    failed: int
    seconds: float
    outcomes: list[TargetOutcome] = Field(default_factory=list)
    skipped: list[SkippedTarget] = Field(default_factory=list)


Credentials = Callable[[str], tuple[str, str]]  # credentials_ref -> (username, password)


class Rollout:
    def __init__(self, engine: Engine, *, client_cert_path: Path, client_key_path: Path, client_app_uri: str,
                 credentials: Credentials, concurrency: int = 16, timeout_s: float = 120.0,
                 reconnect_attempts: int = 15, reconnect_delay_s: float = 1.0, actor: str = "otpki-push",
                 lease_s: float = 30.0) -> None:
        """`lease_s`: how long a target stays leased to this instance without a renewal (renewed every third of
        it while a push runs): after this instance dies, others take its targets over after at most this long."""
        self.engine = engine
        self._client = {"client_cert_path": client_cert_path, "client_key_path": client_key_path,
                        "client_app_uri": client_app_uri}
        self._credentials = credentials
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s
        self._reconnect = {"reconnect_attempts": reconnect_attempts, "reconnect_delay_s": reconnect_delay_s}
        self._actor = actor
        self._lease_ttl = timedelta(seconds=lease_s)

    async def run(self, *, group: str | None = None, site: str | None = None, address: str | None = None,
                  force: bool = False, on_done: Callable[[TargetOutcome], None] | None = None,
                  on_planned: Callable[[int], None] | None = None,
                  on_step: Callable[[str, StepOutcome], None] | None = None) -> RolloutReport:
        """Push to the due targets of the selection; `address` names one target (NotFound when there is none),
        which is pushed even during its backoff. `force` pushes up-to-date targets too. `on_step` hears each step
        of each push as it completes (target id, step), for live progress; `on_done` each target's outcome."""
        named = None if address is None else [await self._target_at(address)]
        plan = await run_blocking(self.engine.targets.plan, kind=KIND, group=group, site=site, target_ids=named,
                                  force=force)
        if named is not None:
            due = plan.due + plan.waiting  # an operator asked for this target: the backoff does not hold it back
            skipped = [SkippedTarget(target_id=t.id, address=t.address, reason=None) for t in plan.current]
        else:
            due = plan.due
            skipped = [SkippedTarget(target_id=t.id, address=t.address, reason=r, until=t.next_attempt_at,
                                     last_error=t.last_error) for t, r in plan.waiting]
        if on_planned is not None:
            on_planned(len(due))
        start = time.perf_counter()

        async def one(target: DeliveryTarget, reason: str) -> TargetOutcome | SkippedTarget:
            async with self._limit:
                sink = None if on_step is None else _step_sink(on_step, target.id)
                outcome = await self._leased(target, reason, named=named is not None, force=force, on_step=sink)
            if on_done is not None and isinstance(outcome, TargetOutcome):
                on_done(outcome)
            return outcome

        results = await asyncio.gather(*(one(t, r) for t, r in due))
        outcomes = [o for o in results if isinstance(o, TargetOutcome)]
        skipped += [o for o in results if isinstance(o, SkippedTarget)]
        count = {result: sum(1 for o in outcomes if o.result == result) for result in ("delivered", "not_applied")}
        return RolloutReport(attempted=len(outcomes), delivered=count["delivered"], not_applied=count["not_applied"],
                             failed=len(outcomes) - count["delivered"] - count["not_applied"],
                             seconds=round(time.perf_counter() - start, 3), outcomes=list(outcomes), skipped=skipped)

    async def _leased(self, target: DeliveryTarget, reason: str, *, named: bool, force: bool,
                      on_step: StepSink | None = None) -> TargetOutcome | SkippedTarget:
        """`push_one` under the target's lease: skipped while another instance holds it, or when the target is no
        longer due once the lease is ours."""
        leases = self.engine.leases
        name = push_target_lease(target.id)
        asked = time.monotonic()  # the lease, if taken, holds at least until `lease_s` after this
        try:
            lease = await run_blocking(leases.acquire, name, ttl=self._lease_ttl, actor=self._actor)
        except OtpkiError as exc:  # a busy store: this target waits for the next round, the others go on
            return SkippedTarget(target_id=target.id, address=target.address,
                                 reason=f"lease not taken: {exc.message}")
        if lease is None:
            holder = await run_blocking(leases.holder, name)
            return SkippedTarget(target_id=target.id, address=target.address,
                                 reason=f"{LEASED_BY}{holder or 'another instance'}")
        try:
            # Planned before the lease: another instance may have pushed it meanwhile (and released its lease).
            plan = await run_blocking(self.engine.targets.plan, kind=KIND, target_ids=[target.id], force=force)
            fresh = plan.due + (plan.waiting if named else [])
            if not fresh:
                current = plan.waiting + [(t, None) for t in plan.current]
                t, why = current[0] if current else (target, None)
                return SkippedTarget(target_id=t.id, address=t.address, reason=why,
                                     until=t.next_attempt_at if why else None, last_error=t.last_error)
            target, reason = fresh[0]
            push = asyncio.ensure_future(self.push_one(target, reason, on_step=on_step))
            renew = asyncio.ensure_future(self._renew(name, asked))
            try:
                await asyncio.wait({push, renew}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:  # this run is cancelled: so is the push
                push.cancel()
                raise
            finally:
                renew.cancel()
            if not push.done():  # the lease was lost (this instance stalled for longer than lease_s): stop
                push.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await push
                return TargetOutcome(target_id=target.id, address=target.address, reason=reason, ok=False,
                                     result="failed", error="lease lost: another instance took the target over",
                                     status="LeaseLost", seconds=0.0)
            return push.result()
        finally:
            try:
                await run_blocking(leases.release, name)
            except OtpkiError as exc:  # it expires after lease_s instead; the push's result is recorded already
                log.warning("push lease %s not released: %s", name, exc.message)

    async def _renew(self, name: str, asked: float) -> None:
        """Renew the lease every third of its duration; return when another instance has taken it, or when it may
        have expired: no renewal got through (a busy or unreachable store) for its whole duration since `asked`
        (time.monotonic() before the last acquisition that got through). A renewal that fails once is tried
        again at the next third: abandoning a push half-way (a certificate written, its trust list not yet) for
        a moment of a busy store would leave the PLC worse off than finishing it."""
        ttl_s = self._lease_ttl.total_seconds()
        held_until = asked + ttl_s
        while True:
            await asyncio.sleep(ttl_s / 3)
            asked = time.monotonic()
            try:
                lease = await run_blocking(self.engine.leases.acquire, name, ttl=self._lease_ttl, actor=self._actor)
            except OtpkiError as exc:
                if time.monotonic() >= held_until:
                    log.warning("push lease %s not renewed for its whole duration (%s): giving the target up",
                                name, exc.message)
                    return
                log.warning("push lease %s not renewed (%s): trying again", name, exc.message)
                continue
            if lease is None:
                log.warning("push lease %s lost to another instance", name)
                return
            held_until = asked + ttl_s

    async def _target_at(self, address: str) -> str:
        targets = await run_blocking(self.engine.targets.list, kind=KIND)
        found = next((t.id for t in targets if t.address == address), None)
        if found is None:
            raise NotFound(f"no push target with endpoint {address}")
        return found

    async def push_one(self, target: DeliveryTarget, reason: str, *, on_step: StepSink | None = None
                       ) -> TargetOutcome:
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
                                       "server_check": identity, "on_step": on_step, **self._client,
                                       **self._reconnect}
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
            step, status = (exc.step, exc.status) if isinstance(exc, PushError) else (None, type(exc).__name__)
            return TargetOutcome(target_id=target.id, address=target.address, reason=reason, ok=False, result="failed",
                                 error=error, step=step, status=status, first_contact_sha256=_first_contact(identity),
                                 seconds=round(time.perf_counter() - start, 3))
        serial = issued_serials[-1]
        outcome = TargetOutcome(target_id=target.id, address=target.address, reason=reason, ok=True,
                                result="delivered", serial=serial, trust_version=trust.version,
                                trust_list_applied=result.trust_list_applied,
                                first_contact_sha256=_first_contact(identity), seconds=0.0)
        if result.trust_list_applied is False:
            # The certificate went in; the trust list did not, though the PLC said Good: not delivered, due again.
            updated = await run_blocking(self.engine.targets.record_trust_list_not_applied, target.id, serial=serial,
                                         trust_version=trust.version, detail=result.not_applied_detail,
                                         actor=self._actor)
            outcome = outcome.model_copy(update={"ok": False, "result": "not_applied", "error": updated.last_error})
        else:
            await run_blocking(self.engine.targets.record_success, target.id, serial=serial,
                               trust_version=trust.version, actor=self._actor)
        return outcome.model_copy(update={"seconds": round(time.perf_counter() - start, 3)})

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
                async with asyncio.timeout(interval_s):  # not wait_for: it can swallow a cancel on 3.11
                    await stop.wait()


def _step_sink(on_step: Callable[[str, StepOutcome], None], target_id: str) -> StepSink:
    return lambda step: on_step(target_id, step)


def _first_contact(identity: TargetServerIdentity) -> str | None:
    pin = identity.first_contact
    return pin.fingerprint_sha256 if pin is not None else None
