"""`otpki demo`: the whole plant on embedded defaults, one command (see `plant` for the steps)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from pathlib import Path

from rich.text import Text

from opcua_gds._asyncua_compat import reuse_standard_address_space
from otpki.config_paths import absolute
from otpki.demo.display import LiveDisplay, QuietDisplay, final_table
from otpki.demo.plant import BrokerKind, DemoOptions, Plant
from otpki.demo.report import DemoReport, EndpointTally
from otpki.demo.workspace import (
    MARKER,
    PASSPHRASE_FILE,
    check_demo_store,
    log_to_file,
    prepare_dir,
    site_names,
)

__all__ = ["MARKER", "DemoOptions", "DemoReport", "run_demo"]


class MosquittoMissing(ValueError):
    reason = "mosquitto_not_installed"


def run_demo(data_dir: Path, *, sites: int = 2, plcs: int = 20, scada: int = 2, devices: int = 50,
             broker: BrokerKind = "embedded", show: bool = True, store_url: str | None = None) -> DemoReport:
    """Run the plant; raises ValueError (with `.reason`) for input the user must fix, before touching anything."""
    binary = mosquitto_binary() if broker == "mosquitto" else None
    if broker == "mosquitto" and binary is None:
        raise MosquittoMissing("--broker mosquitto needs mosquitto installed (Debian/Ubuntu: apt install "
                               "mosquitto); or run with the embedded broker (the default)")
    data_dir = absolute(data_dir)  # the PLC worker processes and mosquitto.conf get it as it is here
    if store_url is not None:
        check_demo_store(store_url)
    prepare_dir(data_dir)
    options = DemoOptions(data_dir=data_dir, sites=site_names(sites), plcs=plcs, scada=scada, devices=devices,
                          broker=broker, mosquitto=binary, store_url=store_url)
    handler = log_to_file(data_dir)
    # The GDS, the SCADA servers and the in-process PLCs: one builds asyncua's namespace 0, the others copy it.
    reuse_standard_address_space()
    plant = Plant(options)
    display: QuietDisplay = LiveDisplay(plant.tallies.rows) if show else QuietDisplay()
    plant.display = display
    display.start()
    try:
        report = asyncio.run(_run_until_signal(plant))
    finally:
        display.stop()
        logging.getLogger().removeHandler(handler)
        handler.close()
    if isinstance(display, LiveDisplay):
        _print_summary(display, report, data_dir)
    return report


SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"


def mosquitto_binary(search_path: str | None = None) -> Path | None:
    """mosquitto from PATH, or from the sbin directories a user's PATH often lacks."""
    path = search_path if search_path is not None else f"{os.environ.get('PATH', '')}:{SBIN}"
    broker = shutil.which("mosquitto", path=path)
    return Path(broker) if broker else None


async def _run_until_signal(plant: Plant) -> DemoReport:
    """SIGTERM ends the run like Ctrl-C does: the current step is cancelled and everything started is stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await plant.run()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _print_summary(display: LiveDisplay, report: DemoReport, data_dir: Path) -> None:
    console = display.console
    console.print(final_table(display_rows(report)))
    verdict = Text("demo passed", "bold green") if report.ok else Text("demo failed", "bold red")
    console.print(Text.assemble(verdict, f" in {report.total_seconds:.1f} s — data left in {data_dir} (try: otpki "
                                         f"-d {data_dir} certs list; otpki -d {data_dir} trustlist show "
                                         "opcua-application)"), highlight=False)
    if (data_dir / PASSPHRASE_FILE).exists():
        console.print(Text(f"CA passphrase in {data_dir / PASSPHRASE_FILE}: export OTPKI_CA_PASSPHRASE_FILE="
                           f"{data_dir / PASSPHRASE_FILE} for commands that sign", "dim"), highlight=False)
    if report.console is not None:
        hint = report.console
        console.print(Text.assemble(
            ("Open the plant in the console:", "bold"),
            f"\n  1. a login (password prompt, then scan the TOTP QR code): {hint.add_user}"
            f"\n  2. serve it: {hint.command}"
            f"\n  3. browse {hint.url} (the browser must trust the plant root {hint.root_ca})"), highlight=False)


def display_rows(report: DemoReport) -> dict[str, EndpointTally]:
    return {e.kind: e for e in report.endpoints}
