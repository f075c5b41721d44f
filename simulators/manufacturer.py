"""A fake device manufacturer: its IDevID CA and the bootstrap certificates it burns into devices.

Real devices leave the factory with an IDevID (IEEE 802.1AR) signed by the manufacturer's CA, or with a
self-signed factory certificate. The plant imports the manufacturer CA into the MQTT group's trust list and
allow-lists each device's IDevID on its registration; the device then enrolls over MQTT with it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict

from trustlists.safe_files import private_directory, write_public, write_secret

__all__ = ["BootstrapCredential", "Manufacturer", "generate_key"]


def generate_key(key_type: str = "ec-p256") -> CertificateIssuerPrivateKeyTypes:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(65537, int(key_type.removeprefix("rsa")))
    raise ValueError(f"unknown key type {key_type!r}")


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


class BootstrapCredential(BaseModel):
    """A device's factory identity: certificate (+ issuing chain, root excluded) and its private key."""

    model_config = ConfigDict(frozen=True)

    subject_cn: str
    certificate_pem: str
    chain_pem: str  # intermediates between the leaf and the manufacturer root; usually empty
    key_pem: str
    sha256: str  # fingerprint of the leaf DER, for fingerprint allow-listing

    @property
    def cert_file_pem(self) -> str:
        """What a TLS client presents and what goes into an enrollment request's `credential`."""
        return self.certificate_pem + self.chain_pem

    def allow_list_entry(self, *, by: str = "subject_cn") -> dict[str, str]:
        """The entry for the device registration's `attributes["bootstrap"]` list."""
        return {"sha256": self.sha256} if by == "sha256" else {"subject_cn": self.subject_cn}

    def write(self, directory: Path) -> tuple[Path, Path]:
        private_directory(directory)
        cert_file, key_file = directory / "bootstrap.crt", directory / "bootstrap.key"
        write_public(cert_file, self.cert_file_pem.encode())
        write_secret(key_file, self.key_pem.encode())
        return cert_file, key_file


class Manufacturer:
    """A self-signed IDevID CA that signs device bootstrap certificates."""

    def __init__(self, name: str, key: CertificateIssuerPrivateKeyTypes, certificate: x509.Certificate) -> None:
        self.name = name
        self.key = key
        self.certificate = certificate

    @classmethod
    def create(cls, name: str = "ACME Devices", *, key_type: str = "ec-p256",
               now: datetime | None = None) -> Manufacturer:
        key = generate_key(key_type)
        now = now or datetime.now(UTC)
        subject = _name(f"{name} IDevID CA", name)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=20 * 365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, _hash_for(key)))
        return cls(name, key, cert)

    @property
    def ca_pem(self) -> str:
        """What the plant imports into the MQTT group's trust list (and the broker's CA file)."""
        return _pem(self.certificate)

    def crl_pem(self, *, revoked: tuple[int, ...] = (), valid_days: int = 365, now: datetime | None = None) -> str:
        """The manufacturer's CRL. Mosquitto needs one for every CA in its cafile that issues leaves
        (OpenSSL refuses a leaf with "unable to get certificate CRL" otherwise), so the plant imports it with
        the CA. Real manufacturers publish theirs; this one lists `revoked` serials."""
        now = now or datetime.now(UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject)
                   .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=valid_days))
                   .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        crl = builder.sign(self.key, _hash_for(self.key))
        return crl.public_bytes(serialization.Encoding.PEM).decode()

    def issue_idevid(self, serial_number: str, *, key_type: str = "ec-p256", valid_days: int = 20 * 365,
                     now: datetime | None = None) -> BootstrapCredential:
        """An IDevID whose CN is the device's factory serial number (not its plant name)."""
        key = generate_key(key_type)
        now = now or datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(_name(serial_number, self.name))
                .issuer_name(self.certificate.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=valid_days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, _hash_for(self.key)))
        return _credential(serial_number, cert, key)

    @staticmethod
    def factory_self_signed(serial_number: str, *, key_type: str = "ec-p256",
                            now: datetime | None = None) -> BootstrapCredential:
        """A factory certificate signed by its own key; allow-listed by fingerprint only."""
        key = generate_key(key_type)
        now = now or datetime.now(UTC)
        name = _name(serial_number)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=20 * 365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(key, _hash_for(key)))
        return _credential(serial_number, cert, key)


def _credential(cn: str, cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes) -> BootstrapCredential:
    der = cert.public_bytes(serialization.Encoding.DER)
    return BootstrapCredential(subject_cn=cn, certificate_pem=_pem(cert), chain_pem="", key_pem=_key_pem(key),
                               sha256=hashlib.sha256(der).hexdigest())
