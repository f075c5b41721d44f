"""Install Mosquitto's `cafile` and `crlfile` so that a bad CRL can never reach the broker.

Why so careful: on SIGHUP Mosquitto 2.0 rebuilds its TLS context; if the CRL file then fails to load it
keeps running with the CA but *without* CRL checking, so revoked certificates connect (fail open). An
expired CRL locks out every device of its CA. So the new files are written beside the old ones, checked
twice (cryptography, then `openssl crl -verify` as an independent implementation), fsynced and only then
renamed into place and the broker HUPed. Any doubt raises `UnsafeTrustFiles` and leaves the old files and
the broker alone.

Mosquitto checks CRLs for the leaf only (X509_V_FLAG_CRL_CHECK), so a revoked intermediate CA must not be
in `cafile` at all; the check refuses a cafile that holds a CA its own issuer's CRL lists as revoked.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel

from trustlists.clock import utcnow
from trustlists.errors import OtpkiError
from trustlists.keys.algorithms import verifying_key
from trustlists.safe_files import staged_file

_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----\r?\n.+?-----END X509 CRL-----\r?\n?", re.S)
_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----\r?\n?", re.S)
OPENSSL_TIMEOUT_S = 10.0


class UnsafeTrustFiles(OtpkiError):
    """A cafile/crlfile pair that must not be given to Mosquitto; `reason` says which rule it broke."""

    reason = "unsafe_trust_files"


class InstallResult(BaseModel):
    changed: bool
    cafile_sha256: str
    crlfile_sha256: str
    ca_count: int
    crl_count: int


def _blocks(pattern: re.Pattern[bytes], data: bytes, what: str, empty_reason: str) -> list[bytes]:
    blocks = pattern.findall(data)
    if not blocks and not data.strip():
        raise UnsafeTrustFiles(f"the new {what} holds no PEM block", reason=empty_reason)
    if not blocks or pattern.sub(b"", data).strip():
        # Mosquitto/OpenSSL may skip or choke on it; either way it is not what the engine exported.
        raise UnsafeTrustFiles(f"the new {what} holds data outside its PEM blocks", reason=f"{what}_garbage")
    return blocks


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    key = verifying_key(ca)  # a CA with an X25519 key signs nothing: skip it rather than crash
    return key is not None and crl.is_signature_valid(key)


def verify_bundle(ca_pem: bytes, crl_pem: bytes, *, now: datetime | None = None,
                  min_remaining: timedelta = timedelta(hours=1)) -> tuple[list[x509.Certificate],
                                                                          list[x509.CertificateRevocationList]]:
    """Check a cafile/crlfile pair with cryptography; returns the parsed CAs and CRLs or raises."""
    now = now or utcnow()
    cas: list[x509.Certificate] = []
    for block in _blocks(_CERT_BLOCK, ca_pem, "cafile", "cafile_empty"):
        try:
            cert = x509.load_pem_x509_certificate(block)
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (ValueError, x509.ExtensionNotFound) as exc:
            raise UnsafeTrustFiles(f"cafile entry is not a CA certificate: {exc}", reason="cafile_invalid") from None
        if not constraints.ca:
            raise UnsafeTrustFiles(f"cafile entry {cert.subject.rfc4514_string()} is not a CA",
                                   reason="cafile_invalid")
        cas.append(cert)

    crls: list[x509.CertificateRevocationList] = []
    for block in _blocks(_CRL_BLOCK, crl_pem, "crlfile", "crl_empty"):
        try:
            crls.append(x509.load_pem_x509_crl(block))
        except ValueError as exc:
            raise UnsafeTrustFiles(f"crlfile entry does not parse: {exc}", reason="crl_invalid") from None

    crls_by_ca: dict[int, list[x509.CertificateRevocationList]] = {}
    for crl in crls:
        signer = next((i for i, ca in enumerate(cas) if ca.subject == crl.issuer and _signed_by(crl, ca)), None)
        if signer is None:
            raise UnsafeTrustFiles(f"the CRL of {crl.issuer.rfc4514_string()} is not signed by any CA in the new "
                                   "cafile", reason="crl_bad_signature")
        next_update = crl.next_update_utc
        if next_update is None or next_update < now:
            raise UnsafeTrustFiles(f"the CRL of {crl.issuer.rfc4514_string()} has expired ({next_update})",
                                   reason="crl_expired")
        if next_update - now < min_remaining:
            raise UnsafeTrustFiles(f"the CRL of {crl.issuer.rfc4514_string()} expires at "
                                   f"{next_update:%Y-%m-%d %H:%M:%S}, within the required margin of {min_remaining}",
                                   reason="crl_expiring")
        if crl.last_update_utc > now + timedelta(minutes=5):
            raise UnsafeTrustFiles(f"the CRL of {crl.issuer.rfc4514_string()} is not valid yet",
                                   reason="crl_not_yet_valid")
        crls_by_ca.setdefault(signer, []).append(crl)

    for i, ca in enumerate(cas):
        for j, issuer in enumerate(cas):
            if issuer.subject != ca.issuer or j == i:
                continue
            if any(crl.get_revoked_certificate_by_serial_number(ca.serial_number) is not None
                   for crl in crls_by_ca.get(j, [])):
                # Mosquitto checks only the leaf against CRLs: a revoked CA in cafile would be trusted.
                raise UnsafeTrustFiles(f"CA {ca.subject.rfc4514_string()} is revoked but still in the cafile",
                                       reason="revoked_ca_in_cafile")
    for i, ca in enumerate(cas):
        issues_cas = any(other.issuer == ca.subject and other is not ca for other in cas)
        if not issues_cas and i not in crls_by_ca:
            # OpenSSL would refuse every leaf of this CA ("unable to get certificate CRL").
            raise UnsafeTrustFiles(f"CA {ca.subject.rfc4514_string()} issues leaves but has no CRL in the new "
                                   "crlfile", reason="ca_without_crl")
    return cas, crls


def openssl_verify_crls(openssl: Path | str, cafile: Path, crl_pem: bytes) -> None:
    """Second opinion from OpenSSL itself (what Mosquitto links): every CRL must verify against cafile.

    `openssl crl` reads one CRL per call, so each block is fed separately on stdin.
    """
    for block in _CRL_BLOCK.findall(crl_pem):
        try:
            res = subprocess.run([str(openssl), "crl", "-verify", "-noout", "-CAfile", str(cafile)], input=block,
                                 capture_output=True, timeout=OPENSSL_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UnsafeTrustFiles(f"could not run openssl to verify the CRL: {exc}",
                                   reason="openssl_unavailable") from None
        output = (res.stdout + res.stderr).decode(errors="replace").strip()
        if res.returncode != 0 or "verify OK" not in output:
            raise UnsafeTrustFiles(f"openssl crl -verify refused the new CRL: {output[-500:]}",
                                   reason="crl_openssl_verify_failed")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def install_trust_files(cafile: Path, crlfile: Path, ca_pem: bytes, crl_pem: bytes, *,
                        reload: Callable[[], None] | None, openssl: Path | str = "openssl",
                        now: datetime | None = None, min_remaining: timedelta = timedelta(hours=1),
                        force: bool = False) -> InstallResult:
    """Verify, then atomically replace `cafile` and `crlfile` and call `reload` (SIGHUP the broker).

    Nothing is written when the files already hold these bytes (unless `force`). On any refusal the old
    files stay in place, `reload` is not called and `UnsafeTrustFiles` is raised.
    """
    cas, crls = verify_bundle(ca_pem, crl_pem, now=now, min_remaining=min_remaining)
    # Normalise to what we verified: one PEM per object, nothing else.
    ca_pem = b"".join(c.public_bytes(Encoding.PEM) for c in cas)
    crl_pem = b"".join(c.public_bytes(Encoding.PEM) for c in crls)
    result = InstallResult(changed=False, cafile_sha256=_sha256(ca_pem), crlfile_sha256=_sha256(crl_pem),
                           ca_count=len(cas), crl_count=len(crls))
    if not force and _current(cafile) == ca_pem and _current(crlfile) == crl_pem:
        return result

    cafile.parent.mkdir(parents=True, exist_ok=True)
    crlfile.parent.mkdir(parents=True, exist_ok=True)
    # Public data (0644: readable by the broker whichever user it runs as), staged beside the targets so
    # that openssl checks exactly the bytes that go live.
    with staged_file(cafile.parent, ca_pem, public=True) as staged_ca, \
            staged_file(crlfile.parent, crl_pem, public=True) as staged_crl:
        openssl_verify_crls(openssl, staged_ca.path, staged_crl.path.read_bytes())
        # CRL first: if we die between the renames the broker (on its next reload) has new revocations with
        # the old CAs, never a new CA without its CRL.
        staged_crl.commit(crlfile)
        staged_ca.commit(cafile)
    if reload is not None:
        reload()
    return result.model_copy(update={"changed": True})
