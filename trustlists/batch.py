"""Batch issuance for factory lines: sign a directory of CSRs without any connectivity to the devices.

Every CSR gets a result (issued, reused, or the specific reason it was refused); one bad file never stops
the batch. Certificates are recorded as issued-but-never-delivered until the device is seen in the field.

Per chunk of CHUNK CSRs: each CSR is read and its signature verified once, then checked against its device's
group policy once (`check_verified_csr`); the chunk's new devices are registered in one transaction (one
look-up, one insert, their audit records in one statement); the certificates are signed and handed to
`issue_approved`, which records them with their audit records in one durable commit. Before that commit the
chunk's files are made durable (temp files, one syncfs, renames, one directory fsync): a crash leaves at worst
certificate files the inventory does not know (`otpki certs reconcile OUT_DIR/*.crt` names them, the next run
replaces them), never a recorded certificate without its file.

`sign_chunks` and `ChunkRecorder` split the same work between processes (`otpki batch sign --workers N`,
otpki.batch_pool): workers read, check, sign and write each new certificate to a temp file (not flushed),
reading the store only; one process flushes the temp files of every chunk ready with one syncfs, renames them
into place, flushes the directory, then registers the devices and records the certificates in one transaction.
A crash leaves what the one-process path leaves: at worst certificate files the inventory does not know, which
the next run replaces, and temp files of dead processes, which the next run removes.

A batch is idempotent: a CSR whose key already has an active certificate for its owner gets that
certificate back (`reuse_active=True`, decided again inside the write transaction, so two batches over
overlapping inputs end with one certificate per CSR), and its file is (re)written from the inventory, so a run
cut off at any point (kill -9, power cut) heals on the next run.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from pydantic import BaseModel

from trustlists.authority import CsrIssueRequest, SignedBatch
from trustlists.csr_checks import ApprovedRequest, check_verified_csr, verify_csr_signature
from trustlists.der import common_name, load_csr
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists, NotFound, OtpkiError
from trustlists.models import IssuanceKind, IssuedCertificate, Owner
from trustlists.policy import GroupPolicy, ReservedName
from trustlists.store.base import StoreWriter

CSR_SUFFIXES = {".csr", ".pem", ".der", ".req"}
CHUNK = 100


class BatchItem(BaseModel):
    file: str
    ok: bool
    reused: bool = False  # the certificate was already in the inventory for this owner and key
    serial: str | None = None
    owner: str | None = None
    output: str | None = None
    error: str | None = None
    reason: str | None = None


class BatchReport(BaseModel):
    group: str
    issued: int  # newly signed by this run
    reused: int  # handed back from the inventory (an earlier or a concurrent run issued them)
    failed: int
    items: list[BatchItem]


def csr_files(in_dir: Path, shard: tuple[int, int] | None = None) -> list[Path]:
    """The CSR files of `in_dir`, by name; with `shard` (i, n) only the i-th of n disjoint shares (0-based).

    A share holds whole stems (dev-1.csr and dev-1.pem go to one share), so the refusal of a second CSR for one
    certificate file stays within one process, and n processes over the n shares sign every file once."""
    # Names sorted as strings (what sorting the paths of one directory gives, at a tenth of the cost); d_type from
    # the directory listing, no stat per file.
    with os.scandir(in_dir) as entries:
        names = sorted(e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in CSR_SUFFIXES)
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index + 1} of {count} does not exist")
        stem_of = {n: _output_stem(n) for n in names}
        mine = set(sorted(set(stem_of.values()))[index::count])
        names = [n for n in names if stem_of[n] in mine]
    return [in_dir.joinpath(n) for n in names]


def sign_directory(engine: Engine, in_dir: Path, out_dir: Path, *, group: str, actor: str, site: str | None = None,
                   on_item: Callable[[BatchItem], None] | None = None, shard: tuple[int, int] | None = None
                   ) -> BatchReport:
    """Sign the CSRs of `in_dir` (of one `shard` of them: csr_files) into `out_dir`."""
    engine.config.group(group)
    prepare_output(out_dir)
    items: list[BatchItem] = []

    def done(item: BatchItem) -> None:
        items.append(item)
        if on_item is not None:
            on_item(item)

    files = csr_files(in_dir, shard)
    claimed: dict[str, str] = {}  # output file name -> the CSR file it belongs to
    chain_pem: dict[str, bytes] = {}  # issuing CA id -> its chain in PEM, made once
    with os.scandir(out_dir) as entries:
        on_disk = {e.name for e in entries}  # files the run may find in place already (a re-run): read only those
    for start in range(0, len(files), CHUNK):
        # Reading and checking the CSRs is CPU work: done before the transaction, so that batches in other
        # processes are not kept waiting for the write lock meanwhile.
        refused, examined = _examine_chunk(files[start:start + CHUNK], claimed)
        for item in sorted(refused, key=lambda i: i.file):
            done(item)
        for item in _sign_examined(engine, examined, out_dir, chain_pem, on_disk, group=group, site=site,
                                   actor=actor):
            done(item)
    return _report(group, items)


def _sign_examined(engine: Engine, examined: list[tuple[Path, _Examined]], out_dir: Path,
                   chain_pem: dict[str, bytes], on_disk: set[str], *, group: str, site: str | None, actor: str
                   ) -> list[BatchItem]:
    """A chunk of read and verified CSRs checked, its devices registered, signed, its files made durable and
    its certificates recorded, all in this process: the items of the chunk, refusals first."""
    refused: list[BatchItem] = []
    checked = _owners_for(engine, examined, refused, group=group, site=site, actor=actor)
    refused.sort(key=lambda i: i.file)
    written: dict[int, str] = {}  # slot -> serial of the certificate its file holds now
    results = engine.authority.issue_approved(
        [(CsrIssueRequest(csr=c.data, owner_id=owner.id, issuance=IssuanceKind.BATCH, delivered=False), owner,
          approved) for _path, c, owner, approved in checked],
        actor=actor, reuse_active=True,
        before_commit=_files_first(out_dir, [c[0] for c in checked], chain_pem, on_disk, written))
    return refused + _outcomes(out_dir, [(path, owner) for path, _c, owner, _a in checked], results, written,
                               chain_pem, on_disk)


def _outcomes(out_dir: Path, slots: list[tuple[Path, Owner]], results: list[IssuedCertificate | OtpkiError],
              written: dict[int, str], chain_pem: dict[str, bytes], on_disk: set[str]) -> list[BatchItem]:
    """The items of a recorded chunk. A certificate handed back from the inventory (an earlier run, or another
    station that committed first) has its file written now."""
    late = [(n, r) for n, r in enumerate(results)
            if isinstance(r, IssuedCertificate) and written.get(n) != r.record.serial]
    failed = _install_all(out_dir, [(slots[n][0], issued, chain_pem) for n, issued in late], on_disk)
    failed_writes = {late[k][0]: exc for k, exc in failed.items()}
    return [_item(slots[n][0], slots[n][1], result, failed_writes.get(n)) for n, result in enumerate(results)]


# -- the same work split between processes: workers sign, one process records ---------------------------------
@dataclass
class SignedChunk:
    """A chunk signed by a worker process (`sign_chunks`), for the recording process (`ChunkRecorder`): nothing
    of it is stored yet, its new certificate files are written to temp files (not flushed, not in place), and it
    pickles."""

    unreadable: list[BatchItem]  # refused before any device was looked at (output name, reading, signature)
    examined: list[Path]  # the other CSR files of the chunk (what the recorder signs again if it must)
    refused: list[BatchItem]  # refused by their device's checks
    slots: list[tuple[Path, Owner]]  # per slot of `signed`: the CSR file and its device
    new_owners: list[Owner]  # devices to register, not looked up yet
    signed: SignedBatch
    written: dict[int, str]  # slot -> serial of the certificate its file holds (once `staged` is in place)
    staged: list[tuple[int, str, str]]  # (slot, temp file, final name): written, not flushed, not renamed


def sign_chunks(engine: Engine, in_dir: Path, out_dir: Path, *, group: str, site: str | None = None,
                shard: tuple[int, int] | None = None) -> Iterator[SignedChunk]:
    """The CPU work of `sign_directory` over (a share of) `in_dir`, chunk by chunk, reading the store and
    writing nothing to it: read, verify and check each CSR, look up its device (a new one is made, not
    registered), answer from the key history, sign, and write each new certificate's file to a temp file
    (the recorder flushes them all at once and puts them in place before it commits). `ChunkRecorder.record`
    does the rest in the process that owns the writes."""
    engine.config.group(group)
    files = csr_files(in_dir, shard)
    claimed: dict[str, str] = {}
    chain_pem: dict[str, bytes] = {}
    with os.scandir(out_dir) as entries:
        on_disk = {e.name for e in entries}
    for start in range(0, len(files), CHUNK):
        unreadable, examined = _examine_chunk(files[start:start + CHUNK], claimed)
        refused: list[BatchItem] = []
        checked, new = _check_owners(engine, examined, refused, group=group, site=site)
        signed = engine.authority.sign_approved(
            [(CsrIssueRequest(csr=c.data, owner_id=owner.id, issuance=IssuanceKind.BATCH, delivered=False), owner,
              approved) for _path, c, owner, approved in checked], reuse_active=True)
        written, staged = _stage_all(out_dir, [(n, checked[n][0], p.issued()) for n, p in signed.prepared],
                                     chain_pem, on_disk)
        yield SignedChunk(unreadable=unreadable, examined=[p for p, _c in examined], refused=refused,
                          slots=[(path, owner) for path, _c, owner, _a in checked], new_owners=list(new.values()),
                          signed=signed.portable(), written=written, staged=staged)


class ChunkRecorder:
    """Records the chunks of `sign_chunks` (from any number of workers, in any order) into `out_dir`: registers
    their devices, makes their files durable, commits their certificates, as `sign_directory` does for its own.

    A chunk whose work no longer holds when it is recorded, because a device it made was registered since (by
    another chunk of this batch, or another station), or a serial clashed, is read and signed again here, the
    way `sign_directory` signs (the worker's certificates were never recorded; the files put in place for them
    are replaced)."""

    def __init__(self, engine: Engine, out_dir: Path, *, group: str, site: str | None, actor: str) -> None:
        engine.config.group(group)
        self._engine, self._out_dir, self._group, self._site, self._actor = engine, out_dir, group, site, actor
        prepare_output(out_dir)
        with os.scandir(out_dir) as entries:
            self._on_disk = {e.name for e in entries}
        self._chain_pem: dict[str, bytes] = {}
        self.items: list[BatchItem] = []

    def record(self, chunks: list[SignedChunk]) -> None:
        """Record chunks that are ready together with one durable commit (as few as their devices allow), so that
        the slower the disk, the more each flush carries."""
        for chunk in _joined(chunks):
            self._record(chunk)

    def _record(self, chunk: SignedChunk) -> None:
        self.items.extend(chunk.unreadable)
        # The files first, durable and in place (the worker wrote them), then the devices and their certificates
        # in one transaction: a crash in between leaves certificate files the inventory does not know (as in
        # sign_directory), which the next run replaces.
        written = dict(chunk.written)
        _put_in_place(self._out_dir, chunk.staged, written, self._on_disk)
        try:
            with self._engine._ctx.store.transaction() as tx:
                if not self._register(tx, chunk.new_owners):
                    raise _Stale
                results = self._engine.authority.record_signed(chunk.signed, actor=self._actor)
        except (_Stale, AlreadyExists):  # a device registered since the worker looked, or a serial clash
            self.items.extend(self._again(chunk))
            return
        self.items.extend(chunk.refused)
        self.items.extend(_outcomes(self._out_dir, chunk.slots, results, written, self._chain_pem, self._on_disk))

    def report(self) -> BatchReport:
        return _report(self._group, self.items)

    def _register(self, tx: StoreWriter, owners: list[Owner]) -> bool:
        """The chunk's new devices registered in the recording transaction; False, and none registered, if a name
        or ApplicationUri of theirs was taken since the worker looked."""
        if not owners:
            return True
        if tx.find_owners(self._group, [o.name for o in owners]) or any(
                o.application_uri and tx.find_owner(self._group, application_uri=o.application_uri) is not None
                for o in owners):
            return False
        self._engine.registry.register_many(tx, owners, actor=self._actor)
        return True

    def _again(self, chunk: SignedChunk) -> list[BatchItem]:
        examined: list[tuple[Path, _Examined]] = []
        refused: list[BatchItem] = []
        for path in chunk.examined:
            found = _examine(path)
            if isinstance(found, BatchItem):
                refused.append(found)  # changed since the worker read it
            else:
                examined.append((path, found))
        return refused + _sign_examined(self._engine, examined, self._out_dir, self._chain_pem, self._on_disk,
                                        group=self._group, site=self._site, actor=self._actor)


def prepare_output(out_dir: Path) -> None:
    """The output directory made, and cleared of the temp files of batches that were killed mid-write."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temp_files(out_dir)


