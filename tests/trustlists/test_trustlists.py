"""Versioned trust lists: what each group trusts, versions, and operator-imported trust."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from trustlists.der import sha256_hex
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, InvalidInput, NotFound
from trustlists.testing import new_key, store_snapshot


def _self_signed(cn: str, *, ca: bool, key=None):  # type: ignore[no-untyped-def]
    key = key or new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _crl(issuer: x509.Certificate, key) -> x509.CertificateRevocationList:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(now)
            .next_update(now + dt.timedelta(days=7)).sign(key, hashes.SHA256()))


def test_group_trusts_its_own_issuing_ca_not_the_root(engine: Engine) -> None:
    tl = engine.trustlists.get("opcua-application")
    cas = {c.id: c for c in engine.hierarchy.list()}
    assert tl.content.trusted_certificates == [cas["opcua-application"].certificate_der]
    assert tl.content.issuer_certificates == [cas["root"].certificate_der]
    assert len(tl.content.trusted_crls) == 1 and len(tl.content.issuer_crls) == 1
    assert cas["mqtt-device"].certificate_der not in tl.content.trusted_certificates
    assert tl.content_hash == tl.content.content_hash()


def test_versions_only_move_when_content_changes(engine: Engine) -> None:
    first = engine.trustlists.get("mqtt-device")
    assert engine.trustlists.get("mqtt-device").version == first.version
    vendor, _ = _self_signed("Vendor PLC 4711", ca=False)
    engine.trustlists.import_external("mqtt-device", vendor.public_bytes(Encoding.PEM), list_name="trusted",
                                      note="vendor PLC without CSR support", actor="t")
    second = engine.trustlists.get("mqtt-device")
    assert second.version == first.version + 1 and second.content_hash != first.content_hash
    assert vendor.public_bytes(Encoding.DER) in second.content.trusted_certificates
    engine.trustlists.remove_external("mqtt-device", sha256_hex(vendor.public_bytes(Encoding.DER)), actor="t")
    third = engine.trustlists.get("mqtt-device")
    assert third.version == second.version + 1 and third.content_hash == first.content_hash


def test_import_manufacturer_ca_and_its_crl(engine: Engine) -> None:
    idevid_ca, key = _self_signed("ACME IDevID CA", ca=True)
    engine.trustlists.import_external("mqtt-device", idevid_ca.public_bytes(Encoding.DER), list_name="issuer",
                                      note="ACME manufacturer CA", actor="t")
    crl = _crl(idevid_ca, key)
    engine.trustlists.import_external("mqtt-device", crl.public_bytes(Encoding.PEM), list_name="issuer",
                                      note="ACME CRL", actor="t")
    tl = engine.trustlists.get("mqtt-device")
    assert crl.public_bytes(Encoding.DER) in tl.content.issuer_crls


def test_crl_signed_by_the_wrong_key_is_refused(engine: Engine) -> None:
    idevid_ca, _key = _self_signed("ACME IDevID CA", ca=True)
    engine.trustlists.import_external("mqtt-device", idevid_ca.public_bytes(Encoding.DER), list_name="issuer",
                                      note="", actor="t")
    forged = _crl(idevid_ca, new_key())  # right issuer name, wrong key
    before = store_snapshot(engine)
    version = engine.trustlists.get("mqtt-device").version
    with pytest.raises(InvalidInput) as err:
        engine.trustlists.import_external("mqtt-device", forged.public_bytes(Encoding.DER), list_name="issuer",
                                          note="", actor="t")
    assert err.value.reason == "crl_issuer_unknown"
    assert store_snapshot(engine) == before
    assert engine.trustlists.get("mqtt-device").version == version


@pytest.mark.parametrize("data", [b"", b"\x30\x82\x01", b"not a certificate",
                                  b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_garbage_import_is_refused(engine: Engine, data: bytes) -> None:
    before = store_snapshot(engine)
    with pytest.raises(InvalidInput):
        engine.trustlists.import_external("mqtt-device", data, list_name="trusted", note="", actor="t")
    assert store_snapshot(engine) == before


def test_import_rules(engine: Engine) -> None:
    leaf, _ = _self_signed("Vendor PLC", ca=False)
    with pytest.raises(InvalidInput, match="issuer list"):
        engine.trustlists.import_external("mqtt-device", leaf.public_bytes(Encoding.DER), list_name="issuer",
                                          note="", actor="t")
    engine.trustlists.import_external("mqtt-device", leaf.public_bytes(Encoding.DER), list_name="trusted",
                                      note="", actor="t")
    with pytest.raises(AlreadyExists):
        engine.trustlists.import_external("mqtt-device", leaf.public_bytes(Encoding.DER), list_name="trusted",
                                          note="", actor="t")
    with pytest.raises(NotFound):
        engine.trustlists.import_external("no-such-group", leaf.public_bytes(Encoding.DER), list_name="trusted",
                                          note="", actor="t")
    with pytest.raises(NotFound):
        engine.trustlists.remove_external("mqtt-device", "00" * 32, actor="t")


def test_expired_ca_leaves_the_trust_list_with_an_audited_version(engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    before = engine.trustlists.get("mqtt-device")
    clock.now += dt.timedelta(days=365 * 11)  # past the issuing CA, not the 20-year root
    after = engine.trustlists.get("mqtt-device")
    assert after.version == before.version + 1
    assert after.content.trusted_certificates == [] and after.content.issuer_certificates
    assert any(r.action == "trustlist.version" and r.subject == "mqtt-device" for r in engine.audit_records())
    assert engine.verify_audit().ok
