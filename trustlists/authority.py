"""The certificate authority: issue, renew, revoke, keep CRLs fresh. The one place leaf certificates are signed.

Order of work for every issuance: check the request completely, load the CA key, sign outside any
database lock, then record certificate and audit record in one transaction; only a committed
certificate is returned. A serial clash (the store's primary key) simply means: sign again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from pydantic import BaseModel, Field

from trustlists import audit, names
from trustlists.certificate_builder import LeafFields, LeafProfile, builder_for, leaf_fields, leaf_signature_hash
from trustlists.context import EngineContext
from trustlists.csr_checks import (
    ApprovedRequest,
    build_server_keygen_request,
    check_csr,
    check_key,
    check_verified_csr,
    expected_uri,
    verify_csr_signature,
)
from trustlists.der import load_csr, sha256_hex, spki_sha256
from trustlists.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    NotFound,
    OtpkiError,
    PolicyViolation,
    UriMismatch,
)
from trustlists.hierarchy import Hierarchy, crl_policy, publish_crl
from trustlists.key_index import KeyClaim, ensure_complete, judge
from trustlists.keys.algorithms import fits_pkcs12, signature_hash
from trustlists.keys.pool import KeyPool
from trustlists.leaf_encoding import LeafEncoder
from trustlists.models import (
    CARecord,
    CertificateRecord,
    CrlRecord,
    IssuanceKind,
    IssuedCertificate,
    KeyType,
    Owner,
    RevocationReason,
)
from trustlists.registry import issuable_owner
from trustlists.serials import random_serial, serial_hex
from trustlists.store.base import StoreReader, StoreWriter
from trustlists.store.rows import NewCertificate
from trustlists.trustlist import TrustListManager

KeyFormat = Literal["pem", "pkcs12"]
# Runs inside the transaction that records a certificate, after it was inserted; raising rolls the issuance
# back (nothing is handed out). For decisions that must commit together with the certificate or not at all.
InTransaction = Callable[[StoreWriter, CertificateRecord], None]
# Shown (slot, certificate) of a batch's newly signed certificates before they are recorded.
BeforeCommit = Callable[[list[tuple[int, IssuedCertificate]]], None]


class CsrIssueRequest(BaseModel):
    """One CSR of a batch and whom it is for."""

    csr: bytes
    owner_id: str
    issuance: IssuanceKind = IssuanceKind.CSR
    delivered: bool = True


@dataclass(frozen=True)
class _Issuer:
    ca: CARecord
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    chain: list[bytes]


_IssuersByPlace = dict[tuple[str, str | None], _Issuer | OtpkiError]  # (group, site) -> issuer, or why none


class _Draft(NamedTuple):
    """A certificate for an approved request, ready to be signed: encoded by its issuer's template, or (what the
    template does not cover) as cryptography's builder."""

    request: ApprovedRequest
    owner: Owner
    issuer: _Issuer
    fields: LeafFields
    spki: bytes  # the DER SubjectPublicKeyInfo of the key it certifies
    tbs: bytes | None
    encoder: LeafEncoder | None
    at: datetime


@dataclass
class _Prepared:
    request: ApprovedRequest | None  # None once made portable (it holds key objects, which do not pickle)
    owner: Owner
    record: CertificateRecord
    der: bytes
    spki_sha256: str  # of the key the certificate certifies (the key index's entry)
    chain: list[bytes]
    supersedes: str | None
    details: dict[str, object]
    at: datetime

    def issued(self) -> IssuedCertificate:
        return IssuedCertificate(record=self.record, certificate_der=self.der, chain_der=self.chain)


@dataclass
class SignedBatch:
    """Certificates signed for a batch of approved requests, not recorded yet (`CertificateAuthority.sign_approved`),
    with the slots the key history already answered."""

    results: list[IssuedCertificate | OtpkiError | None]  # per slot: answered already (reuse, refusal), or None
    prepared: list[tuple[int, _Prepared]]  # (slot, signed certificate)
    keys: dict[int, KeyClaim]  # slot -> its key claim, checked again under the write lock (reuse mode)
    repeats: list[tuple[int, int]]  # (slot, earlier slot of the same owner and key)

    def portable(self) -> SignedBatch:
        """The batch without the key objects of its requests, so that it pickles (a worker process signs, the
        parent records)."""
        return SignedBatch(self.results, [(i, replace(p, request=None)) for i, p in self.prepared], self.keys,
                           self.repeats)


class CrlRefresh(BaseModel):
    published: list[CrlRecord] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)  # CA id -> why its CRL could not be signed


_SERIAL_ATTEMPTS = 5


