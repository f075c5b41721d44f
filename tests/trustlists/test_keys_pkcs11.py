"""The PKCS#11 key backend on a real SoftHSM2 token, checked independently with openssl and pkcs11-tool."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.x509.oid import NameOID

from tests.softhsm import SoftHsmToken, softhsm_token
from trustlists.errors import AlreadyExists, InvalidInput, KeyAccessError, NotFound
from trustlists.keys.base import KeyBackend
from trustlists.keys.pkcs11 import (
    Pkcs11EcPrivateKey,
    Pkcs11Ed25519PrivateKey,
    Pkcs11KeyBackend,
    Pkcs11RsaPrivateKey,
)
from trustlists.keys.pkcs11_session import reload_module
from trustlists.models import KeyType

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def token(request: pytest.FixtureRequest) -> SoftHsmToken:
    return softhsm_token(prefix=request.node.name.replace("[", "-").strip("]")[:20])


@pytest.fixture
def backend(token: SoftHsmToken) -> Iterator[Pkcs11KeyBackend]:
    with Pkcs11KeyBackend(token.module, token.label, token.pin) as b:
        yield b


# ---- certificate helpers -------------------------------------------------------------------------------


def _hash_for(key: object) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.key_size == 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otpki test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(signer: object, cn: str = "HSM Test CA", **sign_kwargs: object) -> x509.Certificate:
    public = signer.public_key()  # type: ignore[attr-defined]
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=True, crl_sign=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(signer, _hash_for(signer), **sign_kwargs)  # type: ignore[arg-type]
    )


def _leaf_cert(signer: object, ca: x509.Certificate, **sign_kwargs: object) -> x509.Certificate:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(_name("device-0001"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:otpki:device-0001")]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
                       critical=False)
        .sign(signer, _hash_for(signer), **sign_kwargs)  # type: ignore[arg-type]
    )


def _crl(signer: object, ca: x509.Certificate, revoked_serials: list[int]) -> x509.CertificateRevocationList:
    entries = [
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(NOW - dt.timedelta(minutes=1))
        .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        .build()
        for serial in revoked_serials
    ]
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(NOW - dt.timedelta(minutes=1))
        .next_update(NOW + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
                       critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(signer, _hash_for(signer))  # type: ignore[arg-type]


def _pem(path: Path, obj: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    return path


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is required for the independent checks"
    return subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)


# ---- signing through the token -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "signer_class"),
    [
        (KeyType.EC_P256, Pkcs11EcPrivateKey),
        (KeyType.EC_P384, Pkcs11EcPrivateKey),
        (KeyType.RSA2048, Pkcs11RsaPrivateKey),
        (KeyType.ED25519, Pkcs11Ed25519PrivateKey),
    ],
)
def test_ca_cert_leaf_and_crl_signed_on_token(
    backend: Pkcs11KeyBackend, token: SoftHsmToken, tmp_path: Path, key_type: KeyType, signer_class: type
) -> None:
    created = backend.create("ca-key", key_type)
    assert isinstance(created, signer_class)
    assert backend.exists("ca-key")

    # A second backend on the same token loads the persisted key, as the engine does after a restart.
    with Pkcs11KeyBackend(token.module, token.label, token.pin) as other:
        signer = other.load("ca-key")
        assert isinstance(signer, signer_class)
        assert signer.public_key() == created.public_key()

        ca = _ca_cert(signer)
        leaf = _leaf_cert(signer, ca)
        good_crl = _crl(signer, ca, [x509.random_serial_number(), x509.random_serial_number()])
        revoking_crl = _crl(signer, ca, [leaf.serial_number])

    # In-process checks against the public key read from the token.
    public = created.public_key()
    assert ca.public_key() == public
    ca.verify_directly_issued_by(ca)
    leaf.verify_directly_issued_by(ca)
    assert good_crl.is_signature_valid(public)  # type: ignore[arg-type]
    assert revoking_crl.is_signature_valid(public)  # type: ignore[arg-type]

    # Independent checks with the openssl CLI.
    ca_pem, leaf_pem = _pem(tmp_path / "ca.pem", ca), _pem(tmp_path / "leaf.pem", leaf)
    good_pem = _pem(tmp_path / "good.crl", good_crl)
    revoking_pem = _pem(tmp_path / "revoking.crl", revoking_crl)

    result = _openssl("verify", "-CAfile", str(ca_pem), str(leaf_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _openssl("verify", "-crl_check", "-CAfile", str(ca_pem), "-CRLfile", str(good_pem),
                      str(leaf_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _openssl("verify", "-crl_check", "-CAfile", str(ca_pem), "-CRLfile", str(revoking_pem),
                      str(leaf_pem))
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr

    for crl_pem in (good_pem, revoking_pem):
        result = _openssl("crl", "-in", str(crl_pem), "-CAfile", str(ca_pem), "-noout")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "verify OK" in result.stdout + result.stderr


def test_rsa_hash_and_padding_variants(backend: Pkcs11KeyBackend, tmp_path: Path) -> None:
    signer = backend.create("rsa-variants", KeyType.RSA3072)
    assert isinstance(signer, rsa.RSAPrivateKey)
    assert signer.key_size == 3072

    for algorithm in (hashes.SHA384(), hashes.SHA512()):
        ca = (
            x509.CertificateBuilder().subject_name(_name("rsa")).issuer_name(_name("rsa"))
            .public_key(signer.public_key()).serial_number(1)
            .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, algorithm)
        )
        ca.verify_directly_issued_by(ca)

    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    ca = _ca_cert(signer, rsa_padding=pss)
    ca.verify_directly_issued_by(ca)
    result = _openssl("verify", "-CAfile", str(_pem(tmp_path / "pss.pem", ca)), str(tmp_path / "pss.pem"))
    assert result.returncode == 0, result.stdout + result.stderr

    # Raw signature API, as other code paths (e.g. OCSP, CSR) would use it.
    signature = signer.sign(b"payload", padding.PKCS1v15(), hashes.SHA256())
    signer.public_key().verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA256())


def test_ec_p256_with_longer_hash_is_truncated_correctly(backend: Pkcs11KeyBackend) -> None:
    signer = backend.create("p256-sha384", KeyType.EC_P256)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        signature = signer.sign(b"message", ec.ECDSA(algorithm))
        signer.public_key().verify(signature, b"message", ec.ECDSA(algorithm))


def test_private_key_is_not_extractable(backend: Pkcs11KeyBackend, token: SoftHsmToken) -> None:
    signer = backend.create("locked-ec", KeyType.EC_P256)
    backend.create("locked-rsa", KeyType.RSA2048)

    for key_ref in ("locked-ec", "locked-rsa"):
        flags = backend.key_attributes(key_ref)
        assert flags["sensitive"] is True
        assert flags["extractable"] is False
        assert flags["always_sensitive"] is True
        assert flags["never_extractable"] is True
        assert flags["local"] is True  # generated on the token, not imported
        assert flags["private"] is True
        assert flags["decrypt"] is False

    # An independent process sees the same flags and cannot read the key out.
    listing = token.pkcs11_tool("--list-objects", "--type", "privkey")
    assert listing.returncode == 0, listing.stderr
    blocks = [b for b in listing.stdout.split("Private Key Object") if "label:" in b]
    assert len(blocks) == 2
    for block in blocks:
        assert "never extractable" in block
        assert "always sensitive" in block
    for key_ref, secret in (("locked-ec", "VALUE"), ("locked-rsa", "PRIVATE_EXPONENT")):
        assert _read_secret_in_other_process(token, key_ref, secret) == "AttributeSensitive"

    # The proxy refuses to export too.
    with pytest.raises(KeyAccessError) as excinfo:
        signer.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    assert excinfo.value.reason == "not_extractable"
    with pytest.raises(KeyAccessError):
        signer.private_numbers()


_READ_SECRET = """
import sys, pkcs11
module, label, pin, key_ref, attribute = sys.argv[1:]
with pkcs11.lib(module).get_token(token_label=label).open(user_pin=pin) as session:
    key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=key_ref)
    try:
        key[getattr(pkcs11.Attribute, attribute)]
    except pkcs11.PKCS11Error as exc:
        print(type(exc).__name__)
    else:
        print("READABLE")