class _Stale(Exception):
    """A signed chunk no longer holds when it is recorded: it is signed again."""


def _joined(chunks: list[SignedChunk]) -> list[SignedChunk]:
    """Consecutive chunks joined into one where they share no new device name, ApplicationUri or key. Two
    workers may each make a device for one name (the second chunk then finds it taken, and is signed again), or
    sign one key (the second chunk's commit then finds the first's certificate, and hands it back or refuses):
    what decides is the store, so such chunks are recorded one after the other."""
    joined: list[SignedChunk] = []
    seen: set[str] = set()
    for chunk in chunks:
        mine = {f"name:{o.name}" for o in chunk.new_owners}
        mine |= {f"uri:{o.application_uri}" for o in chunk.new_owners if o.application_uri}
        mine |= {f"key:{k.spki_sha256}" for k in chunk.signed.keys.values()}
        if joined and not (mine & seen):
            joined[-1] = _join(joined[-1], chunk)
            seen |= mine
        else:
            joined.append(chunk)
            seen = mine
    return joined


def _join(a: SignedChunk, b: SignedChunk) -> SignedChunk:
    off = len(a.slots)
    sa, sb = a.signed, b.signed
    signed = SignedBatch(sa.results + sb.results, sa.prepared + [(i + off, p) for i, p in sb.prepared],
                         {**sa.keys, **{i + off: k for i, k in sb.keys.items()}},
                         sa.repeats + [(i + off, e + off) for i, e in sb.repeats])
    return SignedChunk(unreadable=a.unreadable + b.unreadable, examined=a.examined + b.examined,
                       refused=a.refused + b.refused, slots=a.slots + b.slots, new_owners=a.new_owners + b.new_owners,
                       signed=signed, written={**a.written, **{i + off: s for i, s in b.written.items()}},
                       staged=a.staged + [(i + off, tmp, name) for i, tmp, name in b.staged])


