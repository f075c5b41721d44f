"""The engine facade: one object that wires the store, keys and policy into the engine's parts.

    engine = Engine(store=SqliteStore(path), config=load_default_config(), keys=KeyRing([...]))
    engine.hierarchy.initialize(actor="alice")
    owner = engine.registry.register(group="mqtt-device", name="pump-7", site="north", actor="alice")
    issued = engine.authority.issue_from_csr(csr_pem, owner_id=owner.id, actor="alice")
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from trustlists import audit
from trustlists.audit import AuditVerification
from trustlists.authority import CertificateAuthority
from trustlists.bootstrap import Bootstrap
from trustlists.clock import as_utc, utcnow
from trustlists.context import EngineContext
from trustlists.crl import RevocationIndex
from trustlists.hierarchy import Hierarchy
from trustlists.inventory import Inventory
from trustlists.keys.keyring import KeyRing
from trustlists.keys.pool import KeyPool
from trustlists.live_revocation import LiveRevocationSource
from trustlists.policy import PkiConfig
from trustlists.registry import Registry
from trustlists.request_guard import RequestGuard
from trustlists.requests import CertificateRequests
from trustlists.store.base import Store
from trustlists.targets import DeliveryTargets
from trustlists.trustlist import TrustListManager
from trustlists.validation import CertificateValidator


class Engine:
    def __init__(self, *, store: Store, config: PkiConfig, keys: KeyRing, key_pool: KeyPool | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.ctx = EngineContext(store=store, config=config, keys=keys, index=RevocationIndex(), clock=clock)
        self.key_pool = key_pool or KeyPool()
        self.trustlists = TrustListManager(self.ctx)
        self.hierarchy = Hierarchy(self.ctx, self.trustlists)
        self.registry = Registry(self.ctx)
        self.authority = CertificateAuthority(self.ctx, self.hierarchy, self.trustlists, self.key_pool)
        self.requests = CertificateRequests(self.ctx, self.authority, self.key_pool)
        self.inventory = Inventory(self.ctx)
        self.targets = DeliveryTargets(self.ctx)
        self.bootstrap = Bootstrap(self.ctx, self.authority)
        self.request_guard = RequestGuard(self.ctx)
        self._live = LiveRevocationSource(self.ctx)
        self._validators: dict[str, tuple[str, CertificateValidator]] = {}
        self.refresh_revocations()

    @property
    def config(self) -> PkiConfig:
        return self.ctx.config

    def validator(self, group: str) -> CertificateValidator:
        """A validator for the group's current trust list, answering revocation from the live index.

        Cached per trust-list version: building one parses every certificate and CRL once.
        """
        trust = self.trustlists.get(group)
        cached = self._validators.get(group)
        if cached is not None and cached[0] == trust.content_hash:
            return cached[1]
        self._live.reload_cas()
        validator = CertificateValidator(trust.content, revocation=self._live)
        self._validators[group] = (trust.content_hash, validator)
        return validator

    def now(self) -> datetime:
        """The engine's clock (aware UTC): what fronts compare request timestamps against."""
        return as_utc(self.ctx.clock())

    def refresh_revocations(self) -> int:
        """Pick up revocations other processes wrote (the CLI revoking while a server runs), and bootstrap pins
        they set or released (a pin revokes every other bootstrap certificate of its device)."""
        self.bootstrap.refresh()
        with self.ctx.store.read() as tx:
            return self.ctx.index.refresh(tx)

    def is_initialized(self) -> bool:
        return any(ca.parent_id is None for ca in self.hierarchy.list())

    def verify_audit(self) -> AuditVerification:
        with self.ctx.store.read() as tx:
            return audit.verify(tx)

    def audit_records(self, *, action: str | None = None, since: datetime | None = None) -> list[audit.AuditRecord]:
        """Audit records, optionally only one action and only those at or after `since`."""
        with self.ctx.store.read() as tx:
            return list(audit.records(tx, action=action, since=since))

    def record_event(self, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None) -> None:
        """Audit what a front saw or did outside the engine's own state (a foreign broker entry it removed)."""
        with self.ctx.store.transaction() as tx:
            audit.append(tx, actor=actor, action=action, subject=subject, details=details, at=self.ctx.clock())

    def close(self) -> None:
        self.key_pool.stop()
        self.ctx.store.close()
