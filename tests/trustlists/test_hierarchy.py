"""The CA hierarchy: offline root, issuing CAs per group and per site, CAs in an HSM."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.softhsm import softhsm_token
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, KeyAccessError, NotFound
from trustlists.keys.keyring import KeyRing
from trustlists.keys.pkcs11 import Pkcs11KeyBackend
from trustlists.policy import PkiConfig, default_config_data, load_default_config
from trustlists.store import SqliteStore
from trustlists.testing import make_csr, make_engine, store_snapshot


def test_default_hierarchy(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    created = engine.hierarchy.initialize(actor="alice")
    assert [c.id for c in created] == ["root", *load_default_config().groups]
    root = x509.load_der_x509_certificate(created[0].certificate_der)
    assert isinstance(root.public_key(), rsa.RSAPublicKey) and root.public_key().key_size == 4096
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for ca in created[1:]:
        cert = x509.load_der_x509_certificate(ca.certificate_der)
        cert.verify_directly_issued_by(root)
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca and bc.path_length == 0
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and ku.crl_sign
    assert engine.hierarchy.initialize(actor="alice") == []  # idempotent
    with pytest.raises(AlreadyExists):
        engine.hierarchy.create_root(actor="alice")
    # The root signs only CAs and its CRL: no leaf in the inventory names it as issuer.
    owner = engine.registry.register(group="mqtt-device", name="d1", actor="alice")
    issued = engine.authority.issue_from_csr(make_csr("d1"), owner_id=owner.id, actor="alice")
    assert issued.record.issuer_ca_id == "mqtt-device"
    engine.close()


def test_per_site_issuing_cas_and_new_generations(tmp_path: Path) -> None:
    data = default_config_data()
    data["sites"] = ["north", "south"]
    data["root"]["key_type"] = "ec-p384"
    data["groups"]["mqtt-device"]["per_site"] = True
    engine = make_engine(tmp_path, config=PkiConfig.model_validate(data))
    ids = {c.id for c in engine.hierarchy.initialize(actor="t")}
    assert {"mqtt-device@north", "mqtt-device@south", "opcua-application"} <= ids
    north = engine.registry.register(group="mqtt-device", name="d-n", site="north", actor="t")
    issued = engine.authority.issue_from_csr(make_csr("d-n"), owner_id=north.id, actor="t")
    assert issued.record.issuer_ca_id == "mqtt-device@north"
    assert issued.record.san_uri == "urn:otpki:mqtt:north:d-n"
    gen2 = engine.hierarchy.create_issuing_ca("mqtt-device", "north", actor="t")
    assert gen2.id == "mqtt-device@north-g2"
    assert engine.authority.issue_from_csr(make_csr("d-n"), owner_id=north.id,
                                           actor="t").record.issuer_ca_id == gen2.id
    # Both generations stay trusted while the old one's certificates live.
    trusted = engine.trustlists.get("mqtt-device").content.trusted_certificates
    assert {c.certificate_der for c in engine.hierarchy.list() if c.group == "mqtt-device"} <= set(trusted)
    with pytest.raises(NotFound):
        engine.hierarchy.create_issuing_ca("mqtt-device", "east", actor="t")
    with pytest.raises(NotFound):
        engine.hierarchy.create_issuing_ca("no-such-group", None, actor="t")
    engine.close()


def test_group_config_is_validated() -> None:
    data = default_config_data()
    data["groups"]["mqtt-device"]["allowed_key_types"] = ["ec-p256"]
    data["groups"]["mqtt-device"]["server_keygen_type"] = "rsa2048"
    with pytest.raises(ValueError, match="server_keygen_type"):
        PkiConfig.model_validate(data)
    data = default_config_data()
    data["groups"]["opcua-application"]["allowed_key_types"].append("ed25519")
    with pytest.raises(ValueError, match="ed25519"):
        PkiConfig.model_validate(data)
    data = default_config_data()
    data["groups"]["bad name!"] = data["groups"]["mqtt-device"]
    with pytest.raises(ValueError, match="group name"):
        PkiConfig.model_validate(data)


def test_hierarchy_in_softhsm(tmp_path: Path) -> None:
    token = softhsm_token(prefix="engine")
    config = load_default_config()
    backend = Pkcs11KeyBackend(token.module, token.label, token.pin)
    engine = Engine(store=SqliteStore(tmp_path / "db"), config=config, keys=KeyRing([backend]))
    created = engine.hierarchy.initialize(actor="t")
    assert all(c.key_backend == "pkcs11" for c in created)
    assert not list(tmp_path.glob("**/*.pem"))  # no key file anywhere
    for ca in created:
        attrs = backend.key_attributes(ca.key_ref)
        assert attrs["sensitive"] and not attrs["extractable"]
    owner = engine.registry.register(group="opcua-application", name="s1", application_uri="urn:s1", actor="t")
    issued = engine.authority.issue_from_csr(make_csr("s1", uris=["urn:s1"]), owner_id=owner.id, actor="t")
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    cert.verify_directly_issued_by(x509.load_der_x509_certificate(issued.chain_der[0]))
    engine.close()
    backend.close()

    # Wrong PIN: a clear error, nothing written.
    bad = Pkcs11KeyBackend(token.module, token.label, "000000")
    engine = Engine(store=SqliteStore(tmp_path / "db"), config=config, keys=KeyRing([bad]))
    before = store_snapshot(engine)
    with pytest.raises(KeyAccessError) as err:
        engine.authority.issue_from_csr(make_csr("s1", uris=["urn:s1"]), owner_id=owner.id, actor="t")
    assert err.value.reason == "wrong_pin"
    assert store_snapshot(engine) == before
    engine.close()
