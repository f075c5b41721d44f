"""Is the server answering at a delivery target's address that target? Decided before anything is sent to it.

A push sends the PLC's SecurityAdmin password (encrypted to the certificate the endpoint presents) and gets
certificates issued for the target's owner from the CSRs the server makes. Whoever answers at the address (a
man in the middle, an impostor box, a swapped device) would get both. So the certificate the endpoint
presents in GetEndpoints must be one the engine expects for the target, checked before the secure channel
is opened:

1. the certificate pinned for the target (given at registration, set by an operator, or recorded at the
   first contact) is accepted as it is: a fingerprint comparison;
2. an engine-issued certificate is accepted only if it belongs to the target's owner (its inventory record,
   looked up by fingerprint, names that owner) and validates against the group's trust list with the
   engine's validator (chains to the group's CA, inside its validity, not revoked). An engine certificate
   of another owner is `server_identity_mismatch`;
3. any other certificate is refused, unless the target has no pin and no engine certificate yet: then it is
   trust on first use. What the endpoint presents now is pinned in the engine (audited) and reported
   (`first_contact`) so that the operator can compare the fingerprint with the one the PLC displays.

Pins are released when an engine certificate is delivered (trustlists.targets), so from then on only rule 2
lets a server in, until an operator re-pins a reset or replaced device.

One full decision per push: the reconnects after ApplyChanges only compare fingerprints with what was
accepted here and what was installed (client.expect_certificate), and the validator keeps the parsed
certificates and signature results of the peers it has seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opcua_gds.push.client import SERVER_IDENTITY, PushError, fingerprint
from opcua_gds.validation_status import status_name
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import InvalidState, NotFound
from trustlists.targets import DeliveryTarget, PinSource, TargetPin
from trustlists.validation import ValidationOptions

log = logging.getLogger(__name__)

UNTRUSTED = "BadCertificateUntrusted"
MISMATCH = "server_identity_mismatch"  # a valid engine certificate, but of another owner


@dataclass(frozen=True)
class Accepted:
    fingerprint: str
    how: str  # "pinned (registered)", "engine certificate 1a2b…", "first contact"
    first_contact: TargetPin | None = None


class TargetServerIdentity:
    """The `ServerCheck` of one delivery target; `accepted` tells what it let in (None before a connect)."""

    def __init__(self, engine: Engine, target_id: str, *, actor: str) -> None:
        self._engine = engine
        self._target_id = target_id
        self._actor = actor
        self.accepted: Accepted | None = None

    @property
    def first_contact(self) -> TargetPin | None:
        """The pin this check recorded at the target's first contact, if it did."""
        return self.accepted.first_contact if self.accepted is not None else None

    async def __call__(self, chain: list[bytes]) -> None:
        self.accepted = await run_blocking(self._decide, chain)
        if self.accepted.first_contact is not None:
            log.warning("server identity: %s pinned at first contact (trust on first use): SHA-256 %s",
                        self._target_id, self.accepted.fingerprint)

    def _decide(self, chain: list[bytes]) -> Accepted:
        if not chain:
            raise PushError(SERVER_IDENTITY, "BadCertificateInvalid", "the endpoint presents no certificate")
        presented = fingerprint(chain[0])
        target = self._engine.targets.get(self._target_id)
        if target.pin is not None and target.pin.fingerprint_sha256 == presented:
            return Accepted(presented, f"pinned ({target.pin.source.value})")
        record = self._engine.inventory.by_fingerprint(presented)
        if record is not None:
            return self._engine_certificate(target, chain, presented, record.owner_id, record.serial)
        if target.pin is not None:
            raise PushError(SERVER_IDENTITY, UNTRUSTED,
                            f"the endpoint presents certificate SHA-256 {presented}; {_describe_pin(target.pin)}. "
                            "If the PLC's certificate really changed, compare its fingerprint on the PLC and "
                            "re-pin the target (otpki targets repin)")
        if target.delivered_serial is not None:
            raise PushError(SERVER_IDENTITY, UNTRUSTED,
                            f"the target holds an engine certificate (serial {target.delivered_serial}), but the "
                            f"endpoint presents one the engine did not issue (SHA-256 {presented}). If the PLC was "
                            "reset or replaced, compare its fingerprint on the PLC and re-pin the target "
                            "(otpki targets repin)")
        return self._first_contact(target, presented)

    def _engine_certificate(self, target: DeliveryTarget, chain: list[bytes], presented: str,
                            owner_id: str | None, serial: str) -> Accepted:
        if owner_id != target.owner_id:
            raise PushError(SERVER_IDENTITY, MISMATCH,
                            f"the endpoint presents the engine certificate {serial} of {self._owner_name(owner_id)}, "
                            f"not one of {self._owner_name(target.owner_id)}")
        result = self._engine.validator(target.group).validate(chain, ValidationOptions(at=self._engine.now()))
        if not result.ok:
            raise PushError(SERVER_IDENTITY, status_name(result),
                            f"the endpoint presents the engine certificate {serial} of this target, but it does not "
                            f"validate: {result.reason}. An operator who has checked the PLC can re-pin it "
                            "(otpki targets repin)")
        return Accepted(presented, f"engine certificate {serial}")

    def _first_contact(self, target: DeliveryTarget, presented: str) -> Accepted:
        try:
            pin = self._engine.targets.pin_first_contact(target.id, presented, actor=self._actor)
        except InvalidState as exc:  # an engine certificate was delivered since the target was read
            raise PushError(SERVER_IDENTITY, UNTRUSTED, exc.message) from exc
        if pin.fingerprint_sha256 != presented:  # another process pinned something else first
            raise PushError(SERVER_IDENTITY, UNTRUSTED,
                            f"the endpoint presents certificate SHA-256 {presented}; {_describe_pin(pin)}")
        return Accepted(presented, "first contact", first_contact=pin)

    def _owner_name(self, owner_id: str | None) -> str:
        if owner_id is None:
            return "no registered owner"
        try:
            return repr(self._engine.registry.get(owner_id).name)
        except NotFound:
            return f"owner {owner_id}"


def _describe_pin(pin: TargetPin) -> str:
    how = {PinSource.REGISTERED: "at registration", PinSource.FIRST_CONTACT: "at the first contact",
           PinSource.OPERATOR: "by an operator"}[pin.source]
    return f"the target is pinned to SHA-256 {pin.fingerprint_sha256} ({how}, {pin.pinned_at:%Y-%m-%d %H:%M}Z)"


def display_fingerprint(sha256_hex: str) -> str:
    """AB:CD:... as devices and certificate viewers display a fingerprint."""
    text = sha256_hex.upper()
    return ":".join(text[i: i + 2] for i in range(0, len(text), 2))
