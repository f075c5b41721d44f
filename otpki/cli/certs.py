"""certs issue/renew/revoke/list/show and batch sign."""

import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from otpki.cli.common import (
    EXIT_PROBLEM,
    GroupOption,
    JsonFlag,
    SerialArg,
    SiteOption,
    console,
    engine,
    err_console,
    handle_errors,
    parse_duration,
    print_columns,
    print_json,
    read_input_file,
    settings,
    write_output_file,
)
from trustlists.enums import CertificateStatus, KeyType
from trustlists.errors import NotFound

if TYPE_CHECKING:
    from datetime import datetime

    from trustlists.authority import KeyFormat
    from trustlists.batch import BatchReport
    from trustlists.engine import Engine
    from trustlists.models import CertificateRecord, IssuedCertificate

certs_app = typer.Typer(help="Issue, renew, revoke and inspect certificates.", no_args_is_help=True)
batch_app = typer.Typer(help="Offline batch issuance for factory lines.", no_args_is_help=True)


def _pem_chain(issued: "IssuedCertificate") -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM)
                    for d in [issued.certificate_der, *issued.chain_der])


def _password(password_file: Path | None) -> str | None:
    if password_file is None:
        return None
    return read_input_file(password_file, "password file").decode().strip()


def _write_issued(issued: "IssuedCertificate", out: Path | None, key_out: Path | None) -> None:
    pem = _pem_chain(issued)
    if out is not None:
        write_output_file(out, pem)
    if issued.private_key is not None:
        if key_out is None:
            raise ValueError("the server generated a key: give --key-out FILE to receive it")
        write_output_file(key_out, issued.private_key, private=True)
    if out is None:
        typer.echo(pem.decode(), nl=False)
    else:
        err_console.print(f"issued serial {issued.record.serial} -> {out}")


@certs_app.command("issue")
@handle_errors
def issue(
    group: Annotated[str, typer.Option(help="Certificate group, e.g. opcua-application")],
    owner: Annotated[str, typer.Option(help="Registered name of the application/device/user")],
    csr: Annotated[Path | None, typer.Option(help="PKCS#10 CSR (PEM or DER)")] = None,
    new_key: Annotated[bool, typer.Option(help="Generate the key here (devices that cannot)")] = False,
    key_type: Annotated[KeyType | None, typer.Option(help="Key type for --new-key")] = None,
    key_format: Annotated[str, typer.Option(help="pem (PKCS#8) or pkcs12")] = "pem",
    password_file: Annotated[Path | None, typer.Option(help="File with the password protecting the new key")] = None,
    out: Annotated[Path | None, typer.Option(help="Write certificate + chain (PEM) here; default stdout")] = None,
    key_out: Annotated[Path | None, typer.Option(help="Where to write the generated private key")] = None,
) -> None:
    """Issue a certificate to a registered owner, from a CSR or with a server-generated key."""
    if (csr is None) == (not new_key):
        raise ValueError("give exactly one of --csr FILE or --new-key")
    with engine() as (eng, s):
        o = eng.registry.find(group, name=owner)
        if o is None:
            raise NotFound(f"{owner!r} is not registered in group {eng.config.group(group) and group}: "
                           f"run `otpki owners add {group} {owner} ...` first")
        if csr is not None:
            issued = eng.authority.issue_from_csr(read_input_file(csr, "CSR"), owner_id=o.id, actor=s.actor())
        else:
            issued = eng.authority.issue_with_new_key(owner_id=o.id, actor=s.actor(), key_type=key_type,
                                                      key_format=_key_format(key_format),
                                                      password=_password(password_file))
    _write_issued(issued, out, key_out)


@certs_app.command("renew")
@handle_errors
def renew(
    serial: SerialArg,
    csr: Annotated[Path | None, typer.Option(help="New CSR (new key chosen by the device)")] = None,
    new_key: Annotated[bool, typer.Option(help="Generate a new key here")] = False,
    key_type: Annotated[KeyType | None, typer.Option(help="Key type for --new-key")] = None,
    key_format: Annotated[str, typer.Option(help="pem or pkcs12")] = "pem",
    password_file: Annotated[Path | None, typer.Option(help="File with the password protecting the new key")] = None,
    out: Annotated[Path | None, typer.Option(help="Write certificate + chain (PEM) here; default stdout")] = None,
    key_out: Annotated[Path | None, typer.Option(help="Where to write the generated private key")] = None,
) -> None:
    """Renew a certificate: same key by default, or a new CSR / server-generated key."""
    if csr is not None and new_key:
        raise ValueError("give at most one of --csr and --new-key")
    with engine() as (eng, s):
        old = eng.inventory.get(serial)
        issued = eng.authority.renew(
            old.serial, actor=s.actor(), csr=read_input_file(csr, "CSR") if csr else None, new_key=new_key,
            key_type=key_type, key_format=_key_format(key_format) if new_key else "pem",
            password=_password(password_file))
    _write_issued(issued, out, key_out)


