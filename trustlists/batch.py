"""Batch issuance for factory lines: sign a directory of CSRs without any connectivity to the devices.

Every CSR gets a result (issued, or the specific reason it was refused); one bad file never stops the
batch. Certificates are recorded as issued-but-never-delivered until the device is seen in the field.
Issuance goes through `issue_many`, so a chunk of CSRs costs one durable commit, not one per device.
"""

from __future__ import annotations

from collections.abc import Callable
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
from trustlists.safe_files import write_public

CSR_SUFFIXES = {".csr", ".pem", ".der", ".req"}
CHUNK = 100


class BatchItem(BaseModel):
    file: str
    ok: bool
    serial: str | None = None
    owner: str | None = None
    output: str | None = None
    error: str | None = None
    reason: str | None = None


class BatchReport(BaseModel):
    group: str
    issued: int
    failed: int
    items: list[BatchItem]


def csr_files(in_dir: Path) -> list[Path]:
    return sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in CSR_SUFFIXES)


def sign_directory(engine: Engine, in_dir: Path, out_dir: Path, *, group: str, actor: str, site: str | None = None,
                   on_item: Callable[[BatchItem], None] | None = None) -> BatchReport:
    engine.config.group(group)
    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[BatchItem] = []
    files = csr_files(in_dir)
    for start in range(0, len(files), CHUNK):
        pending: list[tuple[Path, bytes, Owner]] = []
        for path in files[start:start + CHUNK]:
            found = _owner_for(engine, path, group=group, site=site, actor=actor)
            if isinstance(found, BatchItem):
                items.append(found)
                if on_item is not None:
                    on_item(found)
            else:
                pending.append((path, *found))
        results = engine.authority.issue_many(
            [CsrIssueRequest(csr=data, owner_id=owner.id, issuance=IssuanceKind.BATCH, delivered=False)
             for _path, data, owner in pending], actor=actor)
        for (path, _data, owner), result in zip(pending, results, strict=True):
            item = _write(result, path, owner, out_dir)
            items.append(item)
            if on_item is not None:
                on_item(item)
    items.sort(key=lambda i: i.file)  # the report follows the directory listing, refused or not
    issued = sum(1 for i in items if i.ok)
    return BatchReport(group=group, issued=issued, failed=len(items) - issued, items=items)


def _owner_for(engine: Engine, path: Path, *, group: str, site: str | None, actor: str
               ) -> tuple[bytes, Owner] | BatchItem:
    """Read the CSR and find (or register) the device it names; a refusal comes back as a failed item."""
    try:
        data = path.read_bytes()
        csr = load_csr(data)
        name = common_name(csr.subject)
        if not name:
            return BatchItem(file=path.name, ok=False, error="the CSR has no common name", reason="subject_cn_missing")
        owner = engine.registry.find(group, name=name)
        if owner is None:
            policy = engine.config.group(group)
            uri = _first_uri(csr) if policy.san.uri_source == "owner_application_uri" else None
            # Check the CSR against a provisional registration first: a refused CSR registers nobody.
            provisional = Owner(id="provisional", kind=OwnerKind(policy.owner_kind), name=name, group=group,
                                site=site, created_at=engine.ctx.clock(), application_uri=uri)
            check_csr(csr, policy, group, provisional, reserved=engine.config.reserved_names)
            owner = engine.registry.register(group=group, name=name, site=site, actor=actor, application_uri=uri,
                                             attributes={"registered_by": "batch", "source_file": path.name})
    except OtpkiError as exc:
        return BatchItem(file=path.name, ok=False, error=exc.message, reason=exc.reason)
    except OSError as exc:
        return BatchItem(file=path.name, ok=False, error=f"cannot read: {exc.strerror}", reason="io_error")
    return data, owner


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
    out = out_dir / f"{path.stem}.crt"
    pem = b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM)
                   for d in [result.certificate_der, *result.chain_der])
    write_public(out, pem)
    return BatchItem(file=path.name, ok=True, serial=result.record.serial, owner=owner.name, output=out.name)
