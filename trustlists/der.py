"""Loading certificates, CSRs and CRLs from untrusted bytes (PEM or DER) with clear errors."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustlists.errors import InvalidInput


def _is_pem(data: bytes) -> bool:
    return data.lstrip()[:11] == b"-----BEGIN "


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    if not data:
        raise InvalidInput(f"the {what} is empty")
    try:
        return x509.load_pem_x509_certificate(data) if _is_pem(data) else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"the {what} is not a valid X.509 certificate (PEM or DER): {exc}") from None


def load_certificates(data: bytes, what: str = "certificate file") -> list[x509.Certificate]:
    """All certificates of a PEM bundle, or the one certificate of a DER file."""
    if _is_pem(data):
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise InvalidInput(f"the {what} holds a damaged PEM certificate: {exc}") from None
        return certs
    return [load_certificate(data, what)]


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    if not data:
        raise InvalidInput("the certificate signing request is empty", reason="csr_malformed")
    try:
        if _is_pem(data):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise InvalidInput(
            f"not a PKCS#10 certificate signing request (expected PEM or DER): {exc}",
            reason="csr_malformed") from None


def load_crl(data: bytes, what: str = "CRL") -> x509.CertificateRevocationList:
    if not data:
        raise InvalidInput(f"the {what} is empty")
    try:
        if _is_pem(data):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise InvalidInput(f"the {what} is not a valid X.509 CRL (PEM or DER): {exc}") from None


def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def spki_sha256(public_key: CertificatePublicKeyTypes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo: names one key, whichever certificate or CSR carries it."""
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def certificate_spki_sha256(der: bytes) -> str:
    return spki_sha256(x509.load_der_x509_certificate(der).public_key())


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def common_name(name: x509.Name) -> str | None:
    try:
        attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return None
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")