@certs_app.command("revoke")
@handle_errors
def revoke(
    serial: SerialArg,
    reason: Annotated[str, typer.Option(help="RFC 5280 reason: key-compromise, superseded, "
                                             "cessation-of-operation, affiliation-changed, ...")] = "unspecified",
) -> None:
    """Revoke a certificate (or an issuing CA by its serial); publishes the new CRL and trust lists."""
    from trustlists.models import RevocationReason

    r = RevocationReason.parse(reason)
    with engine() as (eng, s):
        eng.authority.revoke(serial, reason=r, actor=s.actor())
    console.print(f"revoked {serial} ({r.name.lower().replace('_', '-')})")


def _key_format(value: str) -> "KeyFormat":
    """--key-format as the engine types it (the engine refuses other values with this same message)."""
    from trustlists.authority import KeyFormat

    for known in typing.get_args(KeyFormat):
        if value == known:
            return known
    from trustlists.errors import InvalidInput

    raise InvalidInput(f"private key format must be 'pem' or 'pkcs12', not {value!r}")


def _row_json(rec: "CertificateRecord", now: "datetime") -> dict[str, Any]:
    data = rec.model_dump(mode="json", exclude={"der"})
    data["status"] = rec.status_at(now).value
    return data


@certs_app.command("list")
@handle_errors
def list_(
    expiring: Annotated[str | None, typer.Option(help="Only certificates expiring within e.g. 30d")] = None,
    status: Annotated[CertificateStatus | None, typer.Option(help="Only certificates in this state")] = None,
    group: GroupOption = None,
    site: SiteOption = None,
    owner: Annotated[str | None, typer.Option(help="Owner name (needs --group) or id")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many certificates, newest first")] = None,
    json_out: JsonFlag = False,
) -> None:
    """The inventory: every certificate ever issued, with its status."""
    window = parse_duration(expiring) if expiring else None
    with engine() as (eng, _):
        owner_id = None
        if owner is not None:
            found = eng.registry.find(group, name=owner) if group else None
            owner_id = found.id if found else owner
        if json_out:
            rows = eng.inventory.query(status=status, group=group, site=site, owner_id=owner_id,
                                       expiring_within=window, limit=limit)
            now = eng.now()
        else:  # the table needs no full records (10k of them take as long as the rest of the command)
            lines = eng.inventory.listing(status=status, group=group, site=site, owner_id=owner_id,
                                          expiring_within=window, limit=limit)
    if json_out:
        print_json([_row_json(r, now) for r in rows])
        return
    print_columns(("serial", "subject", "group", "site", "status", "not after", "issuance"),
                  [(r.serial, r.subject, r.group, r.site or "-", r.status.value, r.not_after.date().isoformat(),
                    r.issuance.value) for r in lines])
    typer.echo(f"{len(lines)} certificates")


@certs_app.command("reconcile")
@handle_errors
def reconcile(
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE...", help="Certificates (PEM bundle or DER) and CRLs collected from the plant")],
    json_out: JsonFlag = False,
) -> None:
    """Report what the inventory lacks of what is out in the plant: certificates of our CAs it does not know,
    revoked serials it does not hold, CRLs numbered at or above its next number (after a restore from a backup
    older than they are). Exit 1 when anything is missing."""
    documents = [(str(f), read_input_file(f, "certificate or CRL")) for f in files]
    with engine() as (eng, _):
        result = eng.reconcile(documents)
    if json_out:
        print_json({**result.model_dump(mode="json"), "ok": result.ok})
    else:
        for f in result.findings:
            console.print(f"{f.kind}: {f.serial or '-'} ({f.source}): {f.detail}", soft_wrap=True)
        console.print(f"{result.certificates} certificate(s) and {result.crl_entries} CRL entries of our CAs "
                      f"checked, {result.foreign} foreign, {len(result.findings)} missing from the inventory")
    if not result.ok:
        raise typer.Exit(EXIT_PROBLEM)


@certs_app.command("show")
@handle_errors
def show(serial: SerialArg, pem: Annotated[bool, typer.Option(help="Print the certificate as PEM")] = False,
         json_out: JsonFlag = False) -> None:
    """Show one certificate from the inventory."""
    with engine() as (eng, _):
        rec = eng.inventory.get(serial)
        now = eng.now()
    assert rec.der is not None
    if pem:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        typer.echo(x509.load_der_x509_certificate(rec.der).public_bytes(Encoding.PEM).decode(), nl=False)
        return
    data = _row_json(rec, now)
    if json_out:
        print_json(data)
        return
    from rich.table import Table

    table = Table(show_header=False)
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)


