"""The listener's check right after the TLS handshake, before it reads a single MQTT byte.

OpenSSL has verified the chain against the trust list (and, when the CRL layer is on, the leaf against its
CA's CRL: see listener_tls). Python 3.11's ssl offers no verify callback, so what OpenSSL cannot know is asked
here, at the first point where Python sees the connection: the DeviceGate's judgement without the client id
(revocation of the leaf and of every engine CA above it from the live index, expiry on the engine's clock, a
registered and current identity, the bootstrap allow-list) and, for a certificate that chains to an engine
CA, that the engine really issued it: a certificate it never issued (forged with a CA key, say) is not in the
inventory, whatever its signature. A refusal here closes the connection; the client never gets a CONNACK.
The client id rule, the will topic and the listener's mode are judged at CONNECT (CONNACK 5), because only
the CONNECT carries them.
"""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mqtt_broker_auth.decision import DeviceGate, DeviceIdentity, Refusal
from trustlists.blocking import run_blocking
from trustlists.engine import Engine

__all__ = ["HandshakeCheck", "TlsRefusal", "openssl_refusal", "peer_chain"]


class TlsRefusal(BaseModel):
    """A connection closed during or right after its TLS handshake (no MQTT byte read)."""

    model_config = ConfigDict(frozen=True)

    layer: Literal["openssl", "handshake_check"]
    reason: str
    detail: str
    peer: str


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> list[bytes]:
    """The client's certificate chain, leaf first, as this TLS connection presented it ([] for none)."""
    if ssl_object is None:
        return []
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return []
    # Python 3.13 can give the verified chain; on 3.11 the leaf suffices: the validator builds the path from
    # the trust list, which holds every CA a device certificate may chain through.
    get_chain = getattr(ssl_object, "get_verified_chain", None)
    if get_chain is not None:
        try:
            chain = [bytes(c) if isinstance(c, bytes | bytearray) else c.public_bytes() for c in get_chain()]
            if chain and chain[0] == leaf:
                return chain
        except (ssl.SSLError, ValueError, AttributeError, TypeError):
            pass
    return [leaf]


_ISSUED_CACHE_LIMIT = 4096


class HandshakeCheck:
    """`await check(ssl_object)`: the identity, a Refusal, or None when no certificate was presented."""

    def __init__(self, engine: Engine, gate: DeviceGate) -> None:
        self._engine = engine
        self._gate = gate
        # fingerprint -> owner id of certificates found in the inventory. That the engine issued a certificate
        # to an owner never changes (revocation is the gate's question), so devices reconnecting with the same
        # certificate skip the read (~0.1 ms of a connect's ~0.2 ms here).
        self._issued: dict[str, str] = {}

    async def __call__(self, ssl_object: ssl.SSLObject | None) -> DeviceIdentity | Refusal | None:
        chain = peer_chain(ssl_object)
        if not chain:
            return None  # with CERT_REQUIRED OpenSSL already refused it; otherwise the CONNECT is refused
        return await run_blocking(self.judge, chain)

    def judge(self, chain: list[bytes]) -> DeviceIdentity | Refusal:
        """Blocking: certificate validation and two or three indexed SQLite reads."""
        outcome = self._gate.authenticate(chain, None)
        if isinstance(outcome, Refusal) or outcome.kind != "operational":
            return outcome
        owner_id = self._issued.get(outcome.fingerprint)
        if owner_id is None:
            record = self._engine.inventory.by_fingerprint(outcome.fingerprint)
            if record is not None and record.owner_id is not None:
                owner_id = record.owner_id
                if len(self._issued) >= _ISSUED_CACHE_LIMIT:
                    self._issued.clear()  # bounded without bookkeeping; refills on the next connects
                self._issued[outcome.fingerprint] = owner_id
        if owner_id != outcome.owner_id:
            return Refusal(reason="unknown_certificate",
                           detail=f"a certificate for {outcome.device!r} (serial {outcome.serial:x}, sha256 "
                                  f"{outcome.fingerprint[:16]}…) chains to an engine CA but the engine never issued it")
        return outcome


# OpenSSL's X509_V_ERR_* codes, in the DeviceGate's words where one fits.
_VERIFY_REASONS = {
    2: "untrusted", 18: "untrusted", 19: "untrusted", 20: "untrusted", 21: "untrusted",
    9: "not_yet_valid", 10: "expired",
    3: "revocation_unknown", 11: "revocation_unknown", 12: "revocation_unknown",
    7: "invalid_certificate", 23: "revoked", 26: "wrong_usage",
}


def openssl_refusal(exc: ssl.SSLError) -> tuple[str, str]:
    """(reason, detail) for a failed server-side handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_REASONS.get(exc.verify_code, "tls_verify_failed"), exc.verify_message
    if exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "no_certificate", "the client presented no certificate"
    return "tls_handshake_failed", exc.reason or str(exc)
