"""Keep a Mosquitto broker in step with the engine, and drop revoked devices.

Each round (`sync_once`, every `interval_s` in `run`):
1. pick up revocations other processes wrote (`engine.refresh_revocations()`), read the group's trust list
   WITHOUT what an operator imported (`trustlists.get(group, imported=False)`): Mosquitto maps the certificate
   CN to a username whoever issued it, so a manufacturer (IDevID) CA in its cafile would let anyone holding that
   CA's key be any device, the enrollment service or the dynsec admin. Only the engine's own CAs go in; devices
   make their first enrollment with an IDevID on otpki's bootstrap listener instead (bootstrap.py);
2. when its version moved: build cafile/crlfile from it, install them safely (files.py verifies, renames,
   SIGHUPs), and only THEN kick the sessions of devices whose certificate was newly revoked, or whose CA
   left the cafile, through dynsec. The kicked device reconnects into a TLS handshake that the new CRL (or
   the missing CA) refuses. Mosquitto handles the HUP on its main loop before it accepts that reconnect;
3. reconcile the whole dynsec state with what the engine wants (dynsec_state.py): the admin user with its one
   role, a client and a role for every registered device and the enrollment service, nothing else. Clients,
   roles, ACLs and groups the engine never made are removed, logged as foreign and written to the engine's
   audit log (`otpki doctor` reports them). The reconcile runs when the registry changes and every
   FULL_RECONCILE_EVERY_S seconds.

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
from mqtt_broker_auth.mosquitto import dynsec_state as ds_state
from mqtt_broker_auth.mosquitto.bundle import mosquitto_bundle
from mqtt_broker_auth.mosquitto.config import MosquittoSettings
from mqtt_broker_auth.mosquitto.files import UnsafeTrustFiles, install_trust_files
from mqtt_broker_auth.mosquitto.process import hup_from_pid_file
from mqtt_broker_auth.policy import MqttAccessPolicy, mqtt_policy
from mqtt_broker_auth.topics import device_topics
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import InvalidInput, NotFound, OtpkiError
from trustlists.models import Owner, OwnerRole

log = logging.getLogger(__name__)

ENROLLMENT_ROLE = OwnerRole.ENROLLMENT_SERVICE
SYNC_ACTOR = "otpki-mosquitto-sync"
FOREIGN_REMOVED_ACTION = "mqtt.dynsec.foreign_removed"
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
    # dynsec entries the engine never made, removed this round ("<kind> <name>: <why>")
    foreign_removed: list[str] = Field(default_factory=list)


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
        self._last_full = float("-inf")  # the first round reconciles everything
        self._stop = asyncio.Event()
        self.last_report: SyncReport | None = None
        self._unapplied: tuple[bytes | None, bytes | None] | None = None  # files installed, reload/kick pending

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
        """Sync until `stop()`; a failing round is logged and retried, never fatal. On PostgreSQL a round also
        starts as soon as any instance commits a revocation (engine.on_revocations), without waiting for the
        interval."""
        self._stop.clear()
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notified() -> None:  # on the store's listener thread
            loop.call_soon_threadsafe(wake.set)

        subscription = None
        try:
            try:
                subscription = await run_blocking(self.engine.on_revocations, notified)
            except OtpkiError as exc:  # the rounds below still find every revocation, at the interval
                log.warning("mosquitto sync: no revocation notifications (%s); polling", exc)
            while not self._stop.is_set():
                wake.clear()  # a notification during the round starts the next one at once
                try:
                    await self.sync_once()
                except ds.DynsecError as exc:
                    log.warning("mosquitto sync: dynsec %s: %s; reconnecting next round", exc.reason, exc)
                    await self._drop_client()
                except OtpkiError as exc:
                    log.error("mosquitto sync round failed (%s): %s", exc.reason, exc)
                except Exception:
                    log.exception("mosquitto sync round crashed; retrying")
                stopping = asyncio.ensure_future(self._stop.wait())
                woken = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({stopping, woken}, timeout=self.interval_s,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                    woken.cancel()
        finally:
            if subscription is not None:
                await asyncio.shield(run_blocking(subscription.close))
            await self.close()

    async def _drop_client(self) -> None:
        if self._own_dynsec and self._dynsec is not None:
            client, self._dynsec = self._dynsec, None
            await run_blocking(client.close)

    # -- one round --------------------------------------------------------------------------------
    async def sync_once(self, *, full: bool = False) -> SyncReport:
        """One round; `full` reconciles the whole dynsec state now instead of at the next periodic check."""
        if full:
            self._last_full = float("-inf")
        report = SyncReport()
        await run_blocking(self.engine.refresh_revocations)
        trust = await run_blocking(self.engine.trustlists.get, self.group, imported=False)
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
    def desired(self) -> tuple[ds_state.DynsecState, set[str]]:
        """(the dynsec state the engine wants, every name the engine ever managed a client for). Blocking."""
        owners = self.engine.registry.list(self.group)
        return desired_dynsec(self.settings.admin_username, self.policy, self.group, owners)

    async def _sync_clients(self, report: SyncReport) -> None:
        owners = await run_blocking(self.engine.registry.list, self.group)
        key = tuple(sorted((o.id, o.name, o.site, o.unregistered, str(o.role))
                           for o in owners))
        now = asyncio.get_running_loop().time()
        full = now - self._last_full >= FULL_RECONCILE_EVERY_S
        if key == self._registry_key and not full:
            return
        desired, once_managed = desired_dynsec(self.settings.admin_username, self.policy, self.group, owners)
        client = await self._client()
        responses = await client.aexecute(ds_state.state_queries())
        current = ds_state.DynsecState.from_responses(*responses)
        drifts = ds_state.drift(current, desired, once_managed=once_managed)
        commands, admin_commands = ds_state.repair_commands(drifts, current, desired, self.settings.admin_username)
        if commands:
            # "not found": a client deleted by hand between the listing and now is already what we want.
            await client.aexecute(commands, allow_errors=("not found",))
        left: list[ds_state.Drift] = []
        if admin_commands:
            # dynsec drops our own connection while it runs these; what they achieved is checked afresh below.
            with contextlib.suppress(ds.DynsecUnavailable, ds.DynsecTimeout):
                await client.aexecute(admin_commands, allow_errors=("not found",))
            await self._drop_client()
            client = await self._client()
            after = ds_state.DynsecState.from_responses(*await client.aexecute(ds_state.state_queries()))
            left = [d for d in ds_state.drift(after, desired, once_managed=once_managed) if d.foreign]
        for d in drifts:
            if d.kind == "missing_client":
                report.created.append(d.name)
                log.info("mosquitto sync: dynsec client %s created", d.name)
            elif d.kind == "client" and not d.foreign:
                report.deleted.append(d.name)
                log.info("mosquitto sync: dynsec client %s deleted (%s)", d.name, d.detail)
            elif d.kind in ("missing_acl", "missing_role"):
                if d.name not in report.updated:
                    report.updated.append(d.name)
                log.info("mosquitto sync: dynsec %s %s repaired (%s)", "role" if d.kind == "missing_acl"
                         else "client", d.name, d.detail)
        removed = [d for d in drifts if d.foreign and d not in left]
        if removed:
            report.foreign_removed = [f"{d.kind} {d.name}: {d.detail}" for d in removed]
            for d in removed:
                log.warning("mosquitto sync: removed foreign dynsec %s %r (%s): the engine never put it there; "
                            "someone with admin access to the broker did", d.kind.replace("_", " "), d.name, d.detail)
            await run_blocking(self.engine.record_event, actor=SYNC_ACTOR, action=FOREIGN_REMOVED_ACTION,
                               subject=f"mosquitto {self.settings.host}:{self.settings.port}",
                               details={"removed": [d.model_dump(mode="json", exclude_none=True) for d in removed]})
        if left:
            raise ds.DynsecError("foreign dynsec entries survived the clean-up (retried next round): "
                                 + "; ".join(f"{d.kind} {d.name}" for d in left))
        self._registry_key = key
        if full:
            self._last_full = now


def desired_dynsec(admin_username: str, policy: MqttAccessPolicy, group: str,
                   owners: list[Owner]) -> tuple[ds_state.DynsecState, set[str]]:
    """What the broker's dynsec must hold for these registrations; shared by the sync and `otpki doctor`."""
    identities: dict[str, list[ds.Acl]] = {}
    for owner in owners:
        if owner.unregistered:
            continue
        if owner.role is ENROLLMENT_ROLE:
            identities[owner.name] = ds.enrollment_service_acls(policy)
            continue
        try:
            identities[owner.name] = ds.device_acls(device_topics(policy, device=owner.name, site=owner.site,
                                                                  group=group))
        except ValueError as exc:  # a name that cannot be a topic level: a client without topics
            log.warning("mosquitto sync: %s gets no topics: %s", owner.name, exc)
            identities[owner.name] = []
    identities.pop(admin_username, None)  # never: the name is reserved, and the admin is not a certificate
    once_managed = {o.name for o in owners} | {admin_username}
    return ds_state.desired_state(admin_username, identities), once_managed
