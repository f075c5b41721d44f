"""What every part of the engine shares: the store, the policy, the keys, the revocation index, the clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from trustlists.clock import utcnow
from trustlists.crl import RevocationIndex
from trustlists.keys.keyring import KeyRing
from trustlists.models import CARecord
from trustlists.policy import PkiConfig
from trustlists.store.base import Store


@dataclass
class EngineContext:
    store: Store
    config: PkiConfig
    keys: KeyRing
    index: RevocationIndex = field(default_factory=RevocationIndex)
    clock: Callable[[], datetime] = utcnow
    _certs: dict[str, x509.Certificate] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cas: list[CARecord] = field(default_factory=list)
    _cas_signature: tuple[int, int] | None = None

    def cas(self) -> list[CARecord]:
        """All CAs, cached until the table changes (here or in another process): issuance asks on every call."""
        with self.store.read() as tx:
            signature = tx.cas_signature()
            if signature != self._cas_signature:
                self._cas = tx.list_cas()
                self._cas_signature = signature
            return self._cas

    def ca(self, ca_id: str) -> CARecord:
        for ca in self.cas():
            if ca.id == ca_id:
                return ca
        with self.store.read() as tx:
            return tx.get_ca(ca_id)  # raises NotFound

    def chain(self, ca: CARecord) -> list[bytes]:
        """DER chain from `ca` up to its root."""
        chain = [ca.certificate_der]
        while ca.parent_id is not None:
            ca = self.ca(ca.parent_id)
            chain.append(ca.certificate_der)
        return chain

    def ca_certificate(self, ca: CARecord) -> x509.Certificate:
        """Parsed CA certificates, cached: issuance needs the issuer's on every call."""
        with self._lock:
            cert = self._certs.get(ca.id)
            if cert is None:
                cert = x509.load_der_x509_certificate(ca.certificate_der)
                self._certs[ca.id] = cert
            return cert

    def ca_revoked(self, ca: CARecord) -> bool:
        return ca.parent_id is not None and self.index.is_revoked(ca.parent_id, int(ca.serial, 16))
