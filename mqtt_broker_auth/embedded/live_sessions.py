"""Revocation that bites: close the live MQTT sessions whose certificate was revoked or has expired.

Every `interval` seconds the watcher picks up revocations other processes committed (`otpki certs revoke`
writes the same SQLite file) with `engine.refresh_revocations()` — an indexed incremental query, run in the
blocking executor — and then asks `DeviceGate.still_valid` (two dict lookups) about each connected session.
A session that fails is closed through `DeviceGateBroker.kick`; its reconnect is refused at the TLS layer
(the listener's handshake check, or OpenSSL's CRL check once the listener has the new CRL).
The broker-side `DeviceTopicPlugin` also asks `still_valid` per message, so between the revocation reaching
the index and the kick, the session can neither publish nor receive. Until the round after another process's
revocation, this process does not know of it: `interval` bounds that window for new connections too.

On PostgreSQL the store announces every revocation at its commit (LISTEN/NOTIFY, `engine.on_revocations`): a
round starts as soon as one arrives, from whichever instance, and otherwise every `catch_up` seconds, which covers
a notification lost with the listening connection. On SQLite the watcher polls every `interval`.

It also calls `on_trust_change` when the group's trust list moves to a new version (a CA imported, removed
or rolled over, and every revocation, whose new CRL is trust-list content), so that the listener builds new
TLS contexts for the next handshakes without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from mqtt_broker_auth.decision import DeviceGate
from mqtt_broker_auth.embedded.amqtt_plugin import DeviceGateBroker, identity_of
from trustlists.blocking import run_blocking
from trustlists.engine import Engine

_log = logging.getLogger(__name__)


class RevocationWatcher:
    def __init__(self, engine: Engine, gate: DeviceGate, broker: DeviceGateBroker, *, interval: float = 0.2,
                 on_trust_change: Callable[[], Awaitable[None]] | None = None,
                 trust_version: int | None = None, catch_up: float = 1.0) -> None:
        """`trust_version`: the trust-list version the listener was built from (changes after it are reported)."""
        self._engine = engine
        self._gate = gate
        self._broker = broker
        self._interval = interval
        self._catch_up = max(interval, catch_up)
        self._on_trust_change = on_trust_change
        self._task: asyncio.Task[None] | None = None
        self._trust_version = trust_version
        self.kicked: list[tuple[str, str]] = []  # (client id, why), for tests and the bench

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="otpki-mqtt-revocation-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        subscription = None
        try:
            def notified() -> None:  # on the store's listener thread
                loop.call_soon_threadsafe(wake.set)

            try:
                subscription = await run_blocking(self._engine.on_revocations, notified)
            except Exception:  # no notifications: the rounds below still find every revocation, later
                _log.exception("cannot subscribe to revocations; polling every %.1f s", self._interval)
            wait_s = self._interval if subscription is None else self._catch_up
            while True:
                wake.clear()  # a notification during the round below starts the next one at once
                try:
                    await self.check_once()
                except asyncio.CancelledError:
                    raise
                except Exception:  # one failed round (a locked database) must not end the watch
                    _log.exception("revocation check failed; retrying")
                with contextlib.suppress(TimeoutError):
                    # Not wait_for: on Python 3.11 it drops a cancel that arrives as the event is set
                    # (bpo-42130), and stop() then waits for this loop forever.
                    async with asyncio.timeout(wait_s):
                        await wake.wait()
        finally:
            if subscription is not None:
                await asyncio.shield(run_blocking(subscription.close))

    async def check_once(self) -> int:
        """One round: refresh the index, close lapsed sessions; returns how many were closed."""
        await run_blocking(self._engine.refresh_revocations)
        closed = 0
        # The private session table is the only list of connections amqtt keeps (see DeviceGateBroker.kick).
        for client_id, (session, _handler) in list(self._broker.sessions.items()):
            identity = identity_of(session)
            if identity is None or self._gate.still_valid(identity):
                continue
            why = f"certificate of {identity.device} (serial {identity.serial:x}) is revoked or expired"
            if await self._broker.kick(client_id, why):
                self.kicked.append((client_id, why))
                closed += 1
        if self._on_trust_change is not None:
            version = await run_blocking(lambda: self._engine.trustlists.get(self._gate.group).version)
            if self._trust_version is not None and version != self._trust_version:
                await self._on_trust_change()
            self._trust_version = version
        return closed
