"""The store interface the engine programs against.

A backend provides `read()` (a consistent view; nothing can be written through it) and `transaction()` (a write
unit of work: everything inside commits together or not at all; nested use joins the outer one). They hand out a
`StoreReader` and a `StoreWriter`: every query the engine runs, each returning engine models or the named rows of
`trustlists.store.rows`, never a driver's tuples or dicts. The engine uses nothing else of the store.

The queries are written once, in SQL that SQLite and PostgreSQL both accept (`trustlists.store.sql.SqlTx`);
a backend supplies the connection, the placeholder style, locking and the translation of its driver's errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

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
    ListedCertificate,
    Owner,
    OwnerLine,
    RequestStatus,
    RevocationReason,
    TargetPin,
    TargetState,
)
from trustlists.store.migrations import Migration, SchemaStatus
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


class StoreReader(Protocol):
    """The queries of a read: what the engine asks of its store."""

    # -- meta
    def get_meta(self, key: str) -> str | None: ...

    # -- CAs
    def get_ca(self, ca_id: str) -> CARecord:
        """NotFound for an unknown id."""
        ...

    def list_cas(self) -> list[CARecord]: ...

    def cas_signature(self) -> CaTableSignature:
        """Changes whenever a CA is added or (de)activated: lets callers cache the CA list safely."""
        ...

    # -- owners
    def get_owner(self, owner_id: str) -> Owner:
        """NotFound (reason unknown_owner) for an unknown id."""
        ...

    def find_owner(self, group: str, *, name: str | None = None, application_uri: str | None = None
                   ) -> Owner | None: ...

    def find_owners(self, group: str, names: Sequence[str]) -> dict[str, Owner]:
        """name -> owner, for those of `names` registered in `group` (one query for a batch's devices)."""
        ...

    def list_owners(self, group: str | None = None) -> list[Owner]: ...

    def owners_by_bootstrap(self, group: str, *, fingerprint: str, subject_cn: str | None) -> list[Owner]:
        """Owners of `group` whose bootstrap allow-list names this fingerprint (lower-case hex) or, unless None,
        this subject CN: an indexed lookup; the caller checks the candidates' allow-lists themselves."""
        ...

    # -- certificates
    def get_certificate(self, serial: str, *, with_der: bool = True) -> CertificateRecord:
        """NotFound (reason unknown_certificate) for an unknown serial."""
        ...

    def find_certificate_by_fingerprint(self, fingerprint: str) -> CertificateRecord | None: ...

    def certificate_state(self, serial: str) -> CertificateState | None:
        """Issuer and revocation of the certificate `serial` (one indexed row, no model): an OCSP lookup."""
        ...

    def certificates_for_keys(self, spki_hashes: Sequence[str]) -> dict[str, list[CertificateRecord]]:
        """SPKI hash -> every certificate (with DER) ever issued for that public key, to any owner."""
        ...

    def certificates_missing_key(self, after_serial: str, limit: int) -> list[CertificateDer]:
        """Certificates with no key index row, in serial order after `after_serial`."""
        ...

    def query_certificates(self, *, now: datetime, status: CertificateStatus | None = None, group: str | None = None,
                           site: str | None = None, owner_id: str | None = None,
                           expiring_before: datetime | None = None, limit: int | None = None
                           ) -> list[CertificateRecord]:
        """Records (without DER) matching every filter given, by not_after then serial."""
        ...

    def certificate_lines(self, *, now: datetime, status: CertificateStatus | None = None, group: str | None = None,
                          site: str | None = None, owner_id: str | None = None,
                          expiring_before: datetime | None = None, limit: int | None = None, offset: int = 0
                          ) -> list[ListedCertificate]:
        """What `query_certificates` returns, as lines with their status at `now`; `offset` skips that many."""
        ...

    def count_certificate_lines(self, *, now: datetime, status: CertificateStatus | None = None,
                                group: str | None = None, site: str | None = None, owner_id: str | None = None,
                                expiring_before: datetime | None = None, cap: int | None = None) -> int:
        """How many lines `certificate_lines` has with those filters and no limit; counting stops at `cap`."""
        ...

    def certificate_counts(self, now: datetime) -> list[CertificateCount]:
        """Certificates per group, site and status at `now`."""
        ...

    def certificate_counts_scanned(self, now: datetime) -> list[CertificateCount]:
        """`certificate_counts` from every certificate row instead of the tallies (what they must equal)."""
        ...

    def count_live_ending(self, start: datetime, end: datetime) -> int:
        """Live (not revoked, not superseded) certificates whose validity ends in [start, end)."""
        ...

    def count_live_ending_each(self, edges: Sequence[datetime]) -> list[int]:
        """`count_live_ending` of each pair of consecutive (ascending) edges, from the tallies."""
        ...

    def expiring_rows(self, now: datetime, until: datetime, group: str | None = None) -> list[ExpiringCertificate]:
        """Live certificates ending in [now, until], soonest first."""
        ...

    def count_certificates(self) -> int: ...

    def owner_lines(self, group: str, *, now: datetime, offset: int, limit: int) -> list[OwnerLine]:
        """A page of the group's owners by name, each with its newest certificate (status at `now`) and when it
        was last seen."""
        ...

    def count_owners(self, group: str) -> int: ...

    def last_seen(self, group: str, devices: Sequence[str]) -> dict[str, int]:
        """Device name -> epoch seconds it was last seen on a broker, for those of `devices` ever seen."""
        ...

    # -- revocations and CRLs
    def revocations_since(self, seq: int) -> list[RevocationRow]:
        """Revocations newer than `seq`, oldest first."""
        ...

    def revoked_entries(self, ca_id: str, still_valid_at: datetime) -> Iterator[CrlEntry]:
        """The entries that belong on the CA's CRL (streamed: a CRL may have millions)."""
        ...

    def next_crl_number(self, ca_id: str) -> int: ...

    def latest_crl(self, ca_id: str) -> CrlRecord | None: ...

    # -- trust lists
    def list_external(self, group: str) -> list[ExternalTrust]: ...

    def latest_trust_version(self, group: str) -> TrustVersion | None: ...

    def latest_trust_versions(self) -> dict[str, TrustVersion]:
        """Group -> its latest version, for every group that has one."""
        ...

    def next_trust_version(self, group: str) -> int:
        """The number the group's next trust-list version takes: above its latest and at least the floor a restore
        set (trustlists/store_copy.py)."""
        ...

    # -- certificate requests
    def get_cert_request(self, request_id: str) -> CertificateRequest:
        """RequestNotFound for an unknown id."""
        ...

    def list_cert_requests(self, *, status: RequestStatus | None = None, group: str | None = None,
                           owner_id: str | None = None) -> list[CertificateRequest]: ...

    # -- delivery targets
    def get_target(self, target_id: str) -> DeliveryTarget | None:
        """The target without its pin (`get_target_pin`)."""
        ...

    def find_target(self, kind: str, address: str) -> DeliveryTarget | None: ...

    def list_targets(self, *, kind: str | None = None, group: str | None = None, site: str | None = None,
                     due_at: int | None = None) -> list[DeliveryTarget]: ...

    def get_target_pin(self, target_id: str) -> TargetPin | None: ...

    def list_target_pins(self) -> dict[str, TargetPin]:
        """Target id -> its pin, for every pinned target."""
        ...

    # -- bootstrap pins
    def get_bootstrap_pin(self, owner_id: str) -> BootstrapPin | None: ...

    def find_bootstrap_pin(self, group: str, fingerprint: str) -> BootstrapPin | None: ...

    def list_bootstrap_pins(self, group: str | None = None) -> list[BootstrapPin]: ...

    def bootstrap_pin_changes_since(self, seq: int) -> list[PinChange]: ...

    # -- request guard
    def request_seen(self, scope: str, subject: str, request_id: str) -> bool: ...

    def get_rate_bucket(self, scope: str, subject: str) -> RateBucket | None:
        """None for a full bucket."""
        ...

    # -- leases
    def store_now_ms(self) -> int:
        """The store's clock in epoch milliseconds (the database server's on PostgreSQL): what leases expire by."""
        ...

    def get_lease(self, name: str) -> LeaseRow | None: ...

    def list_leases(self, prefix: str) -> list[LeaseRow]:
        """Every lease whose name starts with `prefix`, expired or not, by name."""
        ...

    # -- audit
    def last_audit(self) -> AuditHead | None: ...

    def iter_audit(self, *, action: str | None = None, since_us: int | None = None,
                   subject: str | None = None) -> Iterator[AuditRow]:
        """Records by sequence number (streamed), only those of `subject` when given (indexed)."""
        ...

    def audit_page(self, *, before_seq: int | None, limit: int) -> list[AuditRow]:
        """Up to `limit` records below `before_seq` (all when None), newest first."""
        ...

    # -- console users, sessions, API tokens, login failures (trustlists/accounts.py)
    def get_web_user(self, name: str) -> WebUserRow | None: ...

    def list_web_users(self) -> list[WebUserRow]: ...

    def get_web_session(self, id_sha256: str) -> WebSessionRow | None: ...

    def get_web_token(self, token_sha256: str) -> WebTokenRow | None: ...

    def get_web_token_by_name(self, name: str) -> WebTokenRow | None: ...

    def list_web_tokens(self) -> list[WebTokenRow]: ...

    def get_login_failures(self, subject: str) -> LoginFailuresRow | None: ...


    # -- whole tables: what a copy or backup of the store moves (trustlists/store_copy.py)
    def table_names(self) -> list[str]:
        """Every table of the store's data, by name (not its migrations record)."""
        ...

    def table_columns(self, table: str) -> list[str]:
        """NotFound (unknown_table) for a table the store does not have."""
        ...

    def count_rows(self, table: str) -> int: ...

    def table_rows(self, table: str, columns: Sequence[str]) -> Iterator[TableRow]:
        """Every row, those columns in that order, in no particular order (streamed)."""
        ...


class StoreWriter(StoreReader, Protocol):
    """The statements of a write transaction, and its queries (it reads what it wrote)."""

    def lock(self, name: str, key: str) -> None:
        """Serialise with every other transaction, in any process, that takes the same (name, key) lock, until
        this one ends: what makes read-then-write steps (the next CRL number, the audit chain head) safe where
        writers run concurrently."""
        ...

    def try_lock(self, name: str, key: str) -> bool:
        """`lock` if nobody holds it now; False at once otherwise (no wait)."""
        ...

    def serialise_appends(self) -> None:
        """Serialise with every other transaction that appends to the store's ordered logs (the audit chain,
        revocations, bootstrap pin changes), until this one ends. What follows then reads the latest committed
        state (the chain head, the last CRL number, the last trust-list version) and no other writer can append
        before this one commits: sequence numbers follow commit order, so a reader that remembers the last one it
        saw (the revocation index) misses nothing. Taken by the store itself before such an append, and by the
        engine before a read it will write the successor of."""
        ...

    def set_meta(self, key: str, value: str) -> None: ...

    def insert_ca(self, ca: CARecord) -> None: ...

    def set_ca_active(self, ca_id: str, active: bool) -> None: ...

    def insert_owner(self, owner: Owner) -> None:
        """AlreadyExists when the group has that name or ApplicationUri already."""
        ...

    def insert_owners(self, owners: Sequence[Owner]) -> None:
        """One multi-row insert; AlreadyExists (and nothing inserted: the transaction rolls back) on a clash."""
        ...

    def update_owner(self, owner: Owner) -> None:
        """NotFound for an unknown id."""
        ...

    def insert_certificate(self, rec: CertificateRecord, der: bytes) -> None: ...

    def insert_certificates(self, items: Sequence[NewCertificate]) -> None:
        """AlreadyExists on a serial or fingerprint clash (the whole transaction is then rolled back)."""
        ...

    def insert_certificate_keys(self, rows: Sequence[CertificateKey]) -> None:
        """Rows already there are kept."""
        ...

    def mark_delivered(self, serial: str) -> bool:
        """False when it was marked already (or is unknown)."""
        ...

    def mark_superseded(self, serial: str, by_serial: str) -> None: ...

    def record_last_seen(self, group: str, seen: Sequence[tuple[str, int]]) -> None:
        """(device name, epoch seconds) seen on a broker; never moves a device's time back."""
        ...

    def fold_certificate_tallies(self) -> int:
        """Fold the tally rows of writers that are gone into one shard, drop empty ones; how many rows went."""
        ...

    def rebuild_certificate_tallies(self) -> None:
        """Count the tallies again from the certificates."""
        ...

    def mark_revoked(self, serial: str, at: datetime, reason: RevocationReason) -> None: ...

    def insert_revocation(self, serial: str, issuer_ca_id: str, at: datetime, reason: RevocationReason,
                          not_after: datetime) -> None: ...

    def insert_crl(self, crl: CrlRecord) -> None: ...

    def add_external(self, group: str, list_name: str, kind: str, fingerprint: str, der: bytes, note: str,
                     at: datetime) -> None: ...

    def remove_external(self, group: str, fingerprint: str, at: datetime) -> int:
        """How many entries were removed."""
        ...

    def insert_trust_version(self, group: str, version: int, content_hash: str, at: datetime,
                             reason: str) -> None: ...

    def insert_cert_request(self, req: CertificateRequest) -> None: ...

    def claim_cert_request(self, request_id: str, *, expected: Sequence[RequestStatus]) -> bool:
        """Lock the request's row until this transaction ends if it is (still, once concurrent writers committed)
        in one of `expected`; False otherwise. Taken first by every decision on a request."""
        ...

    def transition_cert_request(self, request_id: str, *, expected: Sequence[RequestStatus], status: RequestStatus,
                                decided_by: str | None = None, decided_at: int | None = None,
                                reason: str | None = None, serial: str | None = None,
                                issued_at: int | None = None) -> bool:
        """Compare-and-set from one of `expected` to `status`: False when another writer moved it first."""
        ...

    def insert_target(self, target: DeliveryTarget) -> None: ...

    def update_target(self, target_id: str, *, state: TargetState, attempts: int, next_attempt_at: int,
                      last_error: str | None, delivered_serial: str | None, delivered_trust_version: int | None,
                      updated_at: int) -> None: ...

    def set_target_pin(self, target_id: str, pin: TargetPin) -> None: ...

    def delete_target_pin(self, target_id: str) -> bool: ...

    def insert_bootstrap_pin(self, pin: BootstrapPin) -> None: ...

    def delete_bootstrap_pin(self, owner_id: str) -> bool: ...

    def forget_expired(self, now: int) -> None: ...

    def remember_request(self, scope: str, subject: str, request_id: str, expires_at: int) -> None: ...

    def put_rate_bucket(self, scope: str, subject: str, tokens: float, stamp_us: int, full_at: int) -> None: ...

    def put_lease(self, lease: LeaseRow) -> None:
        """Create or overwrite the lease of that name."""
        ...

    def delete_lease(self, name: str, holder: str) -> bool:
        """Drop the lease if `holder` holds it; False otherwise."""
        ...

    def insert_web_user(self, row: WebUserRow) -> None:
        """AlreadyExists for a name taken."""
        ...

    def delete_web_user(self, name: str) -> bool:
        """Drop the user and every session of theirs; False for an unknown name."""
        ...

    def set_web_user_totp(self, name: str, secret: str) -> bool:
        """A new TOTP secret (its time steps start over); False for an unknown name."""
        ...

    def advance_totp_step(self, name: str, step: int) -> bool:
        """Record `step` as the last accepted one if it is above the recorded one: False when it is not (a
        replayed code, or another instance took that step first)."""
        ...

    def insert_web_session(self, row: WebSessionRow) -> None: ...

    def delete_web_user_sessions(self, name: str) -> None: ...

    def set_web_session_stage(self, id_sha256: str, stage: str, expires_at: int) -> bool: ...

    def delete_web_session(self, id_sha256: str) -> bool: ...

    def delete_expired_web_sessions(self, now: int) -> None: ...

    def insert_web_token(self, row: WebTokenRow) -> None:
        """AlreadyExists for a name taken."""
        ...

    def revoke_web_token(self, name: str, at: int) -> bool:
        """False for an unknown or already revoked token."""
        ...

    def put_login_failures(self, row: LoginFailuresRow) -> None: ...

    def delete_login_failures(self, subject: str) -> None: ...

    def insert_audit(self, rec: AuditRecord, at_us: int, details_json: str) -> None: ...

    def insert_audit_rows(self, rows: Sequence[AuditRow]) -> None: ...

    def load_rows(self, table: str, columns: Sequence[str], rows: Sequence[TableRow]) -> None:
        """Insert rows as they are, their ids and sequence numbers included."""
        ...

    def loaded_table(self, table: str) -> None:
        """After `load_rows` into a table: ids the store generates go on after the highest one loaded."""
        ...


class Subscription(Protocol):
    def close(self) -> None:
        """Stop: the callback is not called after this returns."""
        ...


class Store(Protocol):
    def subscribe(self, channel: str, callback: Callable[[], None]) -> Subscription | None:
        """Call `callback` (from another thread) soon after any process commits a change announced on `channel`,
        and once more whenever notifications may have been missed (a reconnect); None when the backend has no
        notifications (SQLite), and the caller polls."""
        ...

    def transaction(self, *, pipelined: bool = False) -> AbstractContextManager[StoreWriter]:
        """A write unit of work: committed when the block ends, rolled back if it raises; nested use joins the
        outer one.

        `pipelined`: a store that talks to a database server may send the statements together and answer each at
        the next read of a result or at the commit, which goes with whatever is still unanswered: a run of writes
        and the commit cost one round trip. An error of any statement is then raised at that read or at the end of
        the block (translated as usual: AlreadyExists, StoreBusy, ...), never by the statement itself: only for a
        unit that catches no store error of its own. Ignored when nested, and by a store with no server."""
        ...


    def read(self) -> AbstractContextManager[StoreReader]: ...

    def snapshot(self) -> AbstractContextManager[StoreReader]:
        """A read that sees the store as of one moment through all its queries, while other connections and
        processes go on writing: what a copy or an online backup reads. Nothing is written through this store
        object while it is open."""
        ...

    def close(self) -> None: ...

    def schema_status(self) -> SchemaStatus:
        """Which migrations the store has had, against those this otpki knows."""
        ...

    def upgrade(self, record: Callable[[StoreWriter, list[Migration]], None] | None = None) -> list[Migration]:
        """Apply the pending migrations (each in its own transaction); `record` runs in the last one's."""
        ...


__all__ = ["Store", "StoreReader", "StoreWriter", "Subscription"]
