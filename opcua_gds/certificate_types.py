"""OPC UA CertificateTypes (OPC 10000-12 7.8.4) and the key types behind them, for the GDS and push targets.

A CertificateTypeId names what a certificate is for and which key it has: RsaSha256ApplicationCertificateType
(RSA 2048-4096, the default of every OPC UA application), EccNistP256/EccNistP384ApplicationCertificateType
(the NIST curves of the ECC profiles), the abstract ApplicationCertificateType and EccApplicationCertificateType
("any of these"). What a certificate group issues is its policy's `allowed_key_types`
(trustlists/profiles/default.toml): each allowed key type maps to the one concrete type a certificate with
that key reports.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from opcua_gds.nodeids import CertificateTypes
from trustlists.models import KeyType, OwnerKind
from trustlists.policy import GroupPolicy

_RSA = frozenset({KeyType.RSA2048, KeyType.RSA3072, KeyType.RSA4096})
_ANY = frozenset(KeyType) - {KeyType.ED25519}

# CertificateTypeId -> the key types a certificate of that type may have (OPC 10000-12 7.8.4; reference 1.6).
APPLICATION_TYPES: dict[int, frozenset[KeyType]] = {
    CertificateTypes.ApplicationCertificateType: _ANY,
    CertificateTypes.RsaMinApplicationCertificateType: frozenset({KeyType.RSA2048}),
    CertificateTypes.RsaSha256ApplicationCertificateType: _RSA,
    CertificateTypes.EccApplicationCertificateType: frozenset({KeyType.EC_P256, KeyType.EC_P384}),
    CertificateTypes.EccNistP256ApplicationCertificateType: frozenset({KeyType.EC_P256}),
    CertificateTypes.EccNistP384ApplicationCertificateType: frozenset({KeyType.EC_P384}),
}
USER_TYPES: dict[int, frozenset[KeyType]] = {
    CertificateTypes.UserCredentialCertificateType: _ANY,
    CertificateTypes.UserCertificateType: _ANY,
}
# The concrete ECC application types and their curves (cryptography's curve names).
ECC_TYPE_CURVES: dict[int, str] = {
    CertificateTypes.EccNistP256ApplicationCertificateType: "secp256r1",
    CertificateTypes.EccNistP384ApplicationCertificateType: "secp384r1",
}


def ecc_type_of(public_key: object) -> int | None:
    """The ECC application CertificateTypeId of a public key, or None for any other key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return next((t for t, curve in ECC_TYPE_CURVES.items() if curve == public_key.curve.name), None)
    return None


def certificate_type_of(key_type: KeyType, kind: OwnerKind) -> int:
    """The concrete CertificateTypeId a certificate with this key reports (GetCertificates, CertificateTypes)."""
    if kind is OwnerKind.USER:
        return CertificateTypes.UserCredentialCertificateType
    if key_type is KeyType.EC_P256:
        return CertificateTypes.EccNistP256ApplicationCertificateType
    if key_type is KeyType.EC_P384:
        return CertificateTypes.EccNistP384ApplicationCertificateType
    return CertificateTypes.RsaSha256ApplicationCertificateType


def key_type_of(public_key: object) -> KeyType | None:
    """The engine key type of a public key, or None for one no OPC UA certificate type has."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return {2048: KeyType.RSA2048, 3072: KeyType.RSA3072, 4096: KeyType.RSA4096}.get(public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}.get(public_key.curve.name)
    return None


def issued_types(policy: GroupPolicy) -> list[int]:
    """The concrete CertificateTypeIds a group issues: the type of the key it generates by default first, then
    the others in the order of its allowed key types; key types no OPC UA type describes (Ed25519) are left out."""
    kind = OwnerKind(policy.owner_kind)
    types: dict[int, None] = {}
    for key_type in (policy.default_keygen_type, *policy.allowed_key_types):
        if key_type in _ANY:
            types[certificate_type_of(key_type, kind)] = None
    return list(types)
