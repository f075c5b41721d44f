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
