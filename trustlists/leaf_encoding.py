"""Signed leaf certificates from a per-issuer template: issuance's hot path (bench/issuance.py).

cryptography's `CertificateBuilder` re-encodes the issuer's name, the signature algorithm and every fixed extension
for each certificate, and checks each Python extension object on the way: for a P-256 leaf that costs more than
the ECDSA signature itself. The parts that never change for an issuer and a policy (version, signature algorithm,
issuer name, basicConstraints, keyUsage, authorityKeyIdentifier, extendedKeyUsage, the OCSP and CRL locations) are
taken once from a certificate the builder made, so their encoding is cryptography's, not ours. Per certificate only
what varies is encoded (RFC 5280 4.1): the serial, the validity, the subject (by cryptography's own Name
encoder), the SubjectPublicKeyInfo (by the key's own encoder), the subjectKeyIdentifier (RFC 5280 4.2.1.2 method
1, as `SubjectKeyIdentifier.from_public_key` computes it) and the subjectAltName; then the TBSCertificate is
signed with the issuer's key as the builder signs it.

The output is byte for byte the builder's for the same inputs (ECDSA aside, whose signatures are random: there
the TBSCertificate and signature algorithm are), for every CA key type, leaf key type, extension combination and
name form the engine issues (tests/trustlists/test_leaf_encoding.py). What the template does not cover (a name
that is not ASCII, another key kind) gets None, and the caller uses the builder, which judges it.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.certificate_builder import LeafFields, LeafProfile
from trustlists.der_writer import children, content, integer, tlv
from trustlists.keys.algorithms import SignatureHash

__all__ = ["LeafEncoder"]

_SAN_OID = bytes.fromhex("0603551d11")  # id-ce-subjectAltName (non-critical: OPC UA subjects are never empty)
_URI, _DNS, _IP = 0x86, 0x82, 0x87  # GeneralName [6] IA5String, [2] IA5String, [7] OCTET STRING (implicit)


def _time(moment: datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, as the builder writes
    them (it drops fractions). `moment` is in UTC (aware or naive)."""
    fields = (moment.month, moment.day, moment.hour, moment.minute, moment.second)
    if 1950 <= moment.year < 2050:
        return b"\x17\x0d%02d%02d%02d%02d%02d%02dZ" % (moment.year % 100, *fields)
    return b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (moment.year, *fields)


class LeafEncoder:
    """The leaves of one `LeafProfile` (an issuer and a policy) signed with one algorithm: the fixed parts encoded
    once, the rest per leaf."""

    def __init__(self, profile: LeafProfile, issuer_key: CertificateIssuerPrivateKeyTypes,
                 algorithm: SignatureHash | None) -> None:
        self._algorithm = algorithm
        self._ecdsa = ec.ECDSA(algorithm) if algorithm is not None else None
        self._pkcs1 = padding.PKCS1v15()
        # A throw-away certificate of the builder's, with a subjectKeyIdentifier and a subjectAltName where a leaf's
        # go: everything else in its TBSCertificate is ours verbatim.
        public_key = issuer_key.public_key()
        placeholder_ski = x509.Extension(x509.ExtensionOID.SUBJECT_KEY_IDENTIFIER, False,
                                         x509.SubjectKeyIdentifier(b"\x00" * 20))
        placeholder_san = x509.Extension(x509.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False,
                                         x509.SubjectAlternativeName([x509.DNSName("template.invalid")]))
        extensions = [*profile.before_ski, placeholder_ski, *profile.before_san, placeholder_san, *profile.after_san]
        start = datetime(2000, 1, 1)
        template = x509.CertificateBuilder(profile.issuer_name, profile.issuer_name, public_key, 1, start,
                                           start + timedelta(days=1), extensions).sign(issuer_key, algorithm)
        version, _serial, signature_inner, issuer, _validity, _subject, _spki, wrapped = children(
            template.tbs_certificate_bytes)
        encoded = children(content(wrapped))  # [3] EXPLICIT Extensions
        ski_at = len(profile.before_ski)
        san_at = ski_at + 1 + len(profile.before_san)
        self._head = version  # then the serial
        self._middle = signature_inner + issuer  # then validity, subject, key, extensions
        # Up to the SKI's 20-byte identifier, which ends its extension.
        self._up_to_ski = b"".join(encoded[:ski_at]) + encoded[ski_at][:-20]
        self._before_san = b"".join(encoded[ski_at + 1:san_at])
        self._after_san = b"".join(encoded[san_at + 1:])
        self._signature_algorithm = children(template.public_bytes(Encoding.DER))[1]

    @classmethod
    def for_issuer(cls, profile: LeafProfile, issuer_key: CertificateIssuerPrivateKeyTypes,
                   algorithm: SignatureHash | None) -> LeafEncoder | None:
        """The encoder for an issuer whose key kind it signs with; None for any other (the builder's job)."""
        if isinstance(issuer_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) and algorithm is not None:
            return cls(profile, issuer_key, algorithm)
        if isinstance(issuer_key, ed25519.Ed25519PrivateKey) and algorithm is None:
            return cls(profile, issuer_key, None)
        return None

    def tbs(self, fields: LeafFields, *, subject: x509.Name, spki: bytes, san_uri: str | None,
            dns_names: Sequence[str], ip_addresses: Sequence[str]) -> bytes | None:
        """The DER TBSCertificate; `spki` is the DER SubjectPublicKeyInfo of the certified key. None for a name
        the template does not encode (not ASCII): the caller leaves it to the builder, which judges it."""
        san = b""
        try:
            if san_uri:
                san += tlv(_URI, san_uri.encode("ascii"))
            for name in dns_names:
                san += tlv(_DNS, name.encode("ascii"))
        except UnicodeEncodeError:
            return None
        for address in ip_addresses:
            san += tlv(_IP, ipaddress.ip_address(address).packed)
        # RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value (its unused-bits octet aside).
        key_bits = content(children(spki)[1])[1:]
        extensions = (self._up_to_ski + hashlib.sha1(key_bits, usedforsecurity=False).digest()
                      + self._before_san)
        if san:
            extensions += tlv(0x30, _SAN_OID + tlv(0x04, tlv(0x30, san)))
        extensions += self._after_san
        validity = tlv(0x30, _time(fields.not_before) + _time(fields.not_after))
        return tlv(0x30, self._head + integer(fields.serial) + self._middle + validity + subject.public_bytes() + spki
                   + tlv(0xA3, tlv(0x30, extensions)))

    def sign(self, tbs: bytes, issuer_key: CertificateIssuerPrivateKeyTypes) -> bytes:
        """The DER certificate: `tbs` signed with the issuer's key (the one the encoder was made for)."""
        if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
            assert self._ecdsa is not None
            signature = issuer_key.sign(tbs, self._ecdsa)
        elif isinstance(issuer_key, rsa.RSAPrivateKey):
            assert self._algorithm is not None
            signature = issuer_key.sign(tbs, self._pkcs1, self._algorithm)
        else:
            assert isinstance(issuer_key, ed25519.Ed25519PrivateKey)
            signature = issuer_key.sign(tbs)
        return tlv(0x30, tbs + self._signature_algorithm + tlv(0x03, b"\x00" + signature))

