"""Delivery targets: where the engine pushes certificates and trust lists itself (PLCs that cannot pull).

A target belongs to a registered owner and names an address and a credentials reference that only the
protocol front understands (for OPC UA push: the PLC's endpoint URL and the name of the admin account).
The engine keeps what was delivered (certificate serial, trust-list version) and when to try next, so a
rollout is idempotent, survives a restart, and retries unreachable targets with backoff. A target needs
delivery when it never got a certificate, when its certificate is revoked, superseded or inside the
renewal window, or when its group's trust list has a newer version than the one delivered. A target that
accepted a trust list but did not apply it (its read-back differs) holds its certificate but not that trust
list: it stays due, with the backoff of a failure, until a push finds the trust list applied.

A delivery hands credentials and trust to whatever answers at the address, so the engine also keeps what
identifies the target before it holds an engine certificate: a pin on the certificate it presents (its
factory self-signed one), given at registration, recorded at the first contact (trust on first use) or set
by an operator. The pin is released when an engine certificate is delivered; from then on the owner's engine
certificates identify it. How a presented certificate is checked against this is the protocol front's job.
"""

from __future__ import annotations

import builtins  # the class defines list(); annotations after it name the type this way
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, NoReturn

from pydantic import BaseModel

from trustlists import audit
from trustlists.clock import from_epoch, to_epoch
from trustlists.context import EngineContext
from trustlists.errors import AlreadyExists, InvalidInput, InvalidState, NotFound
from trustlists.models import DeliveryTarget, PinSource, TargetPin, TargetState
from trustlists.store.base import StoreReader, StoreWriter

__all__ = ["DeliveryPlan", "DeliveryTarget", "DeliveryTargets", "PinSource", "TargetPin", "TargetState"]

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)


# The reason prefix of a target whose certificate is current but whose trust list is not.
TRUST_LIST_ONLY = "trust list v"

# States whose next_attempt_at is a backoff: not pushed before it, unless forced or asked for by name.
_BACKING_OFF = frozenset({TargetState.RETRYING, TargetState.NOT_APPLIED})


class DeliveryPlan(BaseModel):
    """What a push run over a selection of targets has to do, each target with the reason it needs a delivery."""

    due: list[tuple[DeliveryTarget, str]]  # to push now
    waiting: list[tuple[DeliveryTarget, str]]  # need a push, but back off until their next_attempt_at
    current: list[DeliveryTarget]  # nothing to deliver


_HEX = frozenset("0123456789abcdef")


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint as lowercase hex; colons and spaces (as devices display it) are dropped."""
    text = value.strip().lower().replace(":", "").replace(" ", "")
    if len(text) != 64 or not set(text) <= _HEX:
        raise InvalidInput(f"a certificate fingerprint must be the 64 hex digits of a SHA-256 digest, got {value!r}",
                           reason="fingerprint_invalid")
    return text


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at an hour: an unreachable PLC is retried, not hammered."""
    exponent = min(max(attempts - 1, 0), 16)  # 2**16 * 30 s is far past the cap; bigger would overflow
    return min(BACKOFF_BASE * (2 ** exponent), BACKOFF_MAX)


