"""trustlist show/export/import/remove."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from otpki.cli.common import (
    GroupArg,
    JsonFlag,
    console,
    engine,
    handle_errors,
    line,
    print_json,
    read_input_file,
    styled,
    write_output_file,
)

trustlist_app = typer.Typer(help="Versioned trust lists per certificate group.", no_args_is_help=True)


class ExportFormat(StrEnum):
    binary = "binary"
    pki = "pki"
    mosquitto = "mosquitto"
    json = "json"


class ListName(StrEnum):
    trusted = "trusted"
    issuer = "issuer"


@trustlist_app.command("show")
@handle_errors
def show(group: GroupArg, json_out: JsonFlag = False) -> None:
    """Show a group's current trust list: version, content hash and every certificate and CRL."""
    from rich.table import Table

    from trustlists.exports import trustlist_to_json

    with engine() as (eng, _):
        tl = eng.trustlists.get(group)
    data = trustlist_to_json(tl)
    if json_out:
        print_json(data)
        return
    console.print(line(styled(group, "bold"), f" version {tl.version}, sha256 {tl.content_hash[:16]}…, "
                       f"since {tl.created_at:%Y-%m-%d %H:%M:%S}"))
    table = Table("list", "subject / issuer", "detail")
    for list_name in ("trusted_certificates", "issuer_certificates"):
        for c in data.get(list_name) or []:
            table.add_row(list_name.replace("_", " "), c["subject"], f"valid until {c['not_after'][:10]}")
    for list_name in ("trusted_crls", "issuer_crls"):
        for c in data.get(list_name) or []:
            table.add_row(list_name.replace("_", " "), c["issuer"],
                          f"#{c['crl_number']}, {c['entries']} entries, next {c['next_update'][:16]}")
    console.print(table)


@trustlist_app.command("export")
@handle_errors
def export(
    group: GroupArg,
    out: Annotated[Path, typer.Option(help="File (binary, json), folder (pki, mosquitto)")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="binary | pki | mosquitto | json")] = ExportFormat.pki,
) -> None:
    """Export a group's trust list as OPC UA TrustListDataType, a PKI folder tree, Mosquitto files or JSON.

    The Mosquitto files hold the engine's own CAs only: Mosquitto takes a certificate's CN as the identity
    whoever issued it, so an imported (manufacturer) CA there could mint any device's or service's name.
    """
    from mqtt_broker_auth.mosquitto.bundle import write_mosquitto_files
    from opcua_gds.trustlist_binary import encode_trustlist
    from trustlists.exports import trustlist_to_json, write_pki_folders

    with engine() as (eng, _):
        # Mosquitto maps certificate CN -> identity without asking the engine: only the engine's CAs go there.
        tl = eng.trustlists.get(group, imported=fmt is not ExportFormat.mosquitto)
    if fmt is ExportFormat.binary:
        write_output_file(out, encode_trustlist(tl.content))
    elif fmt is ExportFormat.json:
        import json

        write_output_file(out, json.dumps(trustlist_to_json(tl), indent=2).encode())
    elif fmt is ExportFormat.pki:
        summary = write_pki_folders(tl, out)
        console.print(f"PKI folders at {out}: {summary.added} added, {summary.removed} removed, {summary.kept} kept")
        return
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_mosquitto_files(tl, out / "ca.pem", out / "crl.pem")
    console.print(f"trust list {group} v{tl.version} -> {out}")


@trustlist_app.command("import")
@handle_errors
def import_(
    group: GroupArg,
    file: Annotated[Path, typer.Argument(help="PEM bundle or DER file of certificates, or a CRL")],
    list_name: Annotated[ListName, typer.Option("--list", help="trusted (anchor) or issuer (chain only)")] = (
        ListName.trusted),
    note: Annotated[str, typer.Option(help="Why this is trusted (kept in the audit log)")] = "",
) -> None:
    """Import external trust: a vendor's self-signed certificate, a manufacturer CA, or a CRL of one."""
    data = read_input_file(file, "file")
    with engine() as (eng, s):
        fps = eng.trustlists.import_external(group, data, list_name=list_name.value, note=note, actor=s.actor())
        tl = eng.trustlists.get(group)
    console.print(f"imported {len(fps)} item(s) into {group} ({list_name.value}); trust list now v{tl.version}")


@trustlist_app.command("remove")
@handle_errors
def remove(group: GroupArg, fingerprint: Annotated[str, typer.Argument(
        help="SHA-256 of the imported item, from `otpki trustlist show`")]) -> None:
    """Remove imported trust by its SHA-256 fingerprint."""
    with engine() as (eng, s):
        eng.trustlists.remove_external(group, fingerprint, actor=s.actor())
    console.print(f"removed {fingerprint} from {group}")
