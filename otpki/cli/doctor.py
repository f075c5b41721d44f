"""`otpki doctor`: check a deployment and exit non-zero when something needs an operator."""

from typing import Annotated

import typer

from otpki.cli.common import (
    EXIT_PROBLEM,
    JsonFlag,
    console,
    engine,
    handle_errors,
    parse_duration,
    print_json,
    styled,
)

_LEVEL = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "bold red")}


@handle_errors
def doctor(
    expiring: Annotated[str, typer.Option(help="Warn about certificates ending within this time (e.g. 30d)")] = "30d",
    probe: Annotated[bool, typer.Option(help="Also open a TCP connection to every push target")] = False,
    show_ok: Annotated[bool, typer.Option("--all", help="List passing checks too")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Check CA keys, CRLs, expiring certificates, push targets and the audit log; exit 1 on any failure."""
    from otpki.doctor import examine, mqtt_checks, secret_checks

    window = parse_duration(expiring)
    with engine() as (eng, settings):
        report = examine(eng, expiry_window=window, probe_targets=probe,
                         extra=[*mqtt_checks(eng, settings), *secret_checks(settings)])
    if json_out:
        print_json({"failures": len(report.failures), "warnings": len(report.warnings),
                    "findings": [f.model_dump() for f in report.findings]})
    else:
        from rich.table import Table

        table = Table("check", "subject", "level", "detail")
        for f in report.findings:
            if show_ok or f.level != "ok":
                table.add_row(f.check, f.subject, styled(*_LEVEL[f.level]), f.detail)
        if table.row_count:
            console.print(table)
        console.print(f"{len(report.failures)} failure(s), {len(report.warnings)} warning(s), "
                      f"{sum(f.level == 'ok' for f in report.findings)} check(s) passed")
    if report.failures:
        raise typer.Exit(EXIT_PROBLEM)
