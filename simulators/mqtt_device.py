"""An MQTT field device: bootstrap certificate -> enrollment over MQTT -> mTLS telemetry -> renewal -> revocation.

One lifecycle (`MqttDevice`) over two client libraries behind a small transport interface (`mqtt_transport`,
paho-mqtt 2.x and gmqtt), because plants run both kinds of firmware stacks.

States: new -> enrolling -> connecting -> online (<-> renewing) -> revoked | refused | failed | stopped.
`revoked`: the broker dropped an established session and refuses every reconnect with the same certificate
(what a revocation looks like from the device). `refused`: the very first operational connect was refused.
`failed`: enrollment was rejected or the broker stayed unreachable. `ended` is set on any terminal state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqtt_broker_auth.enrollment.messages import EnrollmentAccepted, EnrollmentRejected, build_request
from simulators.manufacturer import generate_key
from simulators.mqtt_transport import TRANSPORTS, ConnectRefused, Transport
from trustlists.blocking import run_blocking
from trustlists.keys.algorithms import can_sign_certificates
from trustlists.models import KeyType
from trustlists.safe_files import private_directory, write_public, write_secret

__all__ = ["ConnectRefused", "DeviceConfig", "DeviceState", "EnrollmentFailed", "MqttDevice"]

_log = logging.getLogger(__name__)


class DeviceState(StrEnum):
    NEW = "new"
    ENROLLING = "enrolling"
    CONNECTING = "connecting"
    ONLINE = "online"
    RENEWING = "renewing"
    REVOKED = "revoked"
    REFUSED = "refused"
    FAILED = "failed"
    STOPPED = "stopped"


TERMINAL = frozenset({DeviceState.REVOKED, DeviceState.REFUSED, DeviceState.FAILED, DeviceState.STOPPED})


class DeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # the registered device name: MQTT client id and certificate CN
    site: str = "default"
    library: Literal["paho", "gmqtt"] = "paho"
    host: str = "127.0.0.1"
    port: int
    # Where first enrollment with the bootstrap certificate happens, when that is not the broker itself: on a
    # Mosquitto deployment it is otpki's bootstrap listener (Mosquitto never trusts a manufacturer CA).
    bootstrap_host: str | None = None
    bootstrap_port: int | None = None
    ca_file: Path  # trust anchor(s) for the broker's server certificate
    workdir: Path  # operational certificate and key live here
    bootstrap_cert_file: Path
    bootstrap_key_file: Path
    enrollment: Literal["csr", "server_keygen"] = "csr"
    key_type: KeyType = KeyType.EC_P256
    enrollment_prefix: str = "otpki/enroll"
    telemetry_topic: str = "plant/{site}/{device}/telemetry"
    telemetry_interval_s: float = Field(default=5.0, gt=0)
    renewal_window: timedelta = timedelta(days=30)  # renew when less than this validity is left
    renewal_retry_s: float = 60.0  # after a refused renewal, wait this long before asking again
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 15.0
    reconnect_attempts: int = 3
    enroll_attempts: int = 3  # connection-level failures only; a rejection by the service is final
    reconnect_delay_s: float = 0.5

    @property
    def operational_cert_file(self) -> Path:
        return self.workdir / f"{self.name}.crt"

    @property
    def operational_key_file(self) -> Path:
        return self.workdir / f"{self.name}.key"


class EnrollmentFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# -- the device ---------------------------------------------------------------------------------------------------

class MqttDevice:
    def __init__(self, config: DeviceConfig, *, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._state = DeviceState.NEW
        self.ended = asyncio.Event()  # set on revoked / refused / failed / stopped
        self.online = asyncio.Event()  # set while an operational session is up
        self.last_error: str | None = None
        self.telemetry_sent = 0
        self.renewals = 0
        self.history: list[DeviceState] = [DeviceState.NEW]
        self._transport: Transport | None = None
        self._pending: dict[str, asyncio.Future[EnrollmentAccepted]] = {}
        self._replies_subscribed = False
        self._renew_requests: list[asyncio.Future[str]] = []
        self._renew_wakeup = asyncio.Event()
        self._next_renewal_try: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    # -- what observers see ---------------------------------------------------------------------------------

    @property
    def state(self) -> DeviceState:
        return self._state

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def certificate(self) -> x509.Certificate | None:
        path = self.config.operational_cert_file
        if not path.exists():
            return None
        return x509.load_pem_x509_certificates(path.read_bytes())[0]

    @property
    def serial_hex(self) -> str | None:
        cert = self.certificate
        return None if cert is None else f"{cert.serial_number:x}"

    def _set_state(self, state: DeviceState, error: str | None = None) -> None:
        if error is not None:
            self.last_error = error
        if state == self._state:
            return
        _log.info("device %s: %s -> %s%s", self.name, self._state, state, f" ({error})" if error else "")
        self._state = state
        self.history.append(state)
        if state in TERMINAL:
            self.online.clear()
            self.ended.set()

    # -- control --------------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"device-{self.name}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_transport()
        if self._state not in TERMINAL:
            self._set_state(DeviceState.STOPPED)

    async def renew_now(self, timeout: float | None = None) -> str:
        """Ask the running device to renew; returns the new serial (hex) or raises EnrollmentFailed."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._renew_requests.append(future)
        self._renew_wakeup.set()
        async with asyncio.timeout(timeout or self.config.request_timeout_s * 2):  # not wait_for: gh-86296
            return await future

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.certificate is None and not await self._enroll_with_retries():
                return
            had_session = False
            while True:
                outcome = await self._connect_operational(had_session)
                if outcome is not None:
                    return
                had_session = True
                if await self._operate() == "lost":
                    self.online.clear()
                    await self._close_transport()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a simulator must report, not vanish
            _log.exception("device %s crashed", self.name)
            self._set_state(DeviceState.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            self._fail_renewals("the device stopped")

    async def _enroll_with_retries(self) -> bool:
        # A broker that was just told about the manufacturer CA may not trust it yet, and a broker restart
        # looks the same: connection-level failures are retried; an answer from the service is final.
        attempts = max(1, self.config.enroll_attempts)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.config.reconnect_delay_s * attempt)
            try:
                await self.enroll()
                return True
            except EnrollmentFailed as exc:
                self._set_state(DeviceState.FAILED, f"enrollment: {exc}")
                return False
            except (ConnectRefused, TimeoutError, OSError) as exc:
                if attempt + 1 >= attempts:
                    self._set_state(DeviceState.FAILED, f"enrollment: {exc}")
                    return False
                _log.info("device %s: enrollment attempt %d failed (%s); retrying", self.name, attempt + 1, exc)
        return False

    async def enroll(self) -> None:
        """First enrollment over a bootstrap-certificate session; writes the operational cert and key."""
        self._set_state(DeviceState.ENROLLING)
        config = self.config
        await self._open(config.bootstrap_cert_file, config.bootstrap_key_file, bootstrap=True)
        try:
            credential_pem = config.bootstrap_cert_file.read_text()
            key = _load_key(config.bootstrap_key_file.read_bytes())
            await self._obtain(credential_pem, key)
        finally:
            await self._close_transport()

    async def _connect_operational(self, had_session: bool) -> DeviceState | None:
        """Connect with the operational cert; None when online, else the terminal state it ended in."""
        self._set_state(DeviceState.CONNECTING)
        attempts = max(1, self.config.reconnect_attempts)
        # A refusal of a certificate that never worked is final at once; after a drop, a refusal could still be
        # a race with the broker's cleanup of the old session, so it gets the same retries as a network error.
        refusals_allowed = attempts if had_session else 1
        refusals = 0
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.config.reconnect_delay_s * attempt)
            try:
                await self._open(self.config.operational_cert_file, self.config.operational_key_file)
            except ConnectRefused as exc:
                last = exc
                refusals += 1
                if refusals >= refusals_allowed or attempt + 1 >= attempts:
                    state = DeviceState.REVOKED if had_session else DeviceState.REFUSED
                    self._set_state(state, str(exc))
                    return state
                continue
            except (TimeoutError, OSError) as exc:  # broker away: transient, try again
                last = exc
                continue
            self._set_state(DeviceState.ONLINE)
            self.online.set()
            return None
        self._set_state(DeviceState.FAILED, f"broker unreachable: {last}")
        return DeviceState.FAILED

    async def _operate(self) -> Literal["lost", "renewed"]:
        """Telemetry every interval; renew when due or asked. Returns why the session ended."""
        transport = self._transport
        assert transport is not None
        topic = self.config.telemetry_topic.format(site=self.config.site, device=self.name)
        lost = asyncio.ensure_future(transport.lost.wait())
        try:
            while True:
                if transport.lost.is_set():
                    return "lost"
                if self._renew_requests or self.renewal_due():
                    if await self._renew():
                        self.online.clear()  # this session ends; online again once the new certificate's is up
                        await self._close_transport()
                        return "renewed"
                    if transport.lost.is_set():
                        return "lost"
                self.telemetry_sent += 1
                transport.publish(topic, json.dumps({"device": self.name, "seq": self.telemetry_sent,
                                                     "ts": self._clock().isoformat()}).encode(), qos=1)
                self._renew_wakeup.clear()
                wakeup = asyncio.ensure_future(self._renew_wakeup.wait())
                try:
                    await asyncio.wait({lost, wakeup}, timeout=self.config.telemetry_interval_s,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wakeup.cancel()
        finally:
            lost.cancel()

    def renewal_due(self) -> bool:
        """Inside the renewal window of the current certificate (and not backing off after a refusal)."""
        cert = self.certificate
        now = self._clock()
        if cert is None or (self._next_renewal_try is not None and now < self._next_renewal_try):
            return False
        return cert.not_valid_after_utc - now < self.config.renewal_window

    async def _renew(self) -> bool:
        """Renew over the current operational session, authorized by the current certificate."""
        self._set_state(DeviceState.RENEWING)
        config = self.config
        try:
            credential_pem = config.operational_cert_file.read_text()
            key = _load_key(config.operational_key_file.read_bytes())
            serial = await self._obtain(credential_pem, key)
        except (EnrollmentFailed, TimeoutError, ConnectRefused) as exc:
            self._next_renewal_try = self._clock() + timedelta(seconds=config.renewal_retry_s)
            self._fail_renewals(str(exc), exc if isinstance(exc, EnrollmentFailed) else None)
            self._set_state(DeviceState.ONLINE, f"renewal: {exc}")
            return False
        self.renewals += 1
        self._next_renewal_try = None
        requests, self._renew_requests = self._renew_requests, []
        for future in requests:
            if not future.done():
                future.set_result(serial)
        return True

    def _fail_renewals(self, message: str, exc: EnrollmentFailed | None = None) -> None:
        requests, self._renew_requests = self._renew_requests, []
        for future in requests:
            if not future.done():
                future.set_exception(exc or EnrollmentFailed("renewal_failed", message))

    # -- the enrollment exchange ------------------------------------------------------------------------------

    async def _obtain(self, credential_pem: str, credential_key: CertificateIssuerPrivateKeyTypes) -> str:
        """One request/answer on the open transport; installs the new certificate; returns its serial."""
        config = self.config
        transport = self._transport
        assert transport is not None
        base = f"{config.enrollment_prefix}/{self.name}"
        if not self._replies_subscribed:
            await transport.subscribe(f"{base}/+", config.request_timeout_s)  # before publishing (AWS rule)
            self._replies_subscribed = True
        new_key: CertificateIssuerPrivateKeyTypes | None = None
        csr_pem: str | None = None
        if config.enrollment == "csr":
            new_key, csr_pem = await run_blocking(_key_and_csr, self.name, config.key_type)
        request = await run_blocking(
            build_request, f"{base}/csr", credential_pem=credential_pem, credential_key=credential_key,
            csr_pem=csr_pem, server_keygen=config.enrollment == "server_keygen",
            key_type=config.key_type if config.enrollment == "server_keygen" else None, now=self._clock())
        future: asyncio.Future[EnrollmentAccepted] = asyncio.get_running_loop().create_future()
        self._pending[request.requestId] = future
        try:
            transport.publish(f"{base}/csr", request.model_dump_json(exclude_none=True).encode(), qos=1)
            lost = asyncio.ensure_future(transport.lost.wait())
            either: list[asyncio.Future[Any]] = [future, lost]
            try:
                await asyncio.wait(either, timeout=config.request_timeout_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
            if not future.done():
                if transport.lost.is_set():
                    raise ConnectRefused("the broker closed the connection before the answer came")
                raise TimeoutError(f"no answer to request {request.requestId} within {config.request_timeout_s} s")
            accepted = future.result()
        finally:
            self._pending.pop(request.requestId, None)
        await run_blocking(self._install, accepted, new_key)
        return accepted.serial

    def _on_message(self, topic: str, payload: bytes) -> None:
        base = f"{self.config.enrollment_prefix}/{self.name}/"
        if not topic.startswith(base):
            return
        kind = topic[len(base):]
        try:
            data = json.loads(payload)
            if kind == "accepted":
                accepted = EnrollmentAccepted.model_validate(data)
                future = self._pending.get(accepted.requestId)
                if future is not None and not future.done():
                    future.set_result(accepted)
            elif kind == "rejected":
                rejected = EnrollmentRejected.model_validate(data)
                failure = EnrollmentFailed(rejected.reason, rejected.message)
                targets = ([self._pending[rejected.requestId]] if rejected.requestId in self._pending
                           else [] if rejected.requestId else list(self._pending.values()))
                for future in targets:
                    if not future.done():
                        future.set_exception(failure)
        except (ValueError, ValidationError):
            _log.warning("device %s: unreadable answer on %s", self.name, topic)

    def _install(self, accepted: EnrollmentAccepted, new_key: CertificateIssuerPrivateKeyTypes | None) -> None:
        """Check the answer fits (our key, our name) and write cert + key atomically."""
        cert = x509.load_pem_x509_certificate(accepted.certificate.encode())
        if new_key is None:
            if accepted.privateKey is None:
                raise EnrollmentFailed("bad_answer", "server-side key generation answered without a key")
            new_key = _load_key(accepted.privateKey.encode())
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(*spki) != new_key.public_key().public_bytes(*spki):
            raise EnrollmentFailed("bad_answer", "the issued certificate is not for this device's key")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != self.name:
            raise EnrollmentFailed("bad_answer", "the issued certificate names another device")
        key_pem = new_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        private_directory(self.config.workdir)
        write_secret(self.config.operational_key_file, key_pem)
        write_public(self.config.operational_cert_file, (accepted.certificate + "".join(accepted.chain)).encode())

    # -- connections ----------------------------------------------------------------------------------------------

    async def _open(self, cert_file: Path, key_file: Path, *, bootstrap: bool = False) -> Transport:
        await self._close_transport()
        config = self.config
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file))
        context.load_cert_chain(str(cert_file), str(key_file))
        transport = TRANSPORTS[config.library](self.name, self._on_message)
        host, port = config.host, config.port
        if bootstrap:
            host, port = config.bootstrap_host or host, config.bootstrap_port or port
        await transport.connect(host, port, context, config.connect_timeout_s)
        self._transport = transport
        self._replies_subscribed = False
        return transport

    async def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.disconnect()


def _key_and_csr(name: str, key_type: KeyType) -> tuple[CertificateIssuerPrivateKeyTypes, str]:
    """Made on the device: the private key never leaves it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = generate_key(key_type.value)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, algorithm))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def _load_key(pem: bytes) -> CertificateIssuerPrivateKeyTypes:
    key = serialization.load_pem_private_key(pem, password=None)
    if not can_sign_certificates(key):
        raise ValueError(f"a {type(key).__name__} cannot sign a CSR")
    return key
