"""The enrollment service: certificate requests over MQTT, answered by the engine.

The service is an ordinary MQTT client (gmqtt, MQTT 3.1.1, mTLS with its own engine-issued certificate whose
owner has `attributes["role"] == "enrollment-service"`). It subscribes to `{prefix}/+/csr` and answers on
`{prefix}/{device}/accepted|rejected` (wire format: `enrollment.messages`).

Every request is judged on its own, never on the broker's word: the `credential` chain inside it is
authenticated by the decision core (`DeviceGate`) for the device named by the topic, and the `signature`
proves the sender holds that credential's key. A bootstrap identity (manufacturer IDevID or allow-listed
factory certificate) gets a first operational certificate; an operational identity gets a renewal of the very
certificate it presented (same owner, the old one superseded).

Cheap refusals come first so that a flood costs little: a per-device token bucket in memory (then silence),
size, JSON shape, timestamp window, signature, the credential's authentication; only a request that passed all
of them reaches the store, where one transaction checks the replay memory and the shared per-device rate limit
(`engine.request_guard`: every service and process on the store, embedded broker and Mosquitto side alike,
shares both, across restarts). Then the signing key: a bootstrap identity enrolls through `engine.bootstrap`
(which pins the device to that certificate, or replaces the device's certificates when it comes back with it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import OrderedDict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv311
from pydantic import ValidationError

from mqtt_broker_auth.decision import ENROLLMENT_SERVICE_ROLE, DeviceGate, DeviceIdentity, Refusal
from mqtt_broker_auth.enrollment.messages import (
    EnrollmentAccepted,
    EnrollmentRejected,
    EnrollmentRequest,
    load_pem_chain,
    verify,
)
from mqtt_broker_auth.enrollment.settings import EnrollmentSettings
from mqtt_broker_auth.policy import mqtt_policy
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.models import IssuedCertificate
from trustlists.request_guard import RateLimit

__all__ = ["EnrollmentService", "EnrollmentSettings", "Outcome"]

_log = logging.getLogger(__name__)

Outcome = EnrollmentAccepted | EnrollmentRejected | None  # None: dropped without an answer


class _Bucket:
    __slots__ = ("stamp", "strikes", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.strikes = 0


class _FloodFilter:
    """Token bucket per device in this process's memory; answers "ok", "reject" (a few times) or "drop".

    The cheap first line against a flood, before any parsing: it sheds a device's excess without touching the
    store. The budget that counts across services and restarts is the store's (`engine.request_guard`), with
    the same numbers, asked only for requests that passed every cheap check.
    """

    def __init__(self, settings: EnrollmentSettings) -> None:
        self._s = settings
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, device: str, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(device, None) or _Bucket(float(self._s.burst), now)
        self._buckets[device] = bucket  # most recently used last
        while len(self._buckets) > self._s.tracked_devices:
            self._buckets.popitem(last=False)
        bucket.tokens = min(float(self._s.burst), bucket.tokens + (now - bucket.stamp) * self._s.refill_per_s)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.strikes = 0
            return "ok"
        bucket.strikes += 1
        return "reject" if bucket.strikes <= self._s.rejections_before_silence else "drop"


class _Rejection(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class EnrollmentService:
    """Serves `{prefix}/+/csr` on one broker for one device group."""

    def __init__(self, engine: Engine, *, host: str, port: int, ca_file: Path | str, cert_file: Path | str,
                 key_file: Path | str, group: str = "mqtt-device", settings: EnrollmentSettings | None = None,
                 client_id: str | None = None) -> None:
        self._engine = engine
        self._host = host
        self._port = port
        self._ca_file = Path(ca_file)
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        self.group = group
        self.settings = settings or EnrollmentSettings()
        self.prefix = mqtt_policy(engine.config, group).enrollment_prefix
        self._gate = DeviceGate(engine, group=group)
        # The broker admits the service by its certificate's identity; the client id must be that name.
        self.client_id = client_id or _cert_cn(self._cert_file)
        self._flood = _FloodFilter(self.settings)
        self._limit = RateLimit(burst=self.settings.burst, refill_per_s=self.settings.refill_per_s)
        # One replay memory per group, whatever broker or process the service runs on.
        self._scope = f"mqtt-enrollment:{group}"
        self._slots = asyncio.Semaphore(self.settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: MqttClient | None = None
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._ready: asyncio.Future[None] | None = None
        self.serving = asyncio.Event()  # set while subscribed to the request topics
        self.counters: dict[str, int] = {"accepted": 0, "rejected": 0, "dropped": 0}

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, subscribe, and return once the subscription is acknowledged."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self._ca_file))
        context.load_cert_chain(str(self._cert_file), str(self._key_file))
        client = MqttClient(self.client_id, clean_session=True)
        client.set_config({"reconnect_delay": self.settings.reconnect_delay_s})
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._ready = asyncio.get_running_loop().create_future()
        try:
            await client.connect(self._host, self._port, ssl=context, version=MQTTv311, keepalive=30)
            await asyncio.wait_for(self._ready, timeout=15)
        except BaseException:
            await self.stop()  # no half-started client reconnecting in the background
            raise
        _log.info("enrollment service %s serving %s/+/csr on %s:%s", self.client_id, self.prefix, self._host,
                  self._port)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.serving.clear()
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except Exception:  # the broker may be gone already; stopping must still finish
                _log.debug("disconnect failed", exc_info=True)

    async def __aenter__(self) -> EnrollmentService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- MQTT callbacks ---------------------------------------------------------------------------------------

    def _on_connect(self, client: Any, flags: Any, rc: Any, properties: Any) -> None:
        # Subscribe on every CONNACK: gmqtt reconnects by itself after a broker restart, and a restarted broker
        # has forgotten the session (amqtt keeps none across restarts).
        mid = client.subscribe(f"{self.prefix}/+/csr", qos=1)
        future = self._suback.setdefault(mid, asyncio.get_running_loop().create_future())
        future.add_done_callback(self._subscribed)

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        self.serving.clear()
        if self._client is not None:
            _log.warning("enrollment service %s lost the broker; reconnecting", self.client_id)

    def _subscribed(self, future: asyncio.Future[None]) -> None:
        error = future.exception()
        if error is None:
            self.serving.set()
        if self._ready is not None and not self._ready.done():
            if error is not None:
                self._ready.set_exception(error)
            else:
                self._ready.set_result(None)
        elif future.exception() is None:
            _log.info("enrollment service %s resubscribed after a reconnect", self.client_id)
        else:
            _log.error("enrollment service %s: %s", self.client_id, future.exception())

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        future = self._suback.pop(mid, None)
        if future is not None and not future.done():
            granted = list(qos) if isinstance(qos, list | tuple) else [qos]
            if any(q is None or int(q) >= 0x80 for q in granted):
                future.set_exception(ConnectionError(f"the broker refused the subscription (SUBACK {granted})"))
            else:
                future.set_result(None)

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        device = self._device_of(topic)
        if device is None:
            self.counters["dropped"] += 1
            _log.warning("enrollment: dropped a message on unexpected topic %r", topic)
            return 0
        verdict = self._flood.check(device)
        if verdict == "reject":
            message = "too many requests from this device; slow down"
            self._refused(device, None, "rate_limited", message)
            self._reply(device, EnrollmentRejected(reason="rate_limited", message=message))
            return 0
        if verdict == "drop":
            # Silence, and only a debug line: a flood must not turn into a flood of log lines either.
            self.counters["dropped"] += 1
            _log.debug("enrollment: dropped a request of %s (rate limit exceeded, answers suspended)", device)
            return 0
        if len(self._tasks) >= self.settings.max_pending:
            self.counters["dropped"] += 1
            _log.warning("enrollment: queue full (%d), dropped a request of %s", len(self._tasks), device)
            return 0
        task = asyncio.get_running_loop().create_task(self._serve(device, topic, bytes(payload)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 0

    async def _serve(self, device: str, topic: str, payload: bytes) -> None:
        async with self._slots:
            outcome = await self.handle(topic, payload, device=device)
        if outcome is not None:
            self._reply(device, outcome)

    def _reply(self, device: str, outcome: EnrollmentAccepted | EnrollmentRejected) -> None:
        kind = "accepted" if isinstance(outcome, EnrollmentAccepted) else "rejected"
        self.counters[kind] += 1
        if self._client is None:
            return
        body = outcome.model_dump_json(exclude_none=True).encode()
        try:
            self._client.publish(f"{self.prefix}/{device}/{kind}", body, qos=1)
        except Exception:  # a lost connection must not take the service down; the device will retry
            _log.exception("enrollment: could not publish the %s answer to %s", kind, device)

    # -- the decision -----------------------------------------------------------------------------------------

    def _device_of(self, topic: str) -> str | None:
        head, tail = f"{self.prefix}/", "/csr"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        device = topic[len(head):-len(tail)]
        if not device or any(c in device for c in "/+#\x00"):
            return None
        return device

    async def handle(self, topic: str, payload: bytes, *, device: str | None = None) -> Outcome:
        """Judge one request and return the answer (rate limiting is the caller's job: `_on_message`)."""
        device = device or self._device_of(topic)
        if device is None:
            return None
        request_id: str | None = None
        try:
            if len(payload) > self.settings.max_payload_bytes:
                raise _Rejection("too_large", f"payload of {len(payload)} bytes exceeds "
                                              f"{self.settings.max_payload_bytes}")
            request = self._parse(payload)
            request_id = request.requestId
            return await self._decide(device, topic, request)
        except _Rejection as rejection:
            self._refused(device, request_id, rejection.reason, rejection.message)
            return EnrollmentRejected(requestId=request_id, reason=rejection.reason, message=rejection.message)
        except Exception:
            _log.exception("enrollment: internal error on a request of %s", device)
            self._refused(device, request_id, "internal", "internal error")
            return EnrollmentRejected(requestId=request_id, reason="internal",
                                      message="the service failed on this request; try again later")

    @staticmethod
    def _parse(payload: bytes) -> EnrollmentRequest:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise _Rejection("malformed", "the payload is not JSON") from None
        try:
            return EnrollmentRequest.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "request"
            raise _Rejection("malformed", f"{where}: {first.get('msg', 'invalid')}") from None

    async def _decide(self, device: str, topic: str, request: EnrollmentRequest) -> EnrollmentAccepted:
        now = self._now()
        skew = timedelta(seconds=self.settings.clock_skew_s)
        if abs(request.issued_at - now) > skew:
            raise _Rejection("stale", f"timestamp {request.timestamp} is more than {skew.seconds} s from the "
                                      f"service's time {now.isoformat()}")
        try:
            chain = load_pem_chain(request.credential)
        except ValueError:
            chain = []
        if not chain:
            raise _Rejection("malformed", "credential is not a PEM certificate chain")
        leaf = x509.load_der_x509_certificate(chain[0])
        if not verify(leaf.public_key(), request.signature, request.signed_bytes(topic)):
            raise _Rejection("bad_signature", "the signature does not verify with the credential's key "
                                              "over this topic, id, time and request")
        identity = await run_blocking(self._gate.authenticate, chain, client_id=device)
        if isinstance(identity, Refusal):
            if identity.reason == "client_id_mismatch":
                raise _Rejection("identity_mismatch", f"the credential belongs to another device: {identity.detail}")
            raise _Rejection("unauthorized", f"{identity.reason}: {identity.detail}")
        if identity.role == ENROLLMENT_SERVICE_ROLE:
            raise _Rejection("unauthorized", "the enrollment service's own identity does not enroll")
        # Remembered until the timestamp window has passed for it: after that it is refused as stale anyway.
        forget_after = max(request.issued_at, now) + 2 * skew
        verdict = await run_blocking(self._engine.request_guard.admit, self._scope, device, request.requestId,
                                     expires_at=forget_after, limit=self._limit)
        if verdict == "replay":
            raise _Rejection("replay", f"request {request.requestId} was already received")
        if verdict == "rate_limited":
            raise _Rejection("rate_limited", "too many requests from this device; slow down")
        try:
            issued = await run_blocking(self._issue, identity, request, chain[0])
        except OtpkiError as exc:
            if exc.reason.startswith("bootstrap_"):  # lost a race to another bootstrap certificate: not the CSR
                raise _Rejection("unauthorized", f"{exc.reason}: {exc.message}") from None
            raise _Rejection(f"csr_refused:{exc.reason}", exc.message) from None
        _log.info("enrollment: issued %s to %s (%s, request %s)", issued.record.serial, device,
                  "renewal" if identity.kind == "operational" else "first enrollment", request.requestId)
        return _accepted(request.requestId, issued)

    def _issue(self, identity: DeviceIdentity, request: EnrollmentRequest, credential: bytes) -> IssuedCertificate:
        """Blocking: the engine checks the CSR (CN/URI of this device, key policy) and signs."""
        actor = f"mqtt-enrollment:{identity.device}"
        csr = request.csr.encode() if request.csr is not None else None
        if identity.kind == "operational":
            return self._engine.authority.renew(f"{identity.serial:x}", actor=actor, csr=csr, new_key=csr is None,
                                                key_type=request.keyType)
        return self._engine.bootstrap.enroll(owner_id=identity.owner_id, credential=credential, actor=actor, csr=csr,
                                             key_type=request.keyType)

    def _refused(self, device: str, request_id: str | None, reason: str, message: str) -> None:
        _log.warning("enrollment refused: device=%s request=%s reason=%s: %s", device, request_id, reason, message)

    def _now(self) -> datetime:
        return self._engine.now()


def _accepted(request_id: str, issued: IssuedCertificate) -> EnrollmentAccepted:
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    chain = []
    for der in issued.chain_der:
        ca = x509.load_der_x509_certificate(der)
        if ca.subject == ca.issuer:
            continue  # the root is the device's trust anchor, not something to learn from us
        chain.append(ca.public_bytes(Encoding.PEM).decode())
    key = issued.private_key.decode() if issued.private_key is not None else None
    return EnrollmentAccepted(requestId=request_id, certificate=cert.public_bytes(Encoding.PEM).decode(),
                              chain=chain, serial=issued.record.serial,
                              notAfter=cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"), privateKey=key)


def _cert_cn(cert_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError(f"{cert_file}: the service certificate has no CN to use as its client id")
    return str(names[0].value)
