"""MQTT client libraries behind one small interface, for the device simulator: paho-mqtt 2.x and gmqtt.

Plants run both kinds of firmware stacks: paho-mqtt (its own network thread, bridged to asyncio here) and
gmqtt (asyncio native). Both speak MQTT 3.1.1, which every broker otpki supports does. A transport is one
connection; the device lifecycle (`mqtt_device.MqttDevice`) decides about reconnects and certificates.

A transport given up (its connect cancelled when the device stops) leaves no connection behind: a CONNECT the
broker reads later, with the device's client id, takes over the session of whoever uses that id next.
Timeouts are `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 wait_for drops a cancellation that
arrives as the awaited future completes (CPython gh-86296), and a device whose stop() is dropped runs forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from gmqtt import Client as GmqttClient
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

__all__ = ["TRANSPORTS", "ConnectRefused", "GmqttTransport", "MessageHandler", "PahoTransport", "Transport"]


class ConnectRefused(Exception):
    """The broker said no (CONNACK refusal, TLS alert, or closed before CONNACK): retrying will not help."""



MessageHandler = Callable[[str, bytes], None]


class Transport(ABC):
    """One MQTT connection. `lost` is set when it ends without `disconnect()` having been called."""

    def __init__(self, client_id: str, on_message: MessageHandler) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self.lost = asyncio.Event()
        self._closing = False

    @abstractmethod
    async def connect(self, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None: ...

    @abstractmethod
    async def subscribe(self, topic_filter: str, timeout: float) -> None: ...

    @abstractmethod
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...


class _NoReconnectGmqtt(GmqttClient):
    """gmqtt reconnects on its own; the device lifecycle decides about reconnects (and with which cert)."""

    async def reconnect(self, delay: bool = False) -> None:
        return None


class GmqttTransport(Transport):
    def __init__(self, client_id: str, on_message: MessageHandler) -> None:
        super().__init__(client_id, on_message)
        self._client = _NoReconnectGmqtt(client_id, clean_session=True)
        self._client.on_message = self._message
        self._client.on_disconnect = self._disconnected
        self._client.on_subscribe = self._subscribed
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}

    def _message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        self.on_message(topic, bytes(payload))
        return 0

    def _disconnected(self, client: Any, packet: Any, exc: Any = None) -> None:
        if not self._closing:
            self.lost.set()

    def _subscribed(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        future = self._subacks.get(mid)
        if future is not None and not future.done():
            future.set_result([int(q) for q in (qos if isinstance(qos, list | tuple) else [qos])])

    async def connect(self, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        attempt = asyncio.ensure_future(self._client.connect(host, port, ssl=context, keepalive=30,
                                                             version=MQTTv311))
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait({attempt, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: the attempt must not go on connecting for nobody
            attempt.cancel()
            await asyncio.wait({attempt})  # its connection, if any, is closed or ours to close below
            await self._abandon()
            raise
        finally:
            lost.cancel()
        if attempt in done:
            exc = attempt.exception()
            if exc is None and not self.lost.is_set():
                return
            await self._abandon()
            if isinstance(exc, MQTTConnectError):
                raise ConnectRefused(f"CONNACK refused: {exc}")
            if isinstance(exc, ssl.SSLError | ConnectionResetError):
                raise ConnectRefused(f"TLS: {exc}")
            if exc is not None:
                raise exc
            raise ConnectRefused("the broker closed the connection before CONNACK")
        attempt.cancel()
        await self._abandon()
        if self.lost.is_set():
            raise ConnectRefused("the broker closed the connection before CONNACK")
        raise TimeoutError(f"no CONNACK from {host}:{port} within {timeout} s")

    async def _abandon(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._client.disconnect()

    async def subscribe(self, topic_filter: str, timeout: float) -> None:
        mid = self._client.subscribe(topic_filter, qos=1)
        future = self._subacks.setdefault(mid, asyncio.get_running_loop().create_future())
        async with asyncio.timeout(timeout):
            granted = await future
        if any(q >= 0x80 for q in granted):
            raise ConnectRefused(f"subscription to {topic_filter} refused")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self._client.publish(topic, payload, qos=qos)

    async def disconnect(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._client.disconnect()


class PahoTransport(Transport):
    """paho runs its network loop in its own thread; every callback hops back to the event loop."""

    def __init__(self, client_id: str, on_message: MessageHandler) -> None:
        super().__init__(client_id, on_message)
        self._loop = asyncio.get_running_loop()
        # reconnect_on_failure=False: paho's loop thread ends when the connection does; the lifecycle decides.
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                                   protocol=paho.MQTTv311, reconnect_on_failure=False)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._message
        self._client.on_subscribe = self._subscribed
        self._connack: asyncio.Future[Any] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[Any]]] = {}
        self._thread_started = False
        self._sockets: list[ssl.SSLSocket] = []  # opened by the connect thread (at most one)
        self._given_up = False

    def _tracked_socket_class(self) -> type[ssl.SSLSocket]:
        """SSLSocket that tells this transport about itself before its handshake (paho keeps its socket to
        itself until connect() returns, and leaves it open when the handshake fails)."""
        transport = self

        class TrackedSSLSocket(ssl.SSLSocket):
            def do_handshake(self, block: bool = False) -> None:
                transport._sockets.append(self)
                if transport._given_up:  # checked after the append: see _shut_down_sockets
                    socket.socket.shutdown(self, socket.SHUT_RDWR)
                super().do_handshake(block)

        return TrackedSSLSocket

    def _shut_down_sockets(self) -> None:
        # From the event loop while the connect thread may block in a handshake on the socket: shutdown wakes a
        # blocked read (close would not). A socket appended after this loop sees `_given_up` and shuts itself.
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()  # idempotent; paho's own close of a connected socket may already have happened
        self._sockets.clear()

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is listening any more
            self._loop.call_soon_threadsafe(fn, *args)

    def _connected(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._call(self._set_connack, reason_code)

    def _set_connack(self, reason_code: Any) -> None:
        if not self._connack.done():
            self._connack.set_result(reason_code)

    def _disconnected(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._call(self._set_lost)

    def _set_lost(self) -> None:
        if not self._closing:
            self.lost.set()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        self._call(self.on_message, message.topic, bytes(message.payload))

    def _subscribed(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._call(self._set_suback, mid, list(reason_codes))

    def _set_suback(self, mid: int, codes: list[Any]) -> None:
        future = self._subacks.setdefault(mid, self._loop.create_future())
        if not future.done():
            future.set_result(codes)

    async def connect(self, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        # connect() does the TCP and TLS handshakes and sends CONNECT synchronously: a worker thread, not the event
        # loop. An attempt given up shuts its socket down, which ends a handshake blocked in that thread at once,
        # and returns once the thread is done and the socket closed: no CONNECT leaves after that.
        context.sslsocket_class = self._tracked_socket_class()  # the context is this connection's own
        self._client.tls_set_context(context)
        self._client.connect_timeout = timeout
        connecting = asyncio.ensure_future(asyncio.to_thread(self._client.connect, host, port, 30))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(connecting)
        except ssl.SSLError as exc:
            self._close_sockets()
            raise ConnectRefused(f"TLS: {exc}") from None
        except BaseException:
            self._given_up = True
            self._shut_down_sockets()
            await asyncio.wait({connecting})
            if not connecting.cancelled() and connecting.exception() is None:
                await self.disconnect()  # the CONNECT went out: DISCONNECT follows it on the same connection
            self._close_sockets()
            raise
        self._sockets.clear()  # connected: the socket is paho's to close now
        self._client.loop_start()
        self._thread_started = True
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait({self._connack, lost}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while waiting for CONNACK: the network thread must not outlive us
            await self.disconnect()
            raise
        finally:
            lost.cancel()
        if self._connack in done:
            code = self._connack.result()
            if not code.is_failure:
                return
            await self.disconnect()
            raise ConnectRefused(f"CONNACK refused: {code}")
        await self.disconnect()
        if self.lost.is_set():
            raise ConnectRefused("the broker closed the connection before CONNACK")
        raise TimeoutError(f"no CONNACK from {host}:{port} within {timeout} s")

    async def subscribe(self, topic_filter: str, timeout: float) -> None:
        _, mid = self._client.subscribe(topic_filter, qos=1)
        if mid is None:
            # paho sent nothing (no connection), so no SUBACK can come: the outcome waiting would reach, at once.
            raise TimeoutError(f"subscription to {topic_filter} not sent: the connection is down")
        future = self._subacks.setdefault(mid, self._loop.create_future())
        async with asyncio.timeout(timeout):
            codes = await future
        if any(code.is_failure for code in codes):
            raise ConnectRefused(f"subscription to {topic_filter} refused")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self._client.publish(topic, payload, qos=qos)

    async def disconnect(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            self._client.disconnect()
        if self._thread_started:
            self._thread_started = False
            await asyncio.to_thread(self._client.loop_stop)


TRANSPORTS: dict[str, type[Transport]] = {"paho": PahoTransport, "gmqtt": GmqttTransport}
