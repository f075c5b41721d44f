"""The engine's OCSP parts: delegated signers (what they certify, where their keys are, renewal) and the responder's
answers and cache (trustlists/ocsp_signer.py, trustlists/ocsp_responses.py)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.softhsm import softhsm_token
from trustlists.engine import Engine
from trustlists.errors import KeyAccessError
from trustlists.keys.keyring import KeyRing
from trustlists.keys.pkcs11 import Pkcs11KeyBackend
from trustlists.maintenance import maintain_once
from trustlists.models import IssuanceKind, IssuedCertificate, KeyType, Owner, RevocationReason
from trustlists.ocsp_signer import signer_key_ref
from trustlists.policy import load_default_config
from trustlists.store import SqliteStore
from trustlists.testing import PASSPHRASE, Clock, make_csr, make_engine, ocsp_responder


def request_for(issued: IssuedCertificate, *, nonce: bytes | None = None,
                algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    issuer = x509.load_der_x509_certificate(issued.chain_der[0])
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def issue(engine: Engine, owner: Owner) -> IssuedCertificate:
    return engine.authority.issue_from_csr(make_csr(owner.name), owner_id=owner.id, actor="tester")


def test_every_ca_gets_a_short_lived_delegated_signer_in_the_inventory_and_the_audit(engine: Engine,
                                                                                   tmp_path: Path) -> None:
    renewal = engine.ocsp_signers.ensure(actor="tester")
    assert not renewal.failed
    cas = {ca.id: ca for ca in engine.hierarchy.list()}
    assert {r.issuer_ca_id for r in renewal.issued} == set(cas)  # the root and every issuing CA
    audited = {r.subject: r.details for r in engine.audit_records(action="ocsp_signer.issue")}
    for record in renewal.issued:
        ca = cas[record.issuer_ca_id]
        assert record.der is not None
        cert = x509.load_der_x509_certificate(record.der)
        cert.verify_directly_issued_by(x509.load_der_x509_certificate(ca.certificate_der))
        assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.OCSP_SIGNING])
        assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
        assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=30, minutes=10)
        assert record.key_type == ca.key_type
        # In the inventory, and its key beside the CA's, encrypted like it.
        listed = engine.inventory.get(record.serial)
        assert listed.issuance is IssuanceKind.OCSP_SIGNER and listed.owner_id is None
        key_file = tmp_path / "keys" / f"{signer_key_ref(record.serial)}.key.pem"
        assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert audited[record.serial]["ca"] == ca.id and audited[record.serial]["key_backend"] == ca.key_backend
    assert not engine.ocsp_signers.ensure(actor="tester").issued  # nothing due: nothing new
    assert engine.verify_audit().ok


def test_a_signer_whose_certificate_cannot_be_made_leaves_no_key_behind(engine: Engine, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> x509.Certificate:
        raise KeyAccessError("the CA key went away while signing")

    before = sorted(p.name for p in (tmp_path / "keys").iterdir())
    monkeypatch.setattr("trustlists.ocsp_signer._build", broken)
    renewal = engine.ocsp_signers.ensure(actor="tester")
    assert set(renewal.failed) == {ca.id for ca in engine.hierarchy.list()} and not renewal.issued
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == before  # each new key was removed again


def test_signers_are_renewed_before_they_expire_and_when_revoked(engine: Engine, clock: Clock) -> None:
    engine.ocsp_signers.ensure(actor="tester")
    first = engine.ocsp_signers.current_record("mqtt-device")
    assert first is not None
    clock.now += timedelta(days=19)  # 11 days left: not yet
    assert "mqtt-device" not in {r.issuer_ca_id for r in engine.ocsp_signers.ensure(actor="tester").issued}
    clock.now += timedelta(days=2)  # 9 days left: inside the 10-day margin
    renewed = {r.issuer_ca_id: r for r in engine.ocsp_signers.ensure(actor="tester").issued}
    second = renewed["mqtt-device"]
    assert second.serial != first.serial
    assert engine.inventory.get(first.serial).superseded_by == second.serial
    # A compromised signer is revoked like any certificate; the next round replaces it.
    engine.authority.revoke(second.serial, reason=RevocationReason.KEY_COMPROMISE, actor="tester")
    third = {r.issuer_ca_id: r for r in engine.ocsp_signers.ensure(actor="tester").issued}["mqtt-device"]
    assert third.serial not in (first.serial, second.serial)
    details = [r.details for r in engine.audit_records(action="ocsp_signer.issue") if r.details["ca"] == "mqtt-device"]
    assert [d["why"] for d in details] == ["missing", "expiring", "revoked"]
    # The root's signer belongs to no group: revoking it moves the root's CRL, in every group's trust list.
    root_id = engine.hierarchy.root().id
    root_signer = engine.ocsp_signers.current_record(root_id)
    assert root_signer is not None and root_signer.group == ""
    versions = {g: engine.trustlists.get(g).version for g in engine.config.groups}
    engine.authority.revoke(root_signer.serial, reason=RevocationReason.KEY_COMPROMISE, actor="tester")
    assert all(engine.trustlists.get(g).version > v for g, v in versions.items())
    assert root_id in {r.issuer_ca_id for r in engine.ocsp_signers.ensure(actor="tester").issued}


def test_a_signer_whose_key_is_gone_answers_try_later_until_it_is_replaced(engine: Engine, device: Owner,
                                                                          tmp_path: Path) -> None:
    """A store restored on another host brings the CA keys (a backup takes them along), not the signers' keys."""
    engine.ocsp_signers.ensure(actor="tester")
    issued = issue(engine, device)
    lost = engine.ocsp_signers.current_record("mqtt-device")
    assert lost is not None
    (tmp_path / "restored" / "keys").mkdir(parents=True)
    with sqlite3.connect(tmp_path / "otpki.db") as source, sqlite3.connect(tmp_path / "restored" / "otpki.db") as copy:
        source.backup(copy)
    for key in (tmp_path / "keys").iterdir():
        if not key.name.startswith("ocsp-"):
            (tmp_path / "restored" / "keys" / key.name).write_bytes(key.read_bytes())
    restored = make_engine(tmp_path / "restored", config=engine.config)
    try:
        assert restored.ocsp.respond(request_for(issued)).status == "tryLater"
        renewed = {r.issuer_ca_id: r for r in restored.ocsp_signers.ensure(actor="tester").issued}
        assert set(renewed) == {ca.id for ca in restored.hierarchy.list()}
        assert restored.ocsp.respond(request_for(issued)).cert_status == "good"
        assert [r.details["why"] for r in restored.audit_records(action="ocsp_signer.issue")][-1] == "key missing"
    finally:
        restored.close()


