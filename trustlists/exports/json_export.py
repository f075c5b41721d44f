"""A JSON view of a trust list for dashboards, audits and humans (not meant to be re-imported).

Lists that specified_lists does not name are null rather than [] so a reader can tell "not part of this
trust list" from "part of it and empty".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel

from trustlists.exports._certinfo import is_ca, load_certificate, load_crl, sha1_hex, sha256_hex
from trustlists.models import TrustList, TrustListMask


class CertificateInfo(BaseModel):
    subject: str
    issuer: str
    serial: str  # lowercase hex, no leading zeros (as CertificateRecord.serial)
    not_before: datetime
    not_after: datetime
    sha1: str  # upper-case hex: the OPC UA thumbprint
    sha256: str  # lowercase hex
    is_ca: bool
    pem: str


class CrlInfo(BaseModel):
    issuer: str
    crl_number: int | None  # None when the CRL has no cRLNumber extension
    this_update: datetime
    next_update: datetime | None
    entries: int
    sha1: str
    pem: str


class TrustListJson(BaseModel):
    group: str
    version: int
    content_hash: str
    created_at: datetime
    specified_lists: int
    trusted_certificates: list[CertificateInfo] | None
    trusted_crls: list[CrlInfo] | None
    issuer_certificates: list[CertificateInfo] | None
    issuer_crls: list[CrlInfo] | None


def trustlist_to_json(trust: TrustList) -> dict[str, Any]:
    content = trust.content
    mask = content.specified_lists

    def certs(bit: TrustListMask, blobs: list[bytes]) -> list[CertificateInfo] | None:
        return [_certificate_info(der) for der in blobs] if mask & bit else None

    def crls(bit: TrustListMask, blobs: list[bytes]) -> list[CrlInfo] | None:
        return [_crl_info(der) for der in blobs] if mask & bit else None

    doc = TrustListJson(
        group=trust.group,
        version=trust.version,
        content_hash=trust.content_hash,
        created_at=trust.created_at,
        specified_lists=mask,
        trusted_certificates=certs(TrustListMask.TRUSTED_CERTIFICATES, content.trusted_certificates),
        trusted_crls=crls(TrustListMask.TRUSTED_CRLS, content.trusted_crls),
        issuer_certificates=certs(TrustListMask.ISSUER_CERTIFICATES, content.issuer_certificates),
        issuer_crls=crls(TrustListMask.ISSUER_CRLS, content.issuer_crls),
    )
    return doc.model_dump(mode="json")


def _certificate_info(der: bytes) -> CertificateInfo:
    cert = load_certificate(der)
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha1=sha1_hex(der),
        sha256=sha256_hex(der),
        is_ca=is_ca(cert),
        pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
    )


def _crl_info(der: bytes) -> CrlInfo:
    crl = load_crl(der)
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return CrlInfo(
        issuer=crl.issuer.rfc4514_string(),
        crl_number=number,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        entries=len(crl),
        sha1=sha1_hex(der),
        pem=crl.public_bytes(Encoding.PEM).decode("ascii"),
    )
