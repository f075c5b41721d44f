"""`otpki demo`: the whole plant, one command."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from otpki.cli.common import EXIT_PROBLEM, fail, handle_errors, print_json, state

EXIT_INTERRUPTED = 130  # the shell's convention for "ended by SIGINT"


@handle_errors
def demo(
    sites: Annotated[int, typer.Option(min=1, max=16, help="Sites (north, south, east, west, site-5, ...)")] = 2,
    plcs: Annotated[int, typer.Option(min=0, max=1000, help="PLCs managed by push")] = 20,
    scada: Annotated[int, typer.Option(min=0, max=50, help="SCADA servers that pull from the GDS")] = 2,
    devices: Annotated[int, typer.Option(min=0, max=2000, help="MQTT devices that enroll with IDevIDs")] = 50,
    broker: Annotated[Literal["embedded", "mosquitto"], typer.Option(
        help="MQTT broker: the embedded amqtt broker, or a Mosquitto process (needs mosquitto installed)")
    ] = "embedded",
    store: Annotated[str | None, typer.Option(
        "--store", metavar="URL", help="Run the plant on this empty store, e.g. postgresql://user@host:port/db "
                                       "(default: SQLite in the data directory)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="No live display; print the report as JSON")] = False,
) -> None:
    """Run a whole plant on embedded defaults and check every step of the certificate lifecycle.

    CA hierarchy, GDS with SCADA servers pulling, PLCs pushed, MQTT devices enrolling, renewal, revocation
    seen refused. Exit code 0 only when every check held. The data directory (--data-dir, default
    ./demo-data) is wiped only if an earlier demo made it, and is left for `otpki certs list` and
    `otpki trustlist show`.
    """
    import asyncio

    from otpki.demo import run_demo

    data_dir = state.data_dir or Path("demo-data")
    try:
        report = run_demo(data_dir, sites=sites, plcs=plcs, scada=scada, devices=devices, broker=broker,
                          show=not json_out, store_url=store)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # run_demo has stopped every process and server it started before this reaches us.
        raise fail(f"interrupted; everything the demo started is stopped, {data_dir} holds what was done",
                   EXIT_INTERRUPTED) from None
    if json_out:
        print_json(report.model_dump(mode="json"))
    if not report.ok:
        raise fail("a demo step failed its check", EXIT_PROBLEM)
