"""serve: run everything the configuration enables (GDS, push, CRL upkeep, MQTT, web console) as one service."""

from typing import Annotated

import typer

from otpki.cli.common import console, engine, handle_errors, settings


@handle_errors
def serve(
    listen: Annotated[str | None, typer.Option(
        help="HOST:PORT of the console and API (HTTPS; port 0: any free port). Default: [web] listen")] = None,
    http_listen: Annotated[str | None, typer.Option(
        help="HOST:PORT of a plain-HTTP listener for OCSP and CRLs only. Default: [web] http_listen (off)")] = None,
    insecure_http: Annotated[bool, typer.Option(
        "--insecure-http", help="Serve the console over plain HTTP: only on a loopback address")] = False,
) -> None:
    """Run the enabled parts ([serve] in otpki.toml) in one supervised service until SIGTERM or SIGINT.

    A part that crashes is restarted with backoff, reported in the log, the audit log and /readyz.
    """
    import asyncio
    import logging

    from otpki.serve.runner import ServeOptions, check_addresses, run_serve

    options = ServeOptions(listen=listen, http_listen=http_listen, insecure_http=insecure_http)
    s = settings()
    check_addresses(s, options)  # a refused or taken address is one line and exit 2, before anything starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("asyncua", "amqtt", "gmqtt", "transitions", "uvicorn.error"):
        logging.getLogger(chatty).setLevel(logging.WARNING)  # per-node and per-packet INFO lines drown the parts'

    def announce(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)
        console.file.flush()

    with engine(key_pool=True) as (eng, s):
        asyncio.run(run_serve(eng, s, options, announce))
