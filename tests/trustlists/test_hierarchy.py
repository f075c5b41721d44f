"""The CA hierarchy: offline root, issuing CAs per group and per site, CAs in an HSM."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.softhsm import SoftHsmToken, softhsm_token
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, KeyAccessError, NotFound
from trustlists.hierarchy import Hierarchy
from trustlists.keys.files import EncryptedFileKeyBackend
from trustlists.keys.keyring import KeyRing
from trustlists.keys.pkcs11 import Pkcs11KeyBackend
from trustlists.models import KeyType
from trustlists.policy import PkiConfig, default_config_data, load_default_config
from trustlists.store import SqliteStore
from trustlists.testing import PASSPHRASE, make_csr, make_engine, store_snapshot


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


def _token_labels(token: SoftHsmToken) -> set[str]:
    """The labels of every key object on the token, as opensc's pkcs11-tool (another process) sees them."""
    listed = token.pkcs11_tool("--list-objects")
    assert listed.returncode == 0, listed.stderr
    return {line.split("label:", 1)[1].strip() for line in listed.stdout.splitlines() if "label:" in line}


def test_a_failed_plant_or_ca_ceremony_leaves_no_key_on_the_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = softhsm_token(prefix="half-plant")
    backend = Pkcs11KeyBackend(token.module, token.label, token.pin)
    engine = Engine(store=SqliteStore(tmp_path / "db"), config=load_default_config(), keys=KeyRing([backend]))
    try:
        made: list[str] = []
        create_issuing_ca = Hierarchy.create_issuing_ca

        def fail_on_the_second(self: Hierarchy, group: str, site: str | None, *, actor: str) -> object:
            if made:  # the root and one issuing CA have their keys (and their rows, in the plant's transaction)
                raise KeyboardInterrupt
            made.append(group)
            return create_issuing_ca(self, group, site, actor=actor)

        monkeypatch.setattr(Hierarchy, "create_issuing_ca", fail_on_the_second)
        with pytest.raises(KeyboardInterrupt):
            engine.hierarchy.create_plant(actor="t")
        monkeypatch.undo()
        assert made and engine.hierarchy.list() == []
        assert _token_labels(token) == set()  # the two keys made on the way are gone again

        created = engine.hierarchy.create_plant(actor="t")  # a second try makes a whole plant
        assert _token_labels(token) == {ca.key_ref for ca in created}

        # One CA later on: its record fails (here its first CRL), and its key goes with it.
        monkeypatch.setattr("trustlists.hierarchy.publish_crl", _fail)
        with pytest.raises(KeyAccessError):
            engine.hierarchy.create_issuing_ca("opcua-application", None, actor="t")
        monkeypatch.undo()
        assert _token_labels(token) == {ca.key_ref for ca in created}
        assert engine.verify_audit().ok
    finally:
        engine.close()
        backend.close()


def test_a_failed_ca_ceremony_leaves_no_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path)
    try:
        created = engine.hierarchy.initialize(actor="t")
        keys = sorted(p.name for p in tmp_path.glob("**/*.key.pem"))
        assert len(keys) == len(created)
        monkeypatch.setattr("trustlists.hierarchy.publish_crl", _fail)
        with pytest.raises(KeyAccessError):
            engine.hierarchy.create_issuing_ca("mqtt-device", None, actor="t")
        assert sorted(p.name for p in tmp_path.glob("**/*.key.pem")) == keys
    finally:
        engine.close()


def _fail(*args: object, **kwargs: object) -> NoReturn:
    raise KeyAccessError("the store went away half-way")


def test_a_key_the_store_names_after_a_lost_commit_answer_is_kept(tmp_path: Path) -> None:
    """A commit whose answer was lost may have happened: the key of a CA the store names is never removed."""
    ring = KeyRing([EncryptedFileKeyBackend(tmp_path / "keys", PASSPHRASE)])
    with pytest.raises(ConnectionError), ring.provisional(lambda key_ref: key_ref == "ca-committed"):
        ring.create("ca-committed", KeyType.EC_P256)
        ring.create("ca-lost", KeyType.EC_P256)
        raise ConnectionError("the database went away during COMMIT")
    assert sorted(p.name for p in tmp_path.glob("**/*.key.pem")) == ["ca-committed.key.pem"]

    def cannot_tell(key_ref: str) -> bool:
        raise ConnectionError("still away")

    with pytest.raises(ConnectionError) as err, ring.provisional(cannot_tell):
        ring.create("ca-unknown", KeyType.EC_P256)
        raise ConnectionError("the database went away during COMMIT")
    assert (tmp_path / "keys" / "ca-unknown.key.pem").exists()  # kept, and named in the error
    assert any("ca-unknown" in note for note in getattr(err.value, "__notes__", []))
