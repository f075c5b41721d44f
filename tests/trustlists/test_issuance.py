"""Issuance from CSRs: the Part 6 profile, registration checks, and every refusal leaving the store unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustlists.authority import CsrIssueRequest
from trustlists.engine import Engine
from trustlists.errors import CsrRejected, InvalidInput, IssuerUnusable, PolicyViolation, UriMismatch
from trustlists.models import IssuedCertificate, Owner, RevocationReason
from trustlists.testing import make_csr, new_key, store_snapshot

# Every test here runs on SQLite and on PostgreSQL (tests/trustlists/conftest.py).
STORE_BACKENDS = ("sqlite", "postgresql")


def _cert(issued) -> x509.Certificate:  # type: ignore[no-untyped-def]
    return x509.load_der_x509_certificate(issued.certificate_der)


def test_rsa_leaf_follows_opcua_part6_profile(engine: Engine, scada: Owner) -> None:
    csr = make_csr("scada-1", uris=["urn:plant:scada-1"], dns=["scada-1.plant"], key=new_key("rsa2048"))
    issued = engine.authority.issue_from_csr(csr, owner_id=scada.id, actor="tester")
    cert = _cert(issued)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert (ku.value.digital_signature, ku.value.content_commitment, ku.value.key_encipherment,
            ku.value.data_encipherment, ku.value.key_cert_sign) == (True, True, True, True, False)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:plant:scada-1"]
    assert san.get_values_for_type(x509.DNSName) == ["scada-1.plant"]
    issuer = x509.load_der_x509_certificate(issued.chain_der[0])
    cert.verify_directly_issued_by(issuer)
    assert issuer.subject != x509.load_der_x509_certificate(issued.chain_der[-1]).subject  # issued by the issuing CA
    assert cert.not_valid_after_utc <= issuer.not_valid_after_utc
    rec = engine.inventory.get(issued.record.serial)
    assert rec.der == issued.certificate_der and rec.owner_id == scada.id and rec.delivered


def test_ecc_leaf_key_usage(engine: Engine, scada: Owner) -> None:
    issued = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"]), owner_id=scada.id,
                                             actor="tester")
    ku = _cert(issued).extensions.get_extension_for_class(x509.KeyUsage).value
    assert (ku.digital_signature, ku.content_commitment, ku.key_agreement, ku.key_encipherment) == (
        True, True, True, False)
    # Host names default to the registration when the CSR carries none.
    san = _cert(issued).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["scada-1.plant"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


def test_the_record_is_the_certificate_and_what_the_store_holds(engine: Engine, scada: Owner) -> None:
    # The record is built from the values the engine signed with (serial, names, key), not read back from the
    # certificate: it must still say what the certificate says, and be exactly what the store then returns.
    single = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"]), owner_id=scada.id,
                                             actor="t")
    batch = engine.authority.issue_many([CsrIssueRequest(csr=make_csr("scada-1", uris=["urn:plant:scada-1"]),
                                                         owner_id=scada.id) for _ in range(3)], actor="t")
    for issued in [single, *batch]:
        assert isinstance(issued, IssuedCertificate)
        cert, record = _cert(issued), issued.record
        assert int(record.serial, 16) == cert.serial_number and record.serial == format(cert.serial_number, "x")
        assert record.subject == cert.subject.rfc4514_string()
        assert (record.not_before, record.not_after) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
        assert record.der == issued.certificate_der
        # The store keeps issued_at in whole seconds; the record handed back has the clock's microseconds.
        stored = record.model_copy(update={"issued_at": record.issued_at.replace(microsecond=0)})
        assert engine.inventory.get(record.serial) == stored


def test_serials_are_random_long_and_unique(engine: Engine, device: Owner) -> None:
    serials = {_cert(engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")).serial_number
               for _ in range(30)}
    assert len(serials) == 30
    assert all(s.bit_length() >= 64 for s in serials)
    assert len({s >> 100 for s in serials}) > 1  # high bits vary: not a counter


def test_mqtt_device_identity_is_filled_from_template(engine: Engine, device: Owner) -> None:
    cert = _cert(engine.authority.issue_from_csr(make_csr("pump-7", key=new_key("ed25519")), owner_id=device.id,
                                                 actor="t"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:otpki:mqtt:default:pump-7"]
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.CLIENT_AUTH}


@pytest.mark.parametrize("data, reason", [
    (b"", "csr_malformed"),
    (b"garbage that is not a CSR at all", "csr_malformed"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nMIIBIjCByAIBADAR\n-----END CERTIFICATE REQUEST-----\n", "csr_malformed"),
])
def test_malformed_csr(engine: Engine, scada: Owner, data: bytes, reason: str) -> None:
    before = store_snapshot(engine)
    with pytest.raises(InvalidInput) as err:
        engine.authority.issue_from_csr(data, owner_id=scada.id, actor="t")
    assert err.value.reason == reason
    assert store_snapshot(engine) == before


def test_truncated_der_csr(engine: Engine, scada: Owner) -> None:
    der = make_csr("scada-1", uris=["urn:plant:scada-1"], pem=False)
    before = store_snapshot(engine)
    with pytest.raises(InvalidInput):
        engine.authority.issue_from_csr(der[: len(der) // 2], owner_id=scada.id, actor="t")
    assert store_snapshot(engine) == before


def test_csr_with_bad_signature(engine: Engine, scada: Owner) -> None:
    der = bytearray(make_csr("scada-1", uris=["urn:plant:scada-1"], pem=False))
    der[-5] ^= 0xFF  # inside the signature value
    before = store_snapshot(engine)
    with pytest.raises(CsrRejected) as err:
        engine.authority.issue_from_csr(bytes(der), owner_id=scada.id, actor="t")
    assert err.value.reason == "bad_signature"
    assert store_snapshot(engine) == before


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = bytes([size]) if size < 0x80 else bytes([0x80 | (size.bit_length() + 7) // 8]) + size.to_bytes(
        (size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + body


def _tampered_csr(builder: x509.CertificateSigningRequestBuilder, old: bytes, new: bytes) -> bytes:
    """A CSR from `builder` with `old` replaced by `new` in what it signs, and signed again: well formed on the
    outside and correctly signed, broken only where the replacement says."""
    key = ec.generate_private_key(ec.SECP256R1())
    tbs = builder.sign(key, hashes.SHA256()).tbs_certrequest_bytes
    assert tbs.count(old) == 1
    tbs = tbs.replace(old, new)
    ecdsa_with_sha256 = bytes.fromhex("300a06082a8648ce3d040302")
    return _der(0x30, tbs + ecdsa_with_sha256 + _der(0x03, b"\x00" + key.sign(tbs, ec.ECDSA(hashes.SHA256()))))


def _builder(cn: str) -> x509.CertificateSigningRequestBuilder:
    uri: list[x509.GeneralName] = [x509.UniformResourceIdentifier("urn:plant:scada-1")]
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .add_extension(x509.SubjectAlternativeName(uri), critical=False)
            .add_extension(x509.IssuerAlternativeName(uri), critical=False))


@pytest.mark.parametrize("cn, old, new", [
    # The issuerAltName's OID (2.5.29.18) becomes subjectAltName's (2.5.29.17): the CSR asks for two SANs.
    # cryptography will not read such extensions (DuplicateExtension, not even a ValueError).
    ("scada-1", b"\x06\x03\x55\x1d\x12", b"\x06\x03\x55\x1d\x11"),
    # The subject's CN, a UTF8String, is not UTF-8: the CSR loads and verifies, reading its subject fails.
    ("AAAA", b"AAAA", b"\xff\xfe\xfd\xfc"),
])
def test_a_csr_cryptography_cannot_read_is_refused_not_a_crash(engine: Engine, scada: Owner, cn: str, old: bytes,
                                                               new: bytes) -> None:
    # The requester gets the malformed-CSR answer (an exception of cryptography's used to escape, and took the
    # whole batch of issue_many down with it), and a batch goes on with its other CSRs.
    der = _tampered_csr(_builder(cn), old, new)
    assert x509.load_der_x509_csr(der).is_signature_valid  # only the tampered part is wrong
    before = store_snapshot(engine)
    with pytest.raises(InvalidInput) as err:
        engine.authority.issue_from_csr(der, owner_id=scada.id, actor="t")
    assert err.value.reason == "csr_malformed"
    assert store_snapshot(engine) == before
    good = make_csr("scada-1", uris=["urn:plant:scada-1"])
    results = engine.authority.issue_many([CsrIssueRequest(csr=der, owner_id=scada.id),
                                           CsrIssueRequest(csr=good, owner_id=scada.id)], actor="t")
    assert isinstance(results[0], InvalidInput) and results[0].reason == "csr_malformed"
    assert isinstance(results[1], IssuedCertificate)


@pytest.mark.parametrize("kwargs, error, reason", [
    ({"uris": ["urn:plant:scada-1"], "ca": True}, PolicyViolation, "ca_requested"),
    ({"uris": ["urn:plant:scada-2"]}, UriMismatch, "uri_mismatch"),
    ({"uris": []}, UriMismatch, "uri_missing"),
    ({"uris": ["urn:plant:scada-1", "urn:x"]}, UriMismatch, "uri_mismatch"),
    ({"uris": ["urn:plant:scada-1"], "key": "rsa1024"}, PolicyViolation, "key_size_forbidden"),
    ({"uris": ["urn:plant:scada-1"], "key": "ed25519"}, PolicyViolation, "key_type_forbidden"),
    ({"uris": ["urn:plant:scada-1"], "dns": ["evil.example"]}, CsrRejected, "host_name_not_registered"),
])
def test_csr_refusals_are_specific_and_write_nothing(engine: Engine, scada: Owner, kwargs, error, reason) -> None:  # type: ignore[no-untyped-def]
    kwargs = dict(kwargs)  # the parameter's dict is shared by the runs on each store backend
    if "key" in kwargs:
        kind = kwargs.pop("key")
        kwargs["key"] = rsa.generate_private_key(65537, 1024) if kind == "rsa1024" else new_key(kind)
    csr = make_csr("scada-1", **kwargs)
    before = store_snapshot(engine)
    with pytest.raises(error) as err:
        engine.authority.issue_from_csr(csr, owner_id=scada.id, actor="t")
    assert err.value.reason == reason
    assert store_snapshot(engine) == before


def test_someone_elses_device_name_is_refused(engine: Engine, device: Owner) -> None:
    before = store_snapshot(engine)
    with pytest.raises(CsrRejected) as err:
        engine.authority.issue_from_csr(make_csr("pump-8"), owner_id=device.id, actor="t")
    assert err.value.reason == "subject_mismatch"
    assert store_snapshot(engine) == before


def test_expired_issuer_refuses(engine: Engine, device: Owner, clock) -> None:  # type: ignore[no-untyped-def]
    clock.now += timedelta(days=365 * 11)  # past the issuing CA's 10 years
    before = store_snapshot(engine)
    with pytest.raises(IssuerUnusable):
        engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    assert store_snapshot(engine) == before


def test_revoked_issuer_refuses(engine: Engine, device: Owner) -> None:
    ca = next(c for c in engine.hierarchy.list() if c.group == "mqtt-device")
    engine.authority.revoke(ca.serial, reason=RevocationReason.CA_COMPROMISE, actor="t")
    before = store_snapshot(engine)
    with pytest.raises(IssuerUnusable) as err:
        engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    assert "revoked" in str(err.value)
    assert store_snapshot(engine) == before


def test_issuance_is_audited_in_the_same_transaction(engine: Engine, device: Owner, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import trustlists.authority as authority

    def broken_append(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full while writing the audit record")

    monkeypatch.setattr(authority.audit, "append", broken_append)
    monkeypatch.setattr(authority.audit, "append_many", broken_append)
    before = store_snapshot(engine)
    with pytest.raises(RuntimeError):
        engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    assert store_snapshot(engine) == before  # no certificate without its audit record


def test_ec_p384_csr_is_accepted(engine: Engine, scada: Owner) -> None:
    issued = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"], key=new_key("ec-p384")),
                                             owner_id=scada.id, actor="t")
    assert isinstance(_cert(issued).public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize(("key_kind", "digest"), [("ec-p384", "sha384"), ("ec-p256", "sha256"), ("rsa2048", "sha256")])
def test_a_leaf_is_signed_with_a_hash_as_strong_as_its_key(engine: Engine, scada: Owner, key_kind: str,
                                                           digest: str) -> None:
    """A P-384 leaf gets SHA-384 (OPC 10000-7 ECC_nistP384) though the group's hash is SHA-256."""
    assert engine.config.group("opcua-application").signature_hash == "sha256"
    issued = engine.authority.issue_from_csr(make_csr("scada-1", uris=["urn:plant:scada-1"], key=new_key(key_kind)),
                                             owner_id=scada.id, actor="t")
    algorithm = _cert(issued).signature_hash_algorithm
    assert algorithm is not None and algorithm.name == digest
    _cert(issued).verify_directly_issued_by(x509.load_der_x509_certificate(issued.chain_der[0]))


