"""targets add/list and push: deliver certificates and trust lists to PLCs that cannot pull."""

from typing import TYPE_CHECKING, Annotated

import typer

from otpki.cli.common import (
    EXIT_PROBLEM,
    DnsOption,
    GroupOption,
    IpOption,
    JsonFlag,
    SiteOption,
    console,
    engine,
    err_console,
    handle_errors,
    print_json,
    styled,
)
from trustlists.errors import NotFound

if TYPE_CHECKING:
    from rich.text import Text

    from opcua_gds.push.rollout import Rollout, RolloutReport, SkippedTarget, TargetOutcome
    from otpki.config import Settings
    from trustlists.engine import Engine
    from trustlists.targets import DeliveryTarget, TargetPin

ServerSha256Option = Annotated[str | None, typer.Option(
    "--server-sha256", help="SHA-256 fingerprint of the certificate the PLC presents (64 hex digits, colons "
                            "allowed), read from the PLC itself; without it the first push trusts what it sees")]

targets_app = typer.Typer(help="Push targets: PLCs that get certificates and trust lists pushed.",
                          no_args_is_help=True)


@targets_app.command("add")
@handle_errors
def targets_add(
    name: Annotated[str, typer.Argument(help="The PLC's name, registered as its certificate owner")],
    endpoint: Annotated[str, typer.Argument(help="The PLC's OPC UA endpoint, opc.tcp://HOST:PORT/PATH")],
    credentials: Annotated[str, typer.Option(help="Name of a push.credentials.NAME table in otpki.toml")],
    uri: Annotated[str | None, typer.Option(help="The PLC's ApplicationUri (default urn:otpki:plc:NAME)")] = None,
    dns: DnsOption = None,
    ip: IpOption = None,
    site: SiteOption = None,
    server_sha256: ServerSha256Option = None,
) -> None:
    """Register a PLC (an OPC UA server with push management) as a push target.

    Until the PLC holds a certificate from otpki, a push talks to it only if it presents the certificate pinned
    with --server-sha256 (read it from the PLC's display or commissioning sheet). Without it, the first push
    pins what the PLC presents then (trust on first use) and prints the fingerprint to compare.
    """
    from opcua_gds.endpoint_url import parse_opc_tcp_url
    from opcua_gds.push.rollout import KIND
    from trustlists.models import OwnerRegistration
    from trustlists.targets import normalize_fingerprint

    parse_opc_tcp_url(endpoint)  # before anything is registered; the ValueError says what is wrong
    if server_sha256 is not None:
        normalize_fingerprint(server_sha256)  # a typo is refused before the PLC is registered
    with engine() as (eng, s):
        plc = OwnerRegistration(group="opcua-application", name=name, application_uri=uri or f"urn:otpki:plc:{name}",
                                dns_names=dns or [], ip_addresses=ip or [], site=site)
        target = eng.add_target(owner=plc, kind=KIND, address=endpoint, credentials_ref=credentials,
                                actor=s.actor(), pin_sha256=server_sha256)
    console.print(f"push target {name} -> {endpoint} (id {target.id})")
    if target.pin is None:
        err_console.print(f"warning: no --server-sha256 for {name}: the first push trusts the certificate {endpoint} "
                          "presents then, and prints its fingerprint to compare with the PLC's",
                          highlight=False, soft_wrap=True)


@targets_app.command("repin")
@handle_errors
def targets_repin(
    target: Annotated[str, typer.Argument(help="The PLC's endpoint or name")],
    server_sha256: Annotated[str, typer.Option(
        "--server-sha256", help="SHA-256 fingerprint of the certificate the PLC presents now (64 hex digits, "
                                "colons allowed), read from the PLC itself")],
) -> None:
    """Pin the certificate a reset, replaced or re-keyed PLC presents, so that the next push accepts it.

    Needed when a push is refused with BadCertificateUntrusted because the PLC's certificate changed. The pin
    holds until otpki delivers a certificate to the PLC; the target is due at once.
    """
    from opcua_gds.push.server_identity import display_fingerprint
    from trustlists.targets import normalize_fingerprint

    fingerprint = normalize_fingerprint(server_sha256)
    with engine() as (eng, s):
        found = _find_target(eng, target)
        pin = eng.targets.repin(found.id, fingerprint, actor=s.actor())
    console.print(f"push target {found.address} pinned to SHA-256 {display_fingerprint(pin.fingerprint_sha256)}")