class CertificateAuthority:
    def __init__(self, ctx: EngineContext, hierarchy: Hierarchy, trustlists: TrustListManager,
                 key_pool: KeyPool | None = None) -> None:
        self._ctx = ctx
        self._hierarchy = hierarchy
        self._trustlists = trustlists
        self._pool = key_pool or KeyPool()
        self._key_index_complete = False
        # (profile, CA key type, hash) -> the issuer's leaf template, or None where the builder signs
        self._encoders: dict[tuple[LeafProfile, KeyType, str], LeafEncoder | None] = {}

    # -- issuance ---------------------------------------------------------------------------------
    def issue_from_csr(self, csr_data: bytes, *, owner_id: str, actor: str,
                       issuance: IssuanceKind = IssuanceKind.CSR, delivered: bool = True,
                       supersedes: str | None = None, in_transaction: InTransaction | None = None
                       ) -> IssuedCertificate:
        csr = load_csr(csr_data)
        owner = self._owner(owner_id)
        policy = self._ctx.config.group(owner.group)
        request = check_csr(csr, policy, owner.group, owner, reserved=self._ctx.config.reserved_names)
        return self._sign_and_record(request, owner, issuance=issuance, delivered=delivered, actor=actor,
                                     supersedes=supersedes, in_transaction=in_transaction)

    def issue_with_new_key(self, *, owner_id: str, actor: str, key_type: KeyType | None = None,
                           key_format: KeyFormat = "pem", password: str | None = None,
                           subject_name: str | None = None, dns_names: list[str] | None = None,
                           ip_addresses: list[str] | None = None, supersedes: str | None = None,
                           issuance: IssuanceKind = IssuanceKind.SERVER_KEYGEN, delivered: bool = True,
                           in_transaction: InTransaction | None = None) -> IssuedCertificate:
        """Generate the key here (for devices that cannot) and hand it back encoded, never stored.

        `delivered=False` when the caller installs it later (a push) and marks it delivered on success.
        """
        check_key_format(key_format, password)  # before signing: never a certificate for a key we cannot hand out
        owner = self._owner(owner_id)
        policy = self._ctx.config.group(owner.group)
        key_type = key_type or policy.default_keygen_type
        if key_type not in policy.allowed_key_types:
            allowed = ", ".join(k.value for k in policy.allowed_key_types)
            raise PolicyViolation(f"key type {key_type.value} is not allowed in group {owner.group} "
                                  f"(allowed: {allowed})", reason="key_type_forbidden")
        key = self._pool.take(key_type)
        request = build_server_keygen_request(
            policy, owner.group, owner, self._ctx.config.organization, key.public_key(),
            subject_name=subject_name, dns_names=dns_names, ip_addresses=ip_addresses,
            reserved=self._ctx.config.reserved_names)
        issued = self._sign_and_record(request, owner, issuance=issuance, delivered=delivered, actor=actor,
                                       supersedes=supersedes, extra_audit={"server_keygen": key_type.value},
                                       in_transaction=in_transaction)
        encoded = encode_private_key(key, key_format, password, issued, owner.name)
        return issued.model_copy(update={"private_key": encoded, "private_key_format": key_format})

    def renew(self, serial: str, *, actor: str, csr: bytes | None = None, new_key: bool = False,
              key_type: KeyType | None = None, key_format: KeyFormat = "pem", password: str | None = None,
              in_transaction: InTransaction | None = None) -> IssuedCertificate:
        """A new certificate for the same owner; the old one is marked superseded (not revoked).

        `in_transaction` (with `csr` or `new_key`) runs inside the issuing transaction, as for `issue_from_csr`."""
        with self._ctx.store.read() as tx:
            old = tx.get_certificate(serial)
        if old.revoked_at is not None:
            raise InvalidState(f"certificate {serial} is revoked; issue a new one instead of renewing")
        if old.superseded_by is not None:
            raise InvalidState(f"certificate {serial} was already renewed by {old.superseded_by}")
        if old.owner_id is None:
            raise InvalidState(f"certificate {serial} has no registered owner to renew for")
        if csr is not None:
            return self.issue_from_csr(csr, owner_id=old.owner_id, actor=actor, issuance=IssuanceKind.RENEWAL,
                                       supersedes=serial, in_transaction=in_transaction)
        if new_key:
            return self.issue_with_new_key(owner_id=old.owner_id, actor=actor, key_type=key_type,
                                           key_format=key_format, password=password, supersedes=serial,
                                           issuance=IssuanceKind.RENEWAL, in_transaction=in_transaction)
        if in_transaction is not None:
            raise InvalidInput("a same-key renewal takes no in_transaction hook; pass a CSR or new_key")
        # Same key: re-certify the old public key, with names re-checked against today's registration.
        assert old.der is not None
        old_cert = x509.load_der_x509_certificate(old.der)
        owner = self._owner(old.owner_id)
        policy = self._ctx.config.group(owner.group)
        public_key = old_cert.public_key()
        kt = check_key(policy, owner.group, public_key)
        want_uri = expected_uri(policy, owner.group, owner)
        if policy.san.uri != "forbidden" and old.san_uri != want_uri:
            raise UriMismatch(f"the registered URI changed ({old.san_uri} -> {want_uri}); renew with a new CSR",
                              reason="uri_mismatch")
        try:
            san = old_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = san.get_values_for_type(x509.DNSName)
            ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            dns, ips = [], []
        # A name reserved since the old certificate was issued is not certified again for someone else.
        names.check_reserved_certificate(self._ctx.config.reserved_names, owner, old_cert.subject, [want_uri])
        request = ApprovedRequest(subject=old_cert.subject, public_key=public_key, key_type=kt,
                                  san_uri=want_uri, dns_names=dns, ip_addresses=ips)
        return self._sign_and_record(request, owner, issuance=IssuanceKind.RENEWAL, delivered=True, actor=actor,
                                     supersedes=serial)

    def issue_many(self, requests: Sequence[CsrIssueRequest], *, actor: str, reuse_active: bool = False
                   ) -> list[IssuedCertificate | OtpkiError]:
        """Issue for many CSRs with one durable commit: a factory batch or a burst of requests.

        Each request is checked on its own (a refusal is returned in its slot, the others go on); every
        certificate that is returned was committed, with its audit record, before this returns.

        `reuse_active`: a request whose key already has an active certificate for its owner gets that
        certificate back (`reused=True`) instead of a new one, and a key the history forbids is refused
        (trustlists.key_index.judge). The decision is taken again inside the recording transaction, so two
        processes issuing for the same CSRs at once end with one certificate per key, and neither fails.
        """
        if reuse_active and not self._key_index_complete:
            ensure_complete(self._ctx.store)
            self._key_index_complete = True
        results: list[IssuedCertificate | OtpkiError | None] = [None] * len(requests)
        # Each step runs over the whole batch before the next: signature checks, rules, drafts, signatures,
        # records. Interleaved per CSR, every signature check and signing pushes the Python code and data of the
        # other steps out of the CPU caches, and a certificate costs ~25 us more (bench/issuance_profile.py).
        # A slot still gets the first error of its own steps.
        owners, issuers = self._owners_and_issuers({req.owner_id for req in requests})
        loaded: list[tuple[int, CsrIssueRequest, Owner, x509.CertificateSigningRequest]] = []
        for i, req in enumerate(requests):
            owner = owners[req.owner_id]
            if isinstance(owner, OtpkiError):
                results[i] = owner
                continue
            try:
                loaded.append((i, req, owner, load_csr(req.csr)))
            except OtpkiError as exc:
                results[i] = exc
        verified = []
        for item in loaded:
            try:
                verify_csr_signature(item[3])
                verified.append(item)
            except OtpkiError as exc:
                results[item[0]] = exc
        checked: list[tuple[int, CsrIssueRequest, Owner, ApprovedRequest]] = []
        for i, req, owner, csr in verified:
            try:
                policy = self._ctx.config.group(owner.group)
                checked.append((i, req, owner, check_verified_csr(csr, policy, owner.group, owner,
                                                                  reserved=self._ctx.config.reserved_names)))
            except OtpkiError as exc:
                results[i] = exc
        self._issue_checked(checked, issuers, results, actor=actor, reuse_active=reuse_active)
        return [r for r in results if r is not None]

    def issue_approved(self, items: Sequence[tuple[CsrIssueRequest, Owner, ApprovedRequest]], *, actor: str,
                       reuse_active: bool = False, before_commit: BeforeCommit | None = None
                       ) -> list[IssuedCertificate | OtpkiError]:
        """`issue_many` for requests the caller has already loaded, verified and checked against their owner's
        group policy (`check_verified_csr` with that `Owner`, as it is stored): a factory batch checks each CSR
        once, before it registers the device. Everything from the key history on is `issue_many`'s.

        `before_commit` gets (slot, certificate) of everything newly signed, before the transaction that
        records it begins (a batch makes its files durable first); raising there records nothing. A slot's
        outcome may still differ from what it was shown: another process recorded a certificate for the same
        key meanwhile (handed back instead), or a serial clash made it sign again."""
        return self.record_signed(self.sign_approved(items, reuse_active=reuse_active), actor=actor,
                                  before_commit=before_commit)

    def sign_approved(self, items: Sequence[tuple[CsrIssueRequest, Owner, ApprovedRequest]], *,
                      reuse_active: bool = False) -> SignedBatch:
        """The first half of `issue_approved`: the key history read, the certificates signed, nothing written.
        `record_signed` records them (in another process too: `SignedBatch.portable`)."""
        if reuse_active and not self._key_index_complete:
            ensure_complete(self._ctx.store)
            self._key_index_complete = True
        results: list[IssuedCertificate | OtpkiError | None] = [None] * len(items)
        issuers = self._issuers_for([owner for _req, owner, _approved in items])
        return self._sign_checked([(i, req, owner, approved) for i, (req, owner, approved) in enumerate(items)],
                                  issuers, results, reuse_active=reuse_active)

    def record_signed(self, batch: SignedBatch, *, actor: str, before_commit: BeforeCommit | None = None
                      ) -> list[IssuedCertificate | OtpkiError]:
        """The second half of `issue_approved`: `before_commit`, then one durable commit. A portable batch has no
        requests to sign again with: a serial clash raises AlreadyExists (nothing recorded) for the caller to sign
        the batch again."""
        self._record_checked(batch, actor=actor, before_commit=before_commit)
        return [r for r in batch.results if r is not None]

    def _issue_checked(self, checked: list[tuple[int, CsrIssueRequest, Owner, ApprovedRequest]],
                       issuers: _IssuersByPlace, results: list[IssuedCertificate | OtpkiError | None], *, actor: str,
                       reuse_active: bool,
                       before_commit: BeforeCommit | None = None) -> None:
        """Sign and record checked requests; each slot of `results` gets its certificate or refusal."""
        batch = self._sign_checked(checked, issuers, results, reuse_active=reuse_active)
        self._record_checked(batch, actor=actor, before_commit=before_commit)

    def _sign_checked(self, checked: list[tuple[int, CsrIssueRequest, Owner, ApprovedRequest]],
                      issuers: _IssuersByPlace, results: list[IssuedCertificate | OtpkiError | None], *,
                      reuse_active: bool) -> SignedBatch:
        keys: dict[int, KeyClaim] = {}  # slot -> who asks for which key, reuse mode only
        repeats: list[tuple[int, int]] = []  # (slot, earlier slot with the same owner and key)
        if reuse_active:
            checked = self._settle_known_keys(checked, results, keys, repeats)
        drafts: list[tuple[int, CsrIssueRequest, _Draft]] = []
        for i, req, owner, request in checked:
            issuer = issuers[(owner.group, owner.site)]
            if isinstance(issuer, OtpkiError):
                results[i] = issuer  # only now: a request's own checks come first
                continue
            try:
                drafts.append((i, req, self._draft(request, owner, issuer)))
            except OtpkiError as exc:
                results[i] = exc
        signed: list[tuple[int, CsrIssueRequest, _Draft, bytes]] = []
        for i, req, draft in drafts:
            try:
                signed.append((i, req, draft, self._sign(draft)))
            except OtpkiError as exc:
                results[i] = exc
        prepared = [(i, self._record(draft, der, issuance=req.issuance, delivered=req.delivered))
                    for i, req, draft, der in signed]
        return SignedBatch(results, prepared, keys, repeats)

    def _record_checked(self, batch: SignedBatch, *, actor: str, before_commit: BeforeCommit | None) -> None:
        results, prepared, keys = batch.results, batch.prepared, batch.keys
        if prepared and before_commit is not None:
            before_commit([(i, p.issued()) for i, p in prepared])
        if prepared:
            try:
                outcomes = self._commit([p for _, p in prepared], actor=actor,
                                        keys=[keys.get(i) for i, _ in prepared])
                for (i, _p), outcome in zip(prepared, outcomes, strict=True):
                    results[i] = outcome
            except AlreadyExists:
                if any(p.request is None for _i, p in prepared):
                    raise  # portable: the caller signs again
                # A serial clash rolled the whole batch back: nothing was handed out. Record one by one,
                # each with its own retry.
                for i, p in prepared:
                    results[i] = self._commit_retrying(p, actor=actor, key=keys.get(i))
        for i, earlier in batch.repeats:
            first = results[earlier]
            results[i] = first.model_copy(update={"reused": True}) if isinstance(first, IssuedCertificate) else first

    def _owners_and_issuers(self, owner_ids: set[str]) -> tuple[dict[str, Owner | OtpkiError], _IssuersByPlace]:
        """Each owner of a batch and the issuer of each (group, site), or why there is none: once per batch, in one
        read (on PostgreSQL one transaction instead of one per lookup: each costs round trips to the server)."""
        owners: dict[str, Owner | OtpkiError] = {}
        issuers: _IssuersByPlace = {}
        with self._ctx.store.read():
            for owner_id in sorted(owner_ids):
                try:
                    owner = owners[owner_id] = self._owner(owner_id)
                except OtpkiError as exc:
                    owners[owner_id] = exc
                    continue
                where = (owner.group, owner.site)
                if where not in issuers:
                    try:
                        issuers[where] = self._issuer(owner)
                    except OtpkiError as exc:
                        issuers[where] = exc
        return owners, issuers

    def _issuers_for(self, owners: Sequence[Owner]) -> _IssuersByPlace:
        """The issuer of each (group, site) of `owners`, or why there is none, in one read."""
        issuers: _IssuersByPlace = {}
        with self._ctx.store.read():
            for owner in owners:
                where = (owner.group, owner.site)
                if where not in issuers:
                    try:
                        issuers[where] = self._issuer(owner)
                    except OtpkiError as exc:
                        issuers[where] = exc
        return issuers

    def _settle_known_keys(self, checked: list[tuple[int, CsrIssueRequest, Owner, ApprovedRequest]],
                           results: list[IssuedCertificate | OtpkiError | None], keys: dict[int, KeyClaim],
                           repeats: list[tuple[int, int]]) -> list[tuple[int, CsrIssueRequest, Owner, ApprovedRequest]]:
        """Answer from the inventory every request whose key it already decides (reuse or refusal), before
        anything is signed; returns the requests still to sign and fills `keys` for them."""
        first: dict[tuple[str, str], tuple[str, int]] = {}  # (group, SPKI hash) -> (owner id, first slot)
        unique: list[tuple[int, CsrIssueRequest, Owner, ApprovedRequest]] = []
        for item in checked:
            i, _req, owner, request = item
            claim = KeyClaim(owner.id, owner.group, spki_sha256(request.public_key))
            if (claim.group, claim.spki_sha256) in first:
                first_owner, earlier = first[(claim.group, claim.spki_sha256)]
                if first_owner == owner.id:
                    repeats.append((i, earlier))  # the same CSR twice: one certificate
                else:
                    results[i] = PolicyViolation("this key is also in the request for another owner in this "
                                                 "batch; every device needs its own key", reason="key_in_use")
                continue
            first[(claim.group, claim.spki_sha256)] = (owner.id, i)
            keys[i] = claim
            unique.append(item)
        with self._ctx.store.read() as tx:
            verdicts = self._key_verdicts(tx, [keys[i] for i, *_ in unique])
        to_sign = []
        for item, verdict in zip(unique, verdicts, strict=True):
            if verdict is None:
                to_sign.append(item)
            else:  # nothing to sign: handed back or refused
                results[item[0]] = verdict
                del keys[item[0]]
        return to_sign

    def _key_verdicts(self, tx: StoreReader, claims: Sequence[KeyClaim]) -> list[IssuedCertificate | OtpkiError | None]:
        """For each claim: the certificate to hand back, the refusal, or None to issue one."""
        histories = tx.certificates_for_keys([c.spki_sha256 for c in claims])
        now = self._ctx.clock()
        verdicts: list[IssuedCertificate | OtpkiError | None] = []
        for claim in claims:
            verdict: CertificateRecord | IssuedCertificate | OtpkiError | None = judge(
                histories.get(claim.spki_sha256, []), claim, now=now,
                issuer_revoked=lambda ca_id: self._ctx.ca_revoked(self._ctx.ca(ca_id)))
            if isinstance(verdict, CertificateRecord):
                assert verdict.der is not None
                verdict = IssuedCertificate(record=verdict, certificate_der=verdict.der, reused=True,
                                            chain_der=self._ctx.chain(self._ctx.ca(verdict.issuer_ca_id)))
            verdicts.append(verdict)
        return verdicts

    def _commit_retrying(self, p: _Prepared, *, actor: str, key: KeyClaim | None
                         ) -> IssuedCertificate | OtpkiError:
        for _attempt in range(_SERIAL_ATTEMPTS):
            try:
                return self._commit([p], actor=actor, keys=[key])[0]
            except AlreadyExists:  # serial clash: rolled back, sign again with a new serial
                assert p.request is not None, "a portable batch is signed again by its caller"
                p = self._prepare(p.request, p.owner, issuance=p.record.issuance, delivered=p.record.delivered,
                                  supersedes=p.supersedes)
            except OtpkiError as exc:
                return exc
        return AlreadyExists("could not find a free serial number after several attempts")

    def _sign_and_record(self, request: ApprovedRequest, owner: Owner, *, issuance: IssuanceKind,
                         delivered: bool, actor: str, supersedes: str | None = None,
                         extra_audit: dict[str, object] | None = None,
                         in_transaction: InTransaction | None = None) -> IssuedCertificate:
        for _attempt in range(_SERIAL_ATTEMPTS):
            prepared = self._prepare(request, owner, issuance=issuance, delivered=delivered, supersedes=supersedes,
                                     extra_audit=extra_audit)
            try:
                self._commit([prepared], actor=actor, in_transaction=in_transaction)
            except AlreadyExists:
                continue  # serial clash: the transaction rolled back, nothing was handed out
            return prepared.issued()
        raise AlreadyExists("could not find a free serial number after several attempts")

    def _prepare(self, request: ApprovedRequest, owner: Owner, *, issuance: IssuanceKind, delivered: bool,
                 supersedes: str | None = None, extra_audit: dict[str, object] | None = None) -> _Prepared:
        """Sign (outside any database lock) and build the record; nothing is stored yet."""
        draft = self._draft(request, owner, self._issuer(owner))
        return self._record(draft, self._sign(draft), issuance=issuance, delivered=delivered, supersedes=supersedes,
                            extra_audit=extra_audit)

    def _draft(self, request: ApprovedRequest, owner: Owner, issuer: _Issuer) -> _Draft:
        now = self._ctx.clock()
        config = self._ctx.config
        policy = config.group(owner.group)
        fields = leaf_fields(request=request, policy=policy, issuer_cert=issuer.cert, serial=random_serial(), now=now,
                             ocsp_url=config.ocsp_url() if policy.ocsp_url_in_certificates else None,
                             crl_url=config.crl_url(issuer.ca.id) if policy.crl_url_in_certificates else None)
        spki = request.public_key.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        encoder = self._encoder(fields.profile, issuer, self._hash_name(owner, request))
        tbs = None if encoder is None else encoder.tbs(fields, subject=request.subject, spki=spki,
                                                       san_uri=request.san_uri, dns_names=request.dns_names,
                                                       ip_addresses=request.ip_addresses)
        return _Draft(request, owner, issuer, fields, spki, tbs, encoder, now)

    def _hash_name(self, owner: Owner, request: ApprovedRequest) -> str:
        # The group's hash, raised to what the leaf's own key needs (SHA-384 for P-384).
        return leaf_signature_hash(self._ctx.config.group(owner.group).signature_hash, request.key_type)

    def _encoder(self, profile: LeafProfile, issuer: _Issuer, hash_name: str) -> LeafEncoder | None:
        """The issuer's template for leaves of `profile`, made on first use (it signs one throw-away certificate)."""
        key = (profile, issuer.ca.key_type, hash_name)
        try:
            return self._encoders[key]
        except KeyError:
            pass
        if len(self._encoders) >= 64:  # profiles of CAs and policies since replaced
            self._encoders.clear()
        encoder = self._encoders[key] = LeafEncoder.for_issuer(profile, issuer.key,
                                                               signature_hash(issuer.ca.key_type, hash_name))
        return encoder

    def _sign(self, draft: _Draft) -> bytes:
        """The signed certificate's DER."""
        key = draft.issuer.key
        if draft.tbs is not None:
            assert draft.encoder is not None
            return draft.encoder.sign(draft.tbs, key)
        algorithm = signature_hash(draft.issuer.ca.key_type, self._hash_name(draft.owner, draft.request))
        return builder_for(draft.fields, draft.request).sign(key, algorithm).public_bytes(serialization.Encoding.DER)

    def _record(self, draft: _Draft, der: bytes, *, issuance: IssuanceKind, delivered: bool,
                supersedes: str | None = None, extra_audit: dict[str, object] | None = None) -> _Prepared:
        """The certificate's record, audit details and key index entry, from the values it was signed with."""
        request, owner, issuer, fields, spki, _tbs, _encoder, now = draft
        ca = issuer.ca
        record = CertificateRecord(
            serial=serial_hex(fields.serial), issuer_ca_id=ca.id, owner_id=owner.id, group=owner.group,
            site=owner.site, subject=request.subject.rfc4514_string(), san_uri=request.san_uri,
            key_type=request.key_type, not_before=fields.not_before, not_after=fields.not_after,
            fingerprint_sha256=sha256_hex(der), issuance=issuance, issued_at=now, delivered=delivered, der=der)
        details: dict[str, object] = {
            "owner": owner.name, "group": owner.group, "ca": ca.id, "issuance": issuance.value,
            "subject": record.subject, "sha256": record.fingerprint_sha256, "not_after": record.not_after.isoformat()}
        if supersedes:
            details["supersedes"] = supersedes
        details.update(extra_audit or {})
        return _Prepared(request=request, owner=owner, record=record, der=der, spki_sha256=sha256_hex(spki),
                         chain=issuer.chain, supersedes=supersedes, details=details, at=now)

    def _issuer(self, owner: Owner) -> _Issuer:
        ca = self._hierarchy.issuing_ca_for(owner.group, owner.site)
        return _Issuer(ca=ca, cert=self._ctx.ca_certificate(ca), key=self._ctx.keys.signer(ca),
                       chain=self._ctx.chain(ca))

    def _commit(self, batch: list[_Prepared], *, actor: str,
                keys: Sequence[KeyClaim | None] | None = None,
                in_transaction: InTransaction | None = None) -> list[IssuedCertificate | OtpkiError]:
        """Record certificates and their audit records in one transaction (all or none).

        `keys[n]`: batch[n] is recorded only if, under the write lock, its key still
        has no certificate to hand back or refusal (another process may have issued for it since we signed);
        otherwise that outcome takes its place and the signed certificate is dropped, never handed out.
        """
        outcomes: list[IssuedCertificate | OtpkiError] = [p.issued() for p in batch]
        keyed = [(n, key) for n, key in enumerate(keys or []) if key is not None]
        # Pipelined (on PostgreSQL): the rows, the append lock and the chain head go out in one round trip (the head
        # is read once the lock is held), the audit rows with the commit in one more. The lock is held from the head
        # to the commit, and every round trip in between is time the other instances wait. Not with a caller's
        # in-transaction step: it may catch a store error of its own, which a pipeline reports later.
        with self._ctx.store.transaction(pipelined=in_transaction is None) as tx:
            settled: set[int] = set()
            for (n, _key), verdict in zip(keyed, self._key_verdicts(tx, [k for _n, k in keyed]), strict=True):
                if verdict is not None:
                    outcomes[n] = verdict
                    settled.add(n)
            fresh: list[_Prepared] = []
            for n, p in enumerate(batch):
                if n in settled:
                    continue
                if p.supersedes is not None:
                    current = tx.get_certificate(p.supersedes, with_der=False)
                    if current.superseded_by is not None or current.revoked_at is not None:
                        raise InvalidState(f"certificate {p.supersedes} was renewed or revoked meanwhile")
                fresh.append(p)
            tx.insert_certificates([NewCertificate(p.record, p.der, p.spki_sha256) for p in fresh])
            for p in fresh:
                if p.supersedes is not None:
                    tx.mark_superseded(p.supersedes, p.record.serial)
            audit.append_many(tx, [(actor, "certificate.issue", p.record.serial, p.details, p.at) for p in fresh])
            if in_transaction is not None:
                for p in fresh:
                    try:
                        in_transaction(tx, p.record)
                    except AlreadyExists as exc:
                        # Not a serial clash: the caller's own constraint. Retrying with a new serial would
                        # only hit it again.
                        raise InvalidState(exc.message, reason=exc.reason) from exc
        return outcomes

    def _owner(self, owner_id: str) -> Owner:
        return issuable_owner(self._ctx, owner_id)

    # -- revocation -------------------------------------------------------------------------------
    def revoke(self, serial: str, *, reason: RevocationReason, actor: str) -> CertificateRecord | CARecord:
        """Revoke a leaf or an issuing CA, publish the issuer's new CRL and bump the affected trust lists."""
        serial = serial.lower().removeprefix("0x").replace(":", "").lstrip("0")
        with self._ctx.store.read() as tx:
            try:
                target: CertificateRecord | CARecord = tx.get_certificate(serial, with_der=False)
            except NotFound:
                ca = next((ca for ca in tx.list_cas() if ca.serial == serial), None)
                if ca is None:
                    raise
                target = ca
        if isinstance(target, CARecord):
            if target.parent_id is None:
                raise InvalidState("a root CA cannot be revoked; retire it and distribute a new root")
            issuer_id = target.parent_id
            not_after = target.not_after
            groups = list(self._ctx.config.groups)
        else:
            if target.revoked_at is not None:
                raise InvalidState(f"certificate {serial} is already revoked "
                                   f"({target.revocation_reason.name.lower() if target.revocation_reason else ''})")
            issuer_id = target.issuer_ca_id
            not_after = target.not_after
            # A certificate of the root (its OCSP signer) has no group: the root's CRL is in every trust list.
            groups = [target.group] if target.group else list(self._ctx.config.groups)
        with self._ctx.store.read() as tx:
            issuer = tx.get_ca(issuer_id)
        if self._ctx.index.is_revoked(issuer_id, int(serial, 16)):
            raise InvalidState(f"{serial} is already revoked")
        issuer_key = self._ctx.keys.signer(issuer)  # fail before writing anything if the key is unusable
        crl_days, hash_name = self._crl_policy(issuer)
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            if isinstance(target, CertificateRecord):
                tx.mark_revoked(serial, now, reason)
            tx.insert_revocation(serial, issuer_id, now, reason, not_after)
            audit.append(tx, actor=actor, action="certificate.revoke" if isinstance(target, CertificateRecord)
                         else "ca.revoke", subject=serial, at=now,
                         details={"reason": reason.name.lower(), "issuer": issuer_id})
            publish_crl(self._ctx, tx, issuer, issuer_key, crl_days=crl_days, hash_name=hash_name, actor=actor)
            self._ctx.index.add(issuer_id, int(serial, 16), int(reason))
            try:
                self._trustlists.record_versions(tx, groups, f"revoked {serial}")
            except BaseException:
                self._ctx.index.refresh(tx)
                raise
        if isinstance(target, CARecord):
            with self._ctx.store.transaction() as tx:
                tx.set_ca_active(target.id, False)
            return target
        with self._ctx.store.read() as tx:
            return tx.get_certificate(serial, with_der=False)

    def _crl_policy(self, ca: CARecord) -> tuple[int, str]:
        return crl_policy(self._ctx.config, ca)

    def refresh_crls(self, *, actor: str, force: bool = False) -> CrlRefresh:
        """Re-sign every CRL that is within its refresh margin of nextUpdate (or all, with force).

        One CA whose key is unreachable (the offline root on a plant server) does not stop the others.
        """
        now = self._ctx.clock()
        result = CrlRefresh()
        for ca in self._hierarchy.list():
            if ca.not_after < now or self._ctx.ca_revoked(ca):
                continue
            margin = (self._ctx.config.root.crl_refresh_margin_days if ca.parent_id is None
                      else self._ctx.config.group(ca.group or "").crl_refresh_margin_days)
            with self._ctx.store.read() as tx:
                latest = tx.latest_crl(ca.id)
            if not force and latest is not None and latest.next_update - timedelta(days=margin) > now:
                continue
            try:
                key = self._ctx.keys.signer(ca)
            except OtpkiError as exc:
                result.failed[ca.id] = exc.message
                continue
            crl_days, hash_name = self._crl_policy(ca)
            with self._ctx.store.transaction() as tx:
                result.published.append(publish_crl(self._ctx, tx, ca, key, crl_days=crl_days, hash_name=hash_name,
                                                    actor=actor))
                groups = list(self._ctx.config.groups) if ca.parent_id is None else [ca.group or ""]
                self._trustlists.record_versions(tx, groups, f"CRL of {ca.id} refreshed")
        return result

    def mark_delivered(self, serial: str, *, actor: str) -> bool:
        """A certificate issued in a batch was seen in the field (presented in a handshake, installed)."""
        with self._ctx.store.transaction() as tx:
            changed = tx.mark_delivered(serial)
            if changed:
                audit.append(tx, actor=actor, action="certificate.delivered", subject=serial)
        return changed


def check_key_format(key_format: str, password: str | None) -> None:
    """The encodings a server-generated key can be handed out in."""
    if key_format not in ("pem", "pkcs12"):
        raise InvalidInput(f"private key format must be 'pem' or 'pkcs12', not {key_format!r}")
    if key_format == "pkcs12" and not password:
        raise InvalidInput("a PKCS#12 file needs a password (it carries the private key)")


def encode_private_key(key: CertificateIssuerPrivateKeyTypes, key_format: KeyFormat, password: str | None,
                       issued: IssuedCertificate, friendly_name: str) -> bytes:
    secret = password.encode() if password else None
    if key_format == "pem":
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption())
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    if not secret:
        raise InvalidInput("a PKCS#12 file needs a password (it carries the private key)")
    if not fits_pkcs12(key):
        raise InvalidInput(f"a {type(key).__name__} cannot be put in a PKCS#12 file")
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    cas = [x509.load_der_x509_certificate(d) for d in issued.chain_der]
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode(), key, cert, cas, serialization.BestAvailableEncryption(secret))
