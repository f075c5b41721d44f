"""What the API and the pages show, gathered from the engine's queries (no number of our own) and shaped for display.

Decoding a certificate's fields for a person to read is presentation; every count, state and date comes from the
engine (inventory pages and counts, the expiry histogram, CA status, CRLs, requests)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from pydantic import BaseModel

from trustlists.engine import Engine
from trustlists.inventory import CertificatePage, ExpiryBucket
from trustlists.models import (
    CertificateRecord,
    CertificateRequest,
    CertificateStatus,
    IssuanceKind,
    ListedCertificate,
    RequestStatus,
)


class CertificateLine(BaseModel):
    serial: str
    subject: str
    group: str
    site: str | None
    owner_id: str | None
    not_after: datetime
    status: CertificateStatus
    issuance: IssuanceKind

    @classmethod
    def of(cls, line: ListedCertificate) -> CertificateLine:
        return cls(serial=line.serial, subject=line.subject, group=line.group, site=line.site,
                   owner_id=line.owner_id, not_after=line.not_after, status=line.status, issuance=line.issuance)


class ChainLink(BaseModel):
    ca_id: str
    name: str
    subject: str
    not_after: datetime
    revoked: bool


class CertificateDetail(BaseModel):
    serial: str
    subject: str
    issuer: str
    group: str
    site: str | None
    owner_id: str | None
    status: CertificateStatus
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    key_type: str
    issuance: IssuanceKind
    issued_at: datetime
    delivered: bool
    superseded_by: str | None
    revoked_at: datetime | None
    revocation_reason: str | None
    san: list[str]
    key_usage: list[str]
    extended_key_usage: list[str]
    chain: list[ChainLink]
    history: list[str]  # audit lines about this certificate, oldest first


class CaHealth(BaseModel):
    ca_id: str
    name: str
    group: str | None
    site: str | None
    not_after: datetime
    active: bool
    revoked: bool
    key_ok: bool | None  # None: not probed
    key_problem: str | None
    crl_number: int | None
    crl_next_update: datetime | None


class CountLine(BaseModel):
    group: str
    site: str | None
    status: str
    certificates: int


class Overview(BaseModel):
    at: datetime
    certificates: int
    counts: list[CountLine]
    expiry: list[ExpiryBucket]
    cas: list[CaHealth]
    requests_waiting: int
    targets: dict[str, int]  # state -> how many push targets are in it


class RequestOut(BaseModel):
    id: str
    kind: str
    owner_id: str
    group: str
    site: str | None
    status: RequestStatus
    subject_name: str | None
    submitted_by: str
    submitted_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    serial: str | None

    @classmethod
    def of(cls, r: CertificateRequest) -> RequestOut:
        return cls(id=r.id, kind=r.kind.value, owner_id=r.owner_id, group=r.group, site=r.site, status=r.status,
                   subject_name=r.subject_name, submitted_by=r.submitted_by, submitted_at=r.submitted_at,
                   decided_by=r.decided_by, decided_at=r.decided_at, serial=r.serial)


def pem(der: bytes, label: str = "CERTIFICATE") -> str:
    import base64

    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def attachment(name: str) -> dict[str, str]:
    safe = "".join(c for c in name if c.isalnum() or c in "._-") or "download"
    return {"Content-Disposition": f'attachment; filename="{safe}"'}


def certificate_page(engine: Engine, *, status: CertificateStatus | None, group: str | None, site: str | None,
                     owner_id: str | None, expiring_within_days: int | None, offset: int, limit: int
                     ) -> CertificatePage:
    within = timedelta(days=expiring_within_days) if expiring_within_days is not None else None
    return engine.inventory.page(status=status, group=group or None, site=site or None, owner_id=owner_id or None,
                                 expiring_within=within, offset=offset, limit=limit)


def certificate_detail(engine: Engine, serial: str) -> CertificateDetail:
    record = engine.inventory.get(serial)
    cert = x509.load_der_x509_certificate(record.der or b"")
    return CertificateDetail(
        serial=record.serial, subject=record.subject, issuer=cert.issuer.rfc4514_string(), group=record.group,
        site=record.site, owner_id=record.owner_id, status=record.status_at(engine.now()),
        not_before=record.not_before, not_after=record.not_after, fingerprint_sha256=record.fingerprint_sha256,
        key_type=record.key_type.value, issuance=record.issuance, issued_at=record.issued_at,
        delivered=record.delivered, superseded_by=record.superseded_by, revoked_at=record.revoked_at,
        revocation_reason=record.revocation_reason.name.lower() if record.revocation_reason is not None else None,
        san=_san(cert), key_usage=_key_usage(cert), extended_key_usage=_eku(cert), chain=_chain(engine, record),
        history=[f"{r.at:%Y-%m-%d %H:%M:%S} {r.actor}: {r.action}"
                 for r in engine.audit_records(subject=record.serial)],
    )


def _san(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for name in ext:
        if isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        else:
            out.append(f"{type(name).__name__}:{name.value}")
    return out


def _key_usage(cert: x509.Certificate) -> list[str]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign"]
    return [n for n in names if getattr(ku, n)]


def _eku(cert: x509.Certificate) -> list[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [getattr(oid, "_name", None) or oid.dotted_string for oid in eku]


def _chain(engine: Engine, record: CertificateRecord) -> list[ChainLink]:
    links: list[ChainLink] = []
    ca_id: str | None = record.issuer_ca_id
    while ca_id is not None and len(links) < 8:
        status = engine.ca_status(ca_id)
        ca = status.record
        subject = x509.load_der_x509_certificate(ca.certificate_der).subject.rfc4514_string()
        links.append(ChainLink(ca_id=ca.id, name=ca.name, subject=subject, not_after=ca.not_after,
                               revoked=status.revoked))
        ca_id = ca.parent_id
    return links


def ca_health(engine: Engine, *, probe: bool) -> list[CaHealth]:
    out = []
    for status in engine.ca_statuses():
        ca = status.record
        crl = engine.latest_crl(ca.id)
        key = engine.probe_ca_key(ca.id) if probe and ca.active else None
        out.append(CaHealth(ca_id=ca.id, name=ca.name, group=ca.group, site=ca.site, not_after=ca.not_after,
                            active=ca.active, revoked=status.revoked, key_ok=key.ok if key else None,
                            key_problem=key.problem if key else None,
                            crl_number=crl.crl_number if crl else None,
                            crl_next_update=crl.next_update if crl else None))
    return out


def overview(engine: Engine, *, probe: bool = False) -> Overview:
    counts = [CountLine(group=c.group, site=c.site, status=c.status, certificates=c.certificates)
              for c in engine.inventory.counts()]
    targets: dict[str, int] = {}
    for target in engine.targets.list():
        targets[target.state.value] = targets.get(target.state.value, 0) + 1
    return Overview(at=engine.now(), certificates=sum(c.certificates for c in counts), counts=counts,
                    expiry=engine.inventory.expiry_by_month(12), cas=ca_health(engine, probe=probe),
                    requests_waiting=len(engine.requests.list(RequestStatus.PENDING)), targets=targets)


def trustlist_export(engine: Engine, group: str, fmt: str) -> tuple[bytes, str, str]:
    """(bytes, media type, file name) of a group's trust list in one of the engine's export formats."""
    import json

    from trustlists.exports import trustlist_to_json, write_pki_folders

    trust = engine.trustlists.get(group, imported=fmt != "mosquitto")
    stem = f"trustlist-{group}-v{trust.version}"
    if fmt == "json":
        return json.dumps(trustlist_to_json(trust), indent=2).encode(), "application/json", f"{stem}.json"
    if fmt == "binary":
        from opcua_gds.trustlist_binary import encode_trustlist

        return encode_trustlist(trust.content), "application/octet-stream", f"{stem}.bin"
    with tempfile.TemporaryDirectory(prefix="otpki-export-") as tmp:
        root = Path(tmp) / "out"
        if fmt == "pki":
            write_pki_folders(trust, root)
        else:
            from mqtt_broker_auth.mosquitto.bundle import write_mosquitto_files

            root.mkdir()
            write_mosquitto_files(trust, root / "ca.pem", root / "crl.pem")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue(), "application/zip", f"{stem}-{fmt}.zip"


class PlcRow(BaseModel):
    id: str
    name: str
    address: str
    group: str
    site: str | None
    state: str
    delivered_serial: str | None
    delivered_trust_version: int | None
    current_trust_version: int | None
    attempts: int
    last_error: str | None  # the PLC's own words (status code and text): from outside, escaped on the page
    next_attempt_at: datetime
    updated_at: datetime


def plc_rows(engine: Engine, *, group: str | None, site: str | None) -> list[PlcRow]:
    targets = engine.targets.list(group=group, site=site)
    versions = {g: engine.trustlists.get(g).version for g in {t.group for t in targets}}
    names = {o.id: o.name for g in {t.group for t in targets} for o in engine.registry.list(g)}
    return [PlcRow(id=t.id, name=names.get(t.owner_id, t.owner_id), address=t.address, group=t.group, site=t.site,
                   state=t.state.value, delivered_serial=t.delivered_serial,
                   delivered_trust_version=t.delivered_trust_version, current_trust_version=versions.get(t.group),
                   attempts=t.attempts, last_error=t.last_error, next_attempt_at=t.next_attempt_at,
                   updated_at=t.updated_at) for t in targets]


class DeviceRow(BaseModel):
    owner_id: str
    name: str
    site: str | None
    bootstrap: bool  # registered with a bootstrap (factory) identity allow-list
    certificate: CertificateLine | None  # the newest certificate of the device (latest not_after)
    last_seen: datetime | None  # when a broker last saw it, as stored (connect, disconnect, every minute online)


def device_rows(engine: Engine, group: str, *, offset: int, limit: int) -> tuple[list[DeviceRow], int]:
    """One page of the group's devices: one engine query, whatever the size of the group."""
    found = engine.registry.page(group, offset=offset, limit=limit)
    return [DeviceRow(owner_id=line.owner.id, name=line.owner.name, site=line.owner.site,
                      bootstrap=bool(line.owner.attributes.get("bootstrap")),
                      certificate=CertificateLine.of(line.newest) if line.newest is not None else None,
                      last_seen=line.last_seen) for line in found.lines], found.total
