"""OCSP responses (RFC 6960, the lightweight profile of RFC 5019): status from the store, signed by the CA's
delegated signer (trustlists.ocsp_signer), cached per (CA, serial, CertID hash).

Two entry points, so a front keeps its event loop free:
- `cached(request)` does no I/O and no signing: the cached answer, or None when one has to be built;
- `respond(request)` blocks (store reads, a signature): call it through `run_blocking`.

A cached answer is used only while it is known to be right: the revocation index (trustlists.crl) was refreshed
within `index_max_age_s` (or, on PostgreSQL, no revocation was announced since: LISTEN/NOTIFY), a "good" answer's
serial is not in it, the CA's signer is the one that signed it, and the answer is less than half its validity old.
So a revocation committed by any process on the store is answered as revoked within about `index_max_age_s`.
"unknown" answers are never cached (anyone can ask about any number of serials), nor answers to a request with a
nonce (RFC 8954: the nonce is inside the signed data, each one is signed on its own).

Errors are OCSP's own: garbage -> malformedRequest, a CA that is not ours -> unauthorized, a CA whose signer is
not there yet -> tryLater, anything else unexpected -> internalError; never an exception to the front.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from trustlists.clock import from_epoch
from trustlists.context import EngineContext
from trustlists.crl import reason_flag
from trustlists.models import RevocationReason
from trustlists.ocsp_encoding import ResponseEncoder
from trustlists.ocsp_signer import OcspSigner, OcspSigners
from trustlists.serials import serial_hex
from trustlists.store.base import Subscription
from trustlists.store.sql import REVOCATIONS_CHANNEL

log = logging.getLogger(__name__)

CertStatus = Literal["good", "revoked", "unknown"]
ResponseStatus = Literal["successful", "malformedRequest", "internalError", "tryLater", "unauthorized"]

# RFC 8954 2.1: a nonce is 1 to 32 octets; a longer one is refused rather than signed back.
MAX_NONCE_OCTETS = 32
_NONCE_OID = x509.OCSPNonce.oid
_CERT_STATUS = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                "unknown": ocsp.OCSPCertStatus.UNKNOWN}
# The CertID hashes a request may use (what cryptography's OCSP request builder supports).
_CERT_ID_HASHES: tuple[hashes.HashAlgorithm, ...] = (hashes.SHA1(), hashes.SHA224(), hashes.SHA256(),
                                                     hashes.SHA384(), hashes.SHA512())


class OcspAnswer(NamedTuple):
    """A DER OCSPResponse and what an HTTP front needs to say about it."""

    der: bytes
    status: ResponseStatus
    cert_status: CertStatus | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    etag: str | None = None  # set on answers every requester may share (no nonce)


def _unsuccessful(status: ocsp.OCSPResponseStatus, name: ResponseStatus) -> OcspAnswer:
    return OcspAnswer(ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER), name)


MALFORMED = _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformedRequest")
UNAUTHORIZED = _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized")
TRY_LATER = _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER, "tryLater")
INTERNAL_ERROR = _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internalError")


class _Request(NamedTuple):
    hash_name: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    algorithm: hashes.HashAlgorithm
    nonce: bytes | None


class _Status(NamedTuple):
    cert_status: CertStatus
    revoked_at: datetime | None = None
    reason: RevocationReason | None = None


@dataclass(frozen=True)
class _Cached:
    answer: OcspAnswer
    signer_serial: int
    refresh_at: datetime  # half the validity: a client never gets an answer about to expire


@dataclass
class _LoadedSigner:
    signer: OcspSigner | None
    loaded_at: float  # monotonic
    encoder: ResponseEncoder | None = None  # the signer's template (None: a key kind left to the builder)


def parse_request(der: bytes) -> _Request | OcspAnswer:
    """The one request of an OCSPRequest, or MALFORMED (garbage, several requests, a nonce out of bounds)."""
    try:
        req = ocsp.load_der_ocsp_request(der)
        nonce: bytes | None = None
        for extension in req.extensions:  # a loop over the few there are: cheaper than a lookup by class
            if extension.oid == _NONCE_OID:
                nonce = extension.value.nonce
        algorithm = req.hash_algorithm
        parsed = _Request(algorithm.name, req.issuer_name_hash, req.issuer_key_hash, req.serial_number, algorithm,
                          nonce)
    except Exception:  # cryptography raises ValueError and others for what it cannot parse: all of it is malformed
        return MALFORMED
    if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE_OCTETS:
        return MALFORMED
    return parsed


class OcspResponder:
    def __init__(self, ctx: EngineContext, signers: OcspSigners, *, max_cached: int = 200_000,
                 index_max_age_s: float = 0.25, notified_max_age_s: float = 5.0, signer_recheck_s: float = 10.0,
                 ca_recheck_s: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        """`index_max_age_s`: how stale the revocation index may be when a cached answer is used (a store without
        notifications: SQLite); `notified_max_age_s` the same where revocations are announced (a safety net for
        a lost notification). `signer_recheck_s`: how often a renewed signer (maybe by another process) is looked
        for. `monotonic`: the clock of those intervals (a test's, to step it)."""
        self._ctx = ctx
        self._monotonic = monotonic
        self._validity = timedelta(seconds=ctx.config.ocsp.response_validity_s)
        self._signers = signers
        self._max_cached = max_cached
        self._index_max_age = index_max_age_s
        self._notified_max_age = notified_max_age_s
        self._signer_recheck = signer_recheck_s
        self._ca_recheck = ca_recheck_s
        self._cache: dict[tuple[str, int, str], _Cached] = {}
        self._issuers: dict[tuple[str, bytes, bytes], str] = {}  # (hash, name hash, key hash) -> CA id
        self._issuers_loaded = -float("inf")
        self._loaded: dict[str, _LoadedSigner] = {}
        self._signer_generation = signers.generation
        self._fresh_until = -float("inf")  # monotonic time until which the revocation index counts as current
        self._announced = 0  # revocations announced by the store (notifications received)
        self._subscription: Subscription | None = None
        self._subscribed = False
        self._lock = threading.Lock()

    # -- the two entry points ---------------------------------------------------------------------
    def cached(self, request_der: bytes) -> OcspAnswer | None:
        """The answer without I/O: a cached one that is still right, MALFORMED, or None (call `respond`)."""
        parsed = parse_request(request_der)
        if isinstance(parsed, OcspAnswer):
            return parsed
        if parsed.nonce is not None or self._monotonic() >= self._fresh_until:
            return None
        ca_id = self._issuers.get((parsed.hash_name, parsed.issuer_name_hash, parsed.issuer_key_hash))
        if ca_id is None:
            return None
        return self._usable(ca_id, parsed)

    def respond(self, request_der: bytes) -> OcspAnswer:
        """The answer, built and signed if it has to be (blocking)."""
        parsed = parse_request(request_der)
        if isinstance(parsed, OcspAnswer):
            return parsed
        try:
            return self._respond(parsed)
        except Exception:
            # Whatever went wrong (a store that is down, an HSM that fails), the client gets OCSP's word for it.
            log.exception("OCSP: could not answer a request")
            return INTERNAL_ERROR

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    # -- the work ---------------------------------------------------------------------------------
    def _respond(self, req: _Request) -> OcspAnswer:
        self._refresh_index()
        ca_id = self._issuer(req)
        if ca_id is None:
            return UNAUTHORIZED
        signer = self._signer(ca_id)
        if signer is None:
            return TRY_LATER  # the maintenance leader has not issued this CA's signer yet
        if req.nonce is None:
            answer = self._usable(ca_id, req)
            if answer is not None:
                return answer
        status = self._status(ca_id, req.serial)
        answer = self._sign(req, signer, self._loaded[ca_id].encoder, status)
        if req.nonce is None and status.cert_status != "unknown":
            self._remember(ca_id, req, answer, signer)
        return answer

    def _usable(self, ca_id: str, req: _Request) -> OcspAnswer | None:
        entry = self._cache.get((ca_id, req.serial, req.hash_name))
        if entry is None:
            return None
        index = self._ctx.index
        answer = entry.answer
        if answer.cert_status == "good" and index.is_revoked(ca_id, req.serial):
            return None
        loaded = self._loaded.get(ca_id)
        if (loaded is None or loaded.signer is None or loaded.signer.serial != entry.signer_serial
                or self._signers.generation != self._signer_generation
                or self._monotonic() - loaded.loaded_at >= self._signer_recheck
                or index.is_revoked(ca_id, entry.signer_serial)):
            return None
        if self._ctx.clock() >= entry.refresh_at:
            return None
        return answer

    def _remember(self, ca_id: str, req: _Request, answer: OcspAnswer, signer: OcspSigner) -> None:
        assert answer.this_update is not None and answer.next_update is not None
        refresh_at = answer.this_update + (answer.next_update - answer.this_update) / 2
        key = (ca_id, req.serial, req.hash_name)
        if self._max_cached <= 0:
            return  # caching off (a benchmark's uncached responder)
        with self._lock:
            if key not in self._cache and len(self._cache) >= self._max_cached:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry: bounded memory whatever is asked
            self._cache[key] = _Cached(answer, signer.serial, refresh_at)

    def _refresh_index(self) -> None:
        """Bring the revocation index up to date if it may be stale (another process revoked meanwhile)."""
        if not self._subscribed:
            self._subscribe()
        now = self._monotonic()
        if now < self._fresh_until:
            return
        with self._lock:
            if self._monotonic() < self._fresh_until:
                return
            announced = self._announced
            max_age = self._notified_max_age if self._subscription is not None else self._index_max_age
            started = self._monotonic()
            with self._ctx.store.read() as tx:
                self._ctx.index.refresh(tx)
            if announced == self._announced:  # an announcement during the read may not be in it: stay stale
                self._fresh_until = started + max_age

    def _subscribe(self) -> None:
        with self._lock:
            if self._subscribed:
                return
            self._subscribed = True
            try:
                self._subscription = self._ctx.store.subscribe(REVOCATIONS_CHANNEL, self._on_announcement)
            except Exception:  # no LISTEN connection: the index is polled like on SQLite
                log.warning("OCSP: revocations are polled (no notification channel)", exc_info=True)

    def _on_announcement(self) -> None:
        self._announced += 1
        self._fresh_until = -float("inf")

    def _issuer(self, req: _Request) -> str | None:
        key = (req.hash_name, req.issuer_name_hash, req.issuer_key_hash)
        ca_id = self._issuers.get(key)
        if ca_id is None and self._monotonic() - self._issuers_loaded >= self._ca_recheck:
            self._load_issuers()  # a CA created since (maybe by another process); at most once per ca_recheck_s
            ca_id = self._issuers.get(key)
        return ca_id

    def _load_issuers(self) -> None:
        issuers: dict[tuple[str, bytes, bytes], str] = {}
        for ca in self._ctx.cas():
            cert = self._ctx.ca_certificate(ca)
            name_der = cert.subject.public_bytes()
            for algorithm in _CERT_ID_HASHES:
                # issuerKeyHash covers the subjectPublicKey bits alone (RFC 6960 4.1.1): cryptography computes it for
                # a request naming the CA as issuer (the request's own name hash is of that probe's issuer, unused).
                probe = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, algorithm).build()
                digest = hashes.Hash(algorithm)
                digest.update(name_der)
                issuers[(algorithm.name, digest.finalize(), probe.issuer_key_hash)] = ca.id
        self._issuers = issuers
        self._issuers_loaded = self._monotonic()

    def _signer(self, ca_id: str) -> OcspSigner | None:
        if self._signers.generation != self._signer_generation:  # this engine issued a signer: look again
            self._signer_generation = self._signers.generation
            self._loaded.clear()
        loaded = self._loaded.get(ca_id)
        now = self._monotonic()
        # No signer yet is looked for again sooner (the leader may be another process that is issuing it now).
        recheck = self._signer_recheck if loaded is not None and loaded.signer is not None else self._ca_recheck
        if loaded is not None and now - loaded.loaded_at < recheck and not (
                loaded.signer is not None and self._ctx.index.is_revoked(ca_id, loaded.signer.serial)):
            return loaded.signer
        current = self._signers.current_serial(ca_id)
        signer = loaded.signer if loaded is not None else None
        if signer is None or current is None or int(current, 16) != signer.serial or self._expired(signer):
            signer = self._signers.load(ca_id)
        elif self._ctx.index.is_revoked(ca_id, signer.serial):
            signer = None
        previous = loaded.encoder if loaded is not None and loaded.signer is signer else None
        encoder = previous if previous is not None or signer is None else ResponseEncoder.for_signer(
            signer.key, signer.algorithm, signer.certificate)
        self._loaded[ca_id] = _LoadedSigner(signer, now, encoder)
        return signer

    def _expired(self, signer: OcspSigner) -> bool:
        return signer.not_after <= self._ctx.clock()

    def _status(self, ca_id: str, serial: int) -> _Status:
        """What the store says about the serial: issued by this CA (a leaf, its signer, a child CA) or not."""
        wanted = serial_hex(serial)
        with self._ctx.store.read() as tx:
            state = tx.certificate_state(wanted)
            if state is not None and state.issuer_ca_id == ca_id:
                if state.revoked_at is not None:
                    return _Status("revoked", from_epoch(state.revoked_at), RevocationReason(state.reason or 0))
                return _Status("good")
            for ca in self._ctx.cas():
                if ca.parent_id == ca_id and ca.serial == wanted:
                    # A CA's revocations are few (its child CAs and signers): its CRL entries are read whole.
                    for entry in tx.revoked_entries(ca_id, from_epoch(0)):
                        if entry.serial == wanted:
                            return _Status("revoked", from_epoch(entry.revoked_at), RevocationReason(entry.reason))
                    return _Status("good")
        return _Status("unknown")

    def _sign(self, req: _Request, signer: OcspSigner, encoder: ResponseEncoder | None,
              status: _Status) -> OcspAnswer:
        # The uncached path's cost is this signature; keep everything around it lean (bench/ocsp.py).
        now = self._ctx.clock().replace(microsecond=0)  # RFC 5019 4.2.2.1: GeneralizedTime without fractions
        next_update = now + self._validity
        if next_update > signer.not_after:
            next_update = signer.not_after  # never vouched for beyond the signer's own end
        revoked_at = status.revoked_at.replace(microsecond=0) if status.revoked_at is not None else None
        reason = reason_flag(status.reason) if status.reason is not None else None
        # The CRLReason code where there is one to state (never for unspecified, as reason_flag decides).
        code = int(status.reason) if reason is not None and status.reason is not None else None
        der = None if encoder is None else encoder.encode(
            hash_name=req.hash_name, issuer_name_hash=req.issuer_name_hash, issuer_key_hash=req.issuer_key_hash,
            serial=req.serial, cert_status=_CERT_STATUS[status.cert_status], this_update=now,
            next_update=next_update, revoked_at=revoked_at, reason=code, nonce=req.nonce)
        if der is None:
            der = self._build(req, signer, status, now, next_update, revoked_at, reason)
        etag = None if req.nonce is not None else hashlib.sha256(der).hexdigest()[:32]
        return OcspAnswer(der, "successful", status.cert_status, now, next_update, etag)

    def _build(self, req: _Request, signer: OcspSigner, status: _Status, now: datetime, next_update: datetime,
               revoked_at: datetime | None, reason: x509.ReasonFlags | None) -> bytes:
        """cryptography's builder: for what `ResponseEncoder` leaves to it."""
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(req.issuer_name_hash, req.issuer_key_hash, req.serial, req.algorithm,
                                  _CERT_STATUS[status.cert_status], now, next_update, revoked_at, reason)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
            .certificates([signer.certificate])
        )
        if req.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(req.nonce), critical=False)
        return builder.sign(signer.key, signer.algorithm).public_bytes(Encoding.DER)