"""


def _read_secret_in_other_process(token: SoftHsmToken, key_ref: str, attribute: str) -> str:
    """Log in from a separate process, as an attacker with the PIN would, and try to read the secret."""
    result = subprocess.run(
        [sys.executable, "-c", _READ_SECRET, token.module, token.label, token.pin, key_ref, attribute],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SOFTHSM2_CONF": str(token.conf)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# ---- error handling ------------------------------------------------------------------------------------


def test_wrong_pin(token: SoftHsmToken) -> None:
    bad = Pkcs11KeyBackend(token.module, token.label, "not-the-pin")
    with pytest.raises(KeyAccessError) as excinfo:
        bad.load("anything")
    assert excinfo.value.reason == "wrong_pin"
    assert "PIN" in excinfo.value.message
    # The rejection is remembered: no further login attempts that could lock the PIN on a real HSM.
    with pytest.raises(KeyAccessError) as excinfo:
        bad.exists("anything")
    assert excinfo.value.reason == "wrong_pin"


def test_wrong_pin_while_token_already_logged_in(backend: Pkcs11KeyBackend, token: SoftHsmToken) -> None:
    # PKCS#11 login is per process and token, and SoftHSM answers a second login with
    # USER_ALREADY_LOGGED_IN without checking the PIN; the backend must still reject a wrong one.
    backend.create("k", KeyType.EC_P256)
    with pytest.raises(KeyAccessError) as excinfo:
        Pkcs11KeyBackend(token.module, token.label, "not-the-pin").load("k")
    assert excinfo.value.reason == "wrong_pin"


def test_missing_key(backend: Pkcs11KeyBackend) -> None:
    assert backend.exists("nope") is False
    with pytest.raises(NotFound):
        backend.load("nope")


def test_duplicate_create_refused(backend: Pkcs11KeyBackend) -> None:
    first = backend.create("dup", KeyType.EC_P256)
    with pytest.raises(AlreadyExists):
        backend.create("dup", KeyType.RSA2048)
    # The original key is untouched.
    assert backend.load("dup").public_key() == first.public_key()


def test_unsupported_key_type(backend: Pkcs11KeyBackend) -> None:
    with pytest.raises(KeyAccessError) as excinfo:
        backend.create("weird", "ec-p521")  # type: ignore[arg-type]
    assert excinfo.value.reason == "unsupported_key_type"
    assert "ec-p256" in excinfo.value.message
    assert backend.exists("weird") is False


def test_invalid_key_ref(backend: Pkcs11KeyBackend) -> None:
    with pytest.raises(InvalidInput):
        backend.create("", KeyType.EC_P256)


def test_missing_module_and_missing_token(token: SoftHsmToken, tmp_path: Path) -> None:
    no_module = Pkcs11KeyBackend(str(tmp_path / "libnothere.so"), token.label, token.pin)
    with pytest.raises(KeyAccessError) as excinfo:
        no_module.exists("k")
    assert excinfo.value.reason == "token_unavailable"

    no_token = Pkcs11KeyBackend(token.module, "no-such-token", token.pin)
    with pytest.raises(KeyAccessError) as excinfo:
        no_token.load("k")
    assert excinfo.value.reason == "token_unavailable"
    assert token.label in excinfo.value.message  # lists the tokens that are there


def test_backend_satisfies_protocol(backend: Pkcs11KeyBackend) -> None:
    assert isinstance(backend, KeyBackend)
    assert backend.name == "pkcs11"


# ---- sessions and threads ------------------------------------------------------------------------------


def test_concurrent_signing_from_threads(backend: Pkcs11KeyBackend) -> None:
    ec_signer = backend.create("mt-ec", KeyType.EC_P256)
    ed_signer = backend.create("mt-ed", KeyType.ED25519)
    assert isinstance(ec_signer, ec.EllipticCurvePrivateKey)
    assert isinstance(ed_signer, ed25519.Ed25519PrivateKey)

    def work(i: int) -> None:
        message = f"message {i}".encode()
        if i % 2:
            ec_signer.public_key().verify(ec_signer.sign(message, ec.ECDSA(hashes.SHA256())), message,
                                          ec.ECDSA(hashes.SHA256()))
        else:
            ed_signer.public_key().verify(ed_signer.sign(message), message)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(800)))


def test_closing_one_backend_keeps_the_other_logged_in(token: SoftHsmToken) -> None:
    # C_Logout on any session logs out every session of the process on that token.
    first = Pkcs11KeyBackend(token.module, token.label, token.pin)
    second = Pkcs11KeyBackend(token.module, token.label, token.pin)
    signer = first.create("shared", KeyType.EC_P256)
    assert second.exists("shared")
    first.close()
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    signature = second.load("shared").sign(b"x", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
    signer.public_key().verify(signature, b"x", ec.ECDSA(hashes.SHA256()))
    # A signer outlives its backend's close: it reconnects.
    second.close()
    signer.public_key().verify(signer.sign(b"y", ec.ECDSA(hashes.SHA256())), b"y", ec.ECDSA(hashes.SHA256()))
    first.close()


def test_signer_survives_module_reinitialization(backend: Pkcs11KeyBackend) -> None:
    signer = backend.create("reinit", KeyType.EC_P256)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    reload_module(backend.module_path)  # drops every session, as an HSM restart would
    signature = signer.sign(b"after", ec.ECDSA(hashes.SHA256()))
    signer.public_key().verify(signature, b"after", ec.ECDSA(hashes.SHA256()))
    assert backend.exists("reinit")


def test_rsa_sign_without_digest_info_is_refused_as_unsupported(backend: Pkcs11KeyBackend) -> None:
    """cryptography 47+ lets RSAPrivateKey.sign take NoDigestInfo; the token key refuses it the documented way."""
    if not hasattr(asym_utils, "NoDigestInfo"):
        pytest.skip("cryptography before 47 has no NoDigestInfo: nothing to refuse")
    signer = backend.create("rsa-no-digest-info", KeyType.RSA2048)
    with pytest.raises(UnsupportedAlgorithm, match="DigestInfo"):
        signer.sign(b"\x01" * 32, padding.PKCS1v15(), asym_utils.NoDigestInfo())


_LOGIN_WORKER = """
import sys, time
from pathlib import Path
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from trustlists.keys.pkcs11 import Pkcs11KeyBackend
module, label, pin, go, rounds = sys.argv[1:6]
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.005)
for _ in range(int(rounds)):
    with Pkcs11KeyBackend(module, label, pin) as backend:  # each round logs in anew and logs out at the end
        key = backend.load("shared-ca")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.sign(b"data", ec.ECDSA(hashes.SHA256()))
print("done", flush=True)
"""


def test_processes_logging_in_to_one_token_at_once_all_get_their_session(
        backend: Pkcs11KeyBackend, token: SoftHsmToken, tmp_path: Path) -> None:
    """SoftHSM rewrites its token file at each login; four processes logging in over and over at the same moment
    (as instances sharing one token do at start-up) must all succeed, not fail on a half-written token file."""
    backend.create("shared-ca", KeyType.EC_P256)
    go = tmp_path / "go"
    env = {**os.environ, "SOFTHSM2_CONF": str(token.conf)}
    procs = [subprocess.Popen([sys.executable, "-c", _LOGIN_WORKER, token.module, token.label, token.pin, str(go),
                               "10"], env=env, cwd=Path(__file__).resolve().parents[2],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0 and out.strip() == "done", err[-1500:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