def _find_target(eng: "Engine", name_or_endpoint: str) -> "DeliveryTarget":
    from opcua_gds.push.rollout import KIND

    targets = eng.targets.list(kind=KIND)
    by_address = [t for t in targets if t.address == name_or_endpoint]
    if by_address:
        return by_address[0]
    owner = eng.registry.find("opcua-application", name=name_or_endpoint)
    owned = [t for t in targets if owner is not None and t.owner_id == owner.id]
    if len(owned) == 1:
        return owned[0]
    if len(owned) > 1:
        raise ValueError(f"{name_or_endpoint} has {len(owned)} push targets: name one by its endpoint")
    raise NotFound(f"no push target with endpoint or name {name_or_endpoint!r}")


def _identity(t: "DeliveryTarget") -> str:
    """How the target's server is recognised: its pin, its engine certificate, or its first contact."""
    if t.pin is not None:
        return _describe_pin(t.pin)
    if t.delivered_serial is not None:
        return "engine certificate"
    return "first contact (not pinned)"


def _describe_pin(pin: "TargetPin") -> str:
    return f"pinned {pin.fingerprint_sha256[:16]}… ({pin.source.value.replace('_', ' ')})"


# "trust v" shows the version a not-applied target applied last; the state says the newer one did not take.
_STATE_LABEL = {"not_applied": "trust list not applied"}


@targets_app.command("list")
@handle_errors
def targets_list(json_out: JsonFlag = False) -> None:
    """Push targets and what they last received."""
    from rich.table import Table

    from opcua_gds.push.rollout import KIND

    with engine() as (eng, _):
        targets = eng.targets.list(kind=KIND)
    if json_out:
        print_json([t.model_dump(mode="json") for t in targets])
        return
    table = Table("address", "group", "site", "state", "attempts", "next attempt", "serial", "trust v",
                  "server identity", "last error")
    for t in targets:
        state = _STATE_LABEL.get(t.state.value, t.state.value)
        table.add_row(t.address, t.group, t.site or "-", state, str(t.attempts),
                      f"{t.next_attempt_at:%H:%M:%S}", (t.delivered_serial or "-")[:12],
                      str(t.delivered_trust_version or "-"), _identity(t), t.last_error or "")
    console.print(table)