class DeliveryTargets:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def add(self, *, owner_id: str, kind: str, address: str, credentials_ref: str, actor: str,
            pin_sha256: str | None = None) -> DeliveryTarget:
        """A new target; `pin_sha256` pins the certificate it must present until it holds an engine certificate
        (without it, the first contact pins what the target presents)."""
        now = self._ctx.clock()
        pin = None if pin_sha256 is None else _new_pin(pin_sha256, PinSource.REGISTERED, now, actor)
        with self._ctx.store.transaction() as tx:
            owner = tx.get_owner(owner_id)
            if tx.find_target(kind, address) is not None:
                raise AlreadyExists(f"{address} is already a {kind} target")
            target = DeliveryTarget(id=str(uuid.uuid4()), owner_id=owner.id, kind=kind, address=address,
                                    credentials_ref=credentials_ref, group=owner.group, site=owner.site,
                                    state=TargetState.PENDING, attempts=0, next_attempt_at=now, last_error=None,
                                    delivered_serial=None, delivered_trust_version=None, updated_at=now)
            tx.insert_target(target)
            details: dict[str, Any] = {"owner": owner.name, "kind": kind, "address": address}
            if pin is not None:
                _store_pin(tx, target.id, pin)
                details["pinned_sha256"] = pin.fingerprint_sha256
            audit.append(tx, actor=actor, action="target.add", subject=target.id, details=details)
        return target.model_copy(update={"pin": pin})

    def get(self, target_id: str) -> DeliveryTarget:
        """The target with its pin, as one consistent read."""
        with self._ctx.store.read() as tx:
            target = tx.get_target(target_id)
            pin = tx.get_target_pin(target_id) if target is not None else None
        if target is None:
            raise NotFound(f"no delivery target {target_id}")
        return target.model_copy(update={"pin": pin})

    def list(self, *, kind: str | None = None, group: str | None = None, site: str | None = None
             ) -> list[DeliveryTarget]:
        with self._ctx.store.read() as tx:
            pins = tx.list_target_pins()
            return [t.model_copy(update={"pin": pins.get(t.id)})
                    for t in tx.list_targets(kind=kind, group=group, site=site)]

    def pin_first_contact(self, target_id: str, fingerprint_sha256: str, *, actor: str) -> TargetPin:
        """Trust on first use: pin what the target presented, unless it already has a pin (returned unchanged;
        the caller compares). Refused once the target holds an engine certificate: then nothing else counts."""
        fingerprint = normalize_fingerprint(fingerprint_sha256)
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            target = tx.get_target(target_id) or _missing(target_id)
            existing = tx.get_target_pin(target_id)
            if existing is not None:
                return existing
            if target.delivered_serial is not None:
                raise InvalidState(f"{target.address} holds an engine certificate (serial {target.delivered_serial}); "
                                   "a first-contact pin does not apply", reason="pin_not_applicable")
            pin = _new_pin(fingerprint, PinSource.FIRST_CONTACT, now, actor)
            _store_pin(tx, target_id, pin)
            audit.append(tx, actor=actor, action="target.pin", subject=target_id,
                         details={"address": target.address, "sha256": fingerprint,
                                  "source": PinSource.FIRST_CONTACT.value})
        return pin

    def repin(self, target_id: str, fingerprint_sha256: str, *, actor: str) -> TargetPin:
        """An operator's pin (a reset or replaced device, a factory certificate that changed): it replaces any
        earlier pin and counts even after an engine certificate was delivered, until the next delivery."""
        fingerprint = normalize_fingerprint(fingerprint_sha256)
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            target = tx.get_target(target_id) or _missing(target_id)
            previous = tx.get_target_pin(target_id)
            pin = _new_pin(fingerprint, PinSource.OPERATOR, now, actor)
            _store_pin(tx, target_id, pin)
            # The refusals behind a backoff are what the operator just resolved: the target is due now.
            tx.update_target(target_id, state=target.state, attempts=target.attempts,
                             next_attempt_at=to_epoch(min(now, target.next_attempt_at)), last_error=target.last_error,
                             delivered_serial=target.delivered_serial,
                             delivered_trust_version=target.delivered_trust_version, updated_at=to_epoch(now))
            audit.append(tx, actor=actor, action="target.repin", subject=target_id,
                         details={"address": target.address, "sha256": fingerprint,
                                  "previous_sha256": previous.fingerprint_sha256 if previous else None})
        return pin

    @staticmethod
    def needs_certificate(reason: str) -> bool:
        """False when the target's certificate is fine and only a newer trust list has to go out."""
        return not reason.startswith(TRUST_LIST_ONLY)

    def needing_delivery(self, *, kind: str, group: str | None = None, site: str | None = None,
                         force: bool = False) -> builtins.list[tuple[DeliveryTarget, str]]:
        """Targets that need a push now, each with the reason; backing-off ones only once their backoff passed."""
        return self.plan(kind=kind, group=group, site=site, force=force).due

    def plan(self, *, kind: str, group: str | None = None, site: str | None = None,
             target_ids: Collection[str] | None = None, force: bool = False) -> DeliveryPlan:
        """The targets of a selection (all of `kind`, narrowed by group, site and ids), sorted by what they need.

        `force` makes every selected target due, up to date or backing off ("forced" when nothing else is due).
        Unknown `target_ids` raise NotFound.
        """
        now = self._ctx.clock()
        versions: dict[str, int] = {}
        plan = DeliveryPlan(due=[], waiting=[], current=[])
        with self._ctx.store.read() as tx:
            pinned = set(tx.list_target_pins())
            targets = [t for t in tx.list_targets(kind=kind, group=group, site=site)
                       if target_ids is None or t.id in target_ids]
            missing = set(target_ids or ()) - {t.id for t in targets}
            if missing:
                raise NotFound(f"no {kind} delivery target {', '.join(sorted(missing))}")
            for target in targets:
                reason = self._reason(tx, target, now, versions, pinned)
                if force:
                    plan.due.append((target, reason or "forced"))
                elif reason is None:
                    plan.current.append(target)
                elif target.state in _BACKING_OFF and target.next_attempt_at > now:
                    plan.waiting.append((target, reason))
                else:
                    plan.due.append((target, reason))
        return plan

    def _reason(self, tx: StoreReader, target: DeliveryTarget, now: datetime, versions: dict[str, int],
                pinned: set[str]) -> str | None:
        if target.delivered_serial is None:
            return "no certificate delivered yet"
        if target.id in pinned:
            # Pins are released on delivery: this one is an operator's, for a device that was reset or replaced
            # and presents a certificate the engine did not issue. It needs a certificate, not only a trust list.
            return "re-pinned: the device needs a certificate"
        try:
            cert = tx.get_certificate(target.delivered_serial, with_der=False)
        except NotFound:
            return "delivered certificate unknown"
        if cert.revoked_at is not None:
            return "delivered certificate revoked"
        if cert.superseded_by is not None:
            return "delivered certificate superseded"
        window = timedelta(days=self._ctx.config.group(target.group).renewal_window_days)
        if cert.not_after - window <= now:
            return "certificate inside its renewal window"
        if target.group not in versions:
            latest = tx.latest_trust_version(target.group)
            versions[target.group] = latest[0] if latest else 0
        if target.state is TargetState.NOT_APPLIED:
            # Its delivered_trust_version is the last one it applied; the one it accepted and dropped may be the
            # current version, so the version comparison below would not see it.
            return f"{TRUST_LIST_ONLY}{versions[target.group]} not applied by the target"
        if target.delivered_trust_version != versions[target.group]:
            return f"{TRUST_LIST_ONLY}{versions[target.group]} not delivered"
        return None

    def record_success(self, target_id: str, *, serial: str, trust_version: int, actor: str) -> DeliveryTarget:
        """The target holds certificate `serial` and applied trust list `trust_version`."""
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            target = tx.get_target(target_id) or _missing(target_id)
            cert = tx.get_certificate(serial, with_der=False)
            renew_at = cert.not_after - timedelta(days=self._ctx.config.group(target.group).renewal_window_days)
            tx.update_target(target_id, state=TargetState.DELIVERED, attempts=0,
                             next_attempt_at=to_epoch(max(renew_at, now)), last_error=None, delivered_serial=serial,
                             delivered_trust_version=trust_version, updated_at=to_epoch(now))
            details = _record_certificate(tx, target, serial, cert.owner_id)
            audit.append(tx, actor=actor, action="target.delivered", subject=target_id,
                         details={**details, "trust_version": trust_version})
        return self.get(target_id)

    def record_trust_list_not_applied(self, target_id: str, *, serial: str, trust_version: int, detail: str,
                                      actor: str) -> DeliveryTarget:
        """The target holds certificate `serial`, but reads back another trust list than `trust_version`, which it
        accepted: it keeps the trust list it applied last and is due again after a backoff, as after a failure
        (a target that never applies what it is sent is not pushed to in a loop)."""
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            target = tx.get_target(target_id) or _missing(target_id)
            cert = tx.get_certificate(serial, with_der=False)
            attempts = target.attempts + 1
            problem = f"trust list v{trust_version} written but not applied: {detail}"[:500]
            tx.update_target(target_id, state=TargetState.NOT_APPLIED, attempts=attempts,
                             next_attempt_at=to_epoch(now + backoff(attempts)), last_error=problem,
                             delivered_serial=serial, delivered_trust_version=target.delivered_trust_version,
                             updated_at=to_epoch(now))
            details = _record_certificate(tx, target, serial, cert.owner_id)
            audit.append(tx, actor=actor, action="target.trust_list_not_applied", subject=target_id,
                         details={**details, "trust_version": trust_version, "attempt": attempts, "detail": problem})
        return self.get(target_id)

    def record_failure(self, target_id: str, *, error: str, actor: str) -> DeliveryTarget:
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            target = tx.get_target(target_id) or _missing(target_id)
            attempts = target.attempts + 1
            tx.update_target(target_id, state=TargetState.RETRYING, attempts=attempts,
                             next_attempt_at=to_epoch(now + backoff(attempts)), last_error=error[:500],
                             delivered_serial=target.delivered_serial,
                             delivered_trust_version=target.delivered_trust_version, updated_at=to_epoch(now))
            audit.append(tx, actor=actor, action="target.failed", subject=target_id,
                         details={"address": target.address, "attempt": attempts, "error": error[:500]})
        return self.get(target_id)