def _report(group: str, items: list[BatchItem]) -> BatchReport:
    items.sort(key=lambda i: i.file)  # the report follows the directory listing, refused or not
    reused = sum(1 for i in items if i.ok and i.reused)
    issued = sum(1 for i in items if i.ok) - reused
    return BatchReport(group=group, issued=issued, reused=reused, failed=len(items) - issued - reused, items=items)


def _output_name(path: Path) -> str:
    return f"{path.stem}.crt"


def _output_stem(file_name: str) -> str:
    return f"{_stem(file_name)}.crt"


def _stem(file_name: str) -> str:
    """PurePath(file_name).stem, without making a path (a tenth of the cost, for every file of a batch)."""
    i = file_name.rfind(".")
    return file_name[:i] if 0 < i < len(file_name) - 1 else file_name



def _examine_chunk(paths: list[Path], claimed: dict[str, str]
                   ) -> tuple[list[BatchItem], list[tuple[Path, _Examined]]]:
    """A chunk's CSR files read and checked: (those refused already, those to go on with)."""
    refused: list[BatchItem] = []
    examined: list[tuple[Path, _Examined]] = []
    for path in paths:
        found = _claim_output(path, claimed) or _examine(path)
        if isinstance(found, BatchItem):
            refused.append(found)
        else:
            examined.append((path, found))
    return refused, examined

