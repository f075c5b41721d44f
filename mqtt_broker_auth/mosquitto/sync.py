"""Keep a Mosquitto broker in step with the engine, and drop revoked devices.

Each round (`sync_once`, every `interval_s` in `run`):
1. pick up revocations other processes wrote (`engine.refresh_revocations()`), read the group's trust list;
2. when its version moved: build cafile/crlfile from it, install them safely (files.py verifies, renames,
   SIGHUPs), and only THEN kick the sessions of devices whose certificate was newly revoked, or whose CA
   left the cafile, through dynsec. The kicked device reconnects into a TLS handshake that the new CRL (or
   the missing CA) refuses. Mosquitto handles the HUP on its main loop before it accepts that reconnect;
3. reconcile dynsec clients and roles with the registry: a client (username = certificate CN) and a role
   holding the device's topics for every registered device; clients of unregistered devices deleted.
   Bootstrap: for every allow-listed `{"subject_cn": CN}` entry of a device (`attributes["bootstrap"]`) a
   client named CN whose role holds only that device's enrollment topics (publish the CSR topic, subscribe
   to the replies). Mosquitto knows a client by its certificate CN alone, whoever issued it, so a CN that
   equals a registered name or another device's bootstrap CN is refused (logged, no client): otherwise the
   manufacturer's certificate would inherit that device's ACL. `{"sha256": ...}` entries cannot be expressed
   in Mosquitto (no fingerprint usernames) and get no client; those devices enroll on the embedded broker.
   The bootstrap client stays after the device got its operational certificate: the allow-list entry in the
   registry is the one switch (the enrollment service honours it too), and keeping the client lets a device
   re-enroll after a factory reset. Removing the entry removes the client on the next round.

"Newly revoked" is the difference between the CRLs in the crlfile on disk and the new ones, so a restart
of this service still kicks what was revoked while it was down. Every state change is logged; the engine
audits its own changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, Field

from mqtt_broker_auth.mosquitto import dynsec as ds
from mqtt_broker_auth.mosquitto.config import MosquittoSettings
from mqtt_broker_auth.mosquitto.files import UnsafeTrustFiles, install_trust_files
from mqtt_broker_auth.mosquitto.process import hup_from_pid_file
from mqtt_broker_auth.policy import MqttAccessPolicy, mqtt_policy
from mqtt_broker_auth.topics import DeviceTopics, device_topics
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import InvalidInput, NotFound, OtpkiError
from trustlists.exports.mosquitto_files import mosquitto_bundle
from trustlists.models import Owner, OwnerRole
from trustlists.registry import is_unregistered

log = logging.getLogger(__name__)

MANAGED_TEXT = "managed by otpki"
ENROLLMENT_ROLE = OwnerRole.ENROLLMENT_SERVICE
FULL_RECONCILE_EVERY_S = 30.0  # repair drift (an operator editing dynsec by hand) even if the registry is still
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.+?-----END \1-----", re.S)


class SyncReport(BaseModel):
    trust_version: int | None = None
    files_installed: bool = False
    refused: str | None = None  # reason of UnsafeTrustFiles when the new files were not installed
    kicked: list[str] = Field(default_factory=list)
    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    # bootstrap CN -> why it got no dynsec client (bootstrap_cn_is_registered_name, bootstrap_cn_ambiguous, ...)
    skipped_bootstrap: dict[str, str] = Field(default_factory=dict)


def _crl_entries(pem: bytes | None) -> set[tuple[bytes, int]]:
    """(issuer DN, serial) of every entry in a crlfile; unparseable content counts as no entries."""
    entries: set[tuple[bytes, int]] = set()
    for match in _PEM_BLOCK.finditer(pem or b""):
        if match.group(1) != b"X509 CRL":
            continue
        try:
            crl = x509.load_pem_x509_crl(match.group(0))
        except ValueError:
            continue
        issuer = crl.issuer.public_bytes()
        entries.update((issuer, r.serial_number) for r in crl)
    return entries


def _ca_fingerprints(pem: bytes | None) -> set[str]:
    result: set[str] = set()
    for match in _PEM_BLOCK.finditer(pem or b""):
        if match.group(1) != b"CERTIFICATE":
            continue
        try:
            cert = x509.load_pem_x509_certificate(match.group(0))
        except ValueError:
            continue
        result.add(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())
    return result


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class MosquittoSync:
    def __init__(self, engine: Engine, settings: MosquittoSettings, group: str = "mqtt-device", *,
                 reload: Callable[[], None] | None = None, dynsec: ds.DynsecClient | None = None,
                 interval_s: float = 0.25) -> None:
        self.engine = engine
        self.settings = settings
        self.group = group
        self.interval_s = interval_s
        self.policy: MqttAccessPolicy = mqtt_policy(engine.config, group)
        if self.policy.identity_source != "cn":
            # Mosquitto derives the username from the certificate CN only (use_identity_as_username).
            raise InvalidInput(f"group {group}: Mosquitto maps identities from the CN only; set "
                               "identity_source = \"cn\"", reason="mosquitto_needs_cn_identity")
        self._reload = reload or (lambda: hup_from_pid_file(settings.pid_file))
        self._dynsec = dynsec
        self._own_dynsec = dynsec is None
        self._trust_version: int | None = None
        self._refused_hash: str | None = None
        self._registry_key: Any = None
        self._last_full = 0.0
        self._stop = asyncio.Event()
        self.last_report: SyncReport | None = None
        self.skipped_bootstrap: dict[str, str] = {}
        self._unapplied: tuple[bytes | None, bytes | None] | None = None  # files installed, reload/kick pending
        self._warned: dict[str, str] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    async def _client(self) -> ds.DynsecClient:
        if self._dynsec is None:
            s = self.settings
            client = ds.DynsecClient(s.admin_host, s.admin_port, s.admin_username,
                                     s.admin_password.get_secret_value())
            self._dynsec = await run_blocking(client.connect)
            self._own_dynsec = True
        return self._dynsec

    async def close(self) -> None:
        if self._dynsec is not None and self._own_dynsec:
            await run_blocking(self._dynsec.close)
            self._dynsec = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Sync until `stop()`; a failing round is logged and retried, never fatal."""
        self._stop.clear()
        try:
            while not self._stop.is_set():
                try:
                    await self.sync_once()
                except ds.DynsecError as exc:
                    log.warning("mosquitto sync: dynsec %s: %s; reconnecting next round", exc.reason, exc)
                    await self._drop_client()
                except OtpkiError as exc:
                    log.error("mosquitto sync round failed (%s): %s", exc.reason, exc)
                except Exception:
                    log.exception("mosquitto sync round crashed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
        finally:
            await self.close()

    async def _drop_client(self) -> None:
        if self._own_dynsec and self._dynsec is not None:
            client, self._dynsec = self._dynsec, None
            await run_blocking(client.close)

    # -- one round --------------------------------------------------------------------------------
    async def sync_once(self) -> SyncReport:
        report = SyncReport()
        await run_blocking(self.engine.refresh_revocations)
        trust = await run_blocking(self.engine.trustlists.get, self.group)
        report.trust_version = trust.version
        if trust.version != self._trust_version:
            await self._sync_files(trust, report)
        await self._sync_clients(report)
        self.last_report = report
        return report

    async def _sync_files(self, trust: Any, report: SyncReport) -> None:
        s = self.settings
        ca_pem, crl_pem = mosquitto_bundle(trust)
        old_ca, old_crl = await run_blocking(_read, s.cafile), await run_blocking(_read, s.crlfile)
        if self._unapplied is not None:
            # A previous round installed files but its reload or kick failed: the broker may still run on the
            # files before that, so those are what "newly revoked" is measured against.
            old_ca, old_crl = self._unapplied
        try:
            # reload=None: the reload happens below, so that a failed one is retried instead of forgotten
            # (the next round would find the files already in place and skip both reload and kicks).
            result = await run_blocking(install_trust_files, s.cafile, s.crlfile, ca_pem, crl_pem,
                                        reload=None, openssl=s.openssl_binary,
                                        min_remaining=timedelta(seconds=s.crl_min_remaining_s))
        except UnsafeTrustFiles as exc:
            report.refused = exc.reason
            if self._refused_hash != trust.content_hash:  # log once per bad version, not every round
                self._refused_hash = trust.content_hash
                log.error("mosquitto sync: trust list %s v%d NOT installed (%s): %s; the broker keeps the "
                          "previous cafile/crlfile", self.group, trust.version, exc.reason, exc)
            return
        self._refused_hash = None
        if not result.changed and self._unapplied is None:
            self._trust_version = trust.version
            return
        self._unapplied = (old_ca, old_crl)
        await run_blocking(self._reload)
        report.files_installed = True
        log.info("mosquitto sync: installed cafile (%d CAs) and crlfile (%d CRLs) of %s v%d and sent SIGHUP",
                 result.ca_count, result.crl_count, self.group, trust.version)
        victims = await run_blocking(self._victims, old_ca, old_crl, ca_pem, crl_pem)
        if victims:
            client = await self._client()
            commands = [cmd for name in sorted(victims) for cmd in ds.kick(name)]
            # "Client not found": a revoked device without a dynsec client has no session to drop.
            await client.aexecute(commands, allow_errors=("not found",))
            report.kicked = sorted(victims)
            log.info("mosquitto sync: kicked %s after revocation", ", ".join(report.kicked))
        self._unapplied = None
        self._trust_version = trust.version

    def _victims(self, old_ca: bytes | None, old_crl: bytes | None, ca_pem: bytes, crl_pem: bytes) -> set[str]:
        """Usernames whose sessions must go: newly revoked certificates and certificates of removed CAs."""
        names: set[str] = set()
        for _issuer, serial in _crl_entries(crl_pem) - _crl_entries(old_crl):
            try:
                record = self.engine.inventory.get(format(serial, "x"))
            except NotFound:
                continue  # a CA's serial (handled below) or a certificate another system issued
            if record.group == self.group and record.owner_id:
                names.add(self.engine.registry.get(record.owner_id).name)
        removed = _ca_fingerprints(old_ca) - _ca_fingerprints(ca_pem)
        if removed:
            ca_ids = {ca.id for ca in self.engine.hierarchy.list()
                      if hashlib.sha256(ca.certificate_der).hexdigest() in removed}
            owners = {r.owner_id for r in self.engine.inventory.query(group=self.group)
                      if r.issuer_ca_id in ca_ids and r.owner_id}
            names.update(self.engine.registry.get(o).name for o in owners)
        return names

    # -- registry -> dynsec -------------------------------------------------------------------------
    def _desired(self) -> tuple[dict[str, list[ds.Acl]], dict[str, str]]:
        """(username -> ACLs of every client otpki manages, refused bootstrap CN -> reason)."""
        owners = self.engine.registry.list(self.group)
        desired: dict[str, list[ds.Acl]] = {}
        for owner in owners:
            if is_unregistered(owner):
                continue
            try:
                desired[owner.name] = self._acls_for(owner)
            except ValueError as exc:  # a name that cannot be a topic level: no topics at all
                log.warning("mosquitto sync: %s gets no topics: %s", owner.name, exc)
                desired[owner.name] = []
        bootstrap, skipped = self._bootstrap_clients(owners)
        desired.update(bootstrap)
        return desired, skipped

    def _bootstrap_clients(self, owners: list[Owner]) -> tuple[dict[str, list[ds.Acl]], dict[str, str]]:
        """Dynsec clients for allow-listed IDevID CNs: each may only ask for its own device's certificate."""
        # Every name ever registered in the group counts, unregistered ones too: a CN equal to any of them
        # would be that device (or the enrollment service) as far as Mosquitto's ACLs are concerned.
        # The dynsec admin user too: a bootstrap client of that name would collide with it (and get its rights).
        taken = {o.name for o in owners} | {self.settings.admin_username}
        claims: dict[str, set[str]] = {}  # CN -> owner ids listing it
        by_id = {o.id: o for o in owners}
        for owner in owners:
            if is_unregistered(owner) or owner.role is ENROLLMENT_ROLE:
                continue
            for cn in bootstrap_cns(owner):
                claims.setdefault(cn, set()).add(owner.id)
        clients: dict[str, list[ds.Acl]] = {}
        skipped: dict[str, str] = {}
        for cn, owner_ids in sorted(claims.items()):
            names = sorted(by_id[i].name for i in owner_ids)
            if cn in taken:
                skipped[cn] = "bootstrap_cn_is_registered_name"
                why = f"it is the registered name {cn!r}: the IDevID would get that identity's ACL"
            elif len(owner_ids) > 1:
                skipped[cn] = "bootstrap_cn_ambiguous"
                why = f"it is listed by more than one device ({', '.join(names)})"
            else:
                owner = by_id[next(iter(owner_ids))]
                try:
                    topics = device_topics(self.policy, device=owner.name, site=owner.site, group=self.group)
                except ValueError as exc:
                    skipped[cn] = "bootstrap_device_name_unusable"
                    why = str(exc)
                else:
                    clients[cn] = bootstrap_acls(topics)
                    continue
            if self._warned.get(cn) != skipped[cn]:  # once per CN and reason, not every round
                self._warned[cn] = skipped[cn]
                log.warning("mosquitto sync: no dynsec client for bootstrap CN %r of %s (%s): %s", cn,
                            ", ".join(names), skipped[cn], why)
        return clients, skipped

    def _acls_for(self, owner: Owner) -> list[ds.Acl]:
        if owner.role is ENROLLMENT_ROLE:
            return ds.enrollment_service_acls(self.policy)
        return ds.device_acls(device_topics(self.policy, device=owner.name, site=owner.site, group=self.group))

    async def _sync_clients(self, report: SyncReport) -> None:
        owners = await run_blocking(self.engine.registry.list, self.group)
        key = tuple(sorted((o.id, o.name, o.site, is_unregistered(o), str(o.role),
                            tuple(bootstrap_cns(o))) for o in owners))
        now = asyncio.get_running_loop().time()
        full = now - self._last_full >= FULL_RECONCILE_EVERY_S
        if key == self._registry_key and not full:
            report.skipped_bootstrap = dict(self.skipped_bootstrap)
            return
        desired, skipped = await run_blocking(self._desired)
        self.skipped_bootstrap = skipped
        client = await self._client()
        if full:
            # Deny whatever no role grants, even on a broker whose dynsec file otpki did not write.
            await client.aexecute([ds.set_default_acl_access()])
        listing = await client.aexecute([{"command": "listClients", "verbose": True}])
        present = {c["username"]: c for c in listing[0].get("data", {}).get("clients", [])
                   if c.get("textname") == MANAGED_TEXT}
        for name, acls in desired.items():
            role = ds.role_name(name)
            if name not in present:
                await client.aexecute([ds.create_role(role, text=MANAGED_TEXT)], allow_errors=("already exists",))
                await self._set_role_acls(client, role, acls)
                await client.aexecute([ds.create_client(name, roles=[role], text=MANAGED_TEXT)])
                report.created.append(name)
                log.info("mosquitto sync: dynsec client %s created with %d ACLs", name, len(acls))
            elif full or key != self._registry_key:
                if await self._set_role_acls(client, role, acls):
                    report.updated.append(name)
                    log.info("mosquitto sync: dynsec role %s updated", role)
                if role not in {r.get("rolename") for r in present[name].get("roles", [])}:
                    await client.aexecute([ds.add_client_role(name, role)])
                    log.info("mosquitto sync: role %s given back to dynsec client %s", role, name)
        for name in sorted(set(present) - set(desired)):
            # deleteClient also disconnects the client's sessions.
            await client.aexecute([ds.delete_client(name), ds.delete_role(ds.role_name(name))],
                                  allow_errors=("not found",))
            report.deleted.append(name)
            log.info("mosquitto sync: dynsec client %s deleted (no longer registered)", name)
        report.skipped_bootstrap = dict(self.skipped_bootstrap)
        self._registry_key = key
        if full:
            self._last_full = now

    async def _set_role_acls(self, client: ds.DynsecClient, role: str, acls: list[ds.Acl]) -> bool:
        """Make the role hold exactly `acls`; True when something changed."""
        got = await client.aexecute([ds.get_role(role)])
        current = {ds.Acl(acltype=a["acltype"], topic=a["topic"], allow=a.get("allow", True),
                          priority=a.get("priority", 0))
                   for a in got[0].get("data", {}).get("role", {}).get("acls", [])}
        wanted = set(acls)
        commands = [ds.remove_role_acl(role, a) for a in current - wanted]
        commands += [ds.add_role_acl(role, a) for a in acls if a not in current]
        if commands:
            await client.aexecute(commands)
        return bool(commands)


def bootstrap_acls(topics: DeviceTopics) -> list[ds.Acl]:
    """A bootstrap (IDevID) client: publish its device's CSR topic, receive its replies, nothing else."""
    return [ds.Acl(acltype="publishClientSend", topic=topics.enrollment_request),
            ds.Acl(acltype="subscribePattern", topic=topics.enrollment_replies),
            ds.Acl(acltype="publishClientReceive", topic=topics.enrollment_replies)]


def bootstrap_cns(owner: Owner) -> list[str]:
    """The IDevID subject CNs a device's registration allow-lists (`attributes["bootstrap"]`)."""
    entries = owner.attributes.get("bootstrap")
    if not isinstance(entries, list):
        return []
    cns = [e.get("subject_cn") for e in entries if isinstance(e, dict)]
    return sorted({cn for cn in cns if isinstance(cn, str) and cn})
