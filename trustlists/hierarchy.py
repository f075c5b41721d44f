"""The CA hierarchy: an offline root and issuing CAs per certificate group (and optionally per site).

The root key signs only issuing-CA certificates and the root's CRL. Every CA creation is a key ceremony
and is written to the audit log with who, when, which key and which certificate.
"""

from __future__ import annotations

import builtins  # the class defines list(); annotations after it name the type this way
import hashlib
import secrets
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustlists import audit
from trustlists.certificate_builder import build_ca, ca_name
from trustlists.context import EngineContext
from trustlists.crl import build_crl
from trustlists.der import sha256_hex
from trustlists.errors import AlreadyExists, IssuerUnusable, NotFound
from trustlists.models import CARecord, CrlRecord, KeyType
from trustlists.policy import PkiConfig
from trustlists.serials import random_serial, serial_hex
from trustlists.store.base import StoreWriter
from trustlists.trustlist import TrustListManager


def issuing_ca_id(group: str, site: str | None) -> str:
    return f"{group}@{site}" if site else group


class Hierarchy:
    def __init__(self, ctx: EngineContext, trustlists: TrustListManager) -> None:
        self._ctx = ctx
        self._trustlists = trustlists

    # -- queries ----------------------------------------------------------------------------------
    def list(self) -> list[CARecord]:
        return list(self._ctx.cas())

    def get(self, ca_id: str) -> CARecord:
        return self._ctx.ca(ca_id)

    def root(self) -> CARecord:
        roots = [ca for ca in self.list() if ca.parent_id is None and ca.active]
        if not roots:
            raise NotFound("there is no root CA yet: run `otpki init` first", reason="not_initialized")
        return roots[-1]

    def issuing_ca_for(self, group: str, site: str | None) -> CARecord:
        """The CA that signs for this group and site, checked to be usable right now."""
        policy = self._ctx.config.group(group)
        wanted_site = site if policy.per_site else None
        mine = [ca for ca in self.list() if ca.group == group and ca.site == wanted_site]
        candidates = [ca for ca in mine if ca.active]
        if not candidates and mine:
            self.check_usable(mine[-1])  # explains why the newest one cannot sign (revoked, expired)
        if not candidates:
            where = f" at site {wanted_site}" if wanted_site else ""
            raise NotFound(f"group {group} has no issuing CA{where}: run `otpki ca create {group}"
                           f"{' --site ' + wanted_site if wanted_site else ''}`", reason="no_issuing_ca")
        ca = candidates[-1]
        self.check_usable(ca)
        return ca

    def check_usable(self, ca: CARecord) -> None:
        now = self._ctx.clock()
        if not (ca.not_before <= now <= ca.not_after):
            raise IssuerUnusable(f"CA {ca.name} is outside its validity ({ca.not_before:%Y-%m-%d} to "
                                 f"{ca.not_after:%Y-%m-%d}); create a new CA generation")
        if self._ctx.ca_revoked(ca):
            raise IssuerUnusable(f"CA {ca.name} has been revoked; create a new issuing CA for its group")
        if ca.parent_id is not None:
            parent = self._ctx.ca(ca.parent_id)
            if parent.not_after < now:
                raise IssuerUnusable(f"the root CA {parent.name} has expired")

    # -- ceremonies -------------------------------------------------------------------------------
    def create_plant(self, *, actor: str) -> builtins.list[CARecord]:
        """`initialize` a store that has no root CA yet, all in one transaction: a step that fails (a key that
        cannot be written, a lost database, Ctrl-C) leaves no CA behind, so no half plant whose keys are gone.

        AlreadyExists (reason plant_exists) when the store holds a root CA already: another instance's data
        directory has its keys, and this one is made by copying that one (otpki.toml and keys/), not by a second
        init. Two inits at once on one database: one makes the plant, the other is refused at once the same way
        (it does not wait: making the keys may take longer than any busy timeout)."""
        with self._ctx.keys.provisional(self._key_recorded), self._ctx.store.transaction() as tx:
            if not tx.try_lock("hierarchy", "create-plant"):
                raise AlreadyExists("another otpki init is creating a plant in this database right now: when it is "
                                    "done, copy otpki.toml and keys/ of its data directory to run another instance",
                                    reason="plant_exists")
            roots = [ca for ca in tx.list_cas() if ca.parent_id is None]
            if roots:
                raise AlreadyExists(
                    f"the store already holds a plant (root CA {roots[-1].name}): to run another instance on it, "
                    "copy otpki.toml and keys/ of an existing instance's data directory instead of `otpki init`",
                    reason="plant_exists")
            return self.initialize(actor=actor)

    def initialize(self, *, actor: str) -> builtins.list[CARecord]:
        """Create the root (if none) and an issuing CA for every group (and site, where per-site)."""
        created: list[CARecord] = []
        existing = self.list()
        if not any(ca.parent_id is None for ca in existing):
            created.append(self.create_root(actor=actor))
        have = {(ca.group, ca.site) for ca in self.list() if ca.parent_id is not None}
        for group, policy in self._ctx.config.groups.items():
            sites: list[str | None] = list(self._ctx.config.sites) if policy.per_site else [None]
            for site in sites or [None]:
                if (group, site) not in have:
                    created.append(self.create_issuing_ca(group, site, actor=actor))
        return created

    def create_root(self, *, actor: str) -> CARecord:
        if any(ca.parent_id is None and ca.active for ca in self.list()):
            raise AlreadyExists("a root CA exists already")
        root_policy = self._ctx.config.root
        existing_ids = {ca.id for ca in self.list()}
        ca_id = _next_generation("root", existing_ids)
        name = f"{self._ctx.config.organization} Root CA"
        key_ref = _key_ref(ca_id)
        with self._ctx.keys.provisional(self._key_recorded):
            backend, key = self._ctx.keys.create(key_ref, root_policy.key_type)
            cert = build_ca(subject=ca_name(self._ctx.config.organization, name), public_key=key.public_key(),
                            issuer_cert=None, issuer_key=key, issuer_key_type=root_policy.key_type,
                            hash_name=root_policy.signature_hash, serial=random_serial(),
                            lifetime_days=root_policy.lifetime_days, path_length=None, now=self._ctx.clock())
            return self._record(ca_id, name, None, None, None, root_policy.key_type, backend, key_ref, key, cert,
                                actor,
                                crl_days=root_policy.crl_lifetime_days, hash_name=root_policy.signature_hash)

    def create_issuing_ca(self, group: str, site: str | None, *, actor: str) -> CARecord:
        policy = self._ctx.config.group(group)
        if site is not None and policy.per_site and site not in self._ctx.config.sites:
            raise NotFound(f"unknown site {site!r} (configured sites: {', '.join(self._ctx.config.sites)})",
                           reason="unknown_site")
        if site is not None and not policy.per_site:
            raise NotFound(f"group {group} does not have per-site CAs (set per_site = true)",
                           reason="unknown_site")
        root = self.root()
        self.check_usable(root)
        root_cert = self._ctx.ca_certificate(root)
        root_key = self._ctx.keys.signer(root)
        existing_ids = {ca.id for ca in self.list()}
        ca_id = _next_generation(issuing_ca_id(group, site), existing_ids)
        name = f"{self._ctx.config.organization} {group} CA" + (f" {site}" if site else "")
        key_ref = _key_ref(ca_id)
        with self._ctx.keys.provisional(self._key_recorded):
            backend, key = self._ctx.keys.create(key_ref, policy.ca_key_type)
            cert = build_ca(subject=ca_name(self._ctx.config.organization, name), public_key=key.public_key(),
                            issuer_cert=root_cert, issuer_key=root_key, issuer_key_type=root.key_type,
                            hash_name=self._ctx.config.root.signature_hash, serial=random_serial(),
                            lifetime_days=policy.ca_lifetime_days, path_length=policy.ca_path_length,
                            now=self._ctx.clock())
            return self._record(ca_id, name, root.id, group, site, policy.ca_key_type, backend, key_ref, key,
                                cert, actor,
                                crl_days=policy.crl_lifetime_days, hash_name=policy.signature_hash)

    def _key_recorded(self, key_ref: str) -> bool:
        with self._ctx.store.read() as tx:
            return any(ca.key_ref == key_ref for ca in tx.list_cas())

    def _record(self, ca_id: str, name: str, parent_id: str | None, group: str | None, site: str | None,
                key_type: KeyType, backend: str, key_ref: str, key: CertificateIssuerPrivateKeyTypes,
                cert: x509.Certificate, actor: str, *, crl_days: int, hash_name: str) -> CARecord:
        der = cert.public_bytes(Encoding.DER)
        now = self._ctx.clock()
        record = CARecord(
            id=ca_id, name=name, parent_id=parent_id, group=group, site=site, key_type=key_type,
            key_backend=backend, key_ref=key_ref, certificate_der=der,
            serial=serial_hex(cert.serial_number), fingerprint_sha256=sha256_hex(der),
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, active=True,
            created_at=now)
        spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        with self._ctx.store.transaction() as tx:
            tx.insert_ca(record)
            audit.append(tx, actor=actor, action="ca.create", subject=ca_id, at=now, details={
                "ceremony": "root" if parent_id is None else "issuing-ca",
                "name": name, "group": group, "site": site, "parent": parent_id,
                "key_backend": backend, "key_ref": record.key_ref, "key_type": key_type.value,
                "key_id_sha256": hashlib.sha256(spki).hexdigest(),
                "certificate_sha256": record.fingerprint_sha256, "serial": record.serial,
                "not_after": record.not_after.isoformat()})
            publish_crl(self._ctx, tx, record, key, crl_days=crl_days, hash_name=hash_name, actor=actor)
            groups = list(self._ctx.config.groups) if group is None else [group]
            self._trustlists.record_versions(tx, groups, f"CA {ca_id} created")
        return record


