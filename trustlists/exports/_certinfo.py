"""Parsing the DER blobs of a trust list into the few facts the exporters need.

Trust lists can arrive from outside (a GDS client's Write), so every parse goes through trustlists.der,
which turns cryptography's ValueError into InvalidInput: an export either succeeds or fails with a typed error.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from cryptography import x509

from trustlists.der import common_name, is_ca, load_certificate, load_crl, sha256_hex

__all__ = ["common_name", "is_ca", "load_certificate", "load_crl", "sha256_hex"]

# Longest label we put in front of " [<thumbprint>].ext": keeps whole names well under the 255-byte limit
# of common file systems even when every character needs 4 bytes of UTF-8.
_MAX_LABEL_CHARS = 48

# Characters Windows, Linux or a shell would choke on, plus the brackets we use to delimit thumbprints
# (so that the thumbprint part of our own names stays unambiguous).
_UNSAFE = re.compile(r'[\\/:*?"<>|\[\]\x00-\x1f\x7f]')


def sha1_hex(der: bytes) -> str:
    """OPC UA thumbprint: SHA-1 of the DER, upper-case hex (the form UA stacks show and compare)."""
    return hashlib.sha1(der).hexdigest().upper()


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
