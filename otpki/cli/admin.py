"""init, ca, owners, crl, audit."""

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from otpki.cli.common import (
    EXIT_PROBLEM,
    GroupArg,
    GroupOption,
    JsonFlag,
    console,
    engine,
    err_console,
    handle_errors,
    line,
    print_json,
    settings,
    styled,
)
from trustlists.errors import AlreadyExists, InvalidInput, NotFound

if TYPE_CHECKING:  # for annotations only: nothing more imported when the CLI starts
    from trustlists.engine import Engine
    from trustlists.models import BootstrapPin, CARecord, Owner

ca_app = typer.Typer(help="The CA hierarchy: list CAs, create issuing CAs.", no_args_is_help=True)
owners_app = typer.Typer(help="Registered applications, devices and users.", no_args_is_help=True)
crl_app = typer.Typer(help="Certificate revocation lists.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@handle_errors
def init(
    config: Annotated[Path | None, typer.Option(
        help="otpki.toml to start from (copied into the data directory; relative paths in it are taken from "
             "there)")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", help="A plant site (repeatable)")] = None,
    organization: Annotated[str | None, typer.Option(help="Organization name in CA subjects")] = None,
    hsm: Annotated[bool, typer.Option(help="Create CA keys in the PKCS#11 token of [keys.pkcs11]")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Create a data directory with an offline root CA and an issuing CA per certificate group.

    The CA key passphrase comes from OTPKI_CA_PASSPHRASE or OTPKI_CA_PASSPHRASE_FILE (never the command line);
    with --hsm the keys are created in the token and the PIN comes from OTPKI_HSM_PIN.
    """
    import tomllib

    import tomli_w

    from otpki.config import CONFIG_FILE, build_settings, deep_merge, validate_file_settings
    from otpki.runtime import open_engine
    from otpki.undo import claimed
    from trustlists.safe_files import write_secret

    s = settings(must_exist=False)
    data_dir = s.data_dir
    if (data_dir / "otpki.db").exists():
        raise AlreadyExists(f"{data_dir} is already initialised; use `otpki ca list` to see its CAs")
    data: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(config.read_text())
        except FileNotFoundError:
            raise InvalidInput(f"config file {config} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{config} is not valid TOML: {exc}") from None
    overrides: dict[str, Any] = {}
    if hsm:
        overrides["keys"] = {"backend": "pkcs11"}
    if organization:
        overrides.setdefault("pki", {})["organization"] = organization
    if site:
        overrides.setdefault("pki", {})["sites"] = list(site)
    data = deep_merge(data, overrides)
    # Validate the combined configuration before anything is written into the data directory.
    s = build_settings(validate_file_settings(data, config or data_dir / CONFIG_FILE), data_dir, s.env)
    # All or nothing: a store that cannot be reached, a wrong password, a key that cannot be made leave no
    # otpki.toml, no key file and no half data directory behind (and no CA in the store: one transaction).
    with claimed(data_dir, "the data directory"):
        if (data_dir / "otpki.db").exists():  # again, now that no other init can be writing it
            raise AlreadyExists(f"{data_dir} is already initialised; use `otpki ca list` to see its CAs")
        eng = open_engine(s)  # connects to the store first: nothing is written if it cannot be used
        try:
            # 0600: it may hold the GDS users' password hashes.
            write_secret(data_dir / CONFIG_FILE, ("# otpki configuration: see the README's 'Configuration' "
                                                  "section\n" + tomli_w.dumps(data)).encode())
            created = eng.hierarchy.create_plant(actor=s.actor())
            # Made now, so that copies of the data directory for other instances on the store carry it.
            eng.accounts.prepare_secrets_key()
            cas = eng.hierarchy.list()
        finally:
            eng.close()
    if json_out:
        print_json([_ca_json(c) for c in cas])
        return
    console.print(line("Initialised ", styled(str(data_dir), "bold"), f" with {len(created)} CAs:"))
    _print_cas(cas)


def _ca_json(ca: "CARecord") -> dict[str, Any]:
    return ca.model_dump(mode="json", exclude={"certificate_der"})


def _print_cas(cas: "Iterable[CARecord]") -> None:
    from rich.table import Table

    table = Table("id", "name", "group", "site", "key", "backend", "valid until", "active")
    for ca in cas:
        table.add_row(ca.id, ca.name, ca.group or "-", ca.site or "-", ca.key_type.value, ca.key_backend,
                      f"{ca.not_after:%Y-%m-%d}", "yes" if ca.active else "no")
    console.print(table)


@ca_app.command("list")
@handle_errors
def ca_list(json_out: JsonFlag = False) -> None:
    """List every CA: the root and the issuing CAs."""
    with engine() as (eng, _):
        cas = eng.hierarchy.list()
    if json_out:
        print_json([_ca_json(c) for c in cas])
    else:
        _print_cas(cas)


@ca_app.command("create")
@handle_errors
def ca_create(group: GroupArg,
              site: Annotated[str | None, typer.Option(help="Site, for per-site groups")] = None) -> None:
    """Create a new issuing CA (or a new generation of one) for GROUP, signed by the root."""
    with engine() as (eng, s):
        ca = eng.hierarchy.create_issuing_ca(group, site, actor=s.actor())
    console.print(line("created issuing CA ", styled(ca.id, "bold"),
                       f" ({ca.name}), valid until {ca.not_after:%Y-%m-%d}"))


@owners_app.command("add")
@handle_errors
def owners_add(
    group: Annotated[str, typer.Argument(help="Certificate group, e.g. mqtt-device or opcua-application")],
    name: Annotated[str, typer.Argument(help="Registered name: CN of its certificates, MQTT client id")],
    uri: Annotated[str | None, typer.Option(help="ApplicationUri (OPC UA applications)")] = None,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="Registered DNS name (repeatable)")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="Registered IP address (repeatable)")] = None,
    site: Annotated[str | None, typer.Option(help="Plant site (one of [pki] sites)")] = None,
    bootstrap_cn: Annotated[list[str] | None, typer.Option(
        "--bootstrap-cn", help="MQTT devices: subject CN of the manufacturer IDevID that may enroll this device "
                               "(repeatable)")] = None,
    bootstrap_sha256: Annotated[list[str] | None, typer.Option(
        "--bootstrap-sha256", help="MQTT devices: SHA-256 fingerprint of a factory certificate that may enroll "
                                   "this device (repeatable); a self-signed one must also be imported with "
                                   "`otpki trustlist import` so TLS accepts it")] = None,
) -> None:
    """Register an application, device or user in GROUP so certificates can be issued to it."""
    with engine() as (eng, s):
        entries = _bootstrap_entries(eng, group, name, bootstrap_cn or [], bootstrap_sha256 or [])
        attributes: dict[str, object] = {"bootstrap": entries} if entries else {}
        owner = eng.registry.register(group=group, name=name, site=site, application_uri=uri, dns_names=dns or [],
                                      ip_addresses=ip or [], actor=s.actor(), attributes=attributes)
        unanchored = [fp for o, fp in eng.bootstrap.unanchored_fingerprints(group) if o.id == owner.id]
    console.print(line(f"registered {owner.kind.value} ", styled(name, "bold"), f" in {group} (id {owner.id})"))
    for entry in entries:
        console.print(f"  may enroll over MQTT with {', '.join(f'{k} {v}' for k, v in entry.items())}",
                      highlight=False)
    warn_unanchored(group, unanchored)


def warn_unanchored(group: str, fingerprints: list[str]) -> None:
    """A fingerprint-only entry works at TLS only if the certificate chains to the trust list: say so now."""
    for fp in fingerprints:
        err_console.print(line(styled("warning:", "bold yellow"),
                               f" sha256 {fp} is not in the {group} trust list: if it is a self-signed factory "
                               f"certificate, import it too (otpki trustlist import {group} CERT.pem), or every "
                               "broker listener refuses it in the TLS handshake"), highlight=False, soft_wrap=True)


def _bootstrap_entries(eng: "Engine", group: str, name: str, cns: list[str],
                       fingerprints: list[str]) -> list[dict[str, str]]:
    """`attributes["bootstrap"]` for an MQTT device: the allow-list the enrollment service and the broker read."""
    if not cns and not fingerprints:
        return []
    if "mqtt" not in eng.config.group(group).fronts:
        raise InvalidInput(f"--bootstrap-cn/--bootstrap-sha256 are for MQTT device groups; {group} has no MQTT "
                           "front ([pki.groups.<group>.fronts.mqtt])", reason="bootstrap_not_mqtt_group")
    entries: list[dict[str, str]] = []
    owners = [o for o in eng.registry.list(group) if o.name != name]  # rearm replaces the device's own list
    taken = {o.name for o in owners} | {name}
    for cn in dict.fromkeys(cns):
        if not cn.strip() or any(c in cn for c in "\x00\n\r"):
            raise InvalidInput(f"--bootstrap-cn {cn!r} is empty or has control characters", reason="bad_bootstrap_cn")
        if cn in taken:
            # Mosquitto knows a client by its certificate CN only: the IDevID would get that identity's ACL.
            raise InvalidInput(f"--bootstrap-cn {cn!r} is a registered name in {group}; an IDevID with that CN "
                               "would act as that identity on Mosquitto", reason="bootstrap_cn_is_registered_name")
        for other in owners:
            from trustlists.bootstrap_allowlist import allow_list

            if any(entry.subject_cn == cn for entry in allow_list(other)):
                raise InvalidInput(f"--bootstrap-cn {cn!r} already belongs to {other.name}",
                                   reason="bootstrap_cn_ambiguous")
        entries.append({"subject_cn": cn})
    for fp in dict.fromkeys(fingerprints):
        norm = fp.lower().replace(":", "")
        if len(norm) != 64 or any(c not in "0123456789abcdef" for c in norm):
            raise InvalidInput(f"--bootstrap-sha256 {fp!r} is not a SHA-256 fingerprint (64 hex digits)",
                               reason="bad_bootstrap_sha256")
        entries.append({"sha256": norm})
    return entries


@owners_app.command("list")
@handle_errors
def owners_list(group: GroupOption = None,
                json_out: JsonFlag = False) -> None:
    """List registered owners."""
    with engine() as (eng, _):
        if group:
            eng.config.group(group)
        owners = eng.registry.list(group)
        pins = eng.bootstrap.pins(group)
    if json_out:
        print_json([{**o.model_dump(mode="json"),
                     "bootstrap_pin": pins[o.id].model_dump(mode="json") if o.id in pins else None} for o in owners])
        return
    from rich.table import Table

    table = Table("name", "kind", "group", "site", "application uri", "bootstrap", "id")
    for o in owners:
        table.add_row(o.name, o.kind.value, o.group, o.site or "-", o.application_uri or "-",
                      _bootstrap_state(o, pins.get(o.id)), o.id)
    console.print(table)


def _bootstrap_state(owner: "Owner", pin: "BootstrapPin | None") -> str:
    """"pinned <sha256 prefix>" once enrolled with a bootstrap certificate, "armed" while it may enroll."""
    from trustlists.bootstrap_allowlist import allow_list

    if pin is not None:
        return f"pinned {pin.fingerprint_sha256[:16]}…"
    return "armed" if allow_list(owner) else "-"


@owners_app.command("rearm")
@handle_errors
def owners_rearm(
    group: GroupArg,
    name: Annotated[str, typer.Argument(help="Registered name of the device")],
    bootstrap_cn: Annotated[list[str] | None, typer.Option(
        "--bootstrap-cn", help="Replace the allow-list: subject CN of the new IDevID (repeatable)")] = None,
    bootstrap_sha256: Annotated[list[str] | None, typer.Option(
        "--bootstrap-sha256", help="Replace the allow-list: SHA-256 fingerprint of the new factory certificate "
                                   "(repeatable)")] = None,
) -> None:
    """Let a device enroll again with a new bootstrap certificate (a replaced part, a factory reset that made a
    new IDevID): releases the certificate it is pinned to. Its current certificates are revoked as superseded
    when it enrolls."""
    with engine() as (eng, s):
        owner = eng.registry.find(group, name=name)
        if owner is None:
            raise NotFound(f"{name!r} is not registered in group {group}", reason="unknown_owner")
        allow: list[dict[str, str]] | None = None
        if bootstrap_cn or bootstrap_sha256:
            allow = _bootstrap_entries(eng, group, name, bootstrap_cn or [], bootstrap_sha256 or [])
        released = eng.bootstrap.rearm(owner.id, actor=s.actor(), allow=allow)
        unanchored = [fp for o, fp in eng.bootstrap.unanchored_fingerprints(group) if o.id == owner.id]
    if released is not None:
        console.print(line("re-armed ", styled(name, "bold"), f": released the pin to {released.subject} "
                           f"(issuer {released.issuer}, sha256 {released.fingerprint_sha256})"), highlight=False)
    else:
        console.print(line(f"{name} was not pinned"), highlight=False)
    if allow is not None:
        for entry in allow:
            console.print(line(f"  may enroll over MQTT with {', '.join(f'{k} {v}' for k, v in entry.items())}"),
                          highlight=False)
    warn_unanchored(group, unanchored)


@crl_app.command("refresh")
@handle_errors
def crl_refresh(force: Annotated[bool, typer.Option(help="Re-sign every CRL, not only those due")] = False) -> None:
    """Re-sign CRLs that are close to their nextUpdate (run it from cron or the service)."""
    with engine() as (eng, s):
        result = eng.authority.refresh_crls(actor=s.actor(), force=force)
    for crl in result.published:
        console.print(f"{crl.ca_id}: CRL #{crl.crl_number}, {crl.entries} entries, next update "
                      f"{crl.next_update:%Y-%m-%d %H:%M}")
    for ca_id, why in result.failed.items():
        console.print(line(styled(f"{ca_id}: CRL not refreshed:", "bold red"), f" {why}"))
    if not result.published and not result.failed:
        console.print("all CRLs are fresh")
    if result.failed:
        raise typer.Exit(EXIT_PROBLEM)


@audit_app.command("verify")
@handle_errors
def audit_verify(json_out: JsonFlag = False) -> None:
    """Check the audit log's hash chain: exit 1 if a record was edited or deleted."""
    with engine() as (eng, _):
        result = eng.verify_audit()
    if json_out:
        print_json(result.model_dump())
    elif result.ok:
        console.print(f"audit log intact: {result.records} records")
    else:
        console.print(line(styled("audit log tampered:", "bold red"), f" {result.problem}"))
    if not result.ok:
        raise typer.Exit(EXIT_PROBLEM)


@audit_app.command("log")
@handle_errors
def audit_log(json_out: JsonFlag = False,
              last: Annotated[int, typer.Option(help="Show the last N records")] = 50) -> None:
    """Show the audit log."""
    with engine() as (eng, _):
        records = eng.audit_records()[-last:]
    if json_out:
        print_json([r.model_dump(mode="json") for r in records])
        return
    from rich.table import Table

    table = Table("seq", "at", "actor", "action", "subject")
    for r in records:
        table.add_row(str(r.seq), f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.action, r.subject)
    console.print(table)
