"""Every query the engine runs, in plain SQL that SQLite and PostgreSQL both accept.

`SqlTx` wraps one DB-API connection inside a unit of work and implements both `StoreReader` and `StoreWriter`
(trustlists.store.base). A backend subclasses it only where its SQL differs (locks, streaming cursors) and hands
it a `translate` function that turns its driver's exceptions into the engine's typed errors (busy -> StoreBusy,
constraint -> AlreadyExists). Nothing but typed rows leaves this module: engine models or the named tuples of
trustlists.store.rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from trustlists.bootstrap_allowlist import ATTRIBUTE as BOOTSTRAP_ATTRIBUTE
from trustlists.clock import from_epoch, to_epoch
from trustlists.der import certificate_spki_sha256
from trustlists.errors import AlreadyExists, InvalidInput, NotFound, RequestNotFound
from trustlists.models import (
    AuditRecord,
    BootstrapPin,
    CARecord,
    CertificateRecord,
    CertificateRequest,
    CertificateStatus,
    CrlRecord,
    DeliveryTarget,
    ExpiringCertificate,
    IssuanceKind,
    KeyType,
    ListedCertificate,
    Owner,
    OwnerKind,
    OwnerLine,
    PinSource,
    RequestKind,
    RequestStatus,
    RevocationReason,
    TargetPin,
    TargetState,
)
from trustlists.store import tallies
from trustlists.store.rows import (
    AuditHead,
    AuditRow,
    CaTableSignature,
    CertificateCount,
    CertificateDer,
    CertificateKey,
    CertificateState,
    CrlEntry,
    ExternalTrust,
    LeaseRow,
    LoginFailuresRow,
    NewCertificate,
    PinChange,
    RateBucket,
    RevocationRow,
    TableRow,
    TrustVersion,
    WebSessionRow,
    WebTokenRow,
    WebUserRow,
)

_CERT_COLUMNS = (
    "serial, issuer_ca_id, owner_id, grp, site, subject, san_uri, key_type, not_before, not_after, "
    "fingerprint, issuance, issued_at, delivered, superseded_by, revoked_at, revocation_reason"
)
_CERT_COLUMNS_C = ", ".join(f"c.{c}" for c in _CERT_COLUMNS.split(", "))  # the same, in a join as `c`
_CA_COLUMNS = (
    "id, name, parent_id, grp, site, key_type, key_backend, key_ref, cert_der, serial, fingerprint, "
    "not_before, not_after, active, created_at"
)
_OWNER_COLUMNS = (
    "id, kind, name, grp, site, application_uri, dns_names, ip_addresses, attributes, created_at"
)


def _allow_list_keys(owner: Owner) -> Iterator[tuple[str, str]]:
    """(kind, value) of each entry of the owner's bootstrap allow-list as stored (trustlists.bootstrap_allowlist
    validates it on the way in; what does not look like an entry is left out here too, as it admits nobody)."""
    raw = owner.attributes.get(BOOTSTRAP_ATTRIBUTE)
    if not isinstance(raw, list):
        return
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        fingerprint, cn = entry.get("sha256"), entry.get("subject_cn")
        if isinstance(fingerprint, str):
            yield "sha256", fingerprint.strip().lower().replace(":", "")
        if isinstance(cn, str):
            yield "subject_cn", cn


# The channel a commit announces revocations and bootstrap pin changes on (Store.subscribe), where the backend can.
REVOCATIONS_CHANNEL = "otpki_revocations"


def crl_number_floor_key(ca_id: str) -> str:
    """The meta key of the lowest number a CA's next CRL may have (set by a restore; trustlists/store_copy.py)."""
    return f"crl_number_floor:{ca_id}"


# The meta key of the lowest number any group's next trust-list version may have (set by a restore, for every
# group: one the backup never saw may have published versions after it too; trustlists/store_copy.py).
TRUST_VERSION_FLOOR_KEY = "trust_version_floor"


# The lock of the ordered logs (StoreWriter.serialise_appends).
APPEND_LOCK = ("append", "ordered-logs")
# The table every backend records its applied migrations in (trustlists.store.migrations).
MIGRATIONS_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)
REQUEST_COLUMNS = (
    "id", "kind", "owner_id", "grp", "site", "status", "csr", "key_type", "key_format", "has_password",
    "subject_name", "dns_names", "ip_addresses", "requester_fingerprint", "submitted_by", "submitted_at",
    "decided_by", "decided_at", "reason", "serial", "issued_at",
)
_REQUEST_SELECT = f"SELECT {', '.join(REQUEST_COLUMNS)} FROM cert_requests"