def publish_crl(ctx: EngineContext, tx: StoreWriter, ca: CARecord, key: CertificateIssuerPrivateKeyTypes, *,
                crl_days: int, hash_name: str, actor: str) -> CrlRecord:
    """Sign and store the CA's next CRL (number = last + 1) from the store's revocations."""
    now = ctx.clock()
    # Until commit no other writer publishes (or revokes): the number is the last + 1 and stays free, and the CRL
    # lists every revocation committed before it.
    tx.serialise_appends()
    number = tx.next_crl_number(ca.id)
    next_update = min(now + timedelta(days=crl_days), ca.not_after)
    crl, count = build_crl(
        issuer_cert=ctx.ca_certificate(ca), issuer_key=key, issuer_key_type=ca.key_type, hash_name=hash_name,
        crl_number=number, this_update=now, next_update=next_update,
        entries=tx.revoked_entries(ca.id, now))
    record = CrlRecord(ca_id=ca.id, crl_number=number, this_update=_second(now),
                       next_update=_second(next_update), entries=count, der=crl.public_bytes(Encoding.DER))
    tx.insert_crl(record)
    audit.append(tx, actor=actor, action="crl.publish", subject=ca.id, at=now,
                 details={"crl_number": number, "entries": count, "next_update": record.next_update.isoformat()})
    return record


def crl_policy(config: PkiConfig, ca: CARecord) -> tuple[int, str]:
    """(CRL lifetime in days, signature hash) of the CA's CRLs: the root's policy or its group's."""
    if ca.parent_id is None:
        return config.root.crl_lifetime_days, config.root.signature_hash
    policy = config.group(ca.group or "")
    return policy.crl_lifetime_days, policy.signature_hash


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def _key_ref(ca_id: str) -> str:
    # A random suffix: a new generation never collides with an old key left on a token or disk.
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ca_id)
    return f"ca-{safe}-{secrets.token_hex(4)}"


def _next_generation(base: str, existing: set[str]) -> str:
    if base not in existing:
        return base
    n = 2
    while f"{base}-g{n}" in existing:
        n += 1
    return f"{base}-g{n}"