def _claim_output(path: Path, claimed: dict[str, str]) -> BatchItem | None:
    """Two CSR files with one stem (dev-1.csr, dev-1.pem) would write one certificate file: the later one is
    refused instead of silently overwriting the first one's certificate."""
    name = _output_name(path)
    if name in claimed:
        return BatchItem(file=path.name, ok=False, reason="output_name_clash",
                         error=f"its certificate file {name} belongs to {claimed[name]}; rename one of them")
    claimed[name] = path.name
    return None


@dataclass(frozen=True)
class _Examined:
    """A CSR file read and its signature verified, before its device is looked up or registered."""

    data: bytes
    csr: x509.CertificateSigningRequest
    name: str


def _examine(path: Path) -> _Examined | BatchItem:
    """Read the CSR and verify its signature (once: the policy rules follow against its device, and issuance
    takes the result as it is); a refusal comes back as a failed item. Reads nothing from the store."""
    try:
        data = path.read_bytes()
        csr = load_csr(data)
        name = common_name(csr.subject)
        if not name:
            return BatchItem(file=path.name, ok=False, error="the CSR has no common name", reason="subject_cn_missing")
        verify_csr_signature(csr)
    except OtpkiError as exc:
        return BatchItem(file=path.name, ok=False, error=exc.message, reason=exc.reason)
    except OSError as exc:
        return BatchItem(file=path.name, ok=False, error=f"cannot read: {exc.strerror}", reason="io_error")
    return _Examined(data, csr, name)