@batch_app.command("sign")
@handle_errors
def batch_sign(
    in_dir: Annotated[Path, typer.Argument(help="Directory of CSR files (*.csr, *.pem, *.der)")],
    out_dir: Annotated[Path, typer.Argument(help="Where the certificates are written, one per CSR")],
    group: Annotated[str, typer.Option(help="Certificate group for every CSR")] = "mqtt-device",
    site: SiteOption = None,
    workers: Annotated[int | None, typer.Option(
        min=1, max=64, help="Processes signing at once, each on its own share of the CSRs (default: the number "
                            "of cores)")] = None,
    shard: Annotated[str | None, typer.Option(hidden=True, help="I/N: sign only the I-th of N shares")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Sign every CSR in IN_DIR into OUT_DIR; certificates stay 'issued-not-delivered' until seen in the field.

    Safe to run again over the same CSRs (after an interruption, or from two stations at once): a CSR whose
    key already has an active certificate for its device gets that certificate back ("reused"), and every
    certificate file is written again from the inventory.
    """
    if not in_dir.is_dir():
        raise ValueError(f"{in_dir} is not a directory")
    share = _parse_shard(shard) if shard is not None else None
    workers = workers or os.cpu_count() or 1
    if workers > 1 and share is None:
        report = _sign_in_processes(in_dir, out_dir, group=group, site=site, workers=workers, quiet=json_out)
        _print_batch_report(report, json_out)
        return
    from trustlists.batch import sign_directory

    with engine() as (eng, s):
        eng.config.group(group)
        if json_out:  # no progress bar to draw: not even its import (30 ms of the start-up)
            report = sign_directory(eng, in_dir, out_dir, group=group, site=site, actor=s.actor(), shard=share)
        else:
            report = _sign_with_progress(eng, in_dir, out_dir, group=group, site=site, actor=s.actor(), shard=share)
    _print_batch_report(report, json_out)


def _sign_with_progress(eng: "Engine", in_dir: Path, out_dir: Path, *, group: str, site: str | None, actor: str,
                        shard: tuple[int, int] | None) -> "BatchReport":
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from trustlists.batch import csr_files, sign_directory

    with Progress(TextColumn("signing"), BarColumn(), MofNCompleteColumn(), console=err_console.rich) as progress:
        task = progress.add_task("batch", total=len(csr_files(in_dir, shard)))
        return sign_directory(eng, in_dir, out_dir, group=group, site=site, actor=actor,
                              on_item=lambda _i: progress.advance(task), shard=shard)


def _parse_shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        raise ValueError(f"--shard {text!r}: expected I/N with 1 <= I <= N")
    return int(index) - 1, int(count)


def _sign_in_processes(in_dir: Path, out_dir: Path, *, group: str, site: str | None, workers: int, quiet: bool
                       ) -> "BatchReport":
    """`workers` forked processes, each signing one share of the CSRs (otpki.batch_pool)."""
    from otpki.batch_pool import sign_in_processes

    s = settings()
    s.pki.group(group)  # an unknown group is one clear error, not one per worker

    def done(i: int) -> None:
        if not quiet:
            err_console.print(f"worker {i + 1}/{workers} done")

    return sign_in_processes(s, in_dir, out_dir, group=group, site=site, actor=s.actor(), workers=workers,
                             on_done=done)


def _print_batch_report(report: "BatchReport", json_out: bool) -> None:
    if json_out:
        print_json(report.model_dump(mode="json"))
    else:
        console.print(f"{report.issued} issued, {report.reused} reused, {report.failed} failed")
        if report.failed:
            from rich.table import Table

            table = Table("file", "reason", "error")
            for item in report.items:
                if not item.ok:
                    table.add_row(item.file, item.reason or "", item.error or "")
            console.print(table)
    if report.failed:
        raise typer.Exit(EXIT_PROBLEM)