def test_issue_many_commits_good_requests_and_reports_refusals(engine: Engine, device: Owner, scada: Owner) -> None:
    from trustlists.authority import CsrIssueRequest
    from trustlists.models import IssuedCertificate

    requests = [CsrIssueRequest(csr=make_csr("pump-7"), owner_id=device.id),
                CsrIssueRequest(csr=b"junk", owner_id=device.id),
                CsrIssueRequest(csr=make_csr("scada-1", uris=["urn:plant:other"]), owner_id=scada.id),
                CsrIssueRequest(csr=make_csr("scada-1", uris=["urn:plant:scada-1"]), owner_id=scada.id),
                CsrIssueRequest(csr=make_csr("pump-7"), owner_id="no-such-owner")]
    results = engine.authority.issue_many(requests, actor="t")
    assert [type(r).__name__ for r in results] == [
        "IssuedCertificate", "InvalidInput", "UriMismatch", "IssuedCertificate", "NotFound"]
    assert engine.inventory.count() == 2
    for r in results:
        if isinstance(r, IssuedCertificate):
            assert engine.inventory.get(r.record.serial).der == r.certificate_der
    assert engine.verify_audit().ok


def test_issue_many_signs_again_when_a_serial_is_taken(engine: Engine, device: Owner,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A serial already in the store (its primary key) rolls the batch's transaction back, and each request is then
    # recorded on its own with a new serial. On PostgreSQL the clash is answered to a pipelined statement (the batch's
    # rows, the append lock and the chain head go out together): it must still arrive as the store's AlreadyExists.
    from trustlists import authority

    taken = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t").record.serial
    clashing = iter([int(taken, 16)])
    fresh = authority.random_serial
    monkeypatch.setattr(authority, "random_serial", lambda: next(clashing, 0) or fresh())
    results = engine.authority.issue_many([CsrIssueRequest(csr=make_csr("pump-7"), owner_id=device.id)
                                           for _ in range(3)], actor="t")
    assert [type(r).__name__ for r in results] == ["IssuedCertificate"] * 3
    serials = {r.record.serial for r in results if isinstance(r, IssuedCertificate)}
    assert taken not in serials and len(serials) == 3
    assert engine.inventory.count() == 4
    assert engine.verify_audit().ok
