"""Server-side key generation, renewal, encrypted CA keys and the key pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import pkcs12

from trustlists.engine import Engine
from trustlists.errors import InvalidInput, InvalidState, KeyAccessError, PolicyViolation, WrongPassphrase
from trustlists.keys.files import EncryptedFileKeyBackend
from trustlists.keys.pool import KeyPool
from trustlists.models import CertificateStatus, KeyType, Owner
from trustlists.policy import load_default_config
from trustlists.testing import PASSPHRASE, make_csr, make_engine, store_snapshot


def test_server_keygen_pem_encrypted_and_plain(engine: Engine, device: Owner) -> None:
    issued = engine.authority.issue_with_new_key(owner_id=device.id, actor="t", password="s3cret-device-pw")
    assert issued.private_key is not None and b"ENCRYPTED PRIVATE KEY" in issued.private_key
    key = serialization.load_pem_private_key(issued.private_key, password=b"s3cret-device-pw")
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    assert key.public_key() == cert.public_key()
    plain = engine.authority.issue_with_new_key(owner_id=device.id, actor="t")
    assert plain.private_key is not None and b"BEGIN PRIVATE KEY" in plain.private_key


def test_server_keygen_pkcs12(engine: Engine, scada: Owner) -> None:
    issued = engine.authority.issue_with_new_key(owner_id=scada.id, actor="t", key_format="pkcs12",
                                                 password="pfx-password")
    assert issued.private_key is not None
    key, cert, cas = pkcs12.load_key_and_certificates(issued.private_key, b"pfx-password")
    assert cert is not None and key is not None and key.public_key() == cert.public_key()
    assert [c.public_bytes(serialization.Encoding.DER) for c in cas] == issued.chain_der
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]  # the group's server keygen type


def test_server_keygen_refusals(engine: Engine, scada: Owner, device: Owner) -> None:
    before = store_snapshot(engine)
    with pytest.raises(InvalidInput):
        engine.authority.issue_with_new_key(owner_id=scada.id, actor="t", key_format="pkcs12")  # no password
    with pytest.raises(PolicyViolation):
        engine.authority.issue_with_new_key(owner_id=scada.id, actor="t", key_type=KeyType.ED25519)
    with pytest.raises(InvalidInput):
        engine.authority.issue_with_new_key(owner_id=device.id, actor="t", key_format="der")  # type: ignore[arg-type]
    assert store_snapshot(engine) == before


def test_key_pool_hands_out_each_key_once() -> None:
    pool = KeyPool({KeyType.EC_P256: 3})
    pool.fill_now()
    assert pool.available(KeyType.EC_P256) == 3
    keys = [pool.take(KeyType.EC_P256) for _ in range(4)]  # the 4th is generated on demand
    assert len({k.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo) for k in keys}) == 4
    pool.start()
    pool.stop()


@pytest.mark.parametrize("mode", ["same-key", "new-csr", "new-key"])
def test_renewal_supersedes_the_old_certificate(engine: Engine, device: Owner, mode: str) -> None:
    old = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    if mode == "same-key":
        new = engine.authority.renew(old.record.serial, actor="t")
        assert (x509.load_der_x509_certificate(new.certificate_der).public_key()
                == x509.load_der_x509_certificate(old.certificate_der).public_key())
    elif mode == "new-csr":
        new = engine.authority.renew(old.record.serial, actor="t", csr=make_csr("pump-7"))
    else:
        new = engine.authority.renew(old.record.serial, actor="t", new_key=True)
        assert new.private_key is not None
    assert new.record.serial != old.record.serial
    refreshed = engine.inventory.get(old.record.serial)
    assert refreshed.superseded_by == new.record.serial
    assert refreshed.status_at(engine.now()) is CertificateStatus.SUPERSEDED
    with pytest.raises(InvalidState):
        engine.authority.renew(old.record.serial, actor="t")


def test_ca_keys_are_encrypted_at_rest(engine: Engine, tmp_path: Path) -> None:
    files = list((tmp_path / "keys").glob("*.key.pem"))
    assert len(files) == 1 + len(load_default_config().groups)
    for f in files:
        data = f.read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert f.stat().st_mode & 0o077 == 0
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)


def test_wrong_passphrase_is_a_clear_error_and_writes_nothing(engine: Engine, device: Owner, tmp_path: Path) -> None:
    before = store_snapshot(engine)
    engine.close()
    wrong = make_engine(tmp_path, config=engine.config, passphrase=b"not the right passphrase")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        wrong.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    assert store_snapshot(wrong) == before
    wrong.close()
    right = make_engine(tmp_path, config=engine.config, passphrase=PASSPHRASE)
    right.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    right.close()


def test_ca_key_file_holding_a_key_that_cannot_sign_is_refused(tmp_path: Path) -> None:
    """A key file swapped for a key-agreement key (X25519) is refused when loaded, with the file named, instead of
    being handed to certificate signing."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "swapped.key.pem").write_bytes(x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE)))
    with pytest.raises(KeyAccessError, match=r"swapped\.key\.pem holds a .*X25519.*cannot sign certificates"):
        EncryptedFileKeyBackend(keys, PASSPHRASE).load("swapped")
