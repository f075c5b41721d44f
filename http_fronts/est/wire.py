"""EST's wire formats (RFC 7030 4, as RFC 8951 clarifies them): base64 bodies without MIME headers in them,
certs-only CMS for certificates, multipart/mixed for a server-generated key and its certificate."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.policy import HTTP

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
PKCS10 = "application/pkcs10"
PKCS8 = "application/pkcs8"
CSRATTRS = "application/csrattrs"


def b64(der: bytes) -> bytes:
    """Base64 in lines of 64 characters (RFC 8951: a base64 body, line breaks allowed)."""
    text = base64.b64encode(der)
    return b"\r\n".join(text[i:i + 64] for i in range(0, len(text), 64)) + b"\r\n"


def unb64(body: bytes) -> bytes | None:
    """The DER inside a base64 body (whitespace and line breaks ignored), or None if it is not base64."""
    compact = b"".join(body.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def certs_only(ders: Sequence[bytes]) -> bytes:
    """A certs-only CMS SignedData (RFC 5751 3.2.2) holding these certificates, DER."""
    certs = [x509.load_der_x509_certificate(der) for der in ders]
    return pkcs7.serialize_certificates(certs, Encoding.DER)


def keygen_multipart(pkcs8_der: bytes, certificate_der: bytes) -> tuple[bytes, str]:
    """RFC 7030 4.4.2: multipart/mixed with the private key (application/pkcs8) and the certificate (certs-only
    CMS), each base64. Returns the body and the Content-Type header (with its boundary)."""
    outer = MIMEMultipart("mixed")
    key = MIMEApplication(pkcs8_der, "pkcs8")  # base64 transfer encoding by default
    cert = MIMEApplication(certs_only([certificate_der]), "pkcs7-mime")
    cert.set_param("smime-type", "certs-only")
    outer.attach(key)
    outer.attach(cert)
    raw = outer.as_bytes(policy=HTTP)
    headers, _, body = raw.partition(b"\r\n\r\n")
    content_type = next(line.split(b":", 1)[1].strip().decode() for line in headers.split(b"\r\n")
                        if line.lower().startswith(b"content-type:"))
    return body, " ".join(content_type.split())
