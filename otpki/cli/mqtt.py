"""`otpki mqtt ...`: run the MQTT device front, embedded (amqtt) or on an operator's Mosquitto.

- `serve`             the embedded broker + the enrollment service + live revocation, until SIGINT/SIGTERM
- `mosquitto-config`  broker server certificate, mosquitto.conf, cafile/crlfile and dynsec file for Mosquitto
- `sync`              keep that Mosquitto in step with the engine (+ the enrollment service on it)
- `ca-file`           the CA file devices need to verify the broker

Both brokers get the same enrollment service: an MQTT client with its own engine-issued certificate (owner
`[mqtt] service_name` with `attributes["role"] = "enrollment-service"`), renewed here when it is due.
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from otpki.cli.common import (
    EXIT_PROBLEM,
    console,
    engine,
    err_console,
    handle_errors,
    line,
    settings,
    styled,
    write_output_file,
)

if TYPE_CHECKING:
    import asyncio

    from rich.text import Text

    from otpki.config import Settings
    from otpki.listen import Listen
    from trustlists.engine import Engine

if TYPE_CHECKING:  # for annotations only: the Mosquitto modules are imported where they are used
    from mqtt_broker_auth.mosquitto.config import MosquittoSettings
    from mqtt_broker_auth.mosquitto.sync import SyncReport

mqtt_app = typer.Typer(help="MQTT devices: the embedded broker, an operator's Mosquitto, enrollment over MQTT.",
                       no_args_is_help=True)

_log = logging.getLogger(__name__)


# -- shared pieces ----------------------------------------------------------------------------------------------

def ensure_service_identity(eng: "Engine", s: "Settings", directory: Path) -> tuple[Path, Path]:
    """The enrollment service's certificate and key files (otpki.serve.mqtt.ensure_service_identity)."""
    from otpki.serve.mqtt import ensure_service_identity as ensure

    return ensure(eng, s, directory)


def _stop_event() -> "asyncio.Event":
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _say(text: "str | Text") -> None:
    # soft_wrap: one line per message whatever the width, so logs and scripts can read it
    console.print(text, highlight=False, soft_wrap=True)


def _say_err(text: "str | Text") -> None:
    err_console.print(text, highlight=False, soft_wrap=True)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- serve --------------------------------------------------------------------------------------------------------

@mqtt_app.command("serve")
@handle_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default: [mqtt] host)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: [mqtt] port)")] = None,
    enrollment: Annotated[bool, typer.Option(help="Run the enrollment service on the broker")] = True,
) -> None:
    """Run the embedded MQTT broker (mTLS, per-device ACLs, live revocation) until SIGINT or SIGTERM."""
    import asyncio

    from otpki.config import CONFIG_FILE
    from otpki.listen import Listen

    s = settings()
    given = host is not None or port is not None
    listen = Listen(s.file.mqtt.host if host is None else host, s.file.mqtt.port if port is None else port,
                    what="the MQTT broker", allow_any_port=True,
                    setting="--host/--port" if given else f"[mqtt] host and port in {s.data_dir / CONFIG_FILE}")
    listen.check()  # before the engine and the broker's certificate: a broker that cannot listen starts nothing
    _logging()
    asyncio.run(_serve(s, listen, enrollment))


async def _serve(s: "Settings", listen: "Listen", with_enrollment: bool) -> None:
    from otpki.runtime import open_engine
    from otpki.serve.mqtt import EmbeddedMqtt

    eng = open_engine(s)
    part = EmbeddedMqtt(eng, s, host=listen.host, port=listen.port, enrollment=with_enrollment, announce=_say)
    try:
        stop = _stop_event()
        with listen.explained():
            await part.start()
        _say("ready; stop with Ctrl-C or SIGTERM")
        await stop.wait()
        _say("stopping")
    finally:
        await part.stop()
        eng.close()


# -- Mosquitto ------------------------------------------------------------------------------------------------------

def mosquitto_settings(s: "Settings", workdir: Path | None = None, *, password: bool = True) -> "MosquittoSettings":
    """The library's MosquittoSettings from [mqtt.mosquitto] (otpki.serve.mqtt.mosquitto_settings)."""
    from otpki.serve.mqtt import mosquitto_settings as make

    return make(s, workdir, password=password)