_Checked = tuple[Path, _Examined, Owner, ApprovedRequest]


def _check_owners(engine: Engine, examined: list[tuple[Path, _Examined]], refused: list[BatchItem], *, group: str,
                  site: str | None) -> tuple[list[_Checked], dict[str, Owner]]:
    """Each CSR checked against the device it names (looked up in one read, or made: not registered); refusals go
    to `refused`. Returns the checked CSRs and the new devices among their owners, by name."""
    policy = engine.config.group(group)
    reserved = engine.config.reserved_names
    with engine._ctx.store.read() as tx:
        known = tx.find_owners(group, [c.name for _p, c in examined])
    new: dict[str, Owner] = {}
    checked: list[_Checked] = []

    def check(path: Path, c: _Examined, owner: Owner) -> ApprovedRequest | None:
        try:
            return _check_for(c, owner, policy, group, reserved)
        except OtpkiError as exc:
            refused.append(BatchItem(file=path.name, ok=False, owner=c.name, error=exc.message, reason=exc.reason))
            return None

    for path, c in examined:
        owner = known.get(c.name) or new.get(c.name)
        fresh = owner is None
        if owner is None:
            try:
                uri = _first_uri(c.csr) if policy.san.uri_source == "owner_application_uri" else None
                owner = engine.registry.new_owner(group=group, name=c.name, site=site, application_uri=uri,
                                                  attributes={"registered_by": "batch", "source_file": path.name})
            except OtpkiError as exc:
                refused.append(BatchItem(file=path.name, ok=False, error=exc.message, reason=exc.reason))
                continue
        if fresh and owner.application_uri and any(o.application_uri == owner.application_uri for o in new.values()):
            refused.append(BatchItem(file=path.name, ok=False, owner=c.name, reason="already_exists",
                                     error=f"ApplicationUri {owner.application_uri} is also in the CSR of another new "
                                           f"device of this batch"))
            continue
        approved = check(path, c, owner)
        if approved is not None:
            if fresh:
                new[c.name] = owner
            checked.append((path, c, owner, approved))
    return checked, new


def _check_for(c: _Examined, owner: Owner, policy: GroupPolicy, group: str, reserved: list[ReservedName]
               ) -> ApprovedRequest:
    if owner.unregistered_at is not None:
        raise NotFound(f"{owner.name} was unregistered on {owner.unregistered_at.isoformat()}", reason="unknown_owner")
    return check_verified_csr(c.csr, policy, group, owner, reserved=reserved)


