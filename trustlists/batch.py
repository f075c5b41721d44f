"""Batch issuance for factory lines: sign a directory of CSRs without any connectivity to the devices.

Every CSR gets a result (issued, or the specific reason it was refused); one bad file never stops the
batch. Certificates are recorded as issued-but-never-delivered until the device is seen in the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel

from trustlists.csr_checks import check_csr
from trustlists.der import common_name, load_csr
from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.models import IssuanceKind, Owner, OwnerKind

CSR_SUFFIXES = {".csr", ".pem", ".der", ".req"}


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
    for path in csr_files(in_dir):
        item = _sign_one(engine, path, out_dir, group=group, site=site, actor=actor)
        items.append(item)
        if on_item is not None:
            on_item(item)
    issued = sum(1 for i in items if i.ok)
    return BatchReport(group=group, issued=issued, failed=len(items) - issued, items=items)


def _sign_one(engine: Engine, path: Path, out_dir: Path, *, group: str, site: str | None, actor: str) -> BatchItem:
    try:
        data = path.read_bytes()
        csr = load_csr(data)
        name = common_name(csr.subject)
        if not name:
            return BatchItem(file=path.name, ok=False, error="the CSR has no common name", reason="subject_cn_missing")
        owner = engine.registry.find(group, name=name)
        if owner is None:
            uri = None
            try:
                san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                uris = san.get_values_for_type(x509.UniformResourceIdentifier)
                uri = uris[0] if uris else None
            except x509.ExtensionNotFound:
                pass
            policy = engine.config.group(group)
            # Check the CSR against a provisional registration first: a refused CSR registers nobody.
            provisional = Owner(id="provisional", kind=OwnerKind(policy.owner_kind), name=name, group=group,
                                site=site, created_at=engine.ctx.clock(),
                                application_uri=uri if policy.san.uri_source == "owner_application_uri" else None)
            check_csr(csr, policy, group, provisional)
            owner = engine.registry.register(
                group=group, name=name, site=site, actor=actor,
                application_uri=uri if policy.san.uri_source == "owner_application_uri" else None,
                attributes={"registered_by": "batch", "source_file": path.name})
        issued = engine.authority.issue_from_csr(data, owner_id=owner.id, actor=actor,
                                                 issuance=IssuanceKind.BATCH, delivered=False)
    except OtpkiError as exc:
        return BatchItem(file=path.name, ok=False, error=exc.message, reason=exc.reason)
    except OSError as exc:
        return BatchItem(file=path.name, ok=False, error=f"cannot read: {exc.strerror}", reason="io_error")
    out = out_dir / f"{path.stem}.crt"
    pem = b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM)
                   for d in [issued.certificate_der, *issued.chain_der])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(pem)
    tmp.replace(out)
    return BatchItem(file=path.name, ok=True, serial=issued.record.serial, owner=name, output=out.name)
