"""LISTEN/NOTIFY for the PostgreSQL store: a subscriber hears of another instance's commit within milliseconds.

One dedicated connection per subscription (LISTEN belongs to a session, so it cannot come from the pool), read
by a daemon thread that calls the subscriber's callback on every notification. NOTIFY is delivered at commit
and only while the listener is connected: after a lost connection the thread reconnects with backoff and calls
the callback once more, so that the subscriber catches up with whatever it missed (it reads "newer than the
last one I saw", so an extra call costs one indexed query). Subscribers keep a periodic catch-up as well.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_POLL_S = 0.5  # how often the thread looks whether it was closed while no notification arrives
_RETRY_MAX_S = 5.0


class PgSubscription:
    def __init__(self, url: str, where: str, channel: str, callback: Callable[[], None], *,
                 connect_timeout_s: float = 10.0) -> None:
        self._url = url
        self._where = where
        self._channel = channel
        self._callback = callback
        self._connect_timeout = max(1, int(connect_timeout_s))
        self._closed = threading.Event()
        self._conn: psycopg.Connection[Any] | None = self._connect()  # the first one fails loudly
        self._thread = threading.Thread(target=self._run, name=f"otpki-listen-{channel}", daemon=True)
        self._thread.start()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return conn

    def _run(self) -> None:
        retry = 0.1
        while not self._closed.is_set():
            conn = self._conn
            try:
                if conn is None:
                    conn = self._conn = self._connect()
                    retry = 0.1
                    self._notify()  # notifications sent while disconnected are lost: catch up now
                for _ in conn.notifies(timeout=_POLL_S):
                    if self._closed.is_set():
                        return
                    self._notify()
            except psycopg.Error as exc:
                if self._closed.is_set():
                    return
                log.warning("listening on %s at %s failed (%s); reconnecting", self._channel, self._where,
                            type(exc).__name__)
                self._drop()
                self._closed.wait(retry)
                retry = min(retry * 2, _RETRY_MAX_S)

    def _notify(self) -> None:
        try:
            self._callback()
        except Exception:  # a subscriber's bug must not end the subscription
            log.exception("a %s subscriber failed", self._channel)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # a broken connection: closing it is all that is left
                conn.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=_POLL_S * 4)
        self._drop()
