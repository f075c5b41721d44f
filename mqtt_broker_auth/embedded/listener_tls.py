"""The TLS side of a broker listener: which client certificates OpenSSL accepts, rebuilt per trust-list version.

The listener does each TLS handshake itself (`DeviceGateBroker.stream_connected`) with the context that is
current when the connection is accepted. A new trust-list version (a CA imported or removed, a certificate
revoked: every revocation publishes a CRL, which is trust-list content) gets fresh contexts, so it applies to
the next handshake, removals included; loading CAs into a live context, as before, could only ever add.

Two contexts per version:
- `crl_checked`: the client CAs plus their CRLs, with VERIFY_CRL_CHECK_LEAF, so OpenSSL itself refuses a
  revoked leaf during the handshake. OpenSSL then demands a CRL for the issuer of *every* leaf, so this context
  exists only when every certificate of the bundle has a CRL in the trust list that is in force now (an
  imported manufacturer CA without a CRL, or an operator-trusted self-signed certificate, rules it out), and it
  is used only until the first of those CRLs reaches its nextUpdate: an expired CRL would lock every device
  out, as it does on Mosquitto.
- `plain`: the client CAs only, in every other case.
Either way the listener's handshake check (`tls_admission`) asks the DeviceGate and the inventory right after
the handshake, before any MQTT byte is read: that check is what refuses revoked certificates when the CRL
layer is off, and certificates OpenSSL cannot tell apart from genuine ones (forged with a CA key).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.keys.algorithms import verifying_key
from trustlists.models import TrustListContent
from trustlists.safe_files import write_public

__all__ = ["ListenerTls", "build_listener_tls"]


@dataclass(frozen=True)
class ListenerTls:
    version: int  # the trust-list version the contexts were built from
    plain: ssl.SSLContext
    crl_checked: ssl.SSLContext | None
    crl_in_force_until: datetime | None  # the earliest nextUpdate among the CRLs in `crl_checked`
    why_no_crl_check: str | None  # for the log when `crl_checked` is None

    def context(self, now: datetime | None = None) -> tuple[ssl.SSLContext, bool]:
        """The context for a handshake starting now, and whether OpenSSL checks CRLs in it."""
        if self.crl_checked is not None and self.crl_in_force_until is not None \
                and (now or datetime.now(UTC)) < self.crl_in_force_until:
            return self.crl_checked, True
        return self.plain, False


def build_listener_tls(content: TrustListContent, version: int, *, certfile: Path, keyfile: Path, cafile: Path,
                       crlfile: Path, require_certificate: bool, now: datetime | None = None) -> ListenerTls:
    """Write `cafile` (client CAs) and `crlfile` (their CRLs) and build the contexts from them. Blocking.

    `now` is the wall clock (OpenSSL checks CRL times against it, not against the engine's clock).
    """
    now = now or datetime.now(UTC)
    ders = list(dict.fromkeys([*content.trusted_certificates, *content.issuer_certificates]))
    if not ders:
        raise ValueError("the device group's trust list holds no certificate: initialize the CA hierarchy first")
    certs = [x509.load_der_x509_certificate(der) for der in ders]
    crls = [x509.load_der_x509_crl(der) for der in dict.fromkeys([*content.trusted_crls, *content.issuer_crls])]
    write_public(cafile, b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    plain = _context(certfile, keyfile, cafile, None, require_certificate)

    in_force_until, gaps = _crl_coverage(certs, crls, now)
    if gaps:
        shown = "; ".join(gaps[:3]) + (f"; and {len(gaps) - 3} more" if len(gaps) > 3 else "")
        crlfile.unlink(missing_ok=True)  # a file from an earlier version would suggest a check that is off
        return ListenerTls(version=version, plain=plain, crl_checked=None, crl_in_force_until=None,
                           why_no_crl_check=shown)
    write_public(crlfile, b"".join(crl.public_bytes(Encoding.PEM) for crl in crls))
    checked = _context(certfile, keyfile, cafile, crlfile, require_certificate)
    return ListenerTls(version=version, plain=plain, crl_checked=checked, crl_in_force_until=in_force_until,
                       why_no_crl_check=None)


def _context(certfile: Path, keyfile: Path, cafile: Path, crlfile: Path | None,
             require_certificate: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), str(keyfile))
    context.load_verify_locations(cafile=str(cafile))
    # CERT_REQUIRED: a client without a certificate never gets to send CONNECT. OPTIONAL lets it reach the
    # gate, which refuses it with CONNACK 5 (what tests of amqtt's certless-client flaws need).
    context.verify_mode = ssl.CERT_REQUIRED if require_certificate else ssl.CERT_OPTIONAL
    if crlfile is not None:
        # Only a file lookup loads CRLs into the store (cadata takes certificates only).
        context.load_verify_locations(cafile=str(crlfile))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def _crl_coverage(certs: list[x509.Certificate], crls: list[x509.CertificateRevocationList],
                  now: datetime) -> tuple[datetime | None, list[str]]:
    """The earliest nextUpdate of the CRLs that cover `certs`, and the certificates no CRL in force covers."""
    gaps: list[str] = []
    until: datetime | None = None
    for cert in certs:
        crl = next((c for c in crls if _issued_by(c, cert)), None)
        subject = cert.subject.rfc4514_string()
        if crl is None:
            gaps.append(f"no CRL of {subject}")
            continue
        next_update = crl.next_update_utc
        if crl.last_update_utc > now:
            gaps.append(f"the CRL of {subject} is not valid before {crl.last_update_utc:%Y-%m-%d %H:%M:%S}Z")
        elif next_update is None or next_update <= now:
            gaps.append(f"the CRL of {subject} is past its nextUpdate")
        elif until is None or next_update < until:
            until = next_update
    return until, gaps


def _issued_by(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    if crl.issuer != cert.subject:
        return False
    key = verifying_key(cert)  # None: a key type a CRL cannot be signed with (X25519...)
    if key is None:
        return False
    try:
        return crl.is_signature_valid(key)
    except ValueError:
        return False