@handle_errors
def push(
    target: Annotated[str | None, typer.Argument(
        metavar="TARGET", help="One target's endpoint or name, pushed even during its backoff; or use "
                               "--all/--group/--site")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every target that needs it")] = False,
    group: GroupOption = None,
    site: SiteOption = None,
    force: Annotated[bool, typer.Option(help="Push even to targets that are up to date or backing off")] = False,
    json_out: JsonFlag = False,
    every: Annotated[float | None, typer.Option(
        help="Keep running: every SECONDS push to whatever is due (renewal window, new trust list after a "
             "revocation or CA change, retries after backoff) until stopped with Ctrl-C or SIGTERM",
        min=1.0)] = None,
) -> None:
    """Push certificates and trust lists: trust list first, then CSR -> issue -> UpdateCertificate -> ApplyChanges.

    Exits 1 when a target failed, did not apply its trust list, or was named and not pushed (up to date:
    --force pushes it anyway). Targets of --all/--group/--site that back off after a failure are skipped until
    their next attempt, and listed; --force pushes them now.
    """
    import asyncio

    if not (target or all_ or group or site):
        raise ValueError("name a TARGET or use --all, --group or --site")
    if every is not None and (target is not None or force):
        # The scheduler serves every due target of the --group/--site selection; it would drop these silently.
        raise ValueError("--every pushes to every due target (narrow it with --group or --site); it takes no "
                         "TARGET and no --force")
    if every is not None:
        with engine(key_pool=True) as (eng, s):
            asyncio.run(_serve(eng, s, group=group, site=site, every=every, json_out=json_out))
        return
    with engine(key_pool=True) as (eng, s):
        endpoint = None if target is None else _find_target(eng, target).address
        report = asyncio.run(_rollout(eng, s, endpoint=endpoint, group=group, site=site, force=force,
                                      quiet=json_out))
    _warn_first_contacts(report.outcomes)
    if json_out:
        print_json(report.model_dump(mode="json"))
    else:
        _print_report(report)
    if report.failed or report.not_applied or (endpoint is not None and report.skipped):
        raise typer.Exit(EXIT_PROBLEM)


_SKIPPED_SHOWN = 10  # a fleet with many targets backing off gets a count, not a page per run


def _print_report(report: "RolloutReport") -> None:
    from rich.table import Table

    if report.outcomes:
        table = Table("address", "reason", "result", "seconds")
        for o in report.outcomes:
            table.add_row(o.address, o.reason, _result(o), f"{o.seconds}")
        console.print(table)
    again = "; those are pushed again after a backoff" if report.failed or report.not_applied else ""
    console.print(f"{report.delivered} delivered, {report.not_applied} trust list not applied, {report.failed} failed"
                  f"{again}, {report.seconds} s")
    for skipped in report.skipped[:_SKIPPED_SHOWN]:
        err_console.print(_skipped(skipped), highlight=False, soft_wrap=True)
    if len(report.skipped) > _SKIPPED_SHOWN:
        err_console.print(f"... and {len(report.skipped) - _SKIPPED_SHOWN} more skipped: `otpki targets list` "
                          "shows every target's state and next attempt", highlight=False, soft_wrap=True)


def _result(o: "TargetOutcome") -> "Text":
    if o.result == "delivered":
        return styled("delivered", "green")
    if o.result == "not_applied":
        return styled(o.error or "trust list not applied", "yellow")
    return styled(o.error or "failed", "red")


def _skipped(t: "SkippedTarget") -> str:
    if t.reason is None:
        return f"skipped {t.address}: up to date, nothing to push; --force pushes it anyway"
    until = f"{t.until:%Y-%m-%d %H:%M:%S} UTC" if t.until is not None else "later"
    last = f" (last: {t.last_error})" if t.last_error else ""
    return (f"skipped {t.address}: backing off until {until}{last}; it needs: {t.reason}. Name it, or use --force, "
            "to push it now")


def _warn_first_contacts(outcomes: "list[TargetOutcome]") -> None:
    """Trust on first use is only as good as the operator's comparison: say what was pinned, on stderr."""
    from opcua_gds.push.server_identity import display_fingerprint

    for o in outcomes:
        if o.first_contact_sha256 is not None:
            err_console.print(f"warning: {o.address} was not pinned; its certificate was pinned at this first contact:"
                              f" SHA-256 {display_fingerprint(o.first_contact_sha256)}. Compare it with the "
                              "fingerprint the PLC shows; if they differ, run `otpki targets repin` with the PLC's",
                              highlight=False, soft_wrap=True)


async def _new_rollout(eng: "Engine", s: "Settings") -> "Rollout":
    from otpki.serve.parts import new_rollout

    return await new_rollout(eng, s)


async def _serve(eng: "Engine", s: "Settings", *, group: str | None, site: str | None, every: float,
                 json_out: bool) -> None:
    import asyncio
    import signal

    rollout = await _new_rollout(eng, s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def report(r: "RolloutReport") -> None:
        _warn_first_contacts(r.outcomes)
        if json_out:
            print_json(r.model_dump(mode="json"))
        else:
            err_console.print(f"push round: {r.delivered} delivered, {r.not_applied} trust list not applied, "
                              f"{r.failed} failed, {r.seconds} s")
            for o in r.outcomes:
                if not o.ok:
                    err_console.print(f"  {o.address}: {o.error}", highlight=False, soft_wrap=True)

    err_console.print(f"pushing to due targets every {every:g} s; Ctrl-C stops")
    await rollout.serve(interval_s=every, stop=stop, on_report=report, group=group, site=site)


async def _rollout(eng: "Engine", s: "Settings", *, endpoint: str | None, group: str | None, site: str | None,
                   force: bool, quiet: bool) -> "RolloutReport":
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    rollout = await _new_rollout(eng, s)
    with Progress(TextColumn("pushing"), BarColumn(), MofNCompleteColumn(), console=err_console.rich,
                  disable=quiet) as progress:
        task = progress.add_task("push", total=None)
        return await rollout.run(group=group, site=site, address=endpoint, force=force,
                                 on_planned=lambda n: progress.update(task, total=n),
                                 on_done=lambda _o: progress.advance(task))