def test_only_the_maintenance_leader_issues_signers(engine: Engine) -> None:
    follower = maintain_once(engine, leader=False)
    assert follower.ocsp_signers_issued == [] and engine.ocsp_signers.current_record("root") is None
    leader = maintain_once(engine, leader=True)
    assert len(leader.ocsp_signers_issued) == len(engine.hierarchy.list())


def test_answers_good_revoked_unknown_signed_by_the_delegated_signer(engine: Engine, device: Owner) -> None:
    engine.ocsp_signers.ensure(actor="tester")
    good, revoked = issue(engine, device), issue(engine, device)
    engine.authority.revoke(revoked.record.serial, reason=RevocationReason.AFFILIATION_CHANGED, actor="tester")
    signer = engine.ocsp_signers.current_record("mqtt-device")
    assert signer is not None and signer.der is not None
    signer_cert = x509.load_der_x509_certificate(signer.der)

    answer = engine.ocsp.respond(request_for(good, nonce=b"0123456789abcdef"))
    response = ocsp.load_der_ocsp_response(answer.der)
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == int(good.record.serial, 16)
    assert response.certificates == [signer_cert]
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(signer_cert.public_key()).digest
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"
    assert response.next_update_utc - response.this_update_utc == timedelta(hours=1)
    public_key = signer_cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and response.signature_hash_algorithm is not None
    public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm))

    response = ocsp.load_der_ocsp_response(engine.ocsp.respond(request_for(revoked)).der)
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.affiliation_changed
    assert response.revocation_time_utc is not None
    assert response.revocation_time_utc == engine.inventory.get(revoked.record.serial).revoked_at

    cert = x509.load_der_x509_certificate(good.certificate_der)
    probe = ocsp.load_der_ocsp_request(request_for(good))
    never = ocsp.OCSPRequestBuilder().add_certificate_by_hash(probe.issuer_name_hash, probe.issuer_key_hash,
                                                              cert.serial_number + 1, hashes.SHA1()).build()
    answer = engine.ocsp.respond(never.public_bytes(Encoding.DER))
    assert answer.cert_status == "unknown" and engine.ocsp.cached(never.public_bytes(Encoding.DER)) is None
    # A certificate of another CA of ours, asked about under the wrong issuer: never issued by that one.
    opcua_ca = x509.load_der_x509_certificate(engine.hierarchy.get("opcua-application").certificate_der)
    name_hash = hashes.Hash(hashes.SHA1())
    name_hash.update(opcua_ca.subject.public_bytes())
    key_hash = x509.SubjectKeyIdentifier.from_public_key(opcua_ca.public_key()).digest  # SHA-1 of the key bits
    other = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash.finalize(), key_hash, cert.serial_number,
                                                              hashes.SHA1()).build()
    assert engine.ocsp.respond(other.public_bytes(Encoding.DER)).cert_status == "unknown"


def test_the_root_answers_for_its_issuing_cas(engine: Engine) -> None:
    engine.ocsp_signers.ensure(actor="tester")
    root = x509.load_der_x509_certificate(engine.hierarchy.root().certificate_der)
    ca = engine.hierarchy.get("opcua-user")
    ca_cert = x509.load_der_x509_certificate(ca.certificate_der)
    request = ocsp.OCSPRequestBuilder().add_certificate(ca_cert, root, hashes.SHA256()).build().public_bytes(
        Encoding.DER)
    assert engine.ocsp.respond(request).cert_status == "good"
    engine.authority.revoke(ca.serial, reason=RevocationReason.CA_COMPROMISE, actor="tester")
    response = ocsp.load_der_ocsp_response(engine.ocsp.respond(request).der)
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.ca_compromise


