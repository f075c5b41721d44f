"""Delegated OCSP signers: one short-lived certificate per CA that signs the CA's OCSP responses (RFC 6960 4.2.2.2).

The CA's own key stays where it is (the root offline, an issuing CA's key on the HSM) and signs only this
certificate; the responder answers every request with the signer's key, created in the same backend as the CA's
(an encrypted file or the PKCS#11 token), under a key reference derived from the certificate's serial
(`ocsp-<serial>`). The certificate carries id-kp-OCSPSigning and id-pkix-ocsp-nocheck: clients do not check its
revocation, so its short validity ([pki.ocsp] signer_lifetime_days) is what limits a stolen key.

It is an ordinary certificate of the inventory (issuance `ocsp-signer`, no owner): listed, revocable and audited
like any other. Which one is current is the meta entry `ocsp_signer:<ca id>`, set in the transaction that records
it (and that marks its predecessor superseded), so no table scan finds it and every process agrees.

`ensure` creates missing signers and renews those close to their end, revoked or gone: the maintenance leader's
job (trustlists.maintenance), one CA at a time so an unreachable key (the offline root) stops only its own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, Field

from trustlists import audit
from trustlists.certificate_builder import BACKDATE, key_usage
from trustlists.context import EngineContext
from trustlists.der import sha256_hex, spki_sha256
from trustlists.errors import NotFound, OtpkiError
from trustlists.hierarchy import crl_policy
from trustlists.keys.algorithms import SignatureHash, signature_hash
from trustlists.models import CARecord, CertificateRecord, IssuanceKind, KeyType
from trustlists.policy import KeyUsageName
from trustlists.serials import random_serial, serial_hex
from trustlists.store.base import StoreReader
from trustlists.store.rows import NewCertificate

log = logging.getLogger(__name__)

AUDIT_ACTION = "ocsp_signer.issue"
_CN_MAX = 64  # RFC 5280 ub-common-name


def meta_key(ca_id: str) -> str:
    return f"ocsp_signer:{ca_id}"


def signer_key_ref(serial: str) -> str:
    """Where the signer's key is in its CA's backend: derived from the certificate, so nothing else records it."""
    return f"ocsp-{serial}"


@dataclass(frozen=True)
class OcspSigner:
    """A CA's current OCSP signer, ready to sign: its certificate and its key."""

    ca_id: str
    serial: int
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    key_type: KeyType
    algorithm: SignatureHash | None  # what `sign()` takes for the key: the CA's hash, None for Ed25519
    not_after: datetime


class OcspSignerRenewal(BaseModel):
    issued: list[CertificateRecord] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)  # CA id -> why no signer could be issued


