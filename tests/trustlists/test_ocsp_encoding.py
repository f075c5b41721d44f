"""trustlists.ocsp_encoding: the template encoder writes exactly what cryptography's OCSP builder writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from trustlists.ocsp_encoding import ResponseEncoder

_HASHES = {"sha1": hashes.SHA1(), "sha224": hashes.SHA224(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
           "sha512": hashes.SHA512()}


def _signer(kind: str) -> tuple[object, hashes.HashAlgorithm | None, x509.Certificate]:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    algorithm: hashes.HashAlgorithm | None
    if kind == "ec":
        key, algorithm = ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()
    elif kind == "rsa":
        key, algorithm = rsa.generate_private_key(public_exponent=65537, key_size=2048), hashes.SHA256()
    else:
        key, algorithm = ed25519.Ed25519PrivateKey.generate(), None
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"OCSP signer {kind}")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, algorithm))
    return key, algorithm, cert


def _verify(key: object, algorithm: hashes.HashAlgorithm | None, response: ocsp.OCSPResponse) -> None:
    public = key.public_key()  # type: ignore[attr-defined]  # one of the three key kinds above
    if isinstance(public, ec.EllipticCurvePublicKey):
        assert algorithm is not None
        public.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
    elif isinstance(public, rsa.RSAPublicKey):
        assert algorithm is not None
        public.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    else:
        public.verify(response.signature, response.tbs_response_bytes)


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
@pytest.mark.parametrize("case", [
    ("sha1", "good", None, None, 1),
    ("sha256", "revoked", 1, None, 0x80),  # a serial whose top bit needs a leading zero octet
    ("sha384", "revoked", None, None, 0xFFEE_DDCC_BBAA_9988_7766_5544_3322_1100),
    ("sha512", "unknown", None, b"\x01" * 32, 0),
    ("sha224", "revoked", 9, b"n", 127),
])
def test_encoder_writes_what_the_builder_writes(kind: str, case: tuple[str, str, int | None, bytes | None, int]
                                                ) -> None:
    hash_name, status_name, reason, nonce, serial = case
    key, algorithm, cert = _signer(kind)
    encoder = ResponseEncoder.for_signer(key, algorithm, cert)  # type: ignore[arg-type]  # a signing key
    assert encoder is not None
    status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
              "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status_name]
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    revoked_at = now - timedelta(days=3) if status_name == "revoked" else None
    size = _HASHES[hash_name].digest_size
    name_hash, key_hash = bytes(range(size)), b"\xaa" * size
    ours = encoder.encode(hash_name=hash_name, issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial=serial,
                          cert_status=status, this_update=now, next_update=now + timedelta(hours=1),
                          revoked_at=revoked_at, reason=reason, nonce=nonce)
    assert ours is not None
    builder = (ocsp.OCSPResponseBuilder()
               .add_response_by_hash(name_hash, key_hash, serial, _HASHES[hash_name], status, now,
                                     now + timedelta(hours=1), revoked_at,
                                     x509.ReasonFlags(_REASONS[reason]) if reason is not None else None)
               .responder_id(ocsp.OCSPResponderEncoding.HASH, cert).certificates([cert]))
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    theirs = builder.sign(key, algorithm)  # type: ignore[arg-type]  # a signing key
    parsed = ocsp.load_der_ocsp_response(ours)
    # producedAt is the builder's own clock: compare the rest of the signed data byte for byte.
    produced = f"{theirs.produced_at_utc:%Y%m%d%H%M%S}Z".encode()
    assert parsed.tbs_response_bytes.replace(f"{now:%Y%m%d%H%M%S}Z".encode(), b"T", 1) == \
        theirs.tbs_response_bytes.replace(produced, b"T", 1)
    _verify(key, algorithm, parsed)
    # The whole DER matches the builder's once its tbs and signature are put in place of ours.
    rebuilt = theirs.public_bytes(Encoding.DER).replace(theirs.tbs_response_bytes, parsed.tbs_response_bytes)
    rebuilt = rebuilt.replace(theirs.signature, parsed.signature)
    if kind != "ec":  # an ECDSA signature's length varies with its value: the lengths around it may differ
        assert rebuilt == ours
    assert parsed.serial_number == serial and parsed.certificate_status == status
    assert parsed.certificates == [cert]


_REASONS = {1: "keyCompromise", 9: "privilegeWithdrawn"}


def test_other_key_kinds_are_left_to_the_builder() -> None:
    key, algorithm, cert = _signer("ec")
    assert ResponseEncoder.for_signer(object(), algorithm, cert) is None
    assert ResponseEncoder.for_signer(key, None, cert) is None  # an EC key with no hash: not a signer we made
    encoder = ResponseEncoder.for_signer(key, algorithm, cert)
    assert encoder is not None
    now = datetime(2030, 1, 1)
    assert encoder.encode(hash_name="md5", issuer_name_hash=b"", issuer_key_hash=b"", serial=1,
                          cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now, next_update=now, revoked_at=None,
                          reason=None, nonce=None) is None
    assert encoder.encode(hash_name="sha256", issuer_name_hash=b"\x01" * 20, issuer_key_hash=b"\x01" * 32, serial=1,
                          cert_status=ocsp.OCSPCertStatus.GOOD, this_update=now, next_update=now, revoked_at=None,
                          reason=None, nonce=None) is None


def test_times_in_another_zone_are_written_in_utc() -> None:
    key, algorithm, cert = _signer("ec")
    encoder = ResponseEncoder.for_signer(key, algorithm, cert)
    assert encoder is not None
    plus_two = timezone(timedelta(hours=2))
    at = datetime(2030, 1, 1, 1, 30, tzinfo=plus_two)  # 2029-12-31 23:30 UTC
    der = encoder.encode(hash_name="sha1", issuer_name_hash=b"\x01" * 20, issuer_key_hash=b"\x02" * 20, serial=5,
                         cert_status=ocsp.OCSPCertStatus.REVOKED, this_update=at, next_update=at + timedelta(hours=1),
                         revoked_at=at, reason=None, nonce=None)
    assert der is not None
    parsed = ocsp.load_der_ocsp_response(der)
    utc = datetime(2029, 12, 31, 23, 30, tzinfo=UTC)
    assert (parsed.this_update_utc, parsed.produced_at_utc, parsed.revocation_time_utc) == (utc, utc, utc)
    assert parsed.next_update_utc == utc + timedelta(hours=1) and parsed.revocation_reason is None
