"""Parsing the DER blobs of a trust list into the few facts the exporters need.

Trust lists can arrive from outside (a GDS client's Write), so every parse turns cryptography's
ValueError into InvalidInput: an export either succeeds or fails with a typed error.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from cryptography import x509
from cryptography.x509.oid import NameOID

from trustlists.errors import InvalidInput

# Longest label we put in front of " [<thumbprint>].ext": keeps whole names well under the 255-byte limit
# of common file systems even when every character needs 4 bytes of UTF-8.
_MAX_LABEL_CHARS = 48

# Characters Windows, Linux or a shell would choke on, plus the brackets we use to delimit thumbprints
# (so that the thumbprint part of our own names stays unambiguous).
_UNSAFE = re.compile(r'[\\/:*?"<>|\[\]\x00-\x1f\x7f]')


def load_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise InvalidInput(f"trust list holds a certificate that is not valid DER: {exc}") from None


def load_crl(der: bytes) -> x509.CertificateRevocationList:
    try:
        return x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise InvalidInput(f"trust list holds a CRL that is not valid DER: {exc}") from None


def sha1_hex(der: bytes) -> str:
    """OPC UA thumbprint: SHA-1 of the DER, upper-case hex (the form UA stacks show and compare)."""
    return hashlib.sha1(der).hexdigest().upper()


def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def common_name(name: x509.Name) -> str | None:
    try:
        attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def is_ca(cert: x509.Certificate) -> bool:
    """True only for certificates that say so in basicConstraints (RFC 5280 4.2.1.9)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def file_label(name: x509.Name) -> str:
    """The part of a file name taken from a certificate or CRL issuer name: its CN made file-system safe."""
    cn = common_name(name)
    if not cn:
        return "unnamed"
    text = unicodedata.normalize("NFC", cn)
    text = _UNSAFE.sub("_", text)
    text = " ".join(text.split())  # tabs/newlines/runs of spaces become one space
    # Leading dots would hide the file; trailing dots and spaces are stripped by Windows.
    text = text.strip(". ")[:_MAX_LABEL_CHARS].rstrip(". ")
    return text or "unnamed"


def certificate_file_name(der: bytes) -> str:
    cert = load_certificate(der)
    return f"{file_label(cert.subject)} [{sha1_hex(der)}].der"


def crl_file_name(der: bytes) -> str:
    crl = load_crl(der)
    return f"{file_label(crl.issuer)} [{sha1_hex(der)}].crl"
