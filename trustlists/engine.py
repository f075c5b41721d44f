"""The engine's front door: one object that wires the store, keys and policy into the engine's parts.

    engine = Engine(store=SqliteStore(path), config=load_default_config(), keys=KeyRing([...]))
    engine.hierarchy.initialize(actor="alice")
    owner = engine.registry.register(group="mqtt-device", name="pump-7", site="north", actor="alice")
    issued = engine.authority.issue_from_csr(csr_pem, owner_id=owner.id, actor="alice")

The fronts (OPC UA, MQTT, the CLI, doctor) use the parts below and the queries of `Engine`; the context the parts
share (store, keys, revocation index) is private: a question a front needs answered becomes a method here, with a
typed answer, and a use case that spans several parts becomes one call that commits as one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from trustlists import audit
from trustlists.accounts import Accounts
from trustlists.audit import AuditVerification
from trustlists.authority import CertificateAuthority
from trustlists.bootstrap import Bootstrap
from trustlists.clock import as_utc, utcnow
from trustlists.context import EngineContext
from trustlists.crl import RevocationIndex
from trustlists.decommission import Decommissioning
from trustlists.errors import InvalidInput, OtpkiError
from trustlists.hierarchy import Hierarchy
from trustlists.inventory import Inventory
from trustlists.key_probe import sign_and_verify
from trustlists.keys.keyring import KeyRing
from trustlists.keys.pool import KeyPool
from trustlists.leases import Leases, new_instance_id
from trustlists.live_revocation import LiveRevocationSource
from trustlists.models import CAStatus, CrlRecord, Decommissioned, KeyProbe, OwnerRegistration, RevocationReason
from trustlists.ocsp_responses import OcspResponder
from trustlists.ocsp_signer import OcspSigners
from trustlists.policy import PkiConfig
from trustlists.reconcile import Reconciliation, reconcile
from trustlists.registry import Registry
from trustlists.request_guard import RequestGuard
from trustlists.requests import CertificateRequests
from trustlists.secret_box import SecretBox
from trustlists.store.base import Store, Subscription
from trustlists.store.sql import REVOCATIONS_CHANNEL
from trustlists.targets import DeliveryTarget, DeliveryTargets
from trustlists.trustlist import TrustListManager
from trustlists.validation import CertificateValidator


class Engine:
    def __init__(self, *, store: Store, config: PkiConfig, keys: KeyRing, key_pool: KeyPool | None = None,
                 clock: Callable[[], datetime] = utcnow, instance_id: str | None = None,
                 secrets_key_file: Path | None = None) -> None:
        """`instance_id`: who this engine is among the instances on one store (lease holder); one per process
        by default. `secrets_key_file`: the key sealing the console users' TOTP secrets (trustlists/secret_box.py),
        made at first use; without it, users cannot be added or log in (SecretKeyError)."""
        self._ctx = EngineContext(store=store, config=config, keys=keys, index=RevocationIndex(), clock=clock)
        self.key_pool = key_pool or KeyPool()
        self.trustlists = TrustListManager(self._ctx)
        self.hierarchy = Hierarchy(self._ctx, self.trustlists)
        self.registry = Registry(self._ctx)
        self.authority = CertificateAuthority(self._ctx, self.hierarchy, self.trustlists, self.key_pool)
        self.bootstrap = Bootstrap(self._ctx, self.authority)
        self.requests = CertificateRequests(self._ctx, self.authority, self.bootstrap, self.key_pool)
        self.inventory = Inventory(self._ctx)
        self.targets = DeliveryTargets(self._ctx)
        self.request_guard = RequestGuard(self._ctx)
        self.accounts = Accounts(self._ctx, self.request_guard, SecretBox(secrets_key_file))
        self.leases = Leases(self._ctx, instance_id or new_instance_id())
        self.ocsp_signers = OcspSigners(self._ctx)
        self.ocsp = OcspResponder(self._ctx, self.ocsp_signers)
        self._live = LiveRevocationSource(self._ctx)
        self._decommissioning = Decommissioning(self._ctx, self.trustlists)
        self._validators: dict[str, tuple[str, CertificateValidator]] = {}
        self.refresh_revocations()

    @property
    def instance_id(self) -> str:
        return self.leases.instance_id

    @property
    def config(self) -> PkiConfig:
        return self._ctx.config

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
        return as_utc(self._ctx.clock())

    # -- revocation and CA state -----------------------------------------------------------------------
    def is_revoked(self, issuer_ca_id: str, serial: int) -> bool:
        """Whether the engine revoked the certificate `serial` issued by its CA `issuer_ca_id` (leaf or CA).

        Answered from the live revocation index (a dict lookup): what a broker asks about every live session
        after a revocation. Revocations other processes wrote count after `refresh_revocations`.
        """
        return self._ctx.index.is_revoked(issuer_ca_id, serial)

    def ca_statuses(self) -> list[CAStatus]:
        """Every CA of the hierarchy, in creation order, with whether its issuer revoked it."""
        return [CAStatus(record=ca, revoked=self._ctx.ca_revoked(ca)) for ca in self._ctx.cas()]

    def ca_status(self, ca_id: str) -> CAStatus:
        """One CA and its revocation state; NotFound for an unknown id."""
        ca = self._ctx.ca(ca_id)
        return CAStatus(record=ca, revoked=self._ctx.ca_revoked(ca))

    def latest_crl(self, ca_id: str) -> CrlRecord | None:
        """The CA's most recent CRL, None before the first one was published."""
        with self._ctx.store.read() as tx:
            return tx.latest_crl(ca_id)

    def probe_ca_key(self, ca_id: str) -> KeyProbe:
        """Whether the CA's key is reachable and signs something its certificate verifies (nothing is stored)."""
        ca = self._ctx.ca(ca_id)
        try:
            sign_and_verify(self._ctx.keys.signer(ca), self._ctx.ca_certificate(ca))
        except OtpkiError as exc:
            return KeyProbe(ca_id=ca.id, ok=False, problem=exc.message)
        except Exception as exc:  # a health check reports whatever a key backend (an HSM driver) raised
            return KeyProbe(ca_id=ca.id, ok=False, problem=f"{type(exc).__name__}: {exc}")
        return KeyProbe(ca_id=ca.id, ok=True)

    # -- use cases spanning several parts -------------------------------------------------------------
    def decommission(self, owner_id: str, *, actor: str,
                     reason: RevocationReason = RevocationReason.CESSATION_OF_OPERATION) -> Decommissioned:
        """Revoke every certificate the owner still holds and end its registration, in one transaction.

        What the GDS UnregisterApplication means: a failure anywhere (a CA key that cannot sign the CRL, the
        store) leaves both the certificates and the registration as they were.
        """
        return self._decommissioning.run(owner_id, actor=actor, reason=reason)

    def add_target(self, *, owner: OwnerRegistration, kind: str, address: str, credentials_ref: str, actor: str,
                   pin_sha256: str | None = None) -> DeliveryTarget:
        """A delivery target of the owner `owner` names (group and name), registered first if it is not yet.

        One transaction: a target the engine refuses (its address taken already) leaves no registration behind.
        """
        with self._ctx.store.transaction():  # the registry's and the targets' transactions join this one
            found = self.registry.find(owner.group, name=owner.name)
            if found is None:
                found = self.registry.register(**owner.model_dump(), actor=actor)
            return self.targets.add(owner_id=found.id, kind=kind, address=address, credentials_ref=credentials_ref,
                                    actor=actor, pin_sha256=pin_sha256)

    def refresh_revocations(self) -> int:
        """Pick up revocations other processes wrote (the CLI revoking while a server runs), and bootstrap pins
        they set or released (a pin revokes every other bootstrap certificate of its device)."""
        self.bootstrap.refresh()
        with self._ctx.store.read() as tx:
            return self._ctx.index.refresh(tx)

    def on_revocations(self, callback: Callable[[], None]) -> Subscription | None:
        """Call `callback` (from another thread) soon after any instance on this store commits a revocation or a
        bootstrap pin change (PostgreSQL LISTEN/NOTIFY), and after a reconnect that may have missed some; the
        callback then calls `refresh_revocations` (off the event loop). None on a store without notifications
        (SQLite): poll `refresh_revocations`. Close the subscription when done."""
        return self._ctx.store.subscribe(REVOCATIONS_CHANNEL, callback)

    def is_initialized(self) -> bool:
        return any(ca.parent_id is None for ca in self.hierarchy.list())

    def verify_audit(self) -> AuditVerification:
        with self._ctx.store.read() as tx:
            return audit.verify(tx)

    def audit_records(self, *, action: str | None = None, since: datetime | None = None,
                      subject: str | None = None) -> list[audit.AuditRecord]:
        """Audit records, optionally only one action, only those at or after `since`, only those about `subject`
        (a certificate's history: indexed)."""
        with self._ctx.store.read() as tx:
            return list(audit.records(tx, action=action, since=since, subject=subject))

    def audit_page(self, *, before_seq: int | None = None, limit: int = 50) -> list[audit.AuditRecord]:
        """Up to `limit` audit records below sequence number `before_seq` (the newest when None), newest first."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("an audit page holds 1 to 1000 records", reason="page_invalid")
        with self._ctx.store.read() as tx:
            return list(audit.rows_to_records(tx.audit_page(before_seq=before_seq, limit=limit)))

    def reconcile(self, documents: Sequence[tuple[str, bytes]]) -> Reconciliation:
        """Certificates and CRLs seen in the plant (name, PEM or DER) against the inventory: what it lacks."""
        return reconcile(self._ctx, documents)

    def record_event(self, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None) -> None:
        """Audit what a front saw or did outside the engine's own state (a foreign broker entry it removed)."""
        with self._ctx.store.transaction() as tx:
            audit.append(tx, actor=actor, action=action, subject=subject, details=details, at=self._ctx.clock())

    def close(self) -> None:
        self.ocsp.close()
        self.key_pool.stop()
        self._ctx.store.close()
