"""`otpki mqtt ...`: run the MQTT device front, embedded (amqtt) or on an operator's Mosquitto.

- `serve`             the embedded broker + the enrollment service + live revocation, until SIGINT/SIGTERM
- `mosquitto-config`  broker server certificate, mosquitto.conf, cafile/crlfile and dynsec file for Mosquitto
- `sync`              keep that Mosquitto in step with the engine (+ the enrollment service on it)
- `ca-file`           the CA file devices need to verify the broker

Both brokers get the same enrollment service: an MQTT client with its own engine-issued certificate (owner
`[mqtt] service_name` with `attributes["role"] = "enrollment-service"`), renewed here when it is due.
"""

import logging
from collections.abc import Callable
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
from trustlists.errors import OtpkiError

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

CRL_REFRESH_EVERY_S = 3600.0  # long-running services keep CRLs fresh: Mosquitto locks everyone out on an expired one

_log = logging.getLogger(__name__)


# -- shared pieces ----------------------------------------------------------------------------------------------

def _mqtt_dir(s: "Settings") -> Path:
    return s.data_dir / "mqtt"


def ensure_service_identity(eng: "Engine", s: "Settings", directory: Path) -> tuple[Path, Path]:
    """The enrollment service's certificate and key files: reused while valid, else (re)issued. Blocking."""
    from mqtt_broker_auth.tls_identity import ensure_tls_identity
    from trustlists.models import OwnerRole

    cfg = s.file.mqtt
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_file, key_file = directory / "service.crt", directory / "service.key"
    owner = eng.registry.find(cfg.group, name=cfg.service_name)
    if owner is None:
        owner = eng.registry.register(group=cfg.group, name=cfg.service_name, actor=s.actor(),
                                      role=OwnerRole.ENROLLMENT_SERVICE)
    elif owner.role is not OwnerRole.ENROLLMENT_SERVICE:
        raise ValueError(f"{cfg.group}/{cfg.service_name} is registered but is not the enrollment service "
                         f"(role {owner.attributes.get('role')!r}); choose another [mqtt] service_name")
    ensure_tls_identity(eng, owner, cert_file, key_file, eku="clientAuth", actor=s.actor())
    return cert_file, key_file


async def _keep_crls_fresh(eng: "Engine", actor: str) -> None:
    import asyncio

    from trustlists.blocking import run_blocking

    while True:
        await asyncio.sleep(CRL_REFRESH_EVERY_S)
        try:
            await run_blocking(eng.authority.refresh_crls, actor=actor)
        except Exception:  # a locked database or an unreachable key: retried next hour, doctor reports it
            _log.exception("CRL refresh failed")


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
    import asyncio
    import contextlib

    from mqtt_broker_auth.embedded.broker import EmbeddedBroker
    from mqtt_broker_auth.enrollment.service import EnrollmentService
    from otpki.runtime import open_engine
    from trustlists.blocking import run_blocking
    from trustlists.safe_files import write_public

    cfg = s.file.mqtt
    eng = open_engine(s)
    workdir = _mqtt_dir(s)
    host = listen.host
    broker = EmbeddedBroker(eng, workdir=workdir / "broker", host=host, port=listen.port, group=cfg.group,
                            broker_group=cfg.broker_group, revocation_interval=cfg.revocation_interval_s,
                            limits=cfg.limits)
    service: EnrollmentService | None = None
    refresher: asyncio.Task[None] | None = None
    try:
        stop = _stop_event()
        with listen.explained():
            await broker.start()
        ca_file = workdir / "server-ca.pem"
        await run_blocking(write_public, ca_file, broker.server_ca_pem())
        _say(line("MQTT broker listening on ", styled(f"{host}:{broker.port}", "bold"),
                  f" (mTLS, group {cfg.group}); devices trust ", styled(str(ca_file), "bold")))
        if with_enrollment:
            cert_file, key_file = await run_blocking(ensure_service_identity, eng, s, workdir / "enrollment")
            service = EnrollmentService(eng, host=host, port=broker.port, ca_file=ca_file, cert_file=cert_file,
                                        key_file=key_file, group=cfg.group, settings=cfg.enrollment)
            await service.start()
            _say(f"enrollment service {service.client_id} answering {service.prefix}/+/csr")
        refresher = asyncio.create_task(_keep_crls_fresh(eng, s.actor()))
        _say("ready; stop with Ctrl-C or SIGTERM")
        await stop.wait()
        _say("stopping")
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        if service is not None:
            await service.stop()
        await broker.stop()
        eng.close()


# -- Mosquitto ------------------------------------------------------------------------------------------------------

