"""Reconciling the inventory with what is out in the world (`otpki certs reconcile`).

After a restore, the store knows what the backup knew: a certificate issued later, or a CRL entry published
later, is out in the plant but missing from the inventory. Shown the certificates and CRLs collected from the
devices, the GDS or the issuing scripts, this names every serial of one of our CAs the store does not know, and
each CRL whose number is at or above the next number the store would give that CA (a gap too small).
Certificates of other issuers are counted as foreign, not as missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel

from trustlists.context import EngineContext
from trustlists.der import load_certificates, load_crl, sha256_hex
from trustlists.errors import InvalidInput
from trustlists.serials import serial_hex

__all__ = ["ReconcileFinding", "Reconciliation", "load_certificates_or_crl", "reconcile"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # every revocation the store holds, expired or not


class ReconcileFinding(BaseModel):
    source: str  # the file (or name) it came from
    kind: Literal["certificate_missing", "revoked_serial_missing", "crl_number_ahead"]
    issuer_ca_id: str
    serial: str | None = None  # hex, as `otpki certs list` shows it
    detail: str


class Reconciliation(BaseModel):
    certificates: int  # certificates of our CAs looked at
    crl_entries: int
    foreign: int  # certificates and CRLs of issuers that are none of our CAs
    findings: list[ReconcileFinding]

    @property
    def ok(self) -> bool:
        return not self.findings


def reconcile(ctx: EngineContext, documents: Sequence[tuple[str, bytes]]) -> Reconciliation:
    """`documents`: (name, PEM or DER bytes) of certificates (one or a bundle) or CRLs."""
    with ctx.store.read() as tx:
        all_cas = tx.list_cas()
    cas = {x509.load_der_x509_certificate(ca.certificate_der).subject.public_bytes(): ca for ca in all_cas}
    ca_fingerprints = {ca.fingerprint_sha256 for ca in all_cas}  # a chain in a bundle: the CAs are known
    findings: list[ReconcileFinding] = []
    certificates = entries = foreign = 0
    for name, data in documents:
        certs, crl = load_certificates_or_crl(data, name)
        with ctx.store.read() as tx:
            for cert in certs:
                ca = cas.get(cert.issuer.public_bytes())
                if ca is None:
                    foreign += 1
                    continue
                fingerprint = sha256_hex(cert.public_bytes(Encoding.DER))
                if fingerprint in ca_fingerprints:
                    continue
                certificates += 1
                serial = serial_hex(cert.serial_number)
                if tx.find_certificate_by_fingerprint(fingerprint) is None:
                    findings.append(ReconcileFinding(
                        source=name, kind="certificate_missing", issuer_ca_id=ca.id, serial=serial,
                        detail=f"{cert.subject.rfc4514_string()} issued by {ca.name} is not in the inventory"))
            if crl is None:
                continue
            ca = cas.get(crl.issuer.public_bytes())
            if ca is None:
                foreign += 1
                continue
            known = {e.serial for e in tx.revoked_entries(ca.id, EPOCH)}
            for entry in crl:
                entries += 1
                serial = serial_hex(entry.serial_number)
                if serial not in known:
                    findings.append(ReconcileFinding(
                        source=name, kind="revoked_serial_missing", issuer_ca_id=ca.id, serial=serial,
                        detail=f"revoked on a CRL of {ca.name} but not revoked in the store"))
            try:
                number_ext = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            except x509.ExtensionNotFound:
                continue  # not one of ours after all: every CRL the engine signs carries its number
            next_number = tx.next_crl_number(ca.id)
            if number_ext >= next_number:
                findings.append(ReconcileFinding(
                    source=name, kind="crl_number_ahead", issuer_ca_id=ca.id,
                    detail=f"CRL number {number_ext} of {ca.name} was published; the store would number the next "
                           f"{next_number}"))
    return Reconciliation(certificates=certificates, crl_entries=entries, foreign=foreign, findings=findings)


def load_certificates_or_crl(data: bytes, name: str
                             ) -> tuple[list[x509.Certificate], x509.CertificateRevocationList | None]:
    """A PEM bundle or DER certificate, or a CRL (PEM or DER); InvalidInput naming the file for anything else."""
    if b"-----BEGIN X509 CRL-----" in data:
        return [], load_crl(data, f"CRL {name}")
    if b"-----BEGIN" in data:
        return load_certificates(data, name), None
    try:
        return [x509.load_der_x509_certificate(data)], None
    except ValueError:
        pass
    try:
        return [], x509.load_der_x509_crl(data)
    except ValueError:
        raise InvalidInput(f"{name} is neither a certificate nor a CRL (PEM or DER)", reason="invalid_document"
                           ) from None