class OcspSigners:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()  # one issuance per engine at a time: two would supersede each other
        self.generation = 0  # counts the signers this engine issued: its responder reloads when it moves

    # -- queries ----------------------------------------------------------------------------------
    def current_record(self, ca_id: str) -> CertificateRecord | None:
        """The CA's current signer certificate (with DER), None before the first one."""
        with self._ctx.store.read() as tx:
            return _current(tx, ca_id)

    def _recorded(self, serial: str) -> bool:
        with self._ctx.store.read() as tx:
            return _certificate(tx, serial) is not None

    def current_serial(self, ca_id: str) -> str | None:
        with self._ctx.store.read() as tx:
            return tx.get_meta(meta_key(ca_id))

    def load(self, ca_id: str) -> OcspSigner | None:
        """The CA's current signer with its key; None when it has none or it cannot sign now (revoked, expired)."""
        record = self.current_record(ca_id)
        if record is None or record.revoked_at is not None or record.not_after <= self._ctx.clock():
            return None
        assert record.der is not None
        ca = self._ctx.ca(ca_id)
        try:
            key = self._ctx.keys.load(ca.key_backend, signer_key_ref(record.serial))
        except OtpkiError:
            # The key is not here (a store restored without it, a token replaced): the next maintenance round
            # issues a new signer; until then the responder says tryLater.
            log.warning("OCSP signer %s of %s has no usable key", record.serial, ca_id, exc_info=True)
            return None
        return OcspSigner(ca_id=ca_id, serial=int(record.serial, 16),
                          certificate=x509.load_der_x509_certificate(record.der), key=key, key_type=record.key_type,
                          algorithm=signature_hash(record.key_type, crl_policy(self._ctx.config, ca)[1]),
                          not_after=record.not_after)

    def renewal_due(self, ca: CARecord, record: CertificateRecord | None, now: datetime) -> str | None:
        """Why the CA needs a new signer now, or None."""
        if record is None:
            return "missing"
        if record.revoked_at is not None:
            return "revoked"
        renew_before = timedelta(days=self._ctx.config.ocsp.signer_renew_before_days)
        # A signer already as long-lived as its CA allows is not renewed again and again near the CA's end.
        if record.not_after - renew_before <= now and record.not_after < ca.not_after:
            return "expiring"
        if record.not_after <= now:
            return "expired"
        if not self._ctx.keys.backend(ca.key_backend).exists(signer_key_ref(record.serial)):
            return "key missing"  # restored elsewhere: backups take the CA keys along, not the signers'
        return None

    # -- work -------------------------------------------------------------------------------------
    def ensure(self, *, actor: str, force: bool = False) -> OcspSignerRenewal:
        """A current signer for every CA that can still sign: the missing, revoked and expiring ones are issued
        (all of them with `force`). A CA whose key cannot be used is reported in `failed`, the others go on."""
        now = self._ctx.clock()
        result = OcspSignerRenewal()
        for ca in self._ctx.cas():
            if ca.not_after <= now or self._ctx.ca_revoked(ca):
                continue  # a CA that cannot sign anything valid answers nothing either
            why = "forced" if force else self.renewal_due(ca, self.current_record(ca.id), now)
            if why is None:
                continue
            try:
                result.issued.append(self.issue(ca, actor=actor, why=why))
            except OtpkiError as exc:
                result.failed[ca.id] = exc.message
        return result

    def issue(self, ca: CARecord, *, actor: str, why: str = "requested") -> CertificateRecord:
        """A new signer for `ca`: key in the CA's backend, certificate signed by the CA, recorded as current."""
        with self._lock:
            ca_key = self._ctx.keys.signer(ca)  # before the new key: an unreachable CA key leaves nothing behind
            now = self._ctx.clock()
            serial = serial_hex(random_serial())
            key_ref = signer_key_ref(serial)
            with self._ctx.keys.provisional(lambda _key_ref: self._recorded(serial)):
                backend, key = self._ctx.keys.create(key_ref, ca.key_type, backend_name=ca.key_backend)
                ca_cert = self._ctx.ca_certificate(ca)
                hash_name = crl_policy(self._ctx.config, ca)[1]
                cert = _build(ca, ca_cert, ca_key, key, int(serial, 16), now, hash_name,
                              self._ctx.config.ocsp.signer_lifetime_days, self._ctx.config.organization)
                der = cert.public_bytes(Encoding.DER)
                record = CertificateRecord(
                    serial=serial, issuer_ca_id=ca.id, owner_id=None, group=ca.group or "", site=ca.site,
                    subject=cert.subject.rfc4514_string(), san_uri=None, key_type=ca.key_type,
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    fingerprint_sha256=sha256_hex(der), issuance=IssuanceKind.OCSP_SIGNER, issued_at=now,
                    delivered=True, der=der)
                with self._ctx.store.transaction() as tx:
                    previous = tx.get_meta(meta_key(ca.id))
                    tx.insert_certificates([NewCertificate(record, der, spki_sha256(key.public_key()))])
                    if previous is not None:
                        old = _certificate(tx, previous)
                        if old is not None and old.superseded_by is None and old.revoked_at is None:
                            tx.mark_superseded(previous, serial)
                    tx.set_meta(meta_key(ca.id), serial)
                    audit.append(tx, actor=actor, action=AUDIT_ACTION, subject=serial, at=now, details={
                        "ca": ca.id, "why": why, "replaces": previous, "key_backend": backend, "key_ref": key_ref,
                        "key_type": ca.key_type.value, "sha256": record.fingerprint_sha256,
                        "not_after": record.not_after.isoformat()})
            self.generation += 1
            return record


def _certificate(tx: StoreReader, serial: str) -> CertificateRecord | None:
    try:
        return tx.get_certificate(serial)
    except NotFound:
        return None


def _current(tx: StoreReader, ca_id: str) -> CertificateRecord | None:
    serial = tx.get_meta(meta_key(ca_id))
    return None if serial is None else _certificate(tx, serial)


def _subject(ca: CARecord, organization: str) -> x509.Name:
    cn = f"{ca.name} OCSP Signer"
    if len(cn) > _CN_MAX:
        cn = f"OCSP Signer {ca.id}"[:_CN_MAX]
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])


def _build(ca: CARecord, ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes,
           key: CertificateIssuerPrivateKeyTypes, serial: int, now: datetime, hash_name: str, lifetime_days: int,
           organization: str) -> x509.Certificate:
    not_after = min(now + timedelta(days=lifetime_days), ca_cert.not_valid_after_utc)
    public_key = key.public_key()
    issuer_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(ca, organization))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage({KeyUsageName.DIGITAL_SIGNATURE}), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        # RFC 6960 4.2.2.2.1: clients trust this signer for its lifetime without asking about its revocation.
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
    )
    return builder.sign(ca_key, signature_hash(ca.key_type, hash_name))