@mqtt_app.command("mosquitto-config")
@handle_errors
def mosquitto_config(
    out: Annotated[Path | None, typer.Option(help="Directory for the broker's files (default: [mqtt.mosquitto] "
                                                  "workdir)")] = None,
    reset_dynsec: Annotated[bool, typer.Option(help="Rewrite the dynsec file even if it exists (drops every "
                                                    "client; `otpki mqtt sync` recreates them)")] = False,
) -> None:
    """Write mosquitto.conf, the server certificate, cafile/crlfile and the dynsec file for your Mosquitto."""
    from mqtt_broker_auth.broker_names import mosquitto_owner_name
    from mqtt_broker_auth.mosquitto.config import render_config
    from mqtt_broker_auth.mosquitto.dynsec_file import write_dynsec_file
    from mqtt_broker_auth.mosquitto.process import provision_broker
    from mqtt_broker_auth.tls_identity import server_ca_pem
    from trustlists.safe_files import write_public

    s = settings()
    ms = mosquitto_settings(s, out)
    cfg = s.file.mqtt
    with engine() as (eng, _):
        provision_broker(eng, ms, group=cfg.group, broker_group=cfg.broker_group, name=mosquitto_owner_name(ms.host),
                         actor=s.actor())
        ca_pem = server_ca_pem(eng, cfg.broker_group)
    write_public(ms.conf_path, render_config(ms).encode())
    write_public(ms.workdir / "server-ca.pem", ca_pem)
    if reset_dynsec or not ms.dynsec_file.exists():
        write_dynsec_file(ms)
    _say(line(f"wrote {ms.conf_path}, {ms.cafile.name}, {ms.crlfile.name}, {ms.certfile.name}, "
              f"{ms.keyfile.name} and {ms.dynsec_file.name} in ", styled(str(ms.workdir), "bold")))
    # -d: Mosquitto 2.0 writes its pid file (which the sync HUPs) only as a daemon; under systemd set
    # [mqtt.mosquitto] reload_command instead.
    _say(f"start the broker:   {ms.binary} -d -c {ms.conf_path}")
    _say("keep it in sync:    otpki mqtt sync"
                  + ("" if out is None else f" --workdir {ms.workdir}"))
    _say(f"devices trust:      {ms.workdir / 'server-ca.pem'} and connect to {ms.host}:{ms.port}")
    m = s.file.mqtt.mosquitto
    if m.bootstrap:
        _say(f"first enrollment:   {m.bootstrap_host}:{m.bootstrap_port}, otpki's bootstrap listener (run by "
             "`otpki mqtt sync`); Mosquitto trusts the engine's CAs only, never an imported manufacturer CA")


@mqtt_app.command("sync")
@handle_errors
def sync(
    workdir: Annotated[Path | None, typer.Option(help="The broker's directory (default: [mqtt.mosquitto] "
                                                      "workdir)")] = None,
    once: Annotated[bool, typer.Option(help="One sync pass, then exit (1 if the new files were refused)")] = False,
    enrollment: Annotated[bool, typer.Option(help="Run the enrollment service on the broker")] = True,
) -> None:
    """Keep Mosquitto's cafile/crlfile and dynsec ACLs in step with the engine, kick revoked devices."""
    import asyncio

    s = settings()
    _logging()
    ms = mosquitto_settings(s, workdir)
    if once:
        report = asyncio.run(_sync_once(s, ms))
        if report.refused:
            _say_err(line(styled("not installed:", "bold red"), f" the new cafile/crlfile were refused "
                          f"({report.refused}); the broker keeps its previous files"))
        _say(f"trust list v{report.trust_version}: files "
                      f"{'installed' if report.files_installed else 'unchanged' if not report.refused else 'refused'}"
                      f"; clients created {len(report.created)}, updated {len(report.updated)}, deleted "
                      f"{len(report.deleted)}; kicked {', '.join(report.kicked) or 'none'}")
        for item in report.foreign_removed:
            _say_err(line(styled("removed foreign dynsec entry: ", "bold yellow"), item))
        if report.refused:
            raise typer.Exit(EXIT_PROBLEM)
        return
    asyncio.run(_sync_forever(s, ms, enrollment))  # an unreachable broker (OSError): handle_errors, one line


async def _sync_once(s: "Settings", ms: "MosquittoSettings") -> "SyncReport":
    from mqtt_broker_auth.mosquitto.sync import MosquittoSync
    from otpki.runtime import open_engine
    from otpki.serve.mqtt import reload_command

    eng = open_engine(s)
    syncer = MosquittoSync(eng, ms, s.file.mqtt.group, reload=reload_command(s))
    try:
        return await syncer.sync_once()
    finally:
        await syncer.close()
        eng.close()


async def _sync_forever(s: "Settings", ms: "MosquittoSettings", with_enrollment: bool) -> None:
    from otpki.runtime import open_engine
    from otpki.serve.mqtt import MosquittoMqtt

    eng = open_engine(s)
    part = MosquittoMqtt(eng, s, ms, enrollment=with_enrollment, announce=_say)
    try:
        stop = _stop_event()
        await part.start()
        _say("ready; stop with Ctrl-C or SIGTERM")
        await stop.wait()
    finally:
        await part.stop()
        eng.close()


# -- ca-file ----------------------------------------------------------------------------------------------------------

@mqtt_app.command("ca-file")
@handle_errors
def ca_file(out: Annotated[Path, typer.Option(help="Where to write the PEM file")]) -> None:
    """Write the CA file a device needs to verify the broker's TLS certificate."""
    from mqtt_broker_auth.tls_identity import server_ca_pem

    cfg = settings().file.mqtt
    with engine() as (eng, _):
        pem = server_ca_pem(eng, cfg.broker_group)
    write_output_file(out, pem)
    _say(f"wrote {out} ({pem.count(b'BEGIN CERTIFICATE')} CA certificates of {cfg.broker_group})")