def test_errors_are_ocsp_statuses(engine: Engine, device: Owner, tmp_path: Path) -> None:
    issued = issue(engine, device)
    assert engine.ocsp.respond(b"").status == "malformedRequest"
    assert engine.ocsp.respond(b"\x30\x80garbage").status == "malformedRequest"
    # Before the maintenance leader issued the CA's signer: try later, not a failure.
    assert engine.ocsp.respond(request_for(issued)).status == "tryLater"
    engine.ocsp_signers.ensure(actor="tester")
    assert engine.ocsp.respond(request_for(issued)).status == "successful"
    stranger = make_engine(tmp_path / "stranger", config=engine.config)
    try:
        stranger.hierarchy.initialize(actor="x")
        owner = stranger.registry.register(group="mqtt-device", name="pump-7", actor="x")
        foreign = issue(stranger, owner)
    finally:
        stranger.close()
    assert engine.ocsp.respond(request_for(foreign)).status == "unauthorized"


def test_the_cache_is_bounded_and_keeps_unknown_serials_out(engine: Engine, device: Owner) -> None:
    engine.ocsp_signers.ensure(actor="tester")
    responder = ocsp_responder(engine, max_cached=2)
    try:
        requests = [request_for(issue(engine, device)) for _ in range(3)]
        for request in requests:
            responder.respond(request)
        assert [responder.cached(r) is not None for r in requests] == [False, True, True]
    finally:
        responder.close()


def test_a_signer_key_is_made_on_the_hsm_when_the_ca_key_is_there(tmp_path: Path) -> None:
    token = softhsm_token(prefix="ocsp")
    config = load_default_config()
    config = config.model_copy(update={"root": config.root.model_copy(update={"key_type": KeyType.EC_P256})})
    backend = Pkcs11KeyBackend(token.module, token.label, token.pin)
    engine = Engine(store=SqliteStore(tmp_path / "db"), config=config, keys=KeyRing([backend]))
    try:
        engine.hierarchy.initialize(actor="t")
        issued = engine.ocsp_signers.ensure(actor="t").issued
        assert issued
        for record in issued:
            attrs = backend.key_attributes(signer_key_ref(record.serial))
            assert attrs["sensitive"] and not attrs["extractable"]
        assert not list(tmp_path.glob("**/*.pem"))  # no key file anywhere
        owner = engine.registry.register(group="mqtt-device", name="pump-1", actor="t")
        answer = engine.ocsp.respond(request_for(issue(engine, owner)))
        assert answer.cert_status == "good"
    finally:
        engine.close()
        backend.close()


@pytest.mark.parametrize("enabled", [True, False])
def test_group_policy_puts_the_ocsp_and_crl_urls_into_leaves(tmp_path: Path, enabled: bool) -> None:
    data = load_default_config().model_dump(mode="json")
    data["root"]["key_type"] = "ec-p256"
    data["publication"] = {"base_url": "http://pki.plant.example:8080/"}
    data["groups"]["mqtt-device"]["ocsp_url_in_certificates"] = enabled
    data["groups"]["mqtt-device"]["crl_url_in_certificates"] = enabled
    config = type(load_default_config()).model_validate(data)
    engine = make_engine(tmp_path, config=config, passphrase=PASSPHRASE)
    try:
        engine.hierarchy.initialize(actor="t")
        owner = engine.registry.register(group="mqtt-device", name="pump-1", site=None, actor="t")
        cert = x509.load_der_x509_certificate(issue(engine, owner).certificate_der)
        if not enabled:
            with pytest.raises(x509.ExtensionNotFound):
                cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
            with pytest.raises(x509.ExtensionNotFound):
                cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
            return
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        assert not aia.critical
        assert [(d.access_method, d.access_location.value) for d in aia.value] == [
            (x509.oid.AuthorityInformationAccessOID.OCSP, "http://pki.plant.example:8080/ocsp")]
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [n.value for n in cdp[0].full_name or []] == ["http://pki.plant.example:8080/crl/mqtt-device.crl"]
    finally:
        engine.close()


def test_url_settings_are_checked() -> None:
    data = load_default_config().model_dump(mode="json")
    data["groups"]["mqtt-device"]["ocsp_url_in_certificates"] = True
    config_type = type(load_default_config())
    with pytest.raises(ValueError, match="base_url"):
        config_type.model_validate(data)
    data["publication"] = {"base_url": "https://pki.example"}
    with pytest.raises(ValueError, match="plain http"):
        config_type.model_validate(data)
    data["ocsp"] = {"signer_lifetime_days": 5, "signer_renew_before_days": 5}
    data["publication"] = {"base_url": "http://pki.example"}
    with pytest.raises(ValueError, match="signer_renew_before_days"):
        config_type.model_validate(data)
