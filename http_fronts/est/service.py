"""The EST decisions (blocking: store, argon2, signing), kept apart from HTTP: who is asking, and what the engine
answers for them. Every rule is the engine's: `trustlists.device_auth` says who a TLS client certificate is (the
same code the MQTT brokers and enrollment service use), `engine.bootstrap.enroll` enrolls a bootstrap identity (the
allow-list and the pin), `engine.authority.renew` re-enrolls an operational one (revoked or superseded: refused),
`engine.requests` holds a request for an administrator's approval (a registrar's, and a device's own in a group
that requires approval: the device collects it with the same CSR and certificate, see `_through_approval`), and
csr_checks judge every CSR.

Replays: the SHA-256 of each CSR is remembered per device in the store (`engine.request_guard`, shared by every
process on the store) for `replay_window_days`; the same CSR again is refused (403), whatever the first answer
was. A registrar's request that waited for approval is delivered once to the same registrar with the same CSR
(200), and refused as a replay after that.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from http_fronts.est.settings import EstRegistrar, EstSettings
from trustlists.csr_checks import verify_csr_signature
from trustlists.der import common_name, load_csr
from trustlists.device_auth import AuthenticatedDevice, DeviceAuthenticator, Refusal
from trustlists.enums import RequestStatus
from trustlists.errors import (
    BootstrapRefused,
    CsrRejected,
    InvalidInput,
    InvalidState,
    KeyAccessError,
    NotFound,
    OtpkiError,
    RequestNotAdmitted,
    RequestNotComplete,
    StoreError,
)
from trustlists.models import IssuedCertificate, Owner, RequestKind
from trustlists.passwords import hash_password, verify_password
from trustlists.request_guard import RateLimit, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable

    from trustlists.engine import Engine

_log = logging.getLogger(__name__)

Operation = Literal["simpleenroll", "simplereenroll", "serverkeygen"]


@dataclass(frozen=True)
class Registrar:
    name: str

    @property
    def actor(self) -> str:
        return f"est-registrar:{self.name}"


@dataclass(frozen=True)
class Device:
    identity: AuthenticatedDevice
    certificate_der: bytes

    @property
    def actor(self) -> str:
        return f"est:{self.identity.owner.name}"


@dataclass(frozen=True)
class CertificateChain:
    """A TLS client certificate chain (leaf first, DER), not yet authenticated."""

    ders: list[bytes]


Client = Registrar | Device


@dataclass(frozen=True)
class Issued:
    certificate_der: bytes
    pkcs8_der: bytes | None = None  # server-generated key


@dataclass(frozen=True)
class Pending:
    request_id: str


@dataclass(frozen=True)
class Refused:
    status: int  # the HTTP status: 400 malformed, 401 credentials, 403 refused, 429 too many, 503 try later
    reason: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)


Outcome = Issued | Pending | Refused


class EstService:
    """One per router: the authenticators per group, the registrar accounts, the replay memory's scope."""

    def __init__(self, engine: Engine, settings: EstSettings) -> None:
        self._engine = engine
        self.settings = settings
        self.groups: dict[str | None, str] = {None: settings.default_group}
        self.groups.update(settings.labels)
        for group in set(self.groups.values()):
            engine.config.group(group)  # an unknown group is a configuration error, said at start
        self._auth = {g: DeviceAuthenticator(engine, g) for g in set(self.groups.values())}
        self._registrars = {r.name: r for r in settings.registrars}
        self._decoy: str | None = None
        self._limit = RateLimit(burst=settings.rate_burst, refill_per_s=settings.rate_refill_per_s)

    # -- who is asking ------------------------------------------------------------------------------------------

    def authenticate_device(self, group: str, chain: CertificateChain) -> Device | Refusal:
        outcome = self._auth[group].authenticate(chain.ders)
        if isinstance(outcome, Refusal):
            return outcome
        return Device(outcome, chain.ders[0])

    def authenticate_registrar(self, group: str, name: str, password: str) -> Registrar | None:
        """Blocking (argon2id). None for a wrong name, password or group; an unknown name costs a full hash too,
        so names cannot be told from timing."""
        account: EstRegistrar | None = self._registrars.get(name)
        if account is None:
            if self._decoy is None:
                self._decoy = hash_password("decoy")
            verify_password(password, self._decoy)
            return None
        if not verify_password(password, account.password_hash) or group not in account.groups:
            return None
        return Registrar(name)

    # -- certificates -------------------------------------------------------------------------------------------

    def ca_certificates(self, group: str) -> list[bytes]:
        """The group's live issuing CAs and every CA above them up to the root (the explicit trust anchor)."""
        now = self._engine.now()
        statuses = self._engine.ca_statuses()
        by_id = {s.record.id: s.record for s in statuses}
        out: dict[str, bytes] = {}
        for status in statuses:
            record = status.record
            if record.group != group or not status.live_at(now):
                continue
            current: str | None = record.id
            while current is not None and current in by_id:
                out.setdefault(current, by_id[current].certificate_der)
                current = by_id[current].parent_id
        return list(out.values())

    # -- enrollment ---------------------------------------------------------------------------------------------

    def enroll(self, operation: Operation, group: str, credential: Registrar | CertificateChain,
               csr_der: bytes) -> Outcome:
        """Blocking: authenticate a client certificate, judge one enrollment and answer it. Never raises for
        anything the client sent."""
        client: Client
        if isinstance(credential, CertificateChain):
            device = self.authenticate_device(group, credential)
            if isinstance(device, Refusal):
                who = _subject(credential.ders[0])
                return self.refuse_unauthenticated(f"est-client:{who[:200]}", group, operation, 403, device.reason,
                                                   f"the client certificate ({who}) is refused: {device.reason}: "
                                                   f"{device.detail}")
            client = device
        else:
            client = credential
        try:
            csr = load_csr(csr_der)
        except InvalidInput as exc:
            return self._refuse(client, None, group, operation, 400, exc.reason, exc.message)
        try:
            if operation == "serverkeygen":
                # The engine checks a CSR's signature when it signs from it; serverkeygen signs from no CSR, so the
                # CSR that names the device is checked here.
                verify_csr_signature(csr)
            if isinstance(client, Registrar):
                return self._for_registrar(operation, group, client, csr, csr_der)
            return self._for_device(operation, group, client, csr, csr_der)
        except (BootstrapRefused, CsrRejected, InvalidState, NotFound) as exc:
            owner = client.identity.owner.id if isinstance(client, Device) else None
            return self._refuse(client, owner, group, operation, 403, exc.reason, exc.message)
        except InvalidInput as exc:
            return self._refuse(client, None, group, operation, 400, exc.reason, exc.message)
        except (StoreError, KeyAccessError) as exc:
            _log.warning("EST %s: the engine cannot answer now: %s", operation, exc)
            return Refused(503, exc.reason, f"the CA cannot answer now ({exc.reason}); try again later",
                           {"Retry-After": str(self.settings.retry_after_s)})
        except OtpkiError as exc:
            return self._refuse(client, None, group, operation, 403, exc.reason, exc.message)

    def _for_device(self, operation: Operation, group: str, client: Device, csr: x509.CertificateSigningRequest,
                    csr_der: bytes) -> Outcome:
        identity = client.identity
        owner = identity.owner
        if identity.kind == "bootstrap" and operation == "simplereenroll":
            return self._refuse(client, owner.id, group, operation, 403, "not_enrolled",
                                "a bootstrap (IDevID) certificate enrolls with simpleenroll; simplereenroll takes the "
                                "device's current operational certificate")
        if identity.kind == "operational" and operation == "simpleenroll":
            return self._refuse(client, owner.id, group, operation, 403, "already_enrolled",
                                "this is an operational certificate: renew it with simplereenroll")
        if operation == "serverkeygen" and common_name(csr.subject) != owner.name:
            return self._refuse(client, owner.id, group, operation, 403, "identity_mismatch",
                                f"the CSR names {common_name(csr.subject)!r}, but the client certificate is "
                                f"{owner.name!r}'s")
        if not self._engine.config.group(group).auto_approve:
            return self._through_approval(operation, group, client, csr_der)
        refused, admit = self._admission(client, owner, group, operation, csr_der)
        if refused is not None:
            return refused
        actor = client.actor
        keygen = operation == "serverkeygen"
        try:
            if identity.kind == "bootstrap":
                issued = self._engine.bootstrap.enroll(owner_id=owner.id, credential=client.certificate_der,
                                                       actor=actor, csr=None if keygen else csr_der,
                                                       in_transaction=admit)
            else:
                issued = self._engine.authority.renew(f"{identity.serial:x}", actor=actor,
                                                      csr=None if keygen else csr_der, new_key=keygen,
                                                      in_transaction=admit)
        except RequestNotAdmitted as lost:  # the same CSR committed by another request meanwhile
            refused = self._verdict(client, owner, group, operation,
                                    "rate_limited" if lost.reason == "rate_limited" else "replay")
            assert refused is not None
            return refused
        return _issued(issued)

    def _through_approval(self, operation: Operation, group: str, client: Device, csr_der: bytes) -> Outcome:
        """RFC 7030 4.2.3 for a device of a group that requires approval: the first request is recorded and
        answered 202; the same request again (same CSR, same client certificate) is answered 202 while it waits,
        then with the certificate, issued once by the engine when the device is back (with its bootstrap pin or
        its renewal), and the same certificate on every later repeat; 403 after a rejection. A new CSR from the
        same certificate supersedes the open request (the engine expires it): a device that lost its key
        recovers without an operator clearing its old request first."""
        identity = client.identity
        owner = identity.owner
        requests = self._engine.requests
        new_key = operation == "serverkeygen"
        found = requests.for_device(owner.id, requester_fingerprint=identity.fingerprint, csr_bytes=csr_der,
                                    new_key=new_key)
        if found is None:
            refused, admit = self._admission(client, owner, group, operation, csr_der)
            if refused is not None:
                return refused
            try:
                req = requests.submit_for_device(owner.id, actor=client.actor, csr_bytes=csr_der, new_key=new_key,
                                                 requester_fingerprint=identity.fingerprint, in_transaction=admit)
            except RequestNotAdmitted as lost:
                # The same request sent twice at once: the other one recorded it, and this one is its repeat.
                found = requests.for_device(owner.id, requester_fingerprint=identity.fingerprint, csr_bytes=csr_der,
                                            new_key=new_key) if lost.reason == "replay" else None
                if found is None:
                    refused = self._verdict(client, owner, group, operation,
                                            "rate_limited" if lost.reason == "rate_limited" else "replay")
                    assert refused is not None
                    return refused
            else:
                return Pending(req.id)
        try:
            if identity.kind == "bootstrap":
                issued = requests.collect_for_device(found.id, owner_id=owner.id, actor=client.actor,
                                                     requester_fingerprint=identity.fingerprint,
                                                     bootstrap_credential=client.certificate_der)
            else:
                issued = requests.collect_for_device(found.id, owner_id=owner.id, actor=client.actor,
                                                     requester_fingerprint=identity.fingerprint,
                                                     renews=f"{identity.serial:x}")
        except RequestNotComplete:
            return Pending(found.id)
        return _issued(issued)

    def _for_registrar(self, operation: Operation, group: str, client: Registrar,
                       csr: x509.CertificateSigningRequest, csr_der: bytes) -> Outcome:
        if operation == "simplereenroll":
            return self._refuse(client, None, group, operation, 403, "registrar_reenroll",
                                "re-enrollment is by the device's own operational certificate, not by a registrar")
        name = common_name(csr.subject)
        owner = self._engine.registry.find(group, name=name) if name else None
        if owner is None or owner.unregistered:
            return self._refuse(client, None, group, operation, 403, "unknown_device",
                                f"the CSR names {name!r}, which is not a registered device of {group}")
        requests = self._engine.requests
        kind = RequestKind.NEW_KEY if operation == "serverkeygen" else RequestKind.CSR
        earlier = [r for r in requests.list(group=group)
                   if r.owner_id == owner.id and r.kind is kind and r.submitted_by == client.actor
                   and (kind is RequestKind.NEW_KEY or r.csr_der == csr.public_bytes(Encoding.DER))
                   and r.status in (RequestStatus.PENDING, RequestStatus.APPROVED, RequestStatus.ISSUED)]
        if kind is RequestKind.NEW_KEY:
            earlier = [r for r in earlier if r.status is not RequestStatus.ISSUED]
        if earlier:
            return self._collect(client, owner, group, operation, max(earlier, key=lambda r: r.submitted_at).id)
        refused = self._admit(client, owner, group, operation, csr_der)
        if refused is not None:
            return refused
        if kind is RequestKind.NEW_KEY:
            req = requests.submit_new_key(owner.id, actor=client.actor)
        else:
            req = requests.submit_csr(owner.id, csr_der, actor=client.actor)
        if req.status is RequestStatus.PENDING:
            return Pending(req.id)
        return self._collect(client, owner, group, operation, req.id)

    def _collect(self, client: Registrar, owner: Owner, group: str, operation: Operation,
                 request_id: str) -> Outcome:
        req = self._engine.requests.get(request_id)
        if req.status is RequestStatus.PENDING:
            return Pending(req.id)
        # Delivered once: the memory that says so is the store's, shared by every process.
        verdict = self._engine.request_guard.admit(f"est-delivery:{group}", owner.id, req.id,
                                                   expires_at=self._forget_at(), limit=self._limit)
        if verdict == "replay":
            return self._refuse(client, owner.id, group, operation, 403, "replay",
                                f"request {req.id} was answered already (certificate {req.serial}); a new "
                                "certificate needs a new CSR")
        if verdict == "rate_limited":
            return self._too_many(client, owner, group, operation)
        return _issued(self._engine.requests.finish(req.id, owner_id=owner.id, actor=client.actor))

    def _admit(self, client: Client, owner: Owner, group: str, operation: Operation,
               csr_der: bytes) -> Refused | None:
        digest = hashlib.sha256(csr_der).hexdigest()
        verdict = self._engine.request_guard.admit(f"est:{group}", owner.id, digest, expires_at=self._forget_at(),
                                                   limit=self._limit)
        return self._verdict(client, owner, group, operation, verdict)

    def _admission(self, client: Client, owner: Owner, group: str, operation: Operation, csr_der: bytes
                   ) -> tuple[Refused | None, Callable[..., None]]:
        """A read first, so a replay or a device over its budget costs no signature; and the hook that asks the same
        question again inside the issuing transaction, which settles it (two processes, one CSR: one commits)."""
        scope, digest = f"est:{group}", hashlib.sha256(csr_der).hexdigest()
        refused = self._verdict(client, owner, group, operation,
                                self._engine.request_guard.peek(scope, owner.id, digest, limit=self._limit))
        admit = self._engine.request_guard.admitting(scope, owner.id, digest, expires_at=self._forget_at(),
                                                     limit=self._limit)
        return refused, admit

    def _verdict(self, client: Client, owner: Owner, group: str, operation: Operation,
                 verdict: Verdict) -> Refused | None:
        if verdict == "replay":
            return self._refuse(client, owner.id, group, operation, 403, "replay",
                                "this CSR was submitted before and is never answered twice; a new certificate "
                                "needs a new CSR (a new key)")
        if verdict == "rate_limited":
            return self._too_many(client, owner, group, operation)
        return None

    def _too_many(self, client: Client, owner: Owner, group: str, operation: Operation) -> Refused:
        refused = self._refuse(client, owner.id, group, operation, 429, "rate_limited",
                               f"too many requests for {owner.name}; slow down")
        return Refused(refused.status, refused.reason, refused.text,
                       {"Retry-After": str(max(1, round(1 / self.settings.rate_refill_per_s)))})

    def _forget_at(self) -> datetime:
        return self._engine.now() + timedelta(days=self.settings.replay_window_days)

    # -- refusals -----------------------------------------------------------------------------------------------

    def refuse_unauthenticated(self, who: str, group: str, operation: str, status: int, reason: str,
                               text: str) -> Refused:
        """A refusal before anyone was authenticated (a wrong password, a foreign or revoked certificate)."""
        self._audit(who, None, group, operation, status, reason, text)
        return Refused(status, reason, text)

    def _refuse(self, client: Client, owner_id: str | None, group: str, operation: str, status: int, reason: str,
                text: str) -> Refused:
        self._audit(client.actor, owner_id, group, operation, status, reason, text)
        return Refused(status, reason, text)

    def _audit(self, actor: str, owner_id: str | None, group: str, operation: str, status: int, reason: str,
               text: str) -> None:
        _log.warning("EST %s refused (%s, %s): %s: %s", operation, actor, group, reason, text)
        try:
            self._engine.record_event(actor=actor, action="est.refuse", subject=owner_id or group,
                                      details={"operation": operation, "group": group, "status": status,
                                               "reason": reason, "message": text[:500]})
        except OtpkiError:  # the refusal stands; a store that cannot take the record is logged
            _log.exception("EST: could not audit a refusal")


def _issued(issued: IssuedCertificate) -> Issued:
    key = None
    if issued.private_key is not None:
        private = load_pem_private_key(issued.private_key, password=None)
        key = private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    return Issued(issued.certificate_der, key)


def _subject(der: bytes) -> str:
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return "unparseable certificate"
