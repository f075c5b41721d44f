"""Batch issuance for factory lines: sign a directory of CSRs without any connectivity to the devices.

Every CSR gets a result (issued, reused, or the specific reason it was refused); one bad file never stops
the batch. Certificates are recorded as issued-but-never-delivered until the device is seen in the field.
Issuance goes through `issue_many`, so a chunk of CSRs costs one durable commit, not one per device.

A batch is idempotent: a CSR whose key already has an active certificate for its owner gets that
certificate back (`issue_many(reuse_active=True)`, decided inside the write transaction, so two batches over
overlapping inputs end with one certificate per CSR). Every certificate is (re)written from the inventory
with temp file + fsync + rename, so a run cut off at any point (kill -9, power cut) heals on the next run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel

from trustlists.authority import CsrIssueRequest
from trustlists.csr_checks import check_csr
from trustlists.der import common_name, load_csr
from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.models import IssuanceKind, IssuedCertificate, Owner, OwnerKind

CSR_SUFFIXES = {".csr", ".pem", ".der", ".req"}
CHUNK = 100
_WRITERS = 8


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
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in CSR_SUFFIXES)
    if shard is None:
        return files
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index + 1} of {count} does not exist")
    stems = sorted({_output_name(p) for p in files})
    mine = set(stems[index::count])
    return [p for p in files if _output_name(p) in mine]


def sign_directory(engine: Engine, in_dir: Path, out_dir: Path, *, group: str, actor: str, site: str | None = None,
                   on_item: Callable[[BatchItem], None] | None = None, shard: tuple[int, int] | None = None
                   ) -> BatchReport:
    """Sign the CSRs of `in_dir` (of one `shard` of them: csr_files) into `out_dir`."""
    engine.config.group(group)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temp_files(out_dir)
    items: list[BatchItem] = []

    def done(item: BatchItem) -> None:
        items.append(item)
        if on_item is not None:
            on_item(item)

    files = csr_files(in_dir, shard)
    claimed: dict[str, str] = {}  # output file name -> the CSR file it belongs to
    # fsyncs issued together share the filesystem's journal commits (about 3x fewer waits than one by one).
    with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="otpki-batch-write") as writers:
        for start in range(0, len(files), CHUNK):
            pending: list[tuple[Path, bytes, Owner]] = []
            refused: list[BatchItem] = []
            # Reading and checking the CSRs is CPU work: done before the transaction, so that batches in other
            # processes (`--workers`) are not kept waiting for the write lock meanwhile.
            examined: list[tuple[Path, _Examined]] = []
            for path in files[start:start + CHUNK]:
                found = _claim_output(path, claimed) or _examine(engine, path, group=group, site=site)
                if isinstance(found, BatchItem):
                    refused.append(found)
                else:
                    examined.append((path, found))
            # The chunk's new registrations commit together (a registration's own transaction joins this
            # one): one fsync for a hundred new devices, and no other batch registers one of them meanwhile.
            with engine._ctx.store.transaction():
                for path, csr in examined:
                    owner = _owner_for(engine, path, csr, group=group, site=site, actor=actor)
                    if isinstance(owner, BatchItem):
                        refused.append(owner)
                    else:
                        pending.append((path, csr.data, owner))
            refused.sort(key=lambda i: i.file)
            for item in refused:
                done(item)
            results = engine.authority.issue_many(
                [CsrIssueRequest(csr=data, owner_id=owner.id, issuance=IssuanceKind.BATCH, delivered=False)
                 for _path, data, owner in pending], actor=actor, reuse_active=True)
            for item in writers.map(_write, results, [path for path, _d, _o in pending],
                                    [owner for _p, _d, owner in pending], [out_dir] * len(pending)):
                done(item)
            _sync_directory(out_dir)  # the renames of this chunk survive a power cut
    items.sort(key=lambda i: i.file)  # the report follows the directory listing, refused or not
    reused = sum(1 for i in items if i.ok and i.reused)
    issued = sum(1 for i in items if i.ok) - reused
    return BatchReport(group=group, issued=issued, reused=reused, failed=len(items) - issued - reused, items=items)


def merge_reports(group: str, reports: list[BatchReport]) -> BatchReport:
    """One report of the shards' reports (`otpki batch sign --workers N`)."""
    items = sorted((i for r in reports for i in r.items), key=lambda i: i.file)
    return BatchReport(group=group, issued=sum(r.issued for r in reports), reused=sum(r.reused for r in reports),
                       failed=sum(r.failed for r in reports), items=items)