def _owners_for(engine: Engine, examined: list[tuple[Path, _Examined]], refused: list[BatchItem], *, group: str,
                site: str | None, actor: str) -> list[_Checked]:
    """Each CSR checked against the device it names, the new devices of the chunk registered together (one
    look-up, one insert, their audit records in one statement, one transaction); refusals go to `refused`,
    and a refused CSR registers nobody."""
    checked, new = _check_owners(engine, examined, refused, group=group, site=site)
    if not new:
        return checked
    policy = engine.config.group(group)
    reserved = engine.config.reserved_names

    def check(path: Path, c: _Examined, owner: Owner) -> ApprovedRequest | None:
        try:
            return _check_for(c, owner, policy, group, reserved)
        except OtpkiError as exc:
            refused.append(BatchItem(file=path.name, ok=False, owner=c.name, error=exc.message, reason=exc.reason))
            return None

    # The chunk's new registrations commit together: one fsync for a hundred new devices, and no other batch
    # registers one of them between our look-up and our insert.
    with engine._ctx.store.transaction() as tx:
        taken = tx.find_owners(group, list(new))  # registered by another station since our look-up
        clashing = {name for name, o in new.items() if name not in taken and o.application_uri
                    and tx.find_owner(group, application_uri=o.application_uri) is not None}
        settled: list[_Checked] = []
        for path, c, owner, approved in checked:
            if c.name in clashing:
                refused.append(BatchItem(file=path.name, ok=False, owner=c.name, reason="already_exists",
                                         error=f"ApplicationUri {owner.application_uri} is already registered in "
                                               f"group {group}"))
            elif c.name in taken:  # checked again against the registration that won (rare)
                again = check(path, c, taken[c.name])
                if again is not None:
                    settled.append((path, c, taken[c.name], again))
            else:
                settled.append((path, c, owner, approved))
        engine.registry.register_many(tx, [o for name, o in new.items() if name not in taken and name not in clashing],
                                      actor=actor)
    return settled


def _files_first(out_dir: Path, paths: list[Path], chain_pem: dict[str, bytes], on_disk: set[str],
                 written: dict[int, str]) -> Callable[[list[tuple[int, IssuedCertificate]]], None]:
    """What a chunk does between signing and recording: its files are durable before its rows commit. A crash
    in between leaves certificate files the inventory does not know, which `otpki certs reconcile
    OUT_DIR/*.crt` names and the next run replaces; never a recorded certificate whose file was not written.
    `written` gets slot -> serial of each file put in place (a file that failed is tried again after the
    commit, and reported if it fails again)."""
    def write(signed: list[tuple[int, IssuedCertificate]]) -> None:
        failed = _install_all(out_dir, [(paths[n], issued, chain_pem) for n, issued in signed], on_disk)
        written.update((n, issued.record.serial) for k, (n, issued) in enumerate(signed) if k not in failed)
    return write


def _first_uri(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _item(path: Path, owner: Owner, result: IssuedCertificate | OtpkiError, write_error: OSError | None
          ) -> BatchItem:
    if isinstance(result, OtpkiError):
        return BatchItem(file=path.name, ok=False, owner=owner.name, error=result.message, reason=result.reason)
    serial = result.record.serial
    if write_error is not None:
        # Recorded but not on disk: the next run writes it from the inventory.
        return BatchItem(file=path.name, ok=False, reused=result.reused, serial=serial, owner=owner.name,
                         reason="output_not_written",
                         error=f"certificate {serial} is recorded but {_output_name(path)} could not be written "
                               f"({write_error.strerror}); run the batch again")
    return BatchItem(file=path.name, ok=True, reused=result.reused, serial=serial, owner=owner.name,
                     output=_output_name(path))


def _pem(der: bytes) -> bytes:
    """PEM of a DER certificate (RFC 7468: base64 in lines of 64), without parsing it again."""
    b64 = base64.b64encode(der)
    lines = b"\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def _install_all(out_dir: Path, certificates: list[tuple[Path, IssuedCertificate, dict[str, bytes]]],
                 on_disk: set[str]) -> dict[int, OSError]:
    """Make each CSR's certificate file hold its certificate and chain, durably, with two flushes for the
    whole list instead of one per file: temp files written, their data flushed, renamed into place, the
    directory flushed. A file that already holds exactly that is left alone. Returns index -> error for the
    files that could not be written (the others are in place)."""
    staged: list[tuple[int, Path, Path]] = []
    errors: dict[int, OSError] = {}
    pid = os.getpid()
    for n, (path, issued, chains) in enumerate(certificates):
        data = _file_data(issued, chains)
        out = out_dir / _output_name(path)
        if out.name in on_disk:
            try:
                if out.read_bytes() == data:
                    continue
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors[n] = exc
                continue
        tmp = _temp_name(out, pid)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            errors[n] = exc
            continue
        staged.append((n, tmp, out))
    if not staged:
        return errors
    try:
        _flush_data(out_dir, [tmp for _n, tmp, _out in staged])
        for n, tmp, out in staged:
            try:
                os.replace(tmp, out)
                on_disk.add(out.name)
            except OSError as exc:
                errors[n] = exc
        _sync_directory(out_dir)  # the renames survive a power cut
    except BaseException:
        for _n, tmp, _out in staged:
            tmp.unlink(missing_ok=True)
        raise
    return errors


