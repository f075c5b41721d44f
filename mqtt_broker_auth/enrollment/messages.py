"""The wire format of enrollment and renewal over MQTT, and the one canonical byte string a request signs.

Topics (AWS fleet-provisioning shape): the device publishes to `{prefix}/{device}/csr` and has subscribed to
`{prefix}/{device}/+` before, where the answer comes as `.../accepted` or `.../rejected`.

A request carries `credential`, the PEM chain of the certificate that authorizes it (the bootstrap IDevID on
first enrollment, the current operational certificate on renewal), and `signature`, made with that
certificate's private key over `signing_input(...)`. The signature binds the request to its topic, id and
time, so the service does not rely on the broker's ACL: a payload copied from another device's topic, or
replayed later, or carrying someone else's certificate, fails on its own.

`chain` in the accepted answer holds the issuing CA certificates up to but excluding the root: leaf + chain is
what a TLS client presents, and the root is the device's trust anchor, which it must already hold to have
verified the broker (a root learned from the party being enrolled with would prove nothing).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mqtt_broker_auth.enrollment.settings import CLOCK_SKEW_S, MAX_PAYLOAD_BYTES
from trustlists.models import KeyType

__all__ = [
    "CLOCK_SKEW_S",
    "MAX_PAYLOAD_BYTES",
    "EnrollmentAccepted",
    "EnrollmentRejected",
    "EnrollmentRequest",
    "RejectReason",
    "build_request",
    "load_pem_chain",
    "sign",
    "signing_input",
    "verify",
]

_SIGNING_TAG = b"otpki-mqtt-enrollment-v1\n"  # domain separation: this signature means nothing anywhere else

RejectReason = Literal["malformed", "too_large", "bad_signature", "replay", "stale", "rate_limited",
                       "unauthorized", "identity_mismatch", "internal"]  # plus "csr_refused:<engine reason>"


def _parse_timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return parsed.astimezone(UTC)


class EnrollmentRequest(BaseModel):
    """What a device publishes to `{prefix}/{device}/csr`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requestId: str = Field(max_length=36)
    timestamp: str = Field(max_length=40)  # kept as sent: the signature covers these exact characters
    csr: str | None = Field(default=None, max_length=8192)
    serverKeygen: bool = False
    keyType: KeyType | None = None
    credential: str = Field(max_length=12288)
    signature: str = Field(max_length=1024)

    @field_validator("requestId")
    @classmethod
    def _uuid4(cls, value: str) -> str:
        parsed = uuid.UUID(value)
        if parsed.version != 4 or str(parsed) != value.lower():
            raise ValueError("requestId must be a UUID4 in its canonical text form")
        return value.lower()

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        _parse_timestamp(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> EnrollmentRequest:
        if (self.csr is None) == (not self.serverKeygen):
            raise ValueError("a request carries either csr or serverKeygen: true, not both and not neither")
        if self.keyType is not None and not self.serverKeygen:
            raise ValueError("keyType only goes with serverKeygen")
        return self

    @property
    def issued_at(self) -> datetime:
        return _parse_timestamp(self.timestamp)

    def signed_bytes(self, topic: str) -> bytes:
        return signing_input(topic, request_id=self.requestId, timestamp=self.timestamp, csr=self.csr,
                             server_keygen=self.serverKeygen, key_type=self.keyType)


class EnrollmentAccepted(BaseModel):
    """`{prefix}/{device}/accepted`. `privateKey` only for server-side key generation."""

    model_config = ConfigDict(extra="forbid")

    requestId: str
    certificate: str
    chain: list[str]  # issuing CA(s), root excluded (see module docstring)
    serial: str  # lowercase hex
    notAfter: str
    privateKey: str | None = None  # PKCS#8 PEM


class EnrollmentRejected(BaseModel):
    """`{prefix}/{device}/rejected`. `reason` is machine-readable; `message` is for people."""

    model_config = ConfigDict(extra="forbid")

    requestId: str | None = None
    reason: str
    message: str


def signing_input(topic: str, *, request_id: str, timestamp: str, csr: str | None, server_keygen: bool,
                  key_type: KeyType | str | None) -> bytes:
    """The canonical bytes a request's signature covers: a fixed tag, then sorted compact JSON.

    JSON with sorted keys and fixed separators is reproducible in every language a device firmware is
    written in; the topic is inside so a signed request is only valid on the device's own request topic.
    """
    fields = {"topic": topic, "requestId": request_id, "timestamp": timestamp, "csr": csr,
              "serverKeygen": bool(server_keygen), "keyType": None if key_type is None else str(key_type)}
    return _SIGNING_TAG + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> str:
    """base64 signature: ECDSA with SHA-256 (P-256) or SHA-384 (P-384), RSA PKCS#1 v1.5 SHA-256, or Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(data, ec.ECDSA(_ec_hash(key.curve)))
    elif isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(data)
    else:
        raise TypeError(f"unsupported credential key type {type(key).__name__}")
    return base64.b64encode(raw).decode()


def verify(public_key: PublicKeyTypes, signature_b64: str, data: bytes) -> bool:
    """True when the signature is valid; False for a wrong, garbled or unsupported signature."""
    try:
        raw = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(raw, data, ec.ECDSA(_ec_hash(public_key.curve)))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(raw, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _ec_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    return hashes.SHA384() if curve.key_size >= 384 else hashes.SHA256()


def load_pem_chain(pem: str | bytes) -> list[bytes]:
    """PEM certificates (leaf first) to DER; raises ValueError on anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    certs = x509.load_pem_x509_certificates(data)
    return [cert.public_bytes(Encoding.DER) for cert in certs]


def build_request(topic: str, *, credential_pem: str, credential_key: CertificateIssuerPrivateKeyTypes,
                  csr_pem: str | None = None, server_keygen: bool = False, key_type: KeyType | None = None,
                  request_id: str | None = None, now: datetime | None = None) -> EnrollmentRequest:
    """A signed request, as a device makes it (used by the simulators and the tests)."""
    request_id = request_id or str(uuid.uuid4())
    timestamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    data = signing_input(topic, request_id=request_id, timestamp=timestamp, csr=csr_pem,
                         server_keygen=server_keygen, key_type=key_type)
    return EnrollmentRequest(requestId=request_id, timestamp=timestamp, csr=csr_pem, serverKeygen=server_keygen,
                             keyType=key_type, credential=credential_pem, signature=sign(credential_key, data))
