"""A small PKI made with cryptography alone, and trust lists of it, for the tests of every trust-list export.

Root CA -> issuing CA (and an old issuing CA present in version 1 only) -> two PLC certificates, one revoked;
a self-signed vendor certificate trusted directly; CRLs for each CA. Independent of the engine on purpose:
the exports are checked against certificates the engine did not make.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustlists.models import TrustList, TrustListContent, TrustListMask

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otpki test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(cn: str, issuer: Cert | None, *, ca: bool, uri: str | None = None) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(issuer.cert.subject if issuer else name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
                       critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (
            builder.add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                              data_encipherment=False, key_agreement=True, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri or f"urn:{cn}")]),
                           critical=False)
        )
    return Cert(builder.sign(signer_key, hashes.SHA256()), key)


def make_crl(ca: Cert, number: int, revoked: list[Cert]) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - timedelta(hours=1))
        .next_update(NOW + timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.cert.serial_number)
            .revocation_date(NOW - timedelta(minutes=30)).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass
class Pki:
    root: Cert
    issuing: Cert
    old_issuing: Cert  # present in version 1 only
    leaf_good: Cert
    leaf_revoked: Cert
    vendor: Cert  # self-signed end-entity certificate, trusted directly
    root_crl: bytes
    issuing_crl_v1: bytes
    issuing_crl_v2: bytes
    old_issuing_crl: bytes


def build_pki() -> Pki:
    root = make_cert("Test Root CA", None, ca=True)
    issuing = make_cert("Test Issuing CA", root, ca=True)
    old_issuing = make_cert("Old Issuing CA", root, ca=True)
    leaf_good = make_cert("plc-01", issuing, ca=False)
    leaf_revoked = make_cert("plc-02", issuing, ca=False)
    vendor = make_cert("Vendor HMI: unit/7", None, ca=False, uri="urn:vendor:hmi")
    return Pki(
        root=root, issuing=issuing, old_issuing=old_issuing, leaf_good=leaf_good,
        leaf_revoked=leaf_revoked, vendor=vendor,
        root_crl=make_crl(root, 1, []),
        issuing_crl_v1=make_crl(issuing, 1, [leaf_revoked]),
        issuing_crl_v2=make_crl(issuing, 2, [leaf_revoked]),
        old_issuing_crl=make_crl(old_issuing, 5, []),
    )


def trust(content: TrustListContent, version: int) -> TrustList:
    return TrustList(group="DefaultApplicationGroup", version=version, content_hash=content.content_hash(),
                     created_at=NOW, content=content)


def content_v1(pki: Pki, mask: int = TrustListMask.ALL) -> TrustListContent:
    return TrustListContent(
        specified_lists=mask,
        trusted_certificates=[pki.root.der, pki.vendor.der],
        trusted_crls=[pki.root_crl],
        issuer_certificates=[pki.issuing.der, pki.old_issuing.der],
        issuer_crls=[pki.issuing_crl_v1, pki.old_issuing_crl],
    )


def content_v2(pki: Pki) -> TrustListContent:
    return TrustListContent(
        trusted_certificates=[pki.root.der, pki.vendor.der],
        trusted_crls=[pki.root_crl],
        issuer_certificates=[pki.issuing.der],
        issuer_crls=[pki.issuing_crl_v2],
    )


def thumb(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def file_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()