def _stage_all(out_dir: Path, certificates: list[tuple[int, Path, IssuedCertificate]], chains: dict[str, bytes],
               on_disk: set[str]) -> tuple[dict[int, str], list[tuple[int, str, str]]]:
    """A worker's part of `_install_all` for new files: each written to a temp file of this process, not flushed
    and not renamed (the recorder flushes them all with one syncfs, renames them into place and flushes the
    directory before it commits). A file that exists already is put in place durably here (`_install_all`:
    re-runs only). Returns slot -> serial of each file (to be) in place, and (slot, temp name, final name) of
    the staged ones."""
    written: dict[int, str] = {}
    staged: list[tuple[int, str, str]] = []
    existing: list[tuple[int, Path, IssuedCertificate]] = []
    pid = os.getpid()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    directory = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)  # names relative to it: no path walk per file
    try:
        for n, path, issued in certificates:
            name = _output_name(path)
            if name in on_disk:
                existing.append((n, path, issued))
                continue
            tmp = f".{name}.{pid}{_TEMP_SUFFIX}"  # _temp_name's, without making a path
            try:
                fd = os.open(tmp, flags, 0o644, dir_fd=directory)
                try:
                    _write_all(fd, _file_data(issued, chains))
                finally:
                    os.close(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=directory)
                continue  # written again after the commit, and reported if it fails again
            staged.append((n, tmp, name))
            written[n] = issued.record.serial
    finally:
        os.close(directory)
    if existing:
        failed = _install_all(out_dir, [(path, issued, chains) for _n, path, issued in existing], on_disk)
        written.update((n, issued.record.serial) for k, (n, _p, issued) in enumerate(existing) if k not in failed)
    return written, staged


def _put_in_place(out_dir: Path, staged: list[tuple[int, str, str]], written: dict[int, str],
                  on_disk: set[str]) -> None:
    """Staged files durable under their final names: their data flushed (one syncfs), renamed, the directory
    flushed. A file that cannot be renamed leaves `written` (it is written again after the commit)."""
    if not staged:
        return
    try:
        _flush_data(out_dir, [out_dir / tmp for _n, tmp, _name in staged])
        directory = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for n, tmp, name in staged:
                try:
                    os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
                    on_disk.add(name)
                except OSError:
                    written.pop(n, None)
            os.fsync(directory)  # the renames survive a power cut
        finally:
            os.close(directory)
    except BaseException:
        for _n, tmp, _name in staged:
            (out_dir / tmp).unlink(missing_ok=True)
        raise


def _file_data(issued: IssuedCertificate, chains: dict[str, bytes]) -> bytes:
    ca = issued.record.issuer_ca_id
    if ca not in chains:
        chains[ca] = b"".join(_pem(d) for d in issued.chain_der)
    return _pem(issued.certificate_der) + chains[ca]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_TEMP_SUFFIX = ".tmp"


def _temp_name(out: Path, pid: int) -> Path:
    # Per process: two batches writing the same certificate never share (and tear) one temp file.
    return out.with_name(f".{out.name}.{pid}{_TEMP_SUFFIX}")


def _flush_data(directory: Path, paths: list[Path]) -> None:
    """The contents of `paths` on stable storage: one syncfs(2) of their filesystem where Linux has it (one
    journal commit for the lot), else an fsync per file."""
    if _syncfs is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return fn


_syncfs = _load_syncfs()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_abandoned_temp_files(out_dir: Path) -> None:
    """Temp files of batches that were killed mid-write; a live batch's own temp files are left alone."""
    for tmp in out_dir.glob(f".*.crt.*{_TEMP_SUFFIX}"):
        pid_text = tmp.name.removesuffix(_TEMP_SUFFIX).rsplit(".", 1)[-1]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    # A killed worker whose parent died too is re-parented to PID 1, and where PID 1 does not reap (a container's
    # init), it stays a zombie: signalable, yet it will never finish its temp files.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust the signal test
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])
