"""Certificate requests that wait for an administrator's approval (the pull model of a certificate manager).

A registered owner submits a request, from a CSR or for a key the server generates; it gets a request id
back and later asks for the result with `finish`. A group whose policy has `auto_approve = true` decides at
once; otherwise the request stays `pending` until an administrator calls `approve` or `reject`.

    req = engine.requests.submit_csr(owner.id, csr_der, actor="gds", requester_fingerprint=fp)
    engine.requests.finish(req.id, owner_id=owner.id)    # RequestNotComplete while pending
    engine.requests.approve(req.id, actor="alice")       # issues (CSR requests)
    engine.requests.finish(req.id, owner_id=owner.id)    # -> IssuedCertificate

Submission checks everything issuance checks (the CSR against policy and registration, the names and key
type of a server-generated key), with the same typed errors; a refused request stores nothing. Approval
checks again, against the registration as it is then.

Statuses: pending -> approved -> issued, pending -> issued, pending|approved -> rejected | expired.
Every transition is audited in the transaction that makes it; issuing records the certificate, its
`certificate.issue` record, the request's new status and its `request.issue` record in one transaction,
so a request is never `issued` without its certificate nor a certificate issued twice for one request
(a compare-and-set on the status; a concurrent second approval or finish rolls back).

Private keys of server-generated key requests
    The key is generated at collection time: `approve` (and auto-approval) of a new-key request only
    records the decision (status `approved`); the owner's `finish` generates the key, signs the
    certificate, records it and returns certificate and encoded key in the same call. The key is never
    written to the store, encrypted or not, and not kept in memory after `finish` returns: there is
    nothing to leak from a backup and nothing to lose on a crash. A second `finish` of an issued new-key
    request is refused (`InvalidState`, reason "key_already_collected"); the certificate is in the inventory.

    This is also what makes approval work across processes: an administrator approves with the CLI, a
    different process from the server the owner talks to; a key generated in the CLI would die with it.

Passwords and restarts
    A PKCS#12 (or encrypted PEM) password is a secret of the requester: it is kept only in the memory of
    this `CertificateRequests` (the process that accepted the request), never in the store, which only
    records that there is one. If that process restarts before `finish`, the password is gone and the key
    cannot be delivered as asked: `finish` then marks the request `expired` (audited) and raises
    `RequestExpired` ("submit a new request"). No certificate was issued for it, so nothing is orphaned
    and nothing needs revoking. Requests for an unencrypted PEM key (the channel protects it) and CSR
    requests need no secret and survive restarts.

Requests a device collects itself (RequestKind.DEVICE_CSR, and NEW_KEY from `submit_for_device`)
    EST enrolls a device that authenticates with its own certificate: its IDevID (first enrollment, which pins
    the device to it) or its operational certificate (a renewal, which supersedes it). In a group that requires
    approval, `submit_for_device` records the request with the client certificate's fingerprint; `approve` only
    records the decision; `collect_for_device`, called when the device asks again with the same CSR and the same
    certificate, issues the certificate together with the pin or the renewal, in one transaction, once. Every
    later ask gets the same certificate back. Issuing at the device's return, not at approval, is what lets the
    pin commit with the certificate (the IDevID itself is presented then; the store never held it), and it issues
    only to a device whose credential still authenticates at that moment. A device has one open request: a new
    CSR from the same certificate expires the older open ones (reason "superseded by ...").

Errors of `finish`: `RequestNotFound` (a `NotFound`) for an unknown id *and* for another owner's request
(the same message, so ids cannot be probed), `RequestNotComplete` while pending, `RequestRejected` and
`RequestExpired` (both `InvalidState`). The requester's client-certificate SHA-256 fingerprint is stored
with the request; a front that requires "finish from the same client certificate" passes it to `finish`.
"""

from __future__ import annotations