def _record_certificate(tx: StoreWriter, target: DeliveryTarget, serial: str, cert_owner_id: str | None
                        ) -> dict[str, Any]:
    """The target presents certificate `serial` now: the inventory says so. Returns the details for the audit."""
    tx.mark_delivered(serial)
    if target.delivered_serial is not None and target.delivered_serial != serial:
        # The target now uses the new certificate: the one it replaced is superseded, not just older.
        tx.mark_superseded(target.delivered_serial, serial)
    details: dict[str, Any] = {"address": target.address, "serial": serial}
    released = tx.get_target_pin(target.id)
    if released is not None and cert_owner_id == target.owner_id and serial != target.delivered_serial:
        # It now holds an engine certificate of its own: the pinned (factory) certificate no longer counts.
        tx.delete_target_pin(target.id)
        details["pin_released"] = released.fingerprint_sha256
    return details


def _new_pin(fingerprint_sha256: str, source: PinSource, now: datetime, actor: str) -> TargetPin:
    # At the store's precision, so that the pin handed back equals the one read later.
    return TargetPin(fingerprint_sha256=normalize_fingerprint(fingerprint_sha256), source=source,
                     pinned_at=from_epoch(to_epoch(now)), pinned_by=actor)


def _store_pin(tx: StoreWriter, target_id: str, pin: TargetPin) -> None:
    tx.set_target_pin(target_id, pin)


def _missing(target_id: str) -> NoReturn:
    raise NotFound(f"no delivery target {target_id}")
