"""gds serve: run the OPC UA Global Discovery Server."""

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from otpki.cli.common import console, engine, handle_errors, settings

if TYPE_CHECKING:
    from opcua_gds.gds.server import GdsServer
    from otpki.listen import Listen

gds_app = typer.Typer(help="The OPC UA Global Discovery Server (OPC 10000-12).", no_args_is_help=True)


@gds_app.command("serve")
@handle_errors
def serve(
    endpoint: Annotated[str | None, typer.Option(
        help="opc.tcp://HOST:PORT/PATH (default: the gds table of otpki.toml)")] = None,
    maintenance_interval: Annotated[float, typer.Option(help="Seconds between CRL/revocation upkeep")] = 300.0,
) -> None:
    """Serve the GDS until interrupted (SIGINT/SIGTERM)."""
    import asyncio

    from opcua_gds.endpoint_url import parse_opc_tcp_url
    from opcua_gds.gds.server import GdsServer
    from otpki.config import CONFIG_FILE
    from otpki.listen import Listen

    if not maintenance_interval > 0:
        raise ValueError(f"--maintenance-interval must be more than 0 seconds, not {maintenance_interval:g}")
    s = settings()
    gds_settings = s.file.gds
    if endpoint is not None:
        parse_opc_tcp_url(endpoint)  # the ValueError says what is wrong with it
        gds_settings = gds_settings.model_copy(update={"endpoint": endpoint})
    listen = Listen(*parse_opc_tcp_url(gds_settings.endpoint), what="the GDS",
                    setting="--endpoint" if endpoint is not None else f"[gds] endpoint in {s.data_dir / CONFIG_FILE}")
    # Before the engine, the key pool and the GDS's own certificate: a GDS that cannot listen starts nothing.
    listen.check()
    with engine(key_pool=True) as (eng, s):
        asyncio.run(_serve(GdsServer(eng, gds_settings, s.data_dir / "gds"), maintenance_interval, listen))


async def _serve(gds: "GdsServer", interval: float, listen: "Listen") -> None:
    import asyncio
    import signal

    from trustlists.maintenance import run_maintenance

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with listen.explained():
        await gds.start()
    upkeep = asyncio.create_task(run_maintenance(gds.engine, interval_s=interval))
    console.print(f"GDS listening on {gds.endpoint}", highlight=False)
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        upkeep.cancel()
        await gds.stop()
        console.print("GDS stopped")