import builtins  # the class defines list(); annotations after it name the type this way
import functools
import threading
import uuid
from collections.abc import Callable
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from trustlists import audit
from trustlists.authority import CertificateAuthority, InTransaction, KeyFormat, check_key_format, encode_private_key
from trustlists.bootstrap import Bootstrap
from trustlists.clock import to_epoch
from trustlists.context import EngineContext
from trustlists.csr_checks import ApprovedRequest, build_server_keygen_request, check_csr
from trustlists.der import load_csr
from trustlists.enums import RequestStatus as RequestStatus  # exported here with the request model
from trustlists.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    PolicyViolation,
    RequestAlreadyDecided,
    RequestExpired,
    RequestNotComplete,
    RequestNotFound,
    RequestRejected,
)
from trustlists.keys.algorithms import generate_private_key
from trustlists.keys.pool import KeyPool
from trustlists.models import CertificateRequest as CertificateRequest  # exported here, where it is made
from trustlists.models import IssuanceKind, IssuedCertificate, KeyType, Owner
from trustlists.models import RequestKind as RequestKind
from trustlists.registry import issuable_owner
from trustlists.store.base import StoreReader, StoreWriter
from trustlists.store.rows import NewCertificate

AUTO_APPROVER = "auto-approve"  # decided_by of requests approved by the group policy
_SERIAL_ATTEMPTS = 5