def _output_name(path: Path) -> str:
    return f"{path.stem}.crt"


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
    """A CSR file read and checked, before its device is looked up or registered."""

    data: bytes
    name: str
    uri: str | None


def _examine(engine: Engine, path: Path, *, group: str, site: str | None) -> _Examined | BatchItem:
    """Read the CSR and check it against a provisional registration of the device it names (a refused CSR
    registers nobody); a refusal comes back as a failed item. Reads nothing from the store."""
    try:
        data = path.read_bytes()
        csr = load_csr(data)
        name = common_name(csr.subject)
        if not name:
            return BatchItem(file=path.name, ok=False, error="the CSR has no common name", reason="subject_cn_missing")
        policy = engine.config.group(group)
        uri = _first_uri(csr) if policy.san.uri_source == "owner_application_uri" else None
        provisional = Owner(id="provisional", kind=OwnerKind(policy.owner_kind), name=name, group=group,
                            site=site, created_at=engine.now(), application_uri=uri)
        check_csr(csr, policy, group, provisional, reserved=engine.config.reserved_names)
    except OtpkiError as exc:
        return BatchItem(file=path.name, ok=False, error=exc.message, reason=exc.reason)
    except OSError as exc:
        return BatchItem(file=path.name, ok=False, error=f"cannot read: {exc.strerror}", reason="io_error")
    return _Examined(data, name, uri)


def _owner_for(engine: Engine, path: Path, csr: _Examined, *, group: str, site: str | None, actor: str
               ) -> Owner | BatchItem:
    """The device the CSR names, registered now if it is new."""
    try:
        owner = engine.registry.find(group, name=csr.name)
        if owner is None:
            owner = engine.registry.register(group=group, name=csr.name, site=site, actor=actor,
                                             application_uri=csr.uri,
                                             attributes={"registered_by": "batch", "source_file": path.name})
    except OtpkiError as exc:
        return BatchItem(file=path.name, ok=False, error=exc.message, reason=exc.reason)
    return owner


def _first_uri(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _write(result: IssuedCertificate | OtpkiError, path: Path, owner: Owner, out_dir: Path) -> BatchItem:
    if isinstance(result, OtpkiError):
        return BatchItem(file=path.name, ok=False, owner=owner.name, error=result.message, reason=result.reason)
    out = out_dir / _output_name(path)
    pem = b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM)
                   for d in [result.certificate_der, *result.chain_der])
    serial = result.record.serial
    try:
        _install(out, pem)
    except OSError as exc:
        # Recorded but not on disk: the next run writes it from the inventory.
        return BatchItem(file=path.name, ok=False, reused=result.reused, serial=serial, owner=owner.name,
                         reason="output_not_written",
                         error=f"certificate {serial} is recorded but {out.name} could not be written "
                               f"({exc.strerror}); run the batch again")
    return BatchItem(file=path.name, ok=True, reused=result.reused, serial=serial, owner=owner.name,
                     output=out.name)


_TEMP_SUFFIX = ".tmp"


def _temp_name(out: Path, pid: int) -> Path:
    # Per process: two batches writing the same certificate never share (and tear) one temp file.
    return out.with_name(f".{out.name}.{pid}{_TEMP_SUFFIX}")


def _install(out: Path, data: bytes) -> None:
    """Make `out` hold exactly `data`: unchanged if it already does, else temp file, fsync, rename."""
    try:
        if out.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    tmp = _temp_name(out, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    return True