class SqlTx:
    def __init__(self, conn: Any, translate: Callable[[Exception], Exception], placeholder: str = "?"):
        self._conn = conn
        self._translate = translate
        self._ph = placeholder

    # -- plumbing ---------------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._ph != "?":
            sql = sql.replace("?", self._ph)
        try:
            cur = self._conn.cursor()
            cur.execute(sql, tuple(params))
            return cur
        except Exception as exc:
            raise self._translate(exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._ph != "?":
            sql = sql.replace("?", self._ph)
        try:
            self._conn.cursor().executemany(sql, rows)
        except Exception as exc:
            raise self._translate(exc) from exc

    def insert_rows(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """Many new rows of one table (`columns`: its column list, comma-separated) for the engine's batch writes:
        one INSERT per row here; a backend with a cheaper bulk path overrides this."""
        if rows:
            marks = ", ".join("?" * (columns.count(",") + 1))
            self.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def notify(self, channel: str) -> None:
        """Tell the subscribers of `channel` (Store.subscribe) when this transaction commits; nothing where the
        backend has no notifications (SQLite: readers poll)."""

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def _stream(self, sql: str, params: Sequence[Any], size: int) -> Iterator[list[Any]]:
        """The rows of a query that may return millions, `size` at a time (a backend may keep them on the
        server until asked)."""
        cur = self.execute(sql, params)
        while True:
            try:
                rows = cur.fetchmany(size)
            except Exception as exc:
                raise self._translate(exc) from exc
            if not rows:
                return
            yield rows

    # -- whole tables (a copy or backup of the store; trustlists/store_copy.py) ----------------------
    # The tables of the store but the migrations record, which belongs to the store, not to its data.
    _TABLES_SQL = ("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
                   "AND name <> 'schema_migrations' ORDER BY name")

    def table_names(self) -> list[str]:
        return [str(row[0]) for row in self.execute(self._TABLES_SQL).fetchall()]

    def _known_table(self, table: str) -> str:
        # Table names cannot be bound parameters: only a name the store itself listed reaches the SQL.
        if table not in self.table_names():
            raise NotFound(f"the store has no table {table!r}", reason="unknown_table")
        return table

    def table_columns(self, table: str) -> list[str]:
        cur = self.execute(f"SELECT * FROM {self._known_table(table)} WHERE 1 = 0")
        return [str(d[0]) for d in cur.description]

    def count_rows(self, table: str) -> int:
        return int(self._one(f"SELECT COUNT(*) FROM {self._known_table(table)}")[0])

    def table_rows(self, table: str, columns: Sequence[str]) -> Iterator[TableRow]:
        known = set(self.table_columns(table))
        if not columns or any(c not in known for c in columns):
            raise InvalidInput(f"columns {list(columns)} are not those of table {table!r}", reason="unknown_column")
        for rows in self._stream(f"SELECT {', '.join(columns)} FROM {table}", (), 5_000):
            for row in rows:
                # A driver may hand BLOBs out as memoryview (psycopg): bytes, so both backends give equal rows.
                yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)

    def load_rows(self, table: str, columns: Sequence[str], rows: Sequence[TableRow]) -> None:
        """Insert rows as they are, ids and sequence numbers included; `loaded_table` when the table is done."""
        known = set(self.table_columns(table))
        if not columns or any(c not in known for c in columns):
            raise InvalidInput(f"columns {list(columns)} are not those of table {table!r}", reason="unknown_column")
        if rows:
            self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             list(rows))

    def loaded_table(self, table: str) -> None:
        """After `load_rows`: let the table's generated ids go on after the highest one loaded. SQLite takes the
        next rowid from the rows themselves; a backend with sequences overrides this."""

    def lock(self, name: str, key: str) -> None:
        """Serialise with every other transaction that takes the same lock, until this one ends.

        SQLite runs one write transaction at a time already; a backend with concurrent writers overrides this.
        """

    def try_lock(self, name: str, key: str) -> bool:
        """`lock` without waiting: SQLite's write transaction holds the whole store already."""
        return True

    def serialise_appends(self) -> None:
        """(StoreWriter.serialise_appends) One lock for all ordered logs: an audited transaction appends to the
        chain anyway, so a finer lock would only add lock-order deadlocks (a revocation, then its audit record,
        then the CRL), not concurrency."""
        self.lock(*APPEND_LOCK)

    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- CAs --------------------------------------------------------------------------------------
    def insert_ca(self, ca: CARecord) -> None:
        self.execute(
            f"INSERT INTO cas ({_CA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ca.id, ca.name, ca.parent_id, ca.group, ca.site, ca.key_type.value, ca.key_backend,
             ca.key_ref, ca.certificate_der, ca.serial, ca.fingerprint_sha256, to_epoch(ca.not_before),
             to_epoch(ca.not_after), int(ca.active), to_epoch(ca.created_at)),
        )

    @staticmethod
    def _ca(row: Sequence[Any]) -> CARecord:
        return CARecord(
            id=row[0], name=row[1], parent_id=row[2], group=row[3], site=row[4], key_type=KeyType(row[5]),
            key_backend=row[6], key_ref=row[7], certificate_der=bytes(row[8]), serial=row[9],
            fingerprint_sha256=row[10], not_before=from_epoch(row[11]), not_after=from_epoch(row[12]),
            active=bool(row[13]), created_at=from_epoch(row[14]),
        )

    def get_ca(self, ca_id: str) -> CARecord:
        row = self._one(f"SELECT {_CA_COLUMNS} FROM cas WHERE id = ?", (ca_id,))
        if row is None:
            raise NotFound(f"no CA with id {ca_id!r}")
        return self._ca(row)

    def list_cas(self) -> list[CARecord]:
        rows = self.execute(f"SELECT {_CA_COLUMNS} FROM cas ORDER BY created_at, id").fetchall()
        return [self._ca(r) for r in rows]

    def cas_signature(self) -> CaTableSignature:
        """Changes whenever a CA is added or (de)activated: lets callers cache the CA list safely."""
        row = self._one("SELECT COUNT(*), COALESCE(SUM(active), 0) FROM cas")
        return CaTableSignature(int(row[0]), int(row[1]))

    def set_ca_active(self, ca_id: str, active: bool) -> None:
        self.execute("UPDATE cas SET active = ? WHERE id = ?", (int(active), ca_id))

    # -- owners -----------------------------------------------------------------------------------
    def insert_owner(self, owner: Owner) -> None:
        self.insert_owners([owner])

    def insert_owners(self, owners: Sequence[Owner]) -> None:
        self.executemany(
            f"INSERT INTO owners ({_OWNER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(owner.id, owner.kind.value, owner.name, owner.group, owner.site, owner.application_uri,
              json.dumps(owner.dns_names), json.dumps(owner.ip_addresses),
              json.dumps(owner.stored_attributes(), sort_keys=True), to_epoch(owner.created_at))
             for owner in owners],
        )
        self._index_allow_lists(owners)

    def _index_allow_lists(self, owners: Sequence[Owner]) -> None:
        """bootstrap_allowlist rows of the owners' allow-lists (migration 0004): an index for
        `owners_by_bootstrap`, written with the owners so that it never disagrees with them."""
        rows = {(owner.group, kind, value, owner.id) for owner in owners for kind, value in _allow_list_keys(owner)}
        if rows:
            self.executemany("INSERT INTO bootstrap_allowlist (grp, kind, value, owner_id) VALUES (?, ?, ?, ?)",
                             sorted(rows))

    def update_owner(self, owner: Owner) -> None:
        cur = self.execute(
            "UPDATE owners SET name = ?, site = ?, application_uri = ?, dns_names = ?, ip_addresses = ?, "
            "attributes = ? WHERE id = ?",
            (owner.name, owner.site, owner.application_uri, json.dumps(owner.dns_names),
             json.dumps(owner.ip_addresses), json.dumps(owner.stored_attributes(), sort_keys=True), owner.id),
        )
        if cur.rowcount == 0:
            raise NotFound(f"no registered owner with id {owner.id!r}")
        self.execute("DELETE FROM bootstrap_allowlist WHERE owner_id = ?", (owner.id,))
        self._index_allow_lists([owner])

    @staticmethod
    def _owner(row: Sequence[Any]) -> Owner:
        return Owner(
            id=row[0], kind=OwnerKind(row[1]), name=row[2], group=row[3], site=row[4],
            application_uri=row[5], dns_names=json.loads(row[6]), ip_addresses=json.loads(row[7]),
            attributes=json.loads(row[8]), created_at=from_epoch(row[9]),
        )

    def get_owner(self, owner_id: str) -> Owner:
        row = self._one(f"SELECT {_OWNER_COLUMNS} FROM owners WHERE id = ?", (owner_id,))
        if row is None:
            raise NotFound(f"no registered owner with id {owner_id!r}", reason="unknown_owner")
        return self._owner(row)

    def find_owner(self, group: str, *, name: str | None = None, application_uri: str | None = None
                   ) -> Owner | None:
        if name is not None:
            row = self._one(f"SELECT {_OWNER_COLUMNS} FROM owners WHERE grp = ? AND name = ?", (group, name))
        else:
            row = self._one(f"SELECT {_OWNER_COLUMNS} FROM owners WHERE grp = ? AND application_uri = ?",
                            (group, application_uri))
        return self._owner(row) if row else None

    def find_owners(self, group: str, names: Sequence[str]) -> dict[str, Owner]:
        """name -> owner, for the names of `names` registered in `group`."""
        found: dict[str, Owner] = {}
        unique = list(dict.fromkeys(names))
        for start in range(0, len(unique), 500):  # well under every engine's limit on bound parameters
            chunk = unique[start:start + 500]
            rows = self.execute(f"SELECT {_OWNER_COLUMNS} FROM owners WHERE grp = ? AND name IN "
                                f"({', '.join('?' * len(chunk))})", [group, *chunk]).fetchall()
            for row in rows:
                found[row[2]] = self._owner(row)
        return found

    def owners_by_bootstrap(self, group: str, *, fingerprint: str, subject_cn: str | None) -> list[Owner]:
        """The owners of `group` whose allow-list has an entry for this fingerprint (lower-case hex) or, unless
        None, this subject CN: candidates from the index, for the caller to check against their attributes."""
        rows = self.execute(
            f"SELECT {_OWNER_COLUMNS} FROM owners WHERE id IN (SELECT owner_id FROM bootstrap_allowlist "
            "WHERE grp = ? AND ((kind = 'sha256' AND value = ?) OR (kind = 'subject_cn' AND value = ?))) ORDER BY name",
            (group, fingerprint, subject_cn)).fetchall()
        return [self._owner(r) for r in rows]

    def list_owners(self, group: str | None = None) -> list[Owner]:
        if group is None:
            rows = self.execute(f"SELECT {_OWNER_COLUMNS} FROM owners ORDER BY grp, name").fetchall()
        else:
            rows = self.execute(f"SELECT {_OWNER_COLUMNS} FROM owners WHERE grp = ? ORDER BY name",
                                (group,)).fetchall()
        return [self._owner(r) for r in rows]

    def owner_lines(self, group: str, *, now: datetime, offset: int, limit: int) -> list[OwnerLine]:
        """A page of the group's owners by name, each with its newest certificate and last-seen time: one query
        (the page of owners off the (grp, name) index, each one's newest certificate off certificates_owner)."""
        owner_columns = ", ".join(f"o.{c}" for c in _OWNER_COLUMNS.split(", "))
        # The newest serial as a column of the page's owners, then joined by primary key: the subquery runs once
        # per owner of the page. The LIMIT on `o` keeps it a subquery of its own: merged into the outer query,
        # PostgreSQL hash-joined every certificate row on the subquery's result.
        rows = self.execute(
            f"SELECT {owner_columns}, c.serial, c.subject, c.grp, c.site, c.owner_id, c.not_after, "
            f"{_STATUS_CASE_C}, c.issuance, p.last_seen "
            f"FROM (SELECT {_OWNER_COLUMNS}, (SELECT n.serial FROM certificates n WHERE n.owner_id = page.id "
            "ORDER BY n.not_after DESC, n.serial DESC LIMIT 1) AS newest "
            f"FROM (SELECT {_OWNER_COLUMNS} FROM owners WHERE grp = ? ORDER BY name LIMIT {int(limit)} "
            f"OFFSET {int(offset)}) page LIMIT {int(limit)}) o "
            "LEFT JOIN certificates c ON c.serial = o.newest "
            "LEFT JOIN device_presence p ON p.grp = o.grp AND p.device = o.name ORDER BY o.name",
            (to_epoch(now), group)).fetchall()
        lines = []
        for row in rows:
            serial, subject, grp, site, owner_id, not_after, st, kind, seen = row[10:]
            newest = (ListedCertificate(serial, subject, grp, site, owner_id, not_after, _STATUSES[st],
                                        _ISSUANCES[kind]) if serial is not None else None)
            lines.append(OwnerLine(self._owner(row[:10]), newest, from_epoch(seen) if seen is not None else None))
        return lines

    def count_owners(self, group: str) -> int:
        return int(self._one("SELECT COUNT(*) FROM owners WHERE grp = ?", (group,))[0])

    # -- device presence --------------------------------------------------------------------------------
    def record_last_seen(self, group: str, seen: Sequence[tuple[str, int]]) -> None:
        """(device name, epoch seconds) seen on a broker; a time older than the one stored is kept out."""
        self.executemany(
            "INSERT INTO device_presence (grp, device, last_seen) VALUES (?, ?, ?) ON CONFLICT (grp, device) "
            "DO UPDATE SET last_seen = CASE WHEN excluded.last_seen > device_presence.last_seen "
            "THEN excluded.last_seen ELSE device_presence.last_seen END",
            [(group, device, at) for device, at in sorted(seen)])

    def last_seen(self, group: str, devices: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(devices))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            for device, at in self.execute(
                    f"SELECT device, last_seen FROM device_presence WHERE grp = ? AND device IN "
                    f"({', '.join('?' * len(chunk))})", [group, *chunk]).fetchall():
                found[device] = int(at)
        return found

    # -- certificates -----------------------------------------------------------------------------
    def insert_certificate(self, rec: CertificateRecord, der: bytes) -> None:
        self.insert_certificates([NewCertificate(rec, der, certificate_spki_sha256(der))])

    def insert_certificates(self, items: Sequence[NewCertificate]) -> None:
        """New certificates with the SHA-256 of the SubjectPublicKeyInfo each certifies.

        The issuer hands the key hash over from the public key it signed for: parsing the DER back for it cost
        a fifth of the store's share of an issuance.
        """
        self.insert_rows(
            "certificates", f"{_CERT_COLUMNS}, der",
            [(rec.serial, rec.issuer_ca_id, rec.owner_id, rec.group, rec.site, rec.subject, rec.san_uri,
              rec.key_type.value, to_epoch(rec.not_before), to_epoch(rec.not_after), rec.fingerprint_sha256,
              rec.issuance.value, to_epoch(rec.issued_at), int(rec.delivered), rec.superseded_by,
              to_epoch(rec.revoked_at) if rec.revoked_at else None,
              int(rec.revocation_reason) if rec.revocation_reason is not None else None, der)
             for rec, der, _spki in items],
        )
        # Every path that records a certificate comes through here, so the key index is never behind.
        self.insert_rows("certificate_keys", "serial, spki_sha256", [(rec.serial, spki) for rec, _der, spki in items])
        added: dict[tallies.TallyKey, int] = {}
        for rec, _der, _spki in items:
            key = tallies.key_of(rec)
            added[key] = added.get(key, 0) + 1
        self._add_tallies(sorted(added.items()), self._TALLY_SHARD)

    @staticmethod
    def _cert(row: Sequence[Any], der: bytes | None = None) -> CertificateRecord:
        # Validated construction, not model_construct: pydantic-core validates this flat model in ~2 us, while
        # model_construct's Python loop over the fields takes ~4.5 us (pydantic 2.14), and inventory queries
        # return tens of thousands of rows. The enums are converted by the validator (str/int -> enum).
        return CertificateRecord(
            serial=row[0], issuer_ca_id=row[1], owner_id=row[2], group=row[3], site=row[4], subject=row[5],
            san_uri=row[6], key_type=row[7], not_before=from_epoch(row[8]),
            not_after=from_epoch(row[9]), fingerprint_sha256=row[10], issuance=row[11],
            issued_at=from_epoch(row[12]), delivered=bool(row[13]), superseded_by=row[14],
            revoked_at=from_epoch(row[15]) if row[15] is not None else None,
            revocation_reason=row[16], der=der,
        )

    def get_certificate(self, serial: str, *, with_der: bool = True) -> CertificateRecord:
        row = self._one(f"SELECT {_CERT_COLUMNS}, der FROM certificates WHERE serial = ?", (serial,))
        if row is None:
            raise NotFound(f"no certificate with serial {serial}", reason="unknown_certificate")
        return self._cert(row, bytes(row[17]) if with_der else None)

    def certificate_state(self, serial: str) -> CertificateState | None:
        row = self._one("SELECT issuer_ca_id, revoked_at, revocation_reason FROM certificates WHERE serial = ?",
                        (serial,))
        return CertificateState._make(row) if row else None

    def find_certificate_by_fingerprint(self, fingerprint: str) -> CertificateRecord | None:
        row = self._one(f"SELECT {_CERT_COLUMNS}, der FROM certificates WHERE fingerprint = ?", (fingerprint,))
        return self._cert(row, bytes(row[17])) if row else None

    def certificates_for_keys(self, spki_hashes: Sequence[str]) -> dict[str, list[CertificateRecord]]:
        """SPKI hash -> every certificate (with DER) ever issued for that public key, to any owner."""
        found: dict[str, list[CertificateRecord]] = {}
        unique = list(dict.fromkeys(spki_hashes))
        for start in range(0, len(unique), 500):  # well under every engine's limit on bound parameters
            chunk = unique[start:start + 500]
            rows = self.execute(
                f"SELECT k.spki_sha256, {_CERT_COLUMNS_C}, c.der FROM certificate_keys k "
                f"JOIN certificates c ON c.serial = k.serial WHERE k.spki_sha256 IN ({', '.join('?' * len(chunk))})",
                chunk).fetchall()
            for row in rows:
                found.setdefault(row[0], []).append(self._cert(row[1:], bytes(row[18])))
        return found

    def certificates_missing_key(self, after_serial: str, limit: int) -> list[CertificateDer]:
        """Certificates with no certificate_keys row, in serial order after `after_serial`."""
        rows = self.execute(
            "SELECT c.serial, c.der FROM certificates c WHERE c.serial > ? AND NOT EXISTS "
            "(SELECT 1 FROM certificate_keys k WHERE k.serial = c.serial) ORDER BY c.serial LIMIT ?",
            (after_serial, limit)).fetchall()
        return [CertificateDer(r[0], bytes(r[1])) for r in rows]

    def insert_certificate_keys(self, rows: Sequence[CertificateKey]) -> None:
        """Key index rows; one already there (another process indexed it first) is kept."""
        self.executemany("INSERT INTO certificate_keys (serial, spki_sha256) VALUES (?, ?) "
                         "ON CONFLICT (serial) DO NOTHING", rows)

    def query_certificates(
        self,
        *,
        now: datetime,
        status: CertificateStatus | None = None,
        group: str | None = None,
        site: str | None = None,
        owner_id: str | None = None,
        expiring_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[CertificateRecord]:
        where, params = _certificate_filter(now=now, status=status, group=group, site=site, owner_id=owner_id,
                                            expiring_before=expiring_before)
        sql = f"SELECT {_CERT_COLUMNS} FROM certificates{where} ORDER BY not_after, serial"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._cert(r) for r in self.execute(sql, params).fetchall()]

    def certificate_lines(
        self,
        *,
        now: datetime,
        status: CertificateStatus | None = None,
        group: str | None = None,
        site: str | None = None,
        owner_id: str | None = None,
        expiring_before: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ListedCertificate]:
        """Lines of the certificates `query_certificates` returns, in its order, with the status derived here
        (no record built)."""
        where, params = _certificate_filter(now=now, status=status, group=group, site=site, owner_id=owner_id,
                                            expiring_before=expiring_before)
        sql = (f"SELECT serial, subject, grp, site, owner_id, not_after, {_STATUS_CASE}, issuance "
               f"FROM certificates{where} ORDER BY not_after, serial")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset:
            # SQLite takes OFFSET only after a LIMIT; this one is no limit on either backend.
            sql += "" if limit is not None else " LIMIT 9223372036854775807"
            sql += f" OFFSET {int(offset)}"
        return [ListedCertificate(serial, subject, grp, site_, owner, not_after, _STATUSES[st], _ISSUANCES[kind])
                for serial, subject, grp, site_, owner, not_after, st, kind
                in self.execute(sql, [to_epoch(now), *params]).fetchall()]

    def count_certificate_lines(self, *, now: datetime, status: CertificateStatus | None = None,
                                group: str | None = None, site: str | None = None, owner_id: str | None = None,
                                expiring_before: datetime | None = None, cap: int | None = None) -> int:
        where, params = _certificate_filter(now=now, status=status, group=group, site=site, owner_id=owner_id,
                                            expiring_before=expiring_before)
        if cap is None:
            return int(self._one(f"SELECT COUNT(*) FROM certificates{where}", params)[0])
        return int(self._one(f"SELECT COUNT(*) FROM (SELECT 1 FROM certificates{where} LIMIT {int(cap)}) AS capped",
                             params)[0])

    def certificate_counts(self, now: datetime) -> list[CertificateCount]:
        """From the tallies (trustlists/store/tallies.py): every day but today's from its rows, today's exactly."""
        now_s = to_epoch(now)
        today = tallies.day_of(now_s)
        tallied = self.execute(
            "SELECT grp, site, state, CASE WHEN day < ? THEN 1 ELSE 0 END AS past, SUM(n) FROM certificate_tallies "
            "WHERE day <> ? GROUP BY grp, site, state, 4", (today, today)).fetchall()
        exact = self.execute(
            f"SELECT grp, site, {_STATUS_CASE} AS st, COUNT(*) FROM certificates WHERE not_after >= ? "
            "AND not_after < ? GROUP BY grp, site, 3",
            (now_s, today * tallies.DAY_S, (today + 1) * tallies.DAY_S)).fetchall()
        return tallies.merge_counts(((g, s, st, bool(p), int(n)) for g, s, st, p, n in tallied),
                                    ((g, s, st, int(n)) for g, s, st, n in exact))

    def certificate_counts_scanned(self, now: datetime) -> list[CertificateCount]:
        """`certificate_counts` the long way, one GROUP BY over every certificate: what the tallies must equal."""
        rows = self.execute(f"SELECT grp, site, {_STATUS_CASE} AS st, COUNT(*) FROM certificates "
                            "GROUP BY grp, site, 3", [to_epoch(now)]).fetchall()
        return tallies.merge_counts((), ((g, s, st, int(n)) for g, s, st, n in rows))

    def count_live_ending(self, start: datetime, end: datetime) -> int:
        return int(self._one(
            "SELECT COUNT(*) FROM certificates WHERE not_after >= ? AND not_after < ? "
            "AND revoked_at IS NULL AND superseded_by IS NULL", (to_epoch(start), to_epoch(end)))[0])

    def count_live_ending_each(self, edges: Sequence[datetime]) -> list[int]:
        """Live certificates ending in each [edges[i], edges[i+1]) (ascending edges): whole days from the tallies,
        the part of each edge's day before the edge exactly from the certificates."""
        days = [tallies.day_of(to_epoch(e)) for e in edges]
        live = ", ".join(f"'{s.value}'" for s in tallies.LIVE_STATES)
        per_day = {int(d): int(n) for d, n in self.execute(
            f"SELECT day, SUM(n) FROM certificate_tallies WHERE state IN ({live}) AND day >= ? AND day <= ? "
            "GROUP BY day", (days[0], days[-1])).fetchall()}
        # The part-days, in one statement (a round trip each is most of their cost on PostgreSQL).
        ranges = [(d * tallies.DAY_S, to_epoch(e)) for d, e in zip(days, edges, strict=True)]
        one = ("(SELECT COUNT(*) FROM certificates WHERE not_after >= ? AND not_after < ? "
               "AND revoked_at IS NULL AND superseded_by IS NULL)")
        row = self._one(f"SELECT {', '.join([one] * len(ranges))}", [v for r in ranges for v in r])
        return tallies.bucket_counts(edges, per_day, [int(n) for n in row])

    def expiring_rows(self, now: datetime, until: datetime, group: str | None = None) -> list[ExpiringCertificate]:
        """Live certificates ending in [now, until], soonest first; served from the covering index
        certificates_expiry."""
        sql = ("SELECT serial, subject, grp, site, owner_id, not_after, delivered FROM certificates "
               "WHERE not_after >= ? AND not_after <= ? AND revoked_at IS NULL AND superseded_by IS NULL")
        params: list[Any] = [to_epoch(now), to_epoch(until)]
        if group is not None:
            sql += " AND grp = ?"
            params.append(group)
        return list(map(ExpiringCertificate._make, self.execute(sql + " ORDER BY not_after", params).fetchall()))

    def count_certificates(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM certificates")[0])

    def mark_delivered(self, serial: str) -> bool:
        self._shift_tally(serial, -1, "AND delivered = 0")
        if self.execute("UPDATE certificates SET delivered = 1 WHERE serial = ? AND delivered = 0",
                        (serial,)).rowcount > 0:
            self._shift_tally(serial, +1)
            return True
        return False

    def mark_superseded(self, serial: str, by_serial: str) -> None:
        self._shift_tally(serial, -1)
        self.execute("UPDATE certificates SET superseded_by = ? WHERE serial = ?", (by_serial, serial))
        self._shift_tally(serial, +1)

    def mark_revoked(self, serial: str, at: datetime, reason: RevocationReason) -> None:
        self._shift_tally(serial, -1)
        self.execute(
            "UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE serial = ?",
            (to_epoch(at), int(reason), serial),
        )
        self._shift_tally(serial, +1)

    # -- certificate tallies (trustlists/store/tallies.py) ------------------------------------------
    # This connection's tally rows: concurrent writers never share one (a backend with concurrent writers overrides
    # it). And how a read locks the rows it is about to change (nothing to add where one writer runs at a time).
    _TALLY_SHARD = "0"
    _LOCK_READ_ROWS = ""
    # The shards whose writers are gone (a backend with shards per connection narrows it to those).
    _DEAD_SHARDS = "shard <> 0"

    def _add_tallies(self, counts: Sequence[tuple[tallies.TallyKey, int]], shard: str) -> None:
        # Sorted by the callers: two transactions that meet on tally rows take them in the same order. One statement
        # (the keys are distinct): it joins a pipeline (Store.transaction(pipelined=True)) without a round trip.
        for start in range(0, len(counts), 1000):  # 5,000 parameters a statement: under every backend's limit
            chunk = counts[start:start + 1000]
            values = ", ".join([f"(?, ?, ?, ?, {shard}, ?)"] * len(chunk))
            self.execute(f"INSERT INTO certificate_tallies (grp, site, state, day, shard, n) VALUES {values} "
                         f"{_TALLY_UPSERT}", [v for key, n in chunk for v in (*key, n)])

    def _shift_tally(self, serial: str, n: int, condition: str = "") -> None:
        """Count the certificate `serial` (as stored now) `n` more in its tally: -1 before a change of its state,
        +1 after. The -1 locks the certificate's row, so no other transaction changes it between the two."""
        self.execute(
            "INSERT INTO certificate_tallies (grp, site, state, day, shard, n) "
            f"SELECT grp, COALESCE(site, ''), {_STORED_STATE_CASE}, {_DAY_SQL}, {self._TALLY_SHARD}, ? "
            f"FROM certificates WHERE serial = ? {condition}{self._LOCK_READ_ROWS} {_TALLY_UPSERT}",
            (n, serial))

    def fold_certificate_tallies(self) -> int:
        """Move the rows of writers that are gone into shard 0 and drop the rows that count nothing (the leader's
        maintenance keeps the tallies few); how many rows went."""
        # DELETE ... RETURNING: exactly the rows removed are added to shard 0, whatever writes meanwhile.
        gone = self.execute(f"DELETE FROM certificate_tallies WHERE {self._DEAD_SHARDS} "
                            "RETURNING grp, site, state, day, n").fetchall()
        moved: dict[tallies.TallyKey, int] = {}
        for grp, site, state, day, n in gone:
            moved[(grp, site, state, int(day))] = moved.get((grp, site, state, int(day)), 0) + int(n)
        self._add_tallies(sorted(moved.items()), "0")
        return len(gone) + int(self.execute("DELETE FROM certificate_tallies WHERE shard = 0 AND n = 0").rowcount)

    def rebuild_certificate_tallies(self) -> None:
        """The tallies counted again from the certificates (a repair; certificates written behind the store)."""
        self.execute("DELETE FROM certificate_tallies")
        self.execute(TALLY_REBUILD_SQL)

    # -- revocations ------------------------------------------------------------------------------
    def insert_revocation(self, serial: str, issuer_ca_id: str, at: datetime, reason: RevocationReason,
                          not_after: datetime) -> None:
        self.serialise_appends()  # seq in commit order: the revocation index reads "newer than the last seq"
        self.execute(
            "INSERT INTO revocations (serial, issuer_ca_id, revoked_at, reason, not_after) "
            "VALUES (?, ?, ?, ?, ?)",
            (serial, issuer_ca_id, to_epoch(at), int(reason), to_epoch(not_after)),
        )
        self.notify(REVOCATIONS_CHANNEL)

    def revocations_since(self, seq: int) -> list[RevocationRow]:
        """Revocations newer than `seq`, oldest first."""
        return list(map(RevocationRow._make, self.execute(
            "SELECT seq, issuer_ca_id, serial, revoked_at, reason FROM revocations WHERE seq > ? ORDER BY seq",
            (seq,),
        ).fetchall()))

    def revoked_entries(self, ca_id: str, still_valid_at: datetime) -> Iterator[CrlEntry]:
        """The entries that belong on the CA's CRL: revocations of certificates not yet expired."""
        for rows in self._stream(
                "SELECT serial, revoked_at, reason FROM revocations WHERE issuer_ca_id = ? AND not_after >= ?",
                (ca_id, to_epoch(still_valid_at)), 50_000):
            yield from map(CrlEntry._make, rows)

    # -- CRLs -------------------------------------------------------------------------------------
    def next_crl_number(self, ca_id: str) -> int:
        row = self._one("SELECT MAX(crl_number) FROM crls WHERE ca_id = ?", (ca_id,))
        # A restored store may have published CRLs the backup never saw: its numbers start above a floor.
        floor = self.get_meta(crl_number_floor_key(ca_id))
        return max((row[0] or 0) + 1, int(floor) if floor else 0)

    def insert_crl(self, crl: CrlRecord) -> None:
        self.execute(
            "INSERT INTO crls (ca_id, crl_number, this_update, next_update, entries, der) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (crl.ca_id, crl.crl_number, to_epoch(crl.this_update), to_epoch(crl.next_update), crl.entries,
             crl.der),
        )

    def latest_crl(self, ca_id: str) -> CrlRecord | None:
        row = self._one(
            "SELECT ca_id, crl_number, this_update, next_update, entries, der FROM crls "
            "WHERE ca_id = ? ORDER BY crl_number DESC LIMIT 1",
            (ca_id,),
        )
        if row is None:
            return None
        return CrlRecord(ca_id=row[0], crl_number=row[1], this_update=from_epoch(row[2]),
                         next_update=from_epoch(row[3]), entries=row[4], der=bytes(row[5]))

    # -- trust lists ------------------------------------------------------------------------------
    def add_external(self, group: str, list_name: str, kind: str, fingerprint: str, der: bytes, note: str,
                     at: datetime) -> None:
        self.execute(
            "INSERT INTO trust_external (grp, list, kind, fingerprint, der, note, added_at, removed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (group, list_name, kind, fingerprint, der, note, to_epoch(at)),
        )

    def remove_external(self, group: str, fingerprint: str, at: datetime) -> int:
        return self.execute(
            "UPDATE trust_external SET removed_at = ? WHERE grp = ? AND fingerprint = ? AND removed_at IS NULL",
            (to_epoch(at), group, fingerprint),
        ).rowcount

    def list_external(self, group: str) -> list[ExternalTrust]:
        """The group's current external trust, in the order it was added."""
        rows = self.execute(
            "SELECT list, kind, fingerprint, der, note FROM trust_external "
            "WHERE grp = ? AND removed_at IS NULL ORDER BY id",
            (group,),
        ).fetchall()
        return [ExternalTrust(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def latest_trust_version(self, group: str) -> TrustVersion | None:
        row = self._one(
            "SELECT version, content_hash, created_at FROM trust_versions WHERE grp = ? "
            "ORDER BY version DESC LIMIT 1",
            (group,),
        )
        return TrustVersion(row[0], row[1], from_epoch(row[2])) if row else None

    def latest_trust_versions(self) -> dict[str, TrustVersion]:
        """Group -> its latest trust-list version, for every group that has one."""
        rows = self.execute(
            "SELECT t.grp, t.version, t.content_hash, t.created_at FROM trust_versions t JOIN "
            "(SELECT grp, MAX(version) AS version FROM trust_versions GROUP BY grp) m "
            "ON t.grp = m.grp AND t.version = m.version").fetchall()
        return {row[0]: TrustVersion(row[1], row[2], from_epoch(row[3])) for row in rows}

    def next_trust_version(self, group: str) -> int:
        latest = self.latest_trust_version(group)
        # A restored store may be behind versions its plant was handed after the backup: it numbers above a floor.
        floor = self.get_meta(TRUST_VERSION_FLOOR_KEY)
        return max((latest.version if latest else 0) + 1, int(floor) if floor else 0)

    def insert_trust_version(self, group: str, version: int, content_hash: str, at: datetime,
                             reason: str) -> None:
        self.execute(
            "INSERT INTO trust_versions (grp, version, content_hash, created_at, reason) VALUES (?, ?, ?, ?, ?)",
            (group, version, content_hash, to_epoch(at), reason),
        )

    # -- certificate requests ---------------------------------------------------------------------
    def insert_cert_request(self, req: CertificateRequest) -> None:
        self.execute(
            f"INSERT INTO cert_requests ({', '.join(REQUEST_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})",
            (req.id, req.kind.value, req.owner_id, req.group, req.site, req.status.value, req.csr_der,
             req.key_type.value if req.key_type else None, req.key_format, int(req.has_password), req.subject_name,
             None if req.dns_names is None else json.dumps(req.dns_names),
             None if req.ip_addresses is None else json.dumps(req.ip_addresses),
             req.requester_fingerprint, req.submitted_by, to_epoch(req.submitted_at), req.decided_by,
             to_epoch(req.decided_at) if req.decided_at else None, req.reason, req.serial,
             to_epoch(req.issued_at) if req.issued_at else None),
        )

    @staticmethod
    def _request(row: Sequence[Any]) -> CertificateRequest:
        (id_, kind, owner_id, grp, site, status, csr, key_type, key_format, has_password, subject_name, dns_names,
         ip_addresses, requester_fingerprint, submitted_by, submitted_at, decided_by, decided_at, reason, serial,
         issued_at) = row
        return CertificateRequest(
            id=id_, kind=RequestKind(kind), owner_id=owner_id, group=grp, site=site, status=RequestStatus(status),
            csr_der=bytes(csr) if csr is not None else None, key_type=KeyType(key_type) if key_type else None,
            key_format=key_format, has_password=bool(has_password), subject_name=subject_name,
            dns_names=json.loads(dns_names) if dns_names is not None else None,
            ip_addresses=json.loads(ip_addresses) if ip_addresses is not None else None,
            requester_fingerprint=requester_fingerprint, submitted_by=submitted_by,
            submitted_at=from_epoch(submitted_at), decided_by=decided_by,
            decided_at=from_epoch(decided_at) if decided_at is not None else None, reason=reason, serial=serial,
            issued_at=from_epoch(issued_at) if issued_at is not None else None,
        )

    def get_cert_request(self, request_id: str) -> CertificateRequest:
        row = self._one(f"{_REQUEST_SELECT} WHERE id = ?", (request_id,))
        if row is None:
            raise RequestNotFound(f"no certificate request with id {request_id!r}")
        return self._request(row)

    def list_cert_requests(self, *, status: RequestStatus | None = None, group: str | None = None,
                           owner_id: str | None = None) -> list[CertificateRequest]:
        where: list[str] = []
        params: list[Any] = []
        if owner_id is not None:
            where.append("owner_id = ?")
            params.append(owner_id)
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if group is not None:
            where.append("grp = ?")
            params.append(group)
        sql = _REQUEST_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq"
        return [self._request(r) for r in self.execute(sql, params).fetchall()]

    def claim_cert_request(self, request_id: str, *, expected: Sequence[RequestStatus]) -> bool:
        """Lock the request's row until this transaction ends, if it is in one of the `expected` statuses (False
        otherwise, or when another writer moved it out of them first: its commit is waited for, then the status
        read again). A write that changes nothing, so that it locks the same way on every backend."""
        marks = ", ".join("?" * len(expected))
        return bool(self.execute(
            f"UPDATE cert_requests SET status = status WHERE id = ? AND status IN ({marks})",
            (request_id, *(s.value for s in expected))).rowcount == 1)

    def transition_cert_request(self, request_id: str, *, expected: Sequence[RequestStatus], status: RequestStatus,
                                decided_by: str | None = None, decided_at: int | None = None,
                                reason: str | None = None, serial: str | None = None,
                                issued_at: int | None = None) -> bool:
        """Move a request from one of the `expected` statuses to `status` (a compare-and-set: False when
        another writer moved it first). Columns given as None keep their value."""
        marks = ", ".join("?" * len(expected))
        return bool(self.execute(
            "UPDATE cert_requests SET status = ?, decided_by = COALESCE(?, decided_by), "
            "decided_at = COALESCE(?, decided_at), reason = COALESCE(?, reason), serial = COALESCE(?, serial), "
            f"issued_at = COALESCE(?, issued_at) WHERE id = ? AND status IN ({marks})",
            (status.value, decided_by, decided_at, reason, serial, issued_at, request_id,
             *(s.value for s in expected)),
        ).rowcount == 1)

    # -- delivery targets ---------------------------------------------------------------------------
    _TARGET_COLUMNS = ("id, owner_id, kind, address, credentials_ref, grp, site, state, attempts, next_attempt_at, "
                       "last_error, delivered_serial, delivered_trust_version, updated_at")

    @staticmethod
    def _target(row: Sequence[Any] | None) -> DeliveryTarget | None:
        if row is None:
            return None
        return DeliveryTarget(id=row[0], owner_id=row[1], kind=row[2], address=row[3], credentials_ref=row[4],
                              group=row[5], site=row[6], state=TargetState(row[7]), attempts=row[8],
                              next_attempt_at=from_epoch(row[9]), last_error=row[10], delivered_serial=row[11],
                              delivered_trust_version=row[12], updated_at=from_epoch(row[13]))

    def insert_target(self, target: DeliveryTarget) -> None:
        """The target's row; its pin (if any) is stored with `set_target_pin`."""
        self.execute(f"INSERT INTO delivery_targets ({self._TARGET_COLUMNS}) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (target.id, target.owner_id, target.kind, target.address, target.credentials_ref, target.group,
                      target.site, target.state.value, target.attempts, to_epoch(target.next_attempt_at),
                      target.last_error, target.delivered_serial, target.delivered_trust_version,
                      to_epoch(target.updated_at)))

    def get_target(self, target_id: str) -> DeliveryTarget | None:
        """The target without its pin (`get_target_pin`)."""
        return self._target(
            self._one(f"SELECT {self._TARGET_COLUMNS} FROM delivery_targets WHERE id = ?", (target_id,)))

    def find_target(self, kind: str, address: str) -> DeliveryTarget | None:
        return self._target(self._one(
            f"SELECT {self._TARGET_COLUMNS} FROM delivery_targets WHERE kind = ? AND address = ?", (kind, address)))

    def list_targets(self, *, kind: str | None = None, group: str | None = None, site: str | None = None,
                     due_at: int | None = None) -> list[DeliveryTarget]:
        where: list[str] = []
        params: list[str | int] = []
        for column, value in (("kind", kind), ("grp", group), ("site", site)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if due_at is not None:
            where.append("next_attempt_at <= ?")
            params.append(due_at)
        sql = f"SELECT {self._TARGET_COLUMNS} FROM delivery_targets"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.execute(sql + " ORDER BY next_attempt_at, id", params).fetchall()
        return [t for t in map(self._target, rows) if t is not None]

    def update_target(self, target_id: str, *, state: TargetState, attempts: int, next_attempt_at: int,
                      last_error: str | None, delivered_serial: str | None, delivered_trust_version: int | None,
                      updated_at: int) -> None:
        self.execute(
            "UPDATE delivery_targets SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?, "
            "delivered_serial = ?, delivered_trust_version = ?, updated_at = ? WHERE id = ?",
            (state.value, attempts, next_attempt_at, last_error, delivered_serial, delivered_trust_version,
             updated_at, target_id))

    # -- delivery target pins -----------------------------------------------------------------------
    _TARGET_PIN_COLUMNS = "target_id, fingerprint, source, pinned_at, pinned_by"

    @staticmethod
    def _target_pin(row: Sequence[Any]) -> TargetPin:
        return TargetPin(fingerprint_sha256=row[1], source=PinSource(row[2]), pinned_at=from_epoch(row[3]),
                         pinned_by=row[4])

    def get_target_pin(self, target_id: str) -> TargetPin | None:
        row = self._one(f"SELECT {self._TARGET_PIN_COLUMNS} FROM delivery_target_pins WHERE target_id = ?",
                        (target_id,))
        return self._target_pin(row) if row else None

    def list_target_pins(self) -> dict[str, TargetPin]:
        """Target id -> its pin, for every pinned target."""
        rows = self.execute(f"SELECT {self._TARGET_PIN_COLUMNS} FROM delivery_target_pins").fetchall()
        return {row[0]: self._target_pin(row) for row in rows}

    def set_target_pin(self, target_id: str, pin: TargetPin) -> None:
        """Insert or replace the pin of a target (one per target)."""
        self.execute("DELETE FROM delivery_target_pins WHERE target_id = ?", (target_id,))
        self.execute(f"INSERT INTO delivery_target_pins ({self._TARGET_PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                     (target_id, pin.fingerprint_sha256, pin.source.value, to_epoch(pin.pinned_at), pin.pinned_by))

    def delete_target_pin(self, target_id: str) -> bool:
        return bool(self.execute("DELETE FROM delivery_target_pins WHERE target_id = ?", (target_id,)).rowcount > 0)

    # -- bootstrap pins ---------------------------------------------------------------------------
    _PIN_COLUMNS = "owner_id, grp, fingerprint, subject, issuer, not_after, serial, pinned_at, pinned_by"

    @staticmethod
    def _pin(row: Sequence[Any]) -> BootstrapPin:
        return BootstrapPin(owner_id=row[0], group=row[1], fingerprint_sha256=row[2], subject=row[3], issuer=row[4],
                            not_after=from_epoch(row[5]), serial=row[6], pinned_at=from_epoch(row[7]),
                            pinned_by=row[8])

    def get_bootstrap_pin(self, owner_id: str) -> BootstrapPin | None:
        row = self._one(f"SELECT {self._PIN_COLUMNS} FROM bootstrap_pins WHERE owner_id = ?", (owner_id,))
        return self._pin(row) if row else None

    def find_bootstrap_pin(self, group: str, fingerprint: str) -> BootstrapPin | None:
        row = self._one(f"SELECT {self._PIN_COLUMNS} FROM bootstrap_pins WHERE grp = ? AND fingerprint = ?",
                        (group, fingerprint))
        return self._pin(row) if row else None

    def list_bootstrap_pins(self, group: str | None = None) -> list[BootstrapPin]:
        sql = f"SELECT {self._PIN_COLUMNS} FROM bootstrap_pins"
        params: tuple[Any, ...] = ()
        if group is not None:
            sql += " WHERE grp = ?"
            params = (group,)
        return [self._pin(r) for r in self.execute(sql, params).fetchall()]

    def insert_bootstrap_pin(self, pin: BootstrapPin) -> None:
        self.serialise_appends()  # bootstrap_pin_changes: seq in commit order
        self.execute(
            f"INSERT INTO bootstrap_pins ({self._PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (pin.owner_id, pin.group, pin.fingerprint_sha256, pin.subject, pin.issuer, to_epoch(pin.not_after),
             pin.serial, to_epoch(pin.pinned_at), pin.pinned_by))
        self.execute("INSERT INTO bootstrap_pin_changes (owner_id, fingerprint) VALUES (?, ?)",
                     (pin.owner_id, pin.fingerprint_sha256))
        self.notify(REVOCATIONS_CHANNEL)

    def delete_bootstrap_pin(self, owner_id: str) -> bool:
        self.serialise_appends()
        if self.execute("DELETE FROM bootstrap_pins WHERE owner_id = ?", (owner_id,)).rowcount == 0:
            return False
        self.execute("INSERT INTO bootstrap_pin_changes (owner_id, fingerprint) VALUES (?, NULL)", (owner_id,))
        self.notify(REVOCATIONS_CHANNEL)
        return True

    def bootstrap_pin_changes_since(self, seq: int) -> list[PinChange]:
        """Pins set and released after `seq`, oldest first."""
        return list(map(PinChange._make, self.execute(
            "SELECT seq, owner_id, fingerprint FROM bootstrap_pin_changes WHERE seq > ? ORDER BY seq",
            (seq,)).fetchall()))


    # -- request guard (replay memory, shared rate limits) ----------------------------------------
    def forget_expired(self, now: int) -> None:
        """Drop request ids past their window and buckets that are full again (both served by an index)."""
        self.execute("DELETE FROM seen_requests WHERE expires_at < ?", (now,))
        self.execute("DELETE FROM rate_buckets WHERE full_at < ?", (now,))

    def request_seen(self, scope: str, subject: str, request_id: str) -> bool:
        return self._one("SELECT 1 FROM seen_requests WHERE scope = ? AND subject = ? AND request_id = ?",
                         (scope, subject, request_id)) is not None

    def remember_request(self, scope: str, subject: str, request_id: str, expires_at: int) -> None:
        self.execute("INSERT INTO seen_requests (scope, subject, request_id, expires_at) VALUES (?, ?, ?, ?)",
                     (scope, subject, request_id, expires_at))

    def get_rate_bucket(self, scope: str, subject: str) -> RateBucket | None:
        """The subject's bucket, or None for a full one."""
        row = self._one("SELECT tokens, stamp_us FROM rate_buckets WHERE scope = ? AND subject = ?", (scope, subject))
        return RateBucket(float(row[0]), int(row[1])) if row else None

    def put_rate_bucket(self, scope: str, subject: str, tokens: float, stamp_us: int, full_at: int) -> None:
        self.execute(
            "INSERT INTO rate_buckets (scope, subject, tokens, stamp_us, full_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, subject) DO UPDATE SET tokens = excluded.tokens, stamp_us = excluded.stamp_us, "
            "full_at = excluded.full_at",
            (scope, subject, tokens, stamp_us, full_at))

    # -- leases -----------------------------------------------------------------------------------
    # The store's clock: SQLite's is the host's (one file, one host); PostgreSQL overrides it with the server's.
    NOW_MS_SQL = "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

    def store_now_ms(self) -> int:
        return int(self._one(self.NOW_MS_SQL)[0])

    def get_lease(self, name: str) -> LeaseRow | None:
        row = self._one("SELECT name, holder, acquired_ms, expires_ms FROM leases WHERE name = ?", (name,))
        return LeaseRow(row[0], row[1], int(row[2]), int(row[3])) if row else None

    def list_leases(self, prefix: str) -> list[LeaseRow]:
        rows = self.execute("SELECT name, holder, acquired_ms, expires_ms FROM leases WHERE name >= ? AND name < ? "
                            "ORDER BY name", (prefix, prefix + "\U0010ffff")).fetchall()
        return [LeaseRow(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def put_lease(self, lease: LeaseRow) -> None:
        self.execute(
            "INSERT INTO leases (name, holder, acquired_ms, expires_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, acquired_ms = excluded.acquired_ms, "
            "expires_ms = excluded.expires_ms", tuple(lease))

    def delete_lease(self, name: str, holder: str) -> bool:
        return int(self.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)).rowcount) > 0

    # -- audit ------------------------------------------------------------------------------------
    def last_audit(self) -> AuditHead | None:
        row = self._one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return AuditHead(row[0], row[1]) if row else None

    def insert_audit(self, rec: AuditRecord, at_us: int, details_json: str) -> None:
        """`details_json` is the exact text the record's hash covers."""
        self.execute(
            "INSERT INTO audit_log (seq, at_us, actor, action, subject, details, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.seq, at_us, rec.actor, rec.action, rec.subject, details_json, rec.prev_hash, rec.hash),
        )

    def insert_audit_rows(self, rows: Sequence[AuditRow]) -> None:
        self.insert_rows("audit_log", "seq, at_us, actor, action, subject, details, prev_hash, hash", rows)

    def iter_audit(self, *, action: str | None = None, since_us: int | None = None,
                   subject: str | None = None) -> Iterator[AuditRow]:
        where: list[str] = []
        params: list[str | int] = []
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if action is not None:
            where.append("action = ?")
            params.append(action)
        if since_us is not None:
            where.append("at_us >= ?")
            params.append(since_us)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        for rows in self._stream(
                "SELECT seq, at_us, actor, action, subject, details, prev_hash, hash FROM audit_log"
                f"{clause} ORDER BY seq", params, 10_000):
            yield from map(AuditRow._make, rows)


    def audit_page(self, *, before_seq: int | None, limit: int) -> list[AuditRow]:
        clause, params = ("", []) if before_seq is None else (" WHERE seq < ?", [before_seq])
        rows = self.execute("SELECT seq, at_us, actor, action, subject, details, prev_hash, hash FROM audit_log"
                            f"{clause} ORDER BY seq DESC LIMIT {int(limit)}", params).fetchall()
        return list(map(AuditRow._make, rows))

    # -- console users, sessions, API tokens, login failures ----------------------------------------
    _USER_SELECT = ("SELECT name, role, password_hash, totp_secret, totp_last_step, created_at FROM web_users")
    _SESSION_SELECT = "SELECT id_sha256, user_name, csrf_token, stage, created_at, expires_at FROM web_sessions"
    _TOKEN_SELECT = "SELECT name, role, user_name, token_sha256, created_at, revoked_at FROM web_tokens"

    def get_web_user(self, name: str) -> WebUserRow | None:
        row = self._one(f"{self._USER_SELECT} WHERE name = ?", (name,))
        return WebUserRow._make(row) if row else None

    def list_web_users(self) -> list[WebUserRow]:
        return [WebUserRow._make(r) for r in self.execute(f"{self._USER_SELECT} ORDER BY name").fetchall()]

    def get_web_session(self, id_sha256: str) -> WebSessionRow | None:
        row = self._one(f"{self._SESSION_SELECT} WHERE id_sha256 = ?", (id_sha256,))
        return WebSessionRow._make(row) if row else None

    def get_web_token(self, token_sha256: str) -> WebTokenRow | None:
        row = self._one(f"{self._TOKEN_SELECT} WHERE token_sha256 = ?", (token_sha256,))
        return WebTokenRow._make(row) if row else None

    def get_web_token_by_name(self, name: str) -> WebTokenRow | None:
        row = self._one(f"{self._TOKEN_SELECT} WHERE name = ?", (name,))
        return WebTokenRow._make(row) if row else None

    def list_web_tokens(self) -> list[WebTokenRow]:
        return [WebTokenRow._make(r) for r in self.execute(f"{self._TOKEN_SELECT} ORDER BY name").fetchall()]

    def get_login_failures(self, subject: str) -> LoginFailuresRow | None:
        row = self._one("SELECT subject, failures, window_start, locked_until FROM web_login_failures "
                        "WHERE subject = ?", (subject,))
        return LoginFailuresRow._make(row) if row else None

    def insert_web_user(self, row: WebUserRow) -> None:
        if self.get_web_user(row.name) is not None:
            raise AlreadyExists(f"console user {row.name!r} exists already", reason="user_exists")
        self.execute("INSERT INTO web_users (name, role, password_hash, totp_secret, totp_last_step, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", tuple(row))

    def delete_web_user_sessions(self, name: str) -> None:
        self.execute("DELETE FROM web_sessions WHERE user_name = ?", (name,))

    def delete_web_user(self, name: str) -> bool:
        self.delete_web_user_sessions(name)
        return int(self.execute("DELETE FROM web_users WHERE name = ?", (name,)).rowcount) > 0

    def set_web_user_totp(self, name: str, secret: str) -> bool:
        return int(self.execute("UPDATE web_users SET totp_secret = ?, totp_last_step = 0 WHERE name = ?",
                                (secret, name)).rowcount) > 0

    def advance_totp_step(self, name: str, step: int) -> bool:
        return int(self.execute("UPDATE web_users SET totp_last_step = ? WHERE name = ? AND totp_last_step < ?",
                                (step, name, step)).rowcount) > 0

    def insert_web_session(self, row: WebSessionRow) -> None:
        self.execute("INSERT INTO web_sessions (id_sha256, user_name, csrf_token, stage, created_at, expires_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", tuple(row))

    def set_web_session_stage(self, id_sha256: str, stage: str, expires_at: int) -> bool:
        return int(self.execute("UPDATE web_sessions SET stage = ?, expires_at = ? WHERE id_sha256 = ?",
                                (stage, expires_at, id_sha256)).rowcount) > 0

    def delete_web_session(self, id_sha256: str) -> bool:
        return int(self.execute("DELETE FROM web_sessions WHERE id_sha256 = ?", (id_sha256,)).rowcount) > 0

    def delete_expired_web_sessions(self, now: int) -> None:
        self.execute("DELETE FROM web_sessions WHERE expires_at < ?", (now,))

    def insert_web_token(self, row: WebTokenRow) -> None:
        if self.get_web_token_by_name(row.name) is not None:
            raise AlreadyExists(f"API token {row.name!r} exists already", reason="token_exists")
        self.execute("INSERT INTO web_tokens (name, role, user_name, token_sha256, created_at, revoked_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", tuple(row))

    def revoke_web_token(self, name: str, at: int) -> bool:
        return int(self.execute("UPDATE web_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                                (at, name)).rowcount) > 0

    def put_login_failures(self, row: LoginFailuresRow) -> None:
        self.execute(
            "INSERT INTO web_login_failures (subject, failures, window_start, locked_until) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (subject) DO UPDATE SET failures = excluded.failures, "
            "window_start = excluded.window_start, locked_until = excluded.locked_until", tuple(row))

    def delete_login_failures(self, subject: str) -> None:
        self.execute("DELETE FROM web_login_failures WHERE subject = ?", (subject,))


def _certificate_filter(*, now: datetime, status: CertificateStatus | None, group: str | None, site: str | None,
                        owner_id: str | None, expiring_before: datetime | None) -> tuple[str, list[Any]]:
    """The WHERE clause (empty, or starting with a space) and its parameters of an inventory query."""
    where: list[str] = []
    params: list[Any] = []
    now_s = to_epoch(now)
    if group is not None:
        where.append("grp = ?")
        params.append(group)
    if site is not None:
        where.append("site = ?")
        params.append(site)
    if owner_id is not None:
        where.append("owner_id = ?")
        params.append(owner_id)
    if expiring_before is not None:
        # "expiring" means still valid now and ending inside the window; dead ones are not news.
        where.append("not_after >= ? AND not_after <= ? AND revoked_at IS NULL AND superseded_by IS NULL")
        params += [now_s, to_epoch(expiring_before)]
    if status is not None:
        where.append(_STATUS_SQL[status])
        params += [now_s] * _STATUS_SQL[status].count("?")
    return (" WHERE " + " AND ".join(where)) if where else "", params


# Status is derived from stored state and the clock (see CertificateRecord.status_at), in the same order here.
def _status_case(table: str = "") -> str:
    """The status at `now` (the one parameter) of a certificate row; `table`: the alias of certificates in a join."""
    c = f"{table}." if table else ""
    return (f"CASE WHEN {c}revoked_at IS NOT NULL THEN '{CertificateStatus.REVOKED.value}' "
            f"WHEN {c}not_after < ? THEN '{CertificateStatus.EXPIRED.value}' "
            f"WHEN {c}superseded_by IS NOT NULL THEN '{CertificateStatus.SUPERSEDED.value}' "
            f"WHEN {c}delivered = 0 THEN '{CertificateStatus.NOT_DELIVERED.value}' "
            f"ELSE '{CertificateStatus.ACTIVE.value}' END")


_STATUS_CASE = _status_case()
_STATUS_CASE_C = _status_case("c")  # on the certificates of a join, as `c`
# The stored state (tallies.stored_state), and the UTC day of not_after rounded down (tallies.day_of) in SQL.
_STORED_STATE_CASE = (
    f"CASE WHEN revoked_at IS NOT NULL THEN '{CertificateStatus.REVOKED.value}' "
    f"WHEN superseded_by IS NOT NULL THEN '{CertificateStatus.SUPERSEDED.value}' "
    f"WHEN delivered = 0 THEN '{CertificateStatus.NOT_DELIVERED.value}' "
    f"ELSE '{CertificateStatus.ACTIVE.value}' END"
)
# (No `%`: it is the placeholder character of psycopg.)
_DAY_SQL = "CASE WHEN not_after >= 0 THEN not_after / 86400 ELSE -((86399 - not_after) / 86400) END"
_TALLY_UPSERT = ("ON CONFLICT (grp, site, state, day, shard) DO UPDATE SET n = certificate_tallies.n + excluded.n")
# Every certificate counted into shard 0 (what migration 0005 does to a store's certificates).
TALLY_REBUILD_SQL = (
    "INSERT INTO certificate_tallies (grp, site, state, day, shard, n) "
    f"SELECT grp, COALESCE(site, ''), {_STORED_STATE_CASE}, {_DAY_SQL}, 0, COUNT(*) FROM certificates "
    "GROUP BY 1, 2, 3, 4"
)
_STATUSES = {s.value: s for s in CertificateStatus}
_ISSUANCES = {k.value: k for k in IssuanceKind}
_STATUS_SQL: dict[CertificateStatus, str] = {
    CertificateStatus.REVOKED: "revoked_at IS NOT NULL",
    CertificateStatus.EXPIRED: "revoked_at IS NULL AND not_after < ?",
    CertificateStatus.SUPERSEDED: "revoked_at IS NULL AND not_after >= ? AND superseded_by IS NOT NULL",
    CertificateStatus.NOT_DELIVERED: (
        "revoked_at IS NULL AND not_after >= ? AND superseded_by IS NULL AND delivered = 0"),
    CertificateStatus.ACTIVE: (
        "revoked_at IS NULL AND not_after >= ? AND superseded_by IS NULL AND delivered = 1"),
}
