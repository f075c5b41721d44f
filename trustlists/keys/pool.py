"""A small pool of pre-generated key pairs per key type, so server-side key generation does not wait.

RSA-2048 generation takes ~50 ms and RSA-3072 ~200 ms; a device batch asking for keys would otherwise
queue behind it. Keys live in memory only (never on disk) and each is handed out exactly once.
"""

from __future__ import annotations

import threading
from collections import deque

from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from trustlists.keys.algorithms import generate_private_key
from trustlists.models import KeyType


class KeyPool:
    def __init__(self, sizes: dict[KeyType, int] | None = None) -> None:
        self._sizes = dict(sizes or {})
        self._keys: dict[KeyType, deque[CertificateIssuerPrivateKeyTypes]] = {
            k: deque() for k in self._sizes}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Fill the pool in a background thread (cryptography releases the GIL while generating)."""
        if self._thread is None and self._sizes:
            self._thread = threading.Thread(target=self._fill_loop, name="otpki-keypool", daemon=True)
            self._thread.start()
            self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def available(self, key_type: KeyType) -> int:
        with self._lock:
            return len(self._keys.get(key_type, ()))

    def take(self, key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
        with self._lock:
            pooled = self._keys.get(key_type)
            key = pooled.popleft() if pooled else None
        self._wake.set()
        return key if key is not None else generate_private_key(key_type)

    def fill_now(self) -> None:
        """Fill every pool to its size in the calling thread (tests and start-up)."""
        for key_type, size in self._sizes.items():
            while self.available(key_type) < size:
                key = generate_private_key(key_type)
                with self._lock:
                    self._keys[key_type].append(key)

    def _fill_loop(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            for key_type, size in self._sizes.items():
                while not self._stop and self.available(key_type) < size:
                    key = generate_private_key(key_type)
                    with self._lock:
                        self._keys[key_type].append(key)
