"""Revocation, CRLs (checked by openssl), the O(1) index, and trust-list versions that follow them."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.engine import Engine
from trustlists.errors import InvalidState, NotFound
from trustlists.models import CertificateStatus, CrlRecord, Owner, RevocationReason
from trustlists.testing import make_csr, make_engine

# Every test here runs on SQLite and on PostgreSQL (tests/trustlists/conftest.py).
STORE_BACKENDS = ("sqlite", "postgresql")


def _issue(engine: Engine, owner: Owner) -> str:
    return engine.authority.issue_from_csr(make_csr(owner.name), owner_id=owner.id, actor="t").record.serial


def _latest_crl(engine: Engine, ca_id: str) -> CrlRecord:
    crl = engine.latest_crl(ca_id)
    assert crl is not None
    return crl


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def test_revocation_publishes_crl_and_bumps_trust_list(engine: Engine, device: Owner, tmp_path: Path) -> None:
    serial = _issue(engine, device)
    ca = next(c for c in engine.hierarchy.list() if c.group == "mqtt-device")
    crl_before = _latest_crl(engine, ca.id)
    version_before = engine.trustlists.get("mqtt-device").version
    other_version = engine.trustlists.get("opcua-application").version

    engine.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")

    crl_rec = _latest_crl(engine, ca.id)
    assert crl_rec.crl_number == crl_before.crl_number + 1
    crl = x509.load_der_x509_crl(crl_rec.der)
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == crl_rec.crl_number
    policy = engine.config.group("mqtt-device")
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=policy.crl_lifetime_days)
    assert engine.trustlists.get("mqtt-device").version == version_before + 1
    assert engine.trustlists.get("opcua-application").version == other_version  # other groups untouched
    assert engine.inventory.get(serial).status_at(engine.now()) is CertificateStatus.REVOKED
    assert engine.is_revoked(ca.id, int(serial, 16))

    # Independent check: openssl verifies the CRL's signature with the CA certificate.
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(x509.load_der_x509_certificate(ca.certificate_der).public_bytes(Encoding.PEM))
    crl_pem = tmp_path / "crl.pem"
    crl_pem.write_bytes(crl.public_bytes(Encoding.PEM))
    result = _openssl("crl", "-in", str(crl_pem), "-CAfile", str(ca_pem), "-noout", "-verify", "-text")
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout
    assert serial.upper() in result.stdout.replace(":", "").upper()


def test_unspecified_reason_is_omitted_from_crl_entry(engine: Engine, device: Owner) -> None:
    serial = _issue(engine, device)
    ca = engine.inventory.get(serial).issuer_ca_id
    engine.authority.revoke(serial, reason=RevocationReason.UNSPECIFIED, actor="t")
    entry = x509.load_der_x509_crl(_latest_crl(engine, ca).der).get_revoked_certificate_by_serial_number(
        int(serial, 16))
    assert entry is not None
    with pytest.raises(x509.ExtensionNotFound):
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_revoking_twice_and_unknown_serial(engine: Engine, device: Owner) -> None:
    serial = _issue(engine, device)
    engine.authority.revoke(serial, reason=RevocationReason.SUPERSEDED, actor="t")
    with pytest.raises(InvalidState):
        engine.authority.revoke(serial, reason=RevocationReason.SUPERSEDED, actor="t")
    with pytest.raises(NotFound):
        engine.authority.revoke("abcdef", reason=RevocationReason.SUPERSEDED, actor="t")


def test_revoking_an_issuing_ca_lists_it_on_the_root_crl_and_drops_it_from_trust(engine: Engine) -> None:
    ca = next(c for c in engine.hierarchy.list() if c.group == "opcua-user")
    root = engine.hierarchy.root()
    engine.authority.revoke(ca.serial, reason=RevocationReason.CA_COMPROMISE, actor="t")
    root_crl = x509.load_der_x509_crl(_latest_crl(engine, root.id).der)
    assert root_crl.get_revoked_certificate_by_serial_number(int(ca.serial, 16)) is not None
    tl = engine.trustlists.get("opcua-user")
    assert ca.certificate_der not in tl.content.trusted_certificates
    assert _latest_crl(engine, root.id).der in tl.content.issuer_crls


def test_crl_numbers_are_monotonic_and_refresh_happens_before_next_update(engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    ca = next(c for c in engine.hierarchy.list() if c.group == "mqtt-device")
    first = _latest_crl(engine, ca.id)
    assert engine.authority.refresh_crls(actor="t").published == []  # nothing is due yet
    policy = engine.config.group("mqtt-device")
    clock.now += timedelta(days=policy.crl_lifetime_days - policy.crl_refresh_margin_days, seconds=1)
    refreshed = engine.authority.refresh_crls(actor="t").published
    assert ca.id in {c.ca_id for c in refreshed}
    second = _latest_crl(engine, ca.id)
    assert second.crl_number == first.crl_number + 1
    assert second.next_update > clock.now + timedelta(days=policy.crl_refresh_margin_days)


def test_index_is_rebuilt_from_the_store_by_another_process(engine: Engine, device: Owner, tmp_path: Path,
                                                            store_url: str | None) -> None:
    serial = _issue(engine, device)
    issuer = engine.inventory.get(serial).issuer_ca_id
    other = make_engine(tmp_path, config=engine.config, store_url=store_url)  # a second process (the CLI)
    other.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="cli")
    other.close()
    assert not engine.is_revoked(issuer, int(serial, 16))
    assert engine.refresh_revocations() == 1
    assert engine.is_revoked(issuer, int(serial, 16))


def test_reason_parsing() -> None:
    assert RevocationReason.parse("key-compromise") is RevocationReason.KEY_COMPROMISE
    assert RevocationReason.parse("keyCompromise") is RevocationReason.KEY_COMPROMISE
    with pytest.raises(ValueError, match="unknown revocation reason"):
        RevocationReason.parse("because")
