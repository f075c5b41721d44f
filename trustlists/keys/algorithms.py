"""Key generation and the facts about each key type that signing needs."""

from __future__ import annotations

import typing

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization.pkcs12 import PKCS12PrivateKeyTypes

from trustlists.errors import PolicyViolation
from trustlists.models import KeyType

_RSA_BITS = {KeyType.RSA2048: 2048, KeyType.RSA3072: 3072, KeyType.RSA4096: 4096}
_EC_CURVES: dict[KeyType, type[ec.EllipticCurve]] = {
    KeyType.EC_P256: ec.SECP256R1,
    KeyType.EC_P384: ec.SECP384R1,
}

# The hashes certificate and CRL builders accept (cryptography's sign() names exactly these types).
SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

HASHES: dict[str, type[SignatureHash]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def generate_private_key(key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
    """Generate a key in memory. Slow for RSA (~18/s for 2048 bits): call it off the event loop."""
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    if key_type in _EC_CURVES:
        return ec.generate_private_key(_EC_CURVES[key_type]())
    return ed25519.Ed25519PrivateKey.generate()


def key_type_of(public_key: CertificatePublicKeyTypes) -> KeyType:
    """Classify a public key; anything the product does not issue for is a policy violation."""
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        for key_type, size in _RSA_BITS.items():
            if size == bits:
                return key_type
        raise PolicyViolation(f"RSA key of {bits} bits is not allowed (use 2048, 3072 or 4096)",
                              reason="key_size_forbidden")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        for key_type, curve in _EC_CURVES.items():
            if isinstance(public_key.curve, curve):
                return key_type
        raise PolicyViolation(f"EC curve {public_key.curve.name} is not allowed (use P-256 or P-384)",
                              reason="key_type_forbidden")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    raise PolicyViolation(f"key algorithm {type(public_key).__name__} is not supported",
                          reason="key_type_forbidden")


def signature_hash(signer_type: KeyType, hash_name: str) -> SignatureHash | None:
    """The hash to pass to a builder's sign(); Ed25519 signs without a separate hash."""
    if signer_type is KeyType.ED25519:
        return None
    return HASHES[hash_name]()


# Key classes by what they can do, as the installed cryptography defines them (ML-DSA joined in 50). A loaded
# PEM can hold any private key (X25519, X448, ML-KEM too): these decide what it may be used for.
_VERIFYING_KEY_CLASSES: tuple[type, ...] = typing.get_args(CertificateIssuerPublicKeyTypes)
_SIGNING_KEY_CLASSES: tuple[type, ...] = typing.get_args(CertificateIssuerPrivateKeyTypes)
_PKCS12_KEY_CLASSES: tuple[type, ...] = typing.get_args(PKCS12PrivateKeyTypes)


def can_sign_certificates(key: PrivateKeyTypes) -> typing.TypeGuard[CertificateIssuerPrivateKeyTypes]:
    return isinstance(key, _SIGNING_KEY_CLASSES)


def fits_pkcs12(key: PrivateKeyTypes) -> typing.TypeGuard[PKCS12PrivateKeyTypes]:
    return isinstance(key, _PKCS12_KEY_CLASSES)


def _can_verify(key: CertificatePublicKeyTypes) -> typing.TypeGuard[CertificateIssuerPublicKeyTypes]:
    return isinstance(key, _VERIFYING_KEY_CLASSES)


def verifying_key(cert: x509.Certificate) -> CertificateIssuerPublicKeyTypes | None:
    """The certificate's public key if signatures can be checked with it; None for a key-agreement or KEM key
    (X25519, X448, ML-KEM), which cryptography's verify calls refuse with a TypeError."""
    key = cert.public_key()
    return key if _can_verify(key) else None