class CertificateRequests:
    def __init__(self, ctx: EngineContext, authority: CertificateAuthority, bootstrap: Bootstrap,
                 key_pool: KeyPool | None = None) -> None:
        self._ctx = ctx
        self._authority = authority
        self._bootstrap = bootstrap
        self._pool = key_pool or KeyPool()
        self._passwords: dict[str, str] = {}  # request id -> key password, memory only (see module docstring)
        self._lock = threading.Lock()

    # -- submission -------------------------------------------------------------------------------
    def submit_csr(self, owner_id: str, csr_bytes: bytes, *, actor: str,
                   requester_fingerprint: str | None = None) -> CertificateRequest:
        """Check the CSR completely and record the request; with auto-approval, issue it right away."""
        csr = load_csr(csr_bytes)
        owner = self._owner(owner_id)
        policy = self._ctx.config.group(owner.group)
        approved = check_csr(csr, policy, owner.group, owner, reserved=self._ctx.config.reserved_names)
        now = self._ctx.clock()
        req = CertificateRequest(
            id=str(uuid.uuid4()), kind=RequestKind.CSR, owner_id=owner.id, group=owner.group, site=owner.site,
            status=RequestStatus.PENDING, csr_der=csr.public_bytes(serialization.Encoding.DER),
            requester_fingerprint=_fingerprint(requester_fingerprint), submitted_by=actor, submitted_at=now)
        if not policy.auto_approve:
            self._insert(req, actor=actor, auto_approved=False)
            return req
        req = req.model_copy(update={"decided_by": AUTO_APPROVER, "decided_at": now})
        issued = self._issue(req, owner, approved, actor=actor, insert=True,
                             before=[(actor, "request.submit", req.id, self._submit_details(req, owner, True)),
                                     (actor, "request.approve", req.id, {"by": AUTO_APPROVER})])
        return req.model_copy(update={"status": RequestStatus.ISSUED, "serial": issued.record.serial,
                                      "issued_at": issued.record.issued_at})

    def submit_new_key(self, owner_id: str, *, actor: str, key_type: KeyType | None = None,
                       key_format: KeyFormat = "pem", password: str | None = None,
                       subject_name: str | None = None, dns_names: list[str] | None = None,
                       ip_addresses: list[str] | None = None,
                       requester_fingerprint: str | None = None) -> CertificateRequest:
        """Record a request for a server-generated key, checked as issuance would check it.

        The key itself is generated when the owner collects the result (`finish`); with auto-approval the
        request is `approved` at once.
        """
        check_key_format(key_format, password)
        owner = self._owner(owner_id)
        policy = self._ctx.config.group(owner.group)
        key_type = key_type or policy.default_keygen_type
        now = self._ctx.clock()
        req = CertificateRequest(
            id=str(uuid.uuid4()), kind=RequestKind.NEW_KEY, owner_id=owner.id, group=owner.group, site=owner.site,
            status=RequestStatus.PENDING, key_type=key_type, key_format=key_format, has_password=bool(password),
            subject_name=subject_name, dns_names=None if dns_names is None else list(dns_names),
            ip_addresses=None if ip_addresses is None else list(ip_addresses),
            requester_fingerprint=_fingerprint(requester_fingerprint), submitted_by=actor, submitted_at=now)
        self._check_new_key(req, owner)
        if policy.auto_approve:
            req = req.model_copy(update={"status": RequestStatus.APPROVED, "decided_by": AUTO_APPROVER,
                                         "decided_at": now})
        if password:
            with self._lock:
                self._passwords[req.id] = password
        try:
            self._insert(req, actor=actor, auto_approved=policy.auto_approve)
        except BaseException:
            self._forget(req.id)
            raise
        return req

    def submit_for_device(self, owner_id: str, *, actor: str, requester_fingerprint: str, csr_bytes: bytes,
                          new_key: bool = False,
                          in_transaction: Callable[[StoreWriter, object], None] | None = None) -> CertificateRequest:
        """Record a device's own request to wait for approval (module docstring): its CSR (DEVICE_CSR), or with
        `new_key` a request for a server-generated key (NEW_KEY) that keeps the CSR naming the device, so the same
        request again finds it (`for_device`). Checked completely now, as `submit_csr` and `submit_new_key` check;
        never decided at once (the caller uses this for groups that require approval).

        The device's other open requests (pending or approved) from the same client certificate are expired in the
        same transaction, audited with the reason "superseded by <id>": a device that lost its key and made a new
        one must not wait for an operator to clear its old request, and an operator never approves a CSR the
        device no longer holds the key of. `in_transaction` runs last in that transaction (a front's replay
        memory); raising there rolls everything back.
        """
        fingerprint = _fingerprint(requester_fingerprint)
        if fingerprint is None:
            raise InvalidInput("a device's own request needs the fingerprint of its client certificate")
        csr = load_csr(csr_bytes)
        owner = self._owner(owner_id)
        policy = self._ctx.config.group(owner.group)
        now = self._ctx.clock()
        req = CertificateRequest(id=str(uuid.uuid4()), kind=RequestKind.DEVICE_CSR, owner_id=owner.id,
                                 group=owner.group, site=owner.site, status=RequestStatus.PENDING,
                                 csr_der=csr.public_bytes(serialization.Encoding.DER),
                                 requester_fingerprint=fingerprint, submitted_by=actor, submitted_at=now)
        if new_key:
            req = req.model_copy(update={"kind": RequestKind.NEW_KEY, "key_type": policy.default_keygen_type,
                                         "key_format": "pem"})
            self._check_new_key(req, owner)
        else:
            check_csr(csr, policy, owner.group, owner, reserved=self._ctx.config.reserved_names)
        why = f"superseded by request {req.id} (a new request from the same client certificate)"
        with self._ctx.store.transaction() as tx:
            # Rows first, then the audit chain: the order every decision on a request takes its locks in.
            superseded = [r.id for r in tx.list_cert_requests(owner_id=owner.id)
                          if r.requester_fingerprint == fingerprint and r.kind is not RequestKind.CSR
                          and r.status in (RequestStatus.PENDING, RequestStatus.APPROVED)
                          and tx.transition_cert_request(r.id, expected=[RequestStatus.PENDING, RequestStatus.APPROVED],
                                                         status=RequestStatus.EXPIRED, reason=why)]
            tx.insert_cert_request(req)
            details = {**self._submit_details(req, owner, False), "supersedes": superseded}
            audit.append_many(tx, [
                *[(actor, "request.expire", old, {"reason": why}, now) for old in superseded],
                (actor, "request.submit", req.id, details, now)])
            if in_transaction is not None:
                in_transaction(tx, req)
        return req

    def for_device(self, owner_id: str, *, requester_fingerprint: str, csr_bytes: bytes,
                   new_key: bool = False) -> CertificateRequest | None:
        """The device's latest own request (`submit_for_device`) with this CSR from this client certificate, in
        whatever status; None if there is none."""
        fingerprint = _fingerprint(requester_fingerprint)
        csr_der = load_csr(csr_bytes).public_bytes(serialization.Encoding.DER)
        kind = RequestKind.NEW_KEY if new_key else RequestKind.DEVICE_CSR
        with self._ctx.store.read() as tx:
            found = [r for r in tx.list_cert_requests(owner_id=owner_id)
                     if r.kind is kind and r.requester_fingerprint == fingerprint and r.csr_der == csr_der]
        return found[-1] if found else None

    # -- decisions --------------------------------------------------------------------------------
    def approve(self, request_id: str, *, actor: str) -> CertificateRequest:
        """Approve a pending request: a CSR request is issued now (status issued); a new-key request and a device's
        own CSR (DEVICE_CSR) are marked approved and issued when the owner (the device) collects them. Checks the
        request again first."""
        req = self.get(request_id)
        if req.status is not RequestStatus.PENDING:
            raise _already_decided(req, "approved")
        owner = self._owner(req.owner_id)
        now = self._ctx.clock()
        if req.kind is RequestKind.DEVICE_CSR:
            self._check_csr_request(req, owner)  # issued when the device collects it (collect_for_device)
        elif req.kind is RequestKind.CSR:
            approved = self._check_csr_request(req, owner)
            self._issue(req, owner, approved, actor=actor, expected=(RequestStatus.PENDING,), decided_by=actor,
                        deciding="approved",
                        before=[(actor, "request.approve", req.id, {"by": actor, "owner": owner.name,
                                                                     "group": owner.group, "kind": req.kind.value})])
            return self.get(request_id)
        else:
            self._check_new_key(req, owner)
        with self._ctx.store.transaction() as tx:
            # The request row first, then the audit chain: the order every decision takes its locks in.
            if not tx.transition_cert_request(req.id, expected=[RequestStatus.PENDING], status=RequestStatus.APPROVED,
                                              decided_by=actor, decided_at=to_epoch(now)):
                raise _already_decided(tx.get_cert_request(req.id), "approved")
            audit.append(tx, actor=actor, action="request.approve", subject=req.id, at=now,
                         details={"by": actor, "owner": owner.name, "group": owner.group, "kind": req.kind.value})
        return self.get(request_id)

    def reject(self, request_id: str, *, actor: str, reason: str) -> CertificateRequest:
        """Reject a pending (or approved, not yet issued) request; the owner's finish then says so."""
        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput("a rejection needs a reason (the requester is told it)")
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            # The request row first (a compare-and-set on its status), then the audit chain, as approve does.
            if not tx.transition_cert_request(request_id, expected=[RequestStatus.PENDING, RequestStatus.APPROVED],
                                              status=RequestStatus.REJECTED, decided_by=actor,
                                              decided_at=to_epoch(now), reason=reason):
                # RequestNotFound for an unknown id
                raise _already_decided(tx.get_cert_request(request_id), "rejected")
            audit.append(tx, actor=actor, action="request.reject", subject=request_id, at=now,
                         details={"reason": reason})
        self._forget(request_id)
        return self.get(request_id)

    # -- collection -------------------------------------------------------------------------------
    def finish(self, request_id: str, *, owner_id: str, requester_fingerprint: str | None = None,
               actor: str | None = None) -> IssuedCertificate:
        """The result of the owner's request: the certificate and chain (and, for a server-generated key,
        the encoded private key, handed out exactly once).

        `requester_fingerprint`, when given, must be the one the request was submitted with. `actor`
        (default: whoever submitted) is recorded when finishing issues the certificate.
        """
        req = self.get(request_id)  # RequestNotFound
        if req.owner_id != owner_id:  # the same answer as for an unknown id
            raise RequestNotFound(f"no certificate request with id {request_id!r}")
        given = _fingerprint(requester_fingerprint)
        if given is not None and req.requester_fingerprint is not None and given != req.requester_fingerprint:
            raise RequestNotFound(f"certificate request {request_id} was made with another client certificate",
                                  reason="requester_mismatch")
        if req.kind is RequestKind.DEVICE_CSR:
            raise InvalidState(f"certificate request {request_id} is collected by the device itself, with the "
                               "client certificate it was made with", reason="collected_by_device")
        actor = actor or req.submitted_by
        if req.status in (RequestStatus.PENDING, RequestStatus.APPROVED) and req.has_password \
                and not self._has_password(req.id):
            self._expire(req, "the key password was only held in memory by the process that accepted the "
                              "request, and that process restarted; submit a new request")
        if req.status in (RequestStatus.REJECTED, RequestStatus.EXPIRED, RequestStatus.ISSUED):
            self._forget(req.id)  # decided elsewhere (the CLI is another process): the password is of no more use
        if req.status is RequestStatus.PENDING:
            raise RequestNotComplete(f"certificate request {request_id} is waiting for an administrator's "
                                     "approval; ask again later")
        if req.status is RequestStatus.REJECTED:
            raise RequestRejected(f"certificate request {request_id} was rejected: {req.reason}")
        if req.status is RequestStatus.EXPIRED:
            raise RequestExpired(f"certificate request {request_id} expired ({req.reason})")
        if req.status is RequestStatus.ISSUED:
            return self._issued_result(req)
        return self._collect(req, actor=actor)

    def collect_for_device(self, request_id: str, *, owner_id: str, requester_fingerprint: str, actor: str,
                           bootstrap_credential: bytes | None = None, renews: str | None = None) -> IssuedCertificate:
        """The result of a device's own request (`submit_for_device`), asked by the device with the client
        certificate it made the request with (another certificate, or another owner: RequestNotFound).

        RequestNotComplete while pending, RequestRejected or RequestExpired after those decisions. Once approved,
        the certificate is issued now, once (a compare-and-set on the request's status), in one transaction with
        what the device's credential implies: `bootstrap_credential` (the IDevID it authenticated with, DER) pins
        the device to it and retires its other certificates, as `engine.bootstrap.enroll` does; `renews` (the
        serial of the operational certificate it authenticated with) is superseded, as `engine.authority.renew`
        does. Every later ask returns the same certificate; a server-generated key is handed out once only
        (InvalidState key_already_collected after that).
        """
        if (bootstrap_credential is None) == (renews is None):
            raise InvalidInput("a device collects with either its bootstrap certificate or the certificate it renews")
        req = self.get(request_id)
        if (req.owner_id != owner_id or req.kind is RequestKind.CSR or req.requester_fingerprint is None
                or req.requester_fingerprint != _fingerprint(requester_fingerprint)):
            raise RequestNotFound(f"no certificate request with id {request_id!r}")
        if req.status is RequestStatus.PENDING:
            raise RequestNotComplete(f"certificate request {request_id} is waiting for an administrator's "
                                     "approval; ask again later")
        if req.status in (RequestStatus.REJECTED, RequestStatus.EXPIRED):
            raise self._moved_on_from(req)
        if req.status is RequestStatus.ISSUED:
            return self._issued_result(req)
        owner = self._owner(req.owner_id)
        then: InTransaction | None = None
        if bootstrap_credential is not None:
            self._bootstrap.check_enrollment(owner.id, bootstrap_credential)
            then = self._bootstrap.recording(owner.id, bootstrap_credential, actor)
        else:
            assert renews is not None
            self._check_renewable(renews, owner)
        issuance = IssuanceKind.RENEWAL if renews is not None else None
        if req.kind is RequestKind.DEVICE_CSR:
            issued = self._issue(req, owner, self._check_csr_request(req, owner), actor=actor,
                                 expected=(RequestStatus.APPROVED,), supersedes=renews, then=then, issuance=issuance)
        else:
            assert req.key_type is not None
            key = self._pool.take(req.key_type)
            issued = self._issue(req, owner, self._check_new_key(req, owner, key), actor=actor,
                                 expected=(RequestStatus.APPROVED,), key=key, supersedes=renews, then=then,
                                 issuance=issuance)
        if bootstrap_credential is not None:
            self._bootstrap.refresh()
        return issued

    # -- queries ----------------------------------------------------------------------------------
    def get(self, request_id: str) -> CertificateRequest:
        with self._ctx.store.read() as tx:
            return tx.get_cert_request(request_id)

    def list(self, status: RequestStatus | str | None = None, group: str | None = None) -> list[CertificateRequest]:
        if status is not None:
            try:
                status = RequestStatus(status)
            except ValueError:
                names = ", ".join(s.value for s in RequestStatus)
                raise InvalidInput(f"unknown request status {status!r}; use one of: {names}") from None
        if group is not None:
            self._ctx.config.group(group)  # NotFound for an unknown group
        with self._ctx.store.read() as tx:
            return tx.list_cert_requests(status=RequestStatus(status) if status else None, group=group)

    # -- internals --------------------------------------------------------------------------------
    def _owner(self, owner_id: str) -> Owner:
        return issuable_owner(self._ctx, owner_id)

    def _check_renewable(self, serial: str, owner: Owner) -> None:
        """The certificate a device renews is its own and neither revoked nor renewed (checked again when the new
        one is recorded)."""
        with self._ctx.store.read() as tx:
            old = tx.get_certificate(serial, with_der=False)
        if old.owner_id != owner.id:
            raise InvalidState(f"certificate {serial} is not {owner.name}'s", reason="not_renewable")
        if old.revoked_at is not None or old.superseded_by is not None:
            raise InvalidState(f"certificate {serial} was revoked or renewed meanwhile", reason="not_renewable")

    @staticmethod
    def _moved_on_from(current: CertificateRequest) -> Exception:
        if current.status is RequestStatus.REJECTED:
            return RequestRejected(f"certificate request {current.id} was rejected: {current.reason}")
        return RequestExpired(f"certificate request {current.id} expired ({current.reason})")

    def _check_csr_request(self, req: CertificateRequest, owner: Owner) -> ApprovedRequest:
        assert req.csr_der is not None
        policy = self._ctx.config.group(owner.group)
        return check_csr(load_csr(req.csr_der), policy, owner.group, owner,
                         reserved=self._ctx.config.reserved_names)

    def _check_new_key(self, req: CertificateRequest, owner: Owner,
                       key: CertificateIssuerPrivateKeyTypes | None = None) -> ApprovedRequest:
        """The checks of server-side key generation; without `key`, with a stand-in public key of the type."""
        assert req.key_type is not None
        policy = self._ctx.config.group(owner.group)
        if req.key_type not in policy.allowed_key_types:
            allowed = ", ".join(k.value for k in policy.allowed_key_types)
            raise PolicyViolation(f"key type {req.key_type.value} is not allowed in group {owner.group} "
                                  f"(allowed: {allowed})", reason="key_type_forbidden")
        public_key = key.public_key() if key is not None else _probe_public_key(req.key_type)
        return build_server_keygen_request(
            policy, owner.group, owner, self._ctx.config.organization, public_key,
            subject_name=req.subject_name, dns_names=req.dns_names, ip_addresses=req.ip_addresses,
            reserved=self._ctx.config.reserved_names)

    def _submit_details(self, req: CertificateRequest, owner: Owner, auto_approved: bool) -> dict[str, object]:
        details: dict[str, object] = {"owner": owner.name, "owner_id": owner.id, "group": owner.group,
                                      "kind": req.kind.value, "requester": req.requester_fingerprint,
                                      "auto_approved": auto_approved}
        if req.kind is RequestKind.NEW_KEY:
            details.update({"key_type": req.key_type.value if req.key_type else None, "key_format": req.key_format})
        return details

    def _insert(self, req: CertificateRequest, *, actor: str, auto_approved: bool) -> None:
        owner = self._owner(req.owner_id)
        with self._ctx.store.transaction() as tx:
            tx.insert_cert_request(req)
            entries = [(actor, "request.submit", req.id, self._submit_details(req, owner, auto_approved),
                        req.submitted_at)]
            if auto_approved:
                entries.append((actor, "request.approve", req.id, {"by": AUTO_APPROVER}, req.submitted_at))
            audit.append_many(tx, entries)

    def _issue(self, req: CertificateRequest, owner: Owner, approved: ApprovedRequest, *, actor: str,
               insert: bool = False, expected: tuple[RequestStatus, ...] = (), decided_by: str | None = None,
               before: builtins.list[tuple[str, str, str, dict[str, object]]] | None = None,
               key: CertificateIssuerPrivateKeyTypes | None = None, password: str | None = None,
               deciding: str | None = None, supersedes: str | None = None, then: InTransaction | None = None,
               issuance: IssuanceKind | None = None) -> IssuedCertificate:
        """Sign outside any lock, then record the certificate and the request's new status together.

        `insert`: the request row is new (auto-approved submission); otherwise it must still be in one of
        `expected`. `before`: audit entries (actor, action, subject, details) that precede the issue's.
        `deciding`: this issue is an administrator's decision ("approved"); one made first by someone else is
        then RequestAlreadyDecided. `supersedes`: the certificate this one renews (marked superseded in the same
        transaction, refused if it was revoked or renewed meanwhile); `then`: a last step in the transaction (a
        bootstrap pin).

        The request's row is moved first in the transaction, before the certificate is recorded and the audit
        chain appended to: every decision on a request (approve, reject, expire, collect) locks the row first and
        the chain after it, so two of them at once wait for each other in one order (never a deadlock) and the
        later one finds the request decided.
        """
        kind = issuance or (IssuanceKind.SERVER_KEYGEN if req.kind is RequestKind.NEW_KEY else IssuanceKind.CSR)
        extra: dict[str, object] = {"request": req.id}
        if key is not None:
            extra["server_keygen"] = approved.key_type.value
        for _attempt in range(_SERIAL_ATTEMPTS):
            prepared = self._authority._prepare(approved, owner, issuance=kind, delivered=True, supersedes=supersedes,
                                                extra_audit=extra)
            issued = prepared.issued()
            if key is not None:
                # Encoded before anything is recorded: a certificate is never issued for a key we cannot hand out.
                fmt: KeyFormat = "pkcs12" if req.key_format == "pkcs12" else "pem"
                issued = issued.model_copy(update={
                    "private_key": encode_private_key(key, fmt, password, issued, owner.name),
                    "private_key_format": fmt})
            at = prepared.at
            serial = prepared.record.serial
            try:
                with self._ctx.store.transaction() as tx:
                    if not insert and not tx.claim_cert_request(req.id, expected=list(expected)):
                        raise (_already_decided(tx.get_cert_request(req.id), deciding) if deciding
                               else self._moved_on(tx, req.id))
                    tx.insert_certificates([NewCertificate(prepared.record, prepared.der, prepared.spki_sha256)])
                    if insert:
                        tx.insert_cert_request(req.model_copy(update={
                            "status": RequestStatus.ISSUED, "serial": serial, "issued_at": at}))
                    else:
                        # Claimed above: nobody can have moved it since (the check costs nothing).
                        if not tx.transition_cert_request(
                                req.id, expected=list(expected), status=RequestStatus.ISSUED, serial=serial,
                                issued_at=to_epoch(at), decided_by=decided_by,
                                decided_at=to_epoch(at) if decided_by else None):
                            raise self._moved_on(tx, req.id)
                    if supersedes is not None:
                        old = tx.get_certificate(supersedes, with_der=False)
                        if old.superseded_by is not None or old.revoked_at is not None:
                            raise InvalidState(f"certificate {supersedes} was renewed or revoked meanwhile",
                                               reason="not_renewable")
                        tx.mark_superseded(supersedes, serial)
                    audit.append_many(tx, [
                        *[(a, action, subject, details, at) for a, action, subject, details in before or []],
                        (actor, "certificate.issue", serial, prepared.details, at),
                        (actor, "request.issue", req.id, {"serial": serial, "owner": owner.name}, at)])
                    if then is not None:
                        then(tx, prepared.record)
            except AlreadyExists:
                continue  # serial clash: everything rolled back, nothing was handed out; sign again
            return issued
        raise AlreadyExists("could not find a free serial number after several attempts")

    def _collect(self, req: CertificateRequest, *, actor: str) -> IssuedCertificate:
        """Issue an approved request now, for its owner (server-generated keys are made here)."""
        owner = self._owner(req.owner_id)
        if req.kind is RequestKind.CSR:
            approved = self._check_csr_request(req, owner)
            return self._issue(req, owner, approved, actor=actor, expected=(RequestStatus.APPROVED,))
        assert req.key_type is not None
        password = self._password(req.id) if req.has_password else None
        key = self._pool.take(req.key_type)
        approved = self._check_new_key(req, owner, key)
        try:
            issued = self._issue(req, owner, approved, actor=actor, expected=(RequestStatus.APPROVED,), key=key,
                                 password=password)
        except InvalidState:
            self._forget(req.id)  # rejected, expired or collected meanwhile: the password is of no more use
            raise
        self._forget(req.id)
        return issued

    def _issued_result(self, req: CertificateRequest) -> IssuedCertificate:
        if req.kind is RequestKind.NEW_KEY:
            raise InvalidState(f"the key of certificate request {req.id} was already collected (certificate "
                               f"{req.serial}); it is handed out once", reason="key_already_collected")
        assert req.serial is not None
        with self._ctx.store.read() as tx:
            record = tx.get_certificate(req.serial)
        assert record.der is not None
        chain = self._ctx.chain(self._ctx.ca(record.issuer_ca_id))
        return IssuedCertificate(record=record, certificate_der=record.der, chain_der=chain)

    def _expire(self, req: CertificateRequest, why: str) -> NoReturn:
        """Mark a request that can no longer be completed as expired (audited), then say so."""
        now = self._ctx.clock()
        error: Exception = RequestExpired(f"certificate request {req.id} expired: {why}")
        with self._ctx.store.transaction() as tx:
            if tx.transition_cert_request(req.id, expected=[RequestStatus.PENDING, RequestStatus.APPROVED],
                                          status=RequestStatus.EXPIRED, reason=why):
                audit.append(tx, actor="otpki", action="request.expire", subject=req.id, at=now,
                             details={"reason": why})
            else:
                error = self._moved_on(tx, req.id)
        self._forget(req.id)
        raise error

    def _moved_on(self, tx: StoreReader, request_id: str) -> Exception:
        """The error for a request another writer moved on meanwhile (read inside the same transaction)."""
        current = tx.get_cert_request(request_id)
        if current.status is RequestStatus.REJECTED:
            return RequestRejected(f"certificate request {request_id} was rejected: {current.reason}")
        if current.status is RequestStatus.EXPIRED:
            return RequestExpired(f"certificate request {request_id} expired ({current.reason})")
        if current.status is RequestStatus.ISSUED and current.kind is RequestKind.NEW_KEY:
            return InvalidState(f"the key of certificate request {request_id} was already collected "
                                f"(certificate {current.serial}); it is handed out once",
                                reason="key_already_collected")
        return InvalidState(f"certificate request {request_id} is {current.status.value} now"
                            + (f" (certificate {current.serial})" if current.serial else ""))

    def _has_password(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._passwords

    def _password(self, request_id: str) -> str:
        with self._lock:
            password = self._passwords.get(request_id)
        if password is None:  # forgotten between the check in finish and here (a concurrent finish)
            raise RequestExpired(f"the key password of certificate request {request_id} is no longer held; "
                                 "submit a new request")
        return password

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._passwords.pop(request_id, None)


def _already_decided(current: CertificateRequest, wanted: str) -> RequestAlreadyDecided:
    """The error for an approval or rejection (`wanted`: "approved", "rejected") of a request that someone decided
    first: how, by whom, with what result."""
    by = f" by {current.decided_by}" if current.decided_by else ""
    result = (f"certificate {current.serial}" if current.serial
              else f"reason: {current.reason}" if current.reason else "")
    how = f"{current.status.value}{by}" + (f" ({result})" if result else "")
    tail = ("not pending: it cannot be approved" if wanted == "approved"
            else "it can no longer be rejected")
    return RequestAlreadyDecided(f"certificate request {current.id} was already {how}; {tail}")


@functools.cache
def _probe_public_key(key_type: KeyType) -> CertificatePublicKeyTypes:
    """A public key of the type, to run the key-generation checks at submission without making the real key
    (that is made when the owner collects it). Generated once per process and type; the private half is
    discarded at once."""
    return generate_private_key(key_type).public_key()


def _fingerprint(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip().lower().replace(":", "") or None
