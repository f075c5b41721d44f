"""The set of key backends an engine uses, and a cache of CA signers loaded from them."""

from __future__ import annotations

import threading

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
        return backend.name, signer

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