def mosquitto_settings(s: "Settings", workdir: Path | None = None, *, password: bool = True) -> "MosquittoSettings":
    """The library's MosquittoSettings from [mqtt.mosquitto]; the admin password from its file or env."""
    from pydantic import SecretStr

    from mqtt_broker_auth.mosquitto.config import MosquittoSettings

    m = s.file.mqtt.mosquitto
    values: dict[str, object] = {
        "workdir": (workdir or s.mosquitto_workdir()).resolve(), "host": m.host, "port": m.port,
        "admin_host": m.admin_host, "admin_port": m.admin_port, "admin_username": m.admin_username,
        "binary": m.binary, "openssl_binary": m.openssl_binary,
        "dynsec_plugin": m.dynsec_plugin, "crl_min_remaining_s": m.crl_min_remaining_s, "tls_version": m.tls_version,
    }
    if m.run_as_user:
        values["run_as_user"] = m.run_as_user
    if password:
        values["admin_password"] = SecretStr(s.mqtt_admin_password())
    return MosquittoSettings.model_validate(values)


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


def _reload(s: "Settings") -> "Callable[[], None] | None":
    """How the sync tells Mosquitto to reload: the configured command, else SIGHUP via the pid file."""
    command = s.file.mqtt.mosquitto.reload_command
    if not command:
        return None  # MosquittoSync's default: hup_from_pid_file

    def run() -> None:
        import subprocess

        try:
            res = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OtpkiError(f"reload command {command} failed: {exc}", reason="mosquitto_reload_failed") from None
        if res.returncode != 0:
            raise OtpkiError(f"reload command {command} exited {res.returncode}: "
                             f"{(res.stderr or res.stdout).strip()[-300:]}", reason="mosquitto_reload_failed")
    return run


async def _sync_once(s: "Settings", ms: "MosquittoSettings") -> "SyncReport":
    from mqtt_broker_auth.mosquitto.sync import MosquittoSync
    from otpki.runtime import open_engine

    eng = open_engine(s)
    syncer = MosquittoSync(eng, ms, s.file.mqtt.group, reload=_reload(s))
    try:
        return await syncer.sync_once()
    finally:
        await syncer.close()
        eng.close()


async def _sync_forever(s: "Settings", ms: "MosquittoSettings", with_enrollment: bool) -> None:
    import asyncio
    import contextlib

    from mqtt_broker_auth.embedded.broker import EmbeddedBroker
    from mqtt_broker_auth.enrollment.service import EnrollmentService
    from mqtt_broker_auth.mosquitto.sync import MosquittoSync
    from mqtt_broker_auth.tls_identity import server_ca_pem
    from otpki.runtime import open_engine
    from trustlists.blocking import run_blocking
    from trustlists.safe_files import write_public

    cfg = s.file.mqtt
    m = cfg.mosquitto
    eng = open_engine(s)
    syncer = MosquittoSync(eng, ms, cfg.group, interval_s=m.sync_interval_s, reload=_reload(s))
    services: list[EnrollmentService] = []
    bootstrap: EmbeddedBroker | None = None
    runner: asyncio.Task[None] | None = None
    refresher: asyncio.Task[None] | None = None
    try:
        stop = _stop_event()
        if with_enrollment:
            # The service's identity first, so the first round gives it its dynsec client before it subscribes.
            cert_file, key_file = await run_blocking(ensure_service_identity, eng, s, ms.workdir / "enrollment")
        report = await syncer.sync_once()
        _say(f"Mosquitto {ms.host}:{ms.port} in sync with {cfg.group} trust list v{report.trust_version} "
             "(engine CAs only)")
        if with_enrollment:
            ca_file = ms.workdir / "server-ca.pem"
            await run_blocking(write_public, ca_file, server_ca_pem(eng, cfg.broker_group))
            endpoints = [(ms.host, ms.port, "renewals on Mosquitto")]
            if m.bootstrap:
                # First enrollment with manufacturer or factory certificates: otpki's own listener, whose gate
                # admits such a certificate only as the device that allow-lists it, on its enrollment topics.
                bootstrap = EmbeddedBroker(eng, workdir=ms.workdir / "bootstrap", host=m.bootstrap_host,
                                           port=m.bootstrap_port, group=cfg.group, broker_group=cfg.broker_group,
                                           revocation_interval=cfg.revocation_interval_s, mode="bootstrap")
                await bootstrap.start()
                _say(f"bootstrap listener on {m.bootstrap_host}:{bootstrap.port} (first enrollment with an IDevID "
                     "or factory certificate)")
                endpoints.append((m.bootstrap_host, bootstrap.port, "first enrollment on the bootstrap listener"))
            for host, port, what in endpoints:
                service = EnrollmentService(eng, host=host, port=port, ca_file=ca_file, cert_file=cert_file,
                                            key_file=key_file, group=cfg.group, settings=cfg.enrollment)
                await service.start()
                services.append(service)
                _say(f"enrollment service {service.client_id} answering {service.prefix}/+/csr ({what})")
        runner = asyncio.create_task(syncer.run())
        refresher = asyncio.create_task(_keep_crls_fresh(eng, s.actor()))
        _say("ready; stop with Ctrl-C or SIGTERM")
        await stop.wait()
    finally:
        syncer.stop()
        for task in (refresher,):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if runner is not None:
            await runner
        else:
            await syncer.close()
        for service in services:
            await service.stop()
        if bootstrap is not None:
            await bootstrap.stop()
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
