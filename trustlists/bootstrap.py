"""Bootstrap identities: which factory certificate may enroll which device, once, and how an operator re-arms it.

A device leaves the factory with a bootstrap certificate: an IDevID (IEEE 802.1AR) signed by its manufacturer's
CA, or a self-signed factory certificate. The registration allow-lists it in `Owner.attributes["bootstrap"]`
(`BootstrapEntry`: a subject CN, for certificates whose chain anchors at a CA imported into the group's trust
list, or an exact SHA-256 fingerprint). Whoever first enrolls with an allow-listed certificate pins the device
to that exact certificate (its fingerprint, and its issuer for people to read): a different certificate with
the same CN, which anyone holding the manufacturer CA's key could make, is refused from then on. Enrolling
again with the pinned certificate (a factory reset lost the operational identity) issues a new operational
certificate that replaces every live one of the device: they are superseded by it and revoked (RFC 5280
reason superseded), in the same transaction that records it. `rearm` releases the pin (a replaced part).

Chain validation is the front's job (a broker's TLS layer, the MQTT DeviceGate, an EST server): this module
decides who a validated bootstrap certificate is, and whether it may enroll.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists import audit
from trustlists.authority import CertificateAuthority, InTransaction
from trustlists.bootstrap_allowlist import (
    ATTRIBUTE,
    ROLE_ATTRIBUTE,
    BootstrapEntry,
    allow_list,
    checked_attributes,
    common_name,
    parse_allow_list,
)
from trustlists.context import EngineContext
from trustlists.der import load_certificate, sha256_hex
from trustlists.errors import BootstrapRefused, InvalidState, NotFound
from trustlists.models import BootstrapPin, CertificateRecord, IssuedCertificate, KeyType, Owner, RevocationReason
from trustlists.registry import issuable_owner
from trustlists.store.base import StoreReader, StoreWriter

__all__ = ["Bootstrap", "BootstrapEntry"]


class _PinCache:
    """owner id -> pinned fingerprint, kept current from the change log by incremental reads."""

    def __init__(self) -> None:
        self._pins: dict[str, str] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def refresh(self, tx: StoreReader) -> None:
        with self._lock:
            for seq, owner_id, fingerprint in tx.bootstrap_pin_changes_since(self._seq):
                if fingerprint is None:
                    self._pins.pop(owner_id, None)
                else:
                    self._pins[owner_id] = fingerprint
                self._seq = seq

    def get(self, owner_id: str) -> str | None:
        return self._pins.get(owner_id)


class Bootstrap:
    """`engine.bootstrap`: the allow-list lookup, the pin, enrollment with a bootstrap certificate, rearm."""

    def __init__(self, ctx: EngineContext, authority: CertificateAuthority) -> None:
        self._ctx = ctx
        self._authority = authority
        self._cache = _PinCache()

    # -- who is it ----------------------------------------------------------------------------------------------

    def find_owner(self, group: str, *, subject_cn: str | None, fingerprint: str,
                   fingerprint_only: bool = False) -> Owner:
        """The one registered device of `group` that allow-lists this certificate.

        `fingerprint_only`: match only fingerprint entries (a self-signed certificate, whose CN anyone can
        choose). Raises BootstrapRefused(bootstrap_not_allowed) when no device, or more than one, lists it.
        """
        fingerprint = fingerprint.lower()
        with self._ctx.store.read() as tx:
            # The index narrows the group to the owners naming this CN or fingerprint; their allow-lists decide.
            owners = tx.owners_by_bootstrap(group, fingerprint=fingerprint,
                                            subject_cn=None if fingerprint_only else subject_cn)
        matches = [o for o in owners if not o.unregistered and any(
            e.matches(subject_cn, fingerprint, fingerprint_only=fingerprint_only) for e in allow_list(o))]
        if not matches:
            raise BootstrapRefused(f"no registered device of {group} lists this certificate (CN {subject_cn!r}, "
                                   f"sha256 {fingerprint[:16]}…) as its bootstrap identity",
                                   reason="bootstrap_not_allowed")
        if len(matches) > 1:
            # Two devices claiming one certificate: admitting either would let one act as the other.
            names = ", ".join(sorted(o.name for o in matches))
            raise BootstrapRefused(f"the bootstrap certificate is listed by more than one device ({names})",
                                   reason="bootstrap_not_allowed")
        return matches[0]

    def check_pin(self, owner: Owner, fingerprint: str) -> None:
        """Raise BootstrapRefused(bootstrap_pinned) unless the device is unpinned or pinned to this certificate.

        Reads the store (the truth) and brings this process's copy of the pins up to date on the way, so a
        broker that admits a session here also keeps admitting it in `admits_live`.
        """
        fingerprint = fingerprint.lower()
        with self._ctx.store.read() as tx:
            self._cache.refresh(tx)
            pin = tx.get_bootstrap_pin(owner.id)
            other = None if pin is not None else _held_elsewhere(tx, owner, fingerprint)
        if pin is not None and pin.fingerprint_sha256 != fingerprint:
            raise BootstrapRefused(f"{owner.name} enrolled with another bootstrap certificate (sha256 "
                                   f"{pin.fingerprint_sha256[:16]}…, issuer {pin.issuer}); after a replaced part, "
                                   f"re-arm it: otpki owners rearm {owner.group} {owner.name}",
                                   reason="bootstrap_pinned")
        if other is not None:
            raise BootstrapRefused(f"this bootstrap certificate already enrolled another device of {owner.group}",
                                   reason="bootstrap_pinned")

    def admits_live(self, owner_id: str, fingerprint: str) -> bool:
        """May a live session authenticated with this bootstrap certificate go on? A dict lookup, for event
        loops: answers from this process's copy of the pins, current as of the last `refresh` (the brokers'
        revocation watchers refresh it with `Engine.refresh_revocations`; pins set here are seen at once)."""
        pinned = self._cache.get(owner_id)
        return pinned is None or pinned == fingerprint

    def refresh(self) -> None:
        """Pick up pins other processes set or released."""
        with self._ctx.store.read() as tx:
            self._cache.refresh(tx)

    def pin(self, owner_id: str) -> BootstrapPin | None:
        with self._ctx.store.read() as tx:
            return tx.get_bootstrap_pin(owner_id)

    def pins(self, group: str | None = None) -> dict[str, BootstrapPin]:
        """owner id -> pin."""
        with self._ctx.store.read() as tx:
            return {p.owner_id: p for p in tx.list_bootstrap_pins(group)}

    def unanchored_fingerprints(self, group: str) -> list[tuple[Owner, str]]:
        """Fingerprint-only allow-list entries whose certificate is not itself imported into the group's trust list.

        A TLS front (a broker listener, EST) accepts a client certificate only if it chains to its trust list: a
        self-signed factory certificate listed by fingerprint alone is refused in the handshake, whatever the
        allow-list says, unless the operator imports it too. (An IDevID of an imported CA listed by fingerprint
        is fine; which one an entry is, the fingerprint does not tell, so callers say both.)
        """
        with self._ctx.store.read() as tx:
            owners = tx.list_owners(group)
            imported = {fp for _list, kind, fp, _der, _note in tx.list_external(group) if kind == "cert"}
        return [(o, e.sha256) for o in owners if not o.unregistered for e in allow_list(o)
                if e.sha256 is not None and e.sha256 not in imported]

    # -- enrollment -----------------------------------------------------------------------------------------------

    def enroll(self, *, owner_id: str, credential: bytes, actor: str, csr: bytes | None = None,
               key_type: KeyType | None = None, in_transaction: InTransaction | None = None) -> IssuedCertificate:
        """An operational certificate for a device that authenticated with bootstrap certificate `credential`
        (DER or PEM; its chain already validated by the caller): from `csr`, or with a server-generated key.

        First enrollment pins the device to `credential`; a later one (same certificate) replaces every live
        certificate of the device. Pin, new certificate and replacement commit together or not at all, so of two
        different certificates enrolling one device at the same moment, from any number of processes, exactly
        one wins. `in_transaction` runs last inside that transaction (a front's own bookkeeping, such as its replay
        memory); raising there rolls everything back.
        """
        cred = _Credential.of(credential)
        owner = self._check_enrollment(owner_id, cred)  # refuse before signing
        pin = self._recording(owner.id, cred, actor)  # the transaction decides for good

        def record(tx: StoreWriter, issued: CertificateRecord) -> None:
            pin(tx, issued)
            if in_transaction is not None:
                in_transaction(tx, issued)

        if csr is not None:
            result = self._authority.issue_from_csr(csr, owner_id=owner.id, actor=actor, in_transaction=record)
        else:
            result = self._authority.issue_with_new_key(owner_id=owner.id, actor=actor, key_type=key_type,
                                                        in_transaction=record)
        self.refresh()
        return result

    def check_enrollment(self, owner_id: str, credential: bytes) -> Owner:
        """The device, if bootstrap certificate `credential` may enroll it now (it lists the certificate, is not a
        service identity, and is unpinned or pinned to this certificate); BootstrapRefused otherwise. A read:
        `recording` decides again inside the issuing transaction."""
        return self._check_enrollment(owner_id, _Credential.of(credential))

    def _check_enrollment(self, owner_id: str, cred: _Credential) -> Owner:
        owner = issuable_owner(self._ctx, owner_id)
        if owner.attributes.get(ROLE_ATTRIBUTE) is not None:
            raise BootstrapRefused(f"{owner.name} is a service identity; it is never enrolled with a bootstrap "
                                   "certificate", reason="bootstrap_role")
        if not _lists(owner, cred):
            raise BootstrapRefused(f"{owner.name} does not list this bootstrap certificate",
                                   reason="bootstrap_not_allowed")
        self.check_pin(owner, cred.fingerprint)
        return owner

    def recording(self, owner_id: str, credential: bytes, actor: str) -> InTransaction:
        """An `in_transaction` step for an issue that enrolls the device with bootstrap certificate `credential`:
        pins the device to it (first time) and retires its other certificates, in the issuing transaction (also
        used by `engine.requests` when a device collects an approved request). Call `refresh` after the commit."""
        return self._recording(owner_id, _Credential.of(credential), actor)

    def _recording(self, owner_id: str, cred: _Credential, actor: str) -> InTransaction:
        def record(tx: StoreWriter, issued: CertificateRecord) -> None:
            self._record(tx, owner_id, cred, issued, actor)

        return record

    def _record(self, tx: StoreWriter, owner_id: str, cred: _Credential, issued: CertificateRecord,
                actor: str) -> None:
        """Inside the issuance transaction: pin (first time) or check the pin, then retire the old certificates.

        Everything is read again here: what was checked before signing may have changed meanwhile (another
        process pinned the device, an operator re-armed it with another allow-list or ended the registration).
        """
        cert, fingerprint = cred.cert, cred.fingerprint
        owner = tx.get_owner(owner_id)
        if owner.unregistered or not _lists(owner, cred):
            raise BootstrapRefused(f"{owner.name} no longer lists this bootstrap certificate",
                                   reason="bootstrap_not_allowed")
        pin = tx.get_bootstrap_pin(owner.id)
        if pin is None:
            if _held_elsewhere(tx, owner, fingerprint) is not None:
                raise BootstrapRefused(f"this bootstrap certificate already enrolled another device of {owner.group}",
                                       reason="bootstrap_pinned")
            stale = tx.find_bootstrap_pin(owner.group, fingerprint)
            if stale is not None:  # left by an unregistered device (see _held_elsewhere)
                tx.delete_bootstrap_pin(stale.owner_id)
            pin = BootstrapPin(owner_id=owner.id, group=owner.group, fingerprint_sha256=fingerprint,
                               subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                               not_after=cert.not_valid_after_utc, serial=issued.serial, pinned_at=issued.issued_at,
                               pinned_by=actor)
            tx.insert_bootstrap_pin(pin)
            action = "bootstrap.pin"
        elif pin.fingerprint_sha256 != fingerprint:
            raise BootstrapRefused(f"{owner.name} enrolled with another bootstrap certificate meanwhile",
                                   reason="bootstrap_pinned")
        else:
            action = "bootstrap.reenroll"
        replaced = self._retire(tx, owner, issued, actor)
        audit.append(tx, actor=actor, action=action, subject=owner.id, at=issued.issued_at,
                     details={"owner": owner.name, "group": owner.group, "sha256": fingerprint,
                              "subject": pin.subject, "issuer": pin.issuer, "serial": issued.serial,
                              "replaced": replaced})

    def _retire(self, tx: StoreWriter, owner: Owner, issued: CertificateRecord, actor: str) -> list[str]:
        """Every other certificate of the device that still authenticates: superseded by the new one, revoked."""
        now = issued.issued_at
        live = [c for c in tx.query_certificates(now=now, owner_id=owner.id)
                if c.serial != issued.serial and c.revoked_at is None and c.not_after >= now]
        for old in live:
            if old.superseded_by is None:
                tx.mark_superseded(old.serial, issued.serial)
            # Joins this transaction (the store nests): the CRL that lists it commits with the new certificate. The
            # in-memory revocation index learns it before the commit; should the commit fail, this process alone
            # goes on refusing a certificate that its device was replacing anyway (closed, not open).
            self._authority.revoke(old.serial, reason=RevocationReason.SUPERSEDED, actor=actor)
        return [c.serial for c in live]

    # -- the operator ---------------------------------------------------------------------------------------------

    def rearm(self, owner_id: str, *, actor: str,
              allow: Iterable[BootstrapEntry | dict[str, str]] | None = None) -> BootstrapPin | None:
        """Release the device's pin so that the next allow-listed bootstrap certificate can enroll it (a replaced
        part, a factory reset that made a new IDevID); with `allow`, replace the allow-list in the same step.

        Returns the released pin (None if the device was not pinned and only its allow-list changed). Raises
        NotFound for an unknown owner and InvalidState(not_pinned) when there is nothing to do.
        """
        entries = parse_allow_list(list(allow)) if allow is not None else None
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            owner = tx.get_owner(owner_id)
            if owner.unregistered:
                raise NotFound(f"{owner.name} was unregistered", reason="unknown_owner")
            pin = tx.get_bootstrap_pin(owner.id)
            if pin is None and entries is None:
                raise InvalidState(f"{owner.name} is not pinned to a bootstrap certificate; nothing to re-arm",
                                   reason="not_pinned")
            if pin is not None:
                tx.delete_bootstrap_pin(owner.id)
            if entries is not None:
                attributes = checked_attributes({**owner.attributes, ATTRIBUTE: [e.stored() for e in entries]})
                tx.update_owner(owner.model_copy(update={"attributes": attributes}))
            audit.append(tx, actor=actor, action="bootstrap.rearm", subject=owner.id, at=now,
                         details={"owner": owner.name, "group": owner.group,
                                  "released_sha256": pin.fingerprint_sha256 if pin else None,
                                  "allow_list": [e.stored() for e in entries] if entries is not None else None})
        self.refresh()
        return pin


@dataclass(frozen=True)
class _Credential:
    """A bootstrap certificate and what the allow-list compares, read once."""

    cert: x509.Certificate
    fingerprint: str
    cn: str | None
    self_signed: bool

    @classmethod
    def of(cls, credential: bytes) -> _Credential:
        cert = load_certificate(credential, "bootstrap certificate")
        subject = cert.subject
        return cls(cert, sha256_hex(cert.public_bytes(Encoding.DER)), common_name(cert), cert.issuer == subject)


def _lists(owner: Owner, cred: _Credential) -> bool:
    """Does the owner's allow-list name this certificate? A self-signed one chose its own CN: only its fingerprint
    counts."""
    return any(e.matches(cred.cn, cred.fingerprint, fingerprint_only=cred.self_signed) for e in allow_list(owner))


def _held_elsewhere(tx: StoreReader, owner: Owner, fingerprint: str) -> BootstrapPin | None:
    """The pin of another, still registered device of the group on this certificate (one device per IDevID).

    A pin left by an unregistered device holds nothing: the device is gone (and cannot be re-armed), so its
    certificate may enroll the registration that replaced it.
    """
    pin = tx.find_bootstrap_pin(owner.group, fingerprint)
    if pin is None or pin.owner_id == owner.id:
        return None
    if tx.get_owner(pin.owner_id).unregistered:
        return None
    return pin
