"""`/csrattrs` (RFC 7030 4.5): what a group's policy wants in a CSR, as DER CsrAttrs.

    CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
    AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
    Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET SIZE(1..MAX) OF ANY }

Encoded with asn1crypto's schema classes (no hand-made DER). What the answer says: the subject's commonName (the
registered name, when the group requires it), subjectAltName when the group requires a URI or host names, and the
key types the group accepts (RFC 7030 4.5.2's example form: the key algorithm as an attribute whose values are the
curves, a bare OID for RSA and Ed25519), plus the signature hash's ecdsa/rsa algorithm OIDs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from asn1crypto import core  # type: ignore[import-untyped]  # asn1crypto 1.5 ships no type information

from trustlists.models import KeyType
from trustlists.policy import GroupPolicy

OID_COMMON_NAME = "2.5.4.3"
OID_SUBJECT_ALT_NAME = "2.5.29.17"
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_ED25519 = "1.3.101.112"
_CURVES = {KeyType.EC_P256: "1.2.840.10045.3.1.7", KeyType.EC_P384: "1.3.132.0.34"}
_ECDSA_WITH = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3", "sha512": "1.2.840.10045.4.3.4"}
_RSA_WITH = {"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12",
             "sha512": "1.2.840.113549.1.1.13"}


class _OidValues(core.SetOf):
    _child_spec = core.ObjectIdentifier


class _Attribute(core.Sequence):
    _fields: ClassVar[list[tuple[str, Any]]] = [("type", core.ObjectIdentifier), ("values", _OidValues)]


class AttrOrOid(core.Choice):
    _alternatives: ClassVar[list[tuple[str, Any]]] = [("oid", core.ObjectIdentifier), ("attribute", _Attribute)]


class CsrAttrs(core.SequenceOf):
    _child_spec = AttrOrOid


def csr_attributes(policy: GroupPolicy) -> bytes:
    """DER CsrAttrs for a group's policy."""
    items: list[Any] = []
    if policy.subject_cn == "owner_name":
        items.append(AttrOrOid(name="oid", value=OID_COMMON_NAME))
    if policy.san.uri == "required" or policy.san.host_names == "required":
        items.append(AttrOrOid(name="attribute", value={"type": OID_EXTENSION_REQUEST,
                                                        "values": [OID_SUBJECT_ALT_NAME]}))
    curves = [_CURVES[k] for k in policy.allowed_key_types if k in _CURVES]
    if curves:
        items.append(AttrOrOid(name="attribute", value={"type": OID_EC_PUBLIC_KEY, "values": curves}))
        items.append(AttrOrOid(name="oid", value=_ECDSA_WITH[policy.signature_hash]))
    if any(k.family == "rsa" for k in policy.allowed_key_types):
        items.append(AttrOrOid(name="oid", value=OID_RSA_ENCRYPTION))
        items.append(AttrOrOid(name="oid", value=_RSA_WITH[policy.signature_hash]))
    if KeyType.ED25519 in policy.allowed_key_types:
        items.append(AttrOrOid(name="oid", value=OID_ED25519))
    return bytes(CsrAttrs(items).dump())
