"""Shared fixtures for the MQTT front: an initialized engine on tmp_path and device certificates on disk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustlists.clock import utcnow
from trustlists.engine import Engine
from trustlists.models import IssuedCertificate, KeyType, Owner
from trustlists.policy import PkiConfig, load_default_config
from trustlists.testing import Clock, initialized_engine

ACTOR = "tester"
MQTT_GROUPS = ("mqtt-device", "mqtt-broker")


def mqtt_config() -> PkiConfig:
    """The default config with only the MQTT groups and an EC root: initialize() makes three EC keys, fast."""
    config = load_default_config()
    groups = {name: config.group(name) for name in MQTT_GROUPS}
    root = config.root.model_copy(update={"key_type": KeyType.EC_P256})
    return config.model_copy(update={"groups": groups, "root": root})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> Iterator[Engine]:
    eng = initialized_engine(tmp_path / "pki", clock=clock, config=mqtt_config(), actor=ACTOR)
    yield eng
    eng.close()


@dataclass
class DeviceCert:
    """A certificate with its key, as DER and as PEM files a TLS client can load."""

    owner: Owner | None
    certificate_der: bytes
    chain_der: list[bytes]  # issuers, leaf excluded
    key_pem: bytes
    cert_file: Path
    key_file: Path

    @property
    def chain(self) -> list[bytes]:
        """Leaf first, as a peer presents it."""
        return [self.certificate_der, *self.chain_der]

    @property
    def serial_hex(self) -> str:
        return f"{x509.load_der_x509_certificate(self.certificate_der).serial_number:x}"


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def write_cert_files(directory: Path, name: str, certificate_der: bytes, chain_der: list[bytes],
                     key_pem: bytes) -> tuple[Path, Path]:
    """cert file = leaf + intermediates (not the root), key file 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    intermediates = [der for der in chain_der if not _self_signed(der)]
    cert_file.write_bytes(b"".join(_pem(der) for der in [certificate_der, *intermediates]))
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    return cert_file, key_file


def _self_signed(der: bytes) -> bool:
    cert = x509.load_der_x509_certificate(der)
    return cert.subject == cert.issuer


def from_issued(issued: IssuedCertificate, owner: Owner, directory: Path) -> DeviceCert:
    assert issued.private_key is not None
    cert_file, key_file = write_cert_files(directory, owner.name, issued.certificate_der, issued.chain_der,
                                           issued.private_key)
    return DeviceCert(owner=owner, certificate_der=issued.certificate_der, chain_der=list(issued.chain_der),
                      key_pem=issued.private_key, cert_file=cert_file, key_file=key_file)


def issue_device(engine: Engine, name: str, directory: Path, *, site: str | None = "north",
                 attributes: dict[str, object] | None = None, group: str = "mqtt-device") -> DeviceCert:
    """Register (or find) a device and issue it a certificate with a server-generated EC P-256 key."""
    owner = engine.registry.find(group, name=name) or engine.registry.register(
        group=group, name=name, site=site, actor=ACTOR, attributes=attributes)
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    return from_issued(issued, owner, directory)


@pytest.fixture
def device_factory(engine: Engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    def factory(name: str, **kwargs: object) -> DeviceCert:
        return issue_device(engine, name, tmp_path / "certs", **kwargs)  # type: ignore[arg-type]
    return factory


# -- certificates from outside the engine: a manufacturer's IDevID CA and factory self-signed certificates --

@dataclass
class ExternalCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_external_ca(cn: str = "ACME Manufacturing IDevID CA") -> ExternalCA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return ExternalCA(key=key, cert=cert)


def make_external_leaf(directory: Path, cn: str, *, ca: ExternalCA | None = None, client_auth: bool = True,
                       not_after_days: int = 3650) -> DeviceCert:
    """An IDevID signed by `ca`, or (ca=None) a factory self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
               .not_valid_after(now + timedelta(days=not_after_days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if client_auth:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if ca is not None:
        builder = builder.issuer_name(ca.cert.subject).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        cert = builder.sign(ca.key, hashes.SHA256())
        chain = [ca.der]
    else:
        cert = builder.issuer_name(_name(cn)).sign(key, hashes.SHA256())
        chain = []
    der = cert.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_file, key_file = write_cert_files(directory, cn.replace(" ", "_"), der, chain, key_pem)
    return DeviceCert(owner=None, certificate_der=der, chain_der=chain, key_pem=key_pem, cert_file=cert_file,
                      key_file=key_file)


def sha256_hex(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()


def advance(clock: Clock, **delta: float) -> None:
    clock.now = clock.now + timedelta(**delta)
