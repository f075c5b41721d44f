"""Mosquitto `cafile` and `crlfile` from a trust list.

Mosquitto (OpenSSL underneath) has no trusted/issuer split: every CA in `cafile` can anchor or complete a
chain. So the bundle holds the CA certificates of both lists and leaves out end-entity certificates,
which OpenSSL would never use as issuers. All CRLs of both lists go into one PEM file, which is what
`crlfile` (loaded with X509_load_crl_file) expects.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.der import is_ca, load_certificate, load_crl
from trustlists.models import TrustList, TrustListMask
from trustlists.safe_files import write_public


def mosquitto_bundle(trust: TrustList) -> tuple[bytes, bytes]:
    """Return (cafile PEM, crlfile PEM) for `trust`; same input, same bytes."""
    content = trust.content
    mask = content.specified_lists
    certs: list[bytes] = []
    if mask & TrustListMask.TRUSTED_CERTIFICATES:
        certs += content.trusted_certificates
    if mask & TrustListMask.ISSUER_CERTIFICATES:
        certs += content.issuer_certificates
    crls: list[bytes] = []
    if mask & TrustListMask.TRUSTED_CRLS:
        crls += content.trusted_crls
    if mask & TrustListMask.ISSUER_CRLS:
        crls += content.issuer_crls

    ca_pem = bytearray()
    for der in _unique(certs):
        cert = load_certificate(der)
        if is_ca(cert):
            ca_pem += cert.public_bytes(Encoding.PEM)
    crl_pem = bytearray()
    for der in _unique(crls):
        crl_pem += load_crl(der).public_bytes(Encoding.PEM)
    return bytes(ca_pem), bytes(crl_pem)


def write_mosquitto_files(trust: TrustList, cafile: Path, crlfile: Path) -> None:
    """Replace `cafile` and `crlfile` atomically (a broker reloading mid-write sees old or new, whole).

    The CRL file is written first: if we fail between the two, the broker gets new revocations with the
    old CAs, never new CAs without their CRLs.
    """
    ca_pem, crl_pem = mosquitto_bundle(trust)
    cafile, crlfile = Path(cafile), Path(crlfile)
    for directory in {cafile.parent, crlfile.parent}:
        directory.mkdir(parents=True, exist_ok=True)
    write_public(crlfile, crl_pem)
    write_public(cafile, ca_pem)


def _unique(blobs: list[bytes]) -> list[bytes]:
    """Drop repeats (a CA may sit in both lists) while keeping the trust list's order."""
    return list(dict.fromkeys(blobs))
