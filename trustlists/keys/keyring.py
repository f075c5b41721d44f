"""The set of key backends an engine uses, and a cache of CA signers loaded from them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from trustlists.errors import KeyAccessError
from trustlists.keys.base import KeyBackend
from trustlists.models import CARecord, KeyType


class KeyRing:
    def __init__(self, backends: list[KeyBackend], default: str | None = None) -> None:
        if not backends:
            raise KeyAccessError("no CA key backend is configured", reason="no_backend")
        self._backends = {b.name: b for b in backends}
        self.default = default or backends[0].name
        if self.default not in self._backends:
            raise KeyAccessError(f"key backend {self.default!r} is not configured", reason="no_backend")
        self._signers: dict[str, CertificateIssuerPrivateKeyTypes] = {}
        self._lock = threading.Lock()
        # Per thread: the keys made inside each open `provisional` block, innermost last.
        self._provisional = threading.local()

    def backend(self, name: str) -> KeyBackend:
        try:
            return self._backends[name]
        except KeyError:
            raise KeyAccessError(
                f"this CA's key is held by the {name!r} backend, which is not configured here "
                "(configure it in otpki.toml [keys])", reason="no_backend") from None

    def create(self, key_ref: str, key_type: KeyType, *, backend_name: str | None = None
               ) -> tuple[str, CertificateIssuerPrivateKeyTypes]:
        """A new key in the default backend, or in `backend_name` (an OCSP signer's key goes where its CA's is)."""
        backend = self.backend(backend_name) if backend_name is not None else self._backends[self.default]
        signer = backend.create(key_ref, key_type)
        with self._lock:
            self._signers[f"{backend.name}:{key_ref}"] = signer
        blocks: list[list[tuple[str, str]]] = getattr(self._provisional, "blocks", [])
        if blocks:
            blocks[-1].append((backend.name, key_ref))
        return backend.name, signer

    @contextmanager
    def provisional(self, recorded: Callable[[str], bool]) -> Iterator[None]:
        """Keys created in this block belong to a record (a CA, an OCSP signer) that is committed in it: if the
        block fails (an error, Ctrl-C), they are removed again. A key on an HSM token outlives the process and every
        retry makes another, so a failed ceremony must not leave one behind. Blocks nest: a key is kept only when
        the outermost block ends well (an inner CA record can commit inside an outer transaction that rolls back).

        `recorded(key_ref)` asks the store whether a record names the key after all: a commit whose answer was lost
        (a dropped database connection) may have happened, and a CA whose key was removed could never sign again.
        A key is removed only when the store answers no; when it cannot answer, the key is kept and named."""
        blocks: list[list[tuple[str, str]]] = getattr(self._provisional, "blocks", None) or []
        self._provisional.blocks = blocks
        made: list[tuple[str, str]] = []
        blocks.append(made)
        try:
            yield
        except BaseException as exc:
            blocks.pop()
            failures = self._discard(made, recorded)
            if failures:
                exc.add_note("otpki could not remove the keys it had just made for the failed step; remove them "
                             "by hand: " + "; ".join(failures))
            raise
        blocks.pop()
        if blocks:
            blocks[-1].extend(made)

    def _discard(self, made: list[tuple[str, str]], recorded: Callable[[str], bool]) -> list[str]:
        failures = []
        for backend_name, key_ref in reversed(made):
            try:
                if recorded(key_ref):
                    continue
                with self._lock:
                    self._signers.pop(f"{backend_name}:{key_ref}", None)
                self._backends[backend_name].discard(key_ref)
            except Exception as exc:  # keep removing the others; the caller's error is the story
                failures.append(f"{backend_name} key {key_ref} (unless a CA in the store names it): {exc}")
        return failures

    def signer(self, ca: CARecord) -> CertificateIssuerPrivateKeyTypes:
        return self.load(ca.key_backend, ca.key_ref)

    def load(self, backend_name: str, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        """A signer for the key `key_ref` of the backend `backend_name`, cached."""
        cache_key = f"{backend_name}:{key_ref}"
        with self._lock:
            cached = self._signers.get(cache_key)
        if cached is not None:
            return cached
        signer = self.backend(backend_name).load(key_ref)
        with self._lock:
            self._signers[cache_key] = signer
        return signer
