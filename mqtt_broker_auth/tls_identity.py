"""TLS identities the MQTT side holds (a broker's server certificate, the enrollment service's client
certificate), issued by the engine and kept current, and the CA file devices use to verify a broker.

A restart reuses certificate files that still validate against their group's trust list and are outside the
renewal window, so restarting a broker or a service does not mint a certificate each time.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.engine import Engine
from trustlists.models import CARecord, Owner
from trustlists.safe_files import private_directory, write_public, write_secret
from trustlists.validation import ValidationOptions

_log = logging.getLogger(__name__)


def pem_of(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def identity_is_current(engine: Engine, cert_file: Path, key_file: Path, *, group: str,
                        eku: Literal["serverAuth", "clientAuth"], hostname: str | None = None) -> bool:
    """The files exist, the chain validates now (revocation included) and renewal is not due yet."""
    if not cert_file.exists() or not key_file.exists():
        return False
    try:
        certs = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except ValueError:
        return False
    now = engine.now()
    result = engine.validator(group).validate([c.public_bytes(Encoding.DER) for c in certs],
                                              ValidationOptions(at=now, required_eku=eku, hostname=hostname))
    if not result.ok:
        _log.info("%s is no longer usable (%s)", cert_file, result.reason)
        return False
    window = timedelta(days=engine.config.group(group).renewal_window_days)
    return certs[0].not_valid_after_utc - window > now


def ensure_tls_identity(engine: Engine, owner: Owner, cert_file: Path, key_file: Path, *,
                        eku: Literal["serverAuth", "clientAuth"], actor: str, hostname: str | None = None) -> bool:
    """Keep `cert_file` (leaf + intermediates, PEM) and `key_file` (0600) current; True when newly issued."""
    if identity_is_current(engine, cert_file, key_file, group=owner.group, eku=eku, hostname=hostname):
        return False
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=actor)
    assert issued.private_key is not None
    chain = [issued.certificate_der, *(der for der in issued.chain_der
                                       if (c := x509.load_der_x509_certificate(der)).subject != c.issuer)]
    private_directory(key_file.parent)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    write_secret(key_file, issued.private_key)
    write_public(cert_file, b"".join(pem_of(der) for der in chain))
    _log.info("issued %s a TLS certificate, serial %s", owner.name, issued.record.serial)
    return True


def server_ca_pem(engine: Engine, broker_group: str) -> bytes:
    """The broker group's issuing CA(s) and the root above them: a device's trust anchors for the broker."""
    cas = {ca.id: ca for ca in engine.hierarchy.list()}
    out: list[bytes] = []
    seen: set[str] = set()
    for ca in cas.values():
        if ca.group != broker_group or not ca.active:
            continue
        current: CARecord | None = ca
        while current is not None and current.id not in seen:
            seen.add(current.id)
            out.append(pem_of(current.certificate_der))
            current = cas.get(current.parent_id) if current.parent_id else None
    if not out:
        raise ValueError(f"no active CA in group {broker_group}: run `otpki init` first")
    return b"".join(out)
