"""Signed OCSP responses from a per-signer template: the uncached responder's hot path (bench/ocsp.py).

cryptography's `OCSPResponseBuilder` re-encodes the signer's certificate, its key hash and the signature algorithm
for every response. Those parts never change for a signer, so `ResponseEncoder` takes them once from a response
cryptography built (so their encoding is cryptography's, not ours) and per response only encodes what varies, the
tbsResponseData of one SingleResponse (RFC 6960 4.2.1), signs it with the signer's key and wraps it. The output
is byte for byte what the builder makes for the same inputs (tests/trustlists/test_ocsp_encoding.py checks it
against the builder for every key type, status, CertID hash and a nonce); keys of another kind (not EC, RSA or
EdDSA) get None from `for_signer`, and the responder uses the builder for them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from trustlists.der_writer import children, header_size, integer, tlv
from trustlists.keys.algorithms import SignatureHash

__all__ = ["ResponseEncoder"]

# CertID hashAlgorithm (with NULL parameters, as cryptography writes them) and digest size by hash name.
_HASH_ALGORITHM_IDS = {
    "sha1": (bytes.fromhex("300906052b0e03021a0500"), 20),
    "sha224": (bytes.fromhex("300d06096086480165030402040500"), 28),
    "sha256": (bytes.fromhex("300d06096086480165030402010500"), 32),
    "sha384": (bytes.fromhex("300d06096086480165030402020500"), 48),
    "sha512": (bytes.fromhex("300d06096086480165030402030500"), 64),
}
_GOOD = b"\x80\x00"  # [0] IMPLICIT NULL
_UNKNOWN = b"\x82\x00"  # [2] IMPLICIT NULL
_NONCE_OID = bytes.fromhex("06092b0601050507300102")  # id-pkix-ocsp-nonce
# OCSPResponse { responseStatus successful, responseBytes [0] { id-pkix-ocsp-basic, OCTET STRING ... } }
_STATUS_SUCCESSFUL = b"\x0a\x01\x00"
_BASIC_OID = bytes.fromhex("06092b0601050507300101")


def _time(moment: datetime) -> bytes:
    # GeneralizedTime YYYYMMDDHHMMSSZ (RFC 5280 4.1.2.5.2: UTC, no fractions); a naive moment is UTC, as the
    # builder takes it. The engine's clock is UTC already: the conversion is for any other zone.
    if moment.tzinfo is not None and moment.utcoffset():
        moment = moment.astimezone(UTC)
    return b"\x18\x0f" + f"{moment:%Y%m%d%H%M%S}Z".encode()


class ResponseEncoder:
    """One signer's responses: the parts that never change encoded once, the rest per response."""

    def __init__(self, key: ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | ec.EllipticCurvePrivateKey
                 | rsa.RSAPrivateKey, algorithm: SignatureHash | None, certificate: x509.Certificate) -> None:
        self._key = key
        self._algorithm = algorithm
        self._ecdsa = ec.ECDSA(algorithm) if algorithm is not None else None
        self._pkcs1 = padding.PKCS1v15()
        # A throw-away response of cryptography's: its responderID, signatureAlgorithm and certs are ours verbatim.
        now = datetime(2000, 1, 1)
        template = (ocsp.OCSPResponseBuilder()
                    .add_response_by_hash(b"\x00" * 20, b"\x00" * 20, 1, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
                                          now, now + timedelta(hours=1), None, None)
                    .responder_id(ocsp.OCSPResponderEncoding.HASH, certificate)
                    .certificates([certificate])
                    .sign(key, algorithm)).public_bytes(Encoding.DER)
        response_bytes = children(children(template)[1])[0]  # SEQUENCE { id-pkix-ocsp-basic, OCTET STRING }
        octets = children(response_bytes)[1]
        basic = octets[header_size(octets):]
        tbs, signature_algorithm, _signature, certs = children(basic)
        self._responder_id = children(tbs)[0]
        self._signature_algorithm = signature_algorithm
        self._certs = certs

    @classmethod
    def for_signer(cls, key: object, algorithm: SignatureHash | None,
                   certificate: x509.Certificate) -> ResponseEncoder | None:
        """The encoder for a signer whose key kind it signs with; None for any other (the builder's job)."""
        if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) and algorithm is not None:
            return cls(key, algorithm, certificate)
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) and algorithm is None:
            return cls(key, None, certificate)
        return None

    def encode(self, *, hash_name: str, issuer_name_hash: bytes, issuer_key_hash: bytes, serial: int,
               cert_status: ocsp.OCSPCertStatus, this_update: datetime, next_update: datetime,
               revoked_at: datetime | None, reason: int | None, nonce: bytes | None) -> bytes | None:
        """The DER OCSPResponse, producedAt = thisUpdate; None for what the template does not cover (another
        hash, hashes of the wrong size, a negative serial: the caller leaves it to the builder, which judges)."""
        known = _HASH_ALGORITHM_IDS.get(hash_name)
        if known is None or serial < 0 or not len(issuer_name_hash) == len(issuer_key_hash) == known[1]:
            return None
        algorithm_id = known[0]
        serial_der = integer(serial)
        cert_id = tlv(0x30, algorithm_id + tlv(0x04, issuer_name_hash) + tlv(0x04, issuer_key_hash) + serial_der)
        if cert_status is ocsp.OCSPCertStatus.GOOD:
            status = _GOOD
        elif cert_status is ocsp.OCSPCertStatus.UNKNOWN:
            status = _UNKNOWN
        else:
            assert revoked_at is not None
            info = _time(revoked_at)
            if reason is not None:
                info += b"\xa0\x03\x0a\x01" + bytes((reason,))  # [0] EXPLICIT CRLReason
            status = tlv(0xA1, info)
        produced = _time(this_update)
        single = tlv(0x30, cert_id + status + produced + b"\xa0\x11" + _time(next_update))
        data = self._responder_id + produced + tlv(0x30, single)
        if nonce is not None:
            extension = tlv(0x30, _NONCE_OID + tlv(0x04, tlv(0x04, nonce)))
            data += tlv(0xA1, tlv(0x30, extension))
        tbs = tlv(0x30, data)
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            assert self._ecdsa is not None
            signature = key.sign(tbs, self._ecdsa)
        elif isinstance(key, rsa.RSAPrivateKey):
            assert self._algorithm is not None
            signature = key.sign(tbs, self._pkcs1, self._algorithm)
        else:
            signature = key.sign(tbs)
        basic = tlv(0x30, tbs + self._signature_algorithm + tlv(0x03, b"\x00" + signature) + self._certs)
        return tlv(0x30, _STATUS_SUCCESSFUL + tlv(0xA0, tlv(0x30, _BASIC_OID + tlv(0x04, basic))))

