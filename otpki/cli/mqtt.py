"""`otpki mqtt ...`: run the MQTT device front, embedded (amqtt) or on an operator's Mosquitto.

- `serve`             the embedded broker + the enrollment service + live revocation, until SIGINT/SIGTERM
- `mosquitto-config`  broker server certificate, mosquitto.conf, cafile/crlfile and dynsec file for Mosquitto
- `sync`              keep that Mosquitto in step with the engine (+ the enrollment service on it)
- `ca-file`           the CA file devices need to verify the broker

Both brokers get the same enrollment service: an MQTT client with its own engine-issued certificate (owner
`[mqtt] service_name` with `attributes["role"] = "enrollment-service"`), renewed here when it is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from mqtt_broker_auth.tls_identity import ensure_tls_identity, server_ca_pem
from otpki.cli.common import (
    EXIT_PROBLEM,
    console,
    engine,
    err_console,
    fail,
    handle_errors,
    settings,
    write_output_file,
)
from otpki.config import Settings
from otpki.runtime import open_engine
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.exports._atomic import atomic_write

mqtt_app = typer.Typer(help="MQTT devices: the embedded broker, an operator's Mosquitto, enrollment over MQTT.",
                       no_args_is_help=True)

ENROLLMENT_ROLE = "enrollment-service"
CRL_REFRESH_EVERY_S = 3600.0  # long-running services keep CRLs fresh: Mosquitto locks everyone out on an expired one

_log = logging.getLogger(__name__)


# -- shared pieces ----------------------------------------------------------------------------------------------

def _mqtt_dir(s: Settings) -> Path:
    return s.data_dir / "mqtt"


def ensure_service_identity(eng: Engine, s: Settings, directory: Path) -> tuple[Path, Path]:
    """The enrollment service's certificate and key files: reused while valid, else (re)issued. Blocking."""
    cfg = s.file.mqtt
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_file, key_file = directory / "service.crt", directory / "service.key"
    owner = eng.registry.find(cfg.group, name=cfg.service_name)
    if owner is None:
        owner = eng.registry.register(group=cfg.group, name=cfg.service_name, actor=s.actor(),
                                      attributes={"role": ENROLLMENT_ROLE})
    elif owner.attributes.get("role") != ENROLLMENT_ROLE:
        raise ValueError(f"{cfg.group}/{cfg.service_name} is registered but is not the enrollment service "
                         f"(attributes role = {owner.attributes.get('role')!r}); choose another [mqtt] service_name")
    ensure_tls_identity(eng, owner, cert_file, key_file, eku="clientAuth", actor=s.actor())
    return cert_file, key_file


async def _keep_crls_fresh(eng: Engine, actor: str) -> None:
    while True:
        await asyncio.sleep(CRL_REFRESH_EVERY_S)
        try:
            await run_blocking(eng.authority.refresh_crls, actor=actor)
        except Exception:  # a locked database or an unreachable key: retried next hour, doctor reports it
            _log.exception("CRL refresh failed")


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _say(text: str) -> None:
    # soft_wrap: one line per message whatever the width, so logs and scripts can read it
    console.print(text, highlight=False, soft_wrap=True)


def _say_err(text: str) -> None:
    err_console.print(text, highlight=False, soft_wrap=True)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- serve --------------------------------------------------------------------------------------------------------

@mqtt_app.command("serve")
@handle_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default: \\[mqtt] host)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: \\[mqtt] port)")] = None,
    enrollment: Annotated[bool, typer.Option(help="Run the enrollment service on the broker")] = True,
) -> None:
    """Run the embedded MQTT broker (mTLS, per-device ACLs, live revocation) until SIGINT or SIGTERM."""
    s = settings()
    _logging()
    try:
        asyncio.run(_serve(s, host or s.file.mqtt.host, s.file.mqtt.port if port is None else port, enrollment))
    except OSError as exc:  # a port in use, an unreadable file: one line, not a traceback
        raise fail(str(exc)) from None


async def _serve(s: Settings, host: str, port: int, with_enrollment: bool) -> None:
    from mqtt_broker_auth.embedded_broker import EmbeddedBroker
    from mqtt_broker_auth.enrollment import EnrollmentService

    cfg = s.file.mqtt
    eng = open_engine(s)
    workdir = _mqtt_dir(s)
    broker = EmbeddedBroker(eng, workdir=workdir / "broker", host=host, port=port, group=cfg.group,
                            broker_group=cfg.broker_group, revocation_interval=cfg.revocation_interval_s,
                            limits=cfg.limits)
    service: EnrollmentService | None = None
    refresher: asyncio.Task[None] | None = None
    try:
        stop = _stop_event()
        await broker.start()
        ca_file = workdir / "server-ca.pem"
        await run_blocking(atomic_write, ca_file, broker.server_ca_pem(), mode=0o644)
        _say(f"MQTT broker listening on [bold]{host}:{broker.port}[/] (mTLS, group {cfg.group}); "
                      f"devices trust [bold]{ca_file}[/]")
        if with_enrollment:
            cert_file, key_file = await run_blocking(ensure_service_identity, eng, s, workdir / "enrollment")
            enrollment = cfg.enrollment
            if enrollment.replay_file is None:
                enrollment = enrollment.model_copy(update={"replay_file": workdir / "enrollment" / "replay.json"})
            service = EnrollmentService(eng, host=host, port=broker.port, ca_file=ca_file, cert_file=cert_file,
                                        key_file=key_file, group=cfg.group, settings=enrollment)
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

def mosquitto_settings(s: Settings, workdir: Path | None = None, *, password: bool = True):  # type: ignore[no-untyped-def]
    """The library's MosquittoSettings from [mqtt.mosquitto]; the admin password from its file or env."""
    from mqtt_broker_auth.mosquitto.config import MosquittoSettings

    m = s.file.mqtt.mosquitto
    values: dict[str, object] = {
        "workdir": (workdir or s.mosquitto_workdir()).resolve(), "host": m.host, "port": m.port,
        "admin_host": m.admin_host, "admin_port": m.admin_port, "admin_username": m.admin_username,
        "binary": m.binary, "ctrl_binary": m.ctrl_binary, "openssl_binary": m.openssl_binary,
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
    out: Annotated[Path | None, typer.Option(help="Directory for the broker's files (default: \\[mqtt.mosquitto] "
                                                  "workdir)")] = None,
    reset_dynsec: Annotated[bool, typer.Option(help="Rewrite the dynsec file even if it exists (drops every "
                                                    "client; `otpki mqtt sync` recreates them)")] = False,
) -> None:
    """Write mosquitto.conf, the server certificate, cafile/crlfile and the dynsec file for your Mosquitto."""
    from mqtt_broker_auth.mosquitto.config import render_config
    from mqtt_broker_auth.mosquitto.process import provision_broker, write_dynsec_file

    s = settings()
    ms = mosquitto_settings(s, out)
    cfg = s.file.mqtt
    with engine() as (eng, _):
        provision_broker(eng, ms, group=cfg.group, broker_group=cfg.broker_group, name=f"mosquitto-{ms.host}",
                         actor=s.actor())
        ca_pem = server_ca_pem(eng, cfg.broker_group)
    atomic_write(ms.conf_path, render_config(ms).encode(), mode=0o644)
    atomic_write(ms.workdir / "server-ca.pem", ca_pem, mode=0o644)
    if reset_dynsec or not ms.dynsec_file.exists():
        write_dynsec_file(ms)
    _say(f"wrote {ms.conf_path}, {ms.cafile.name}, {ms.crlfile.name}, {ms.certfile.name}, "
                  f"{ms.keyfile.name} and {ms.dynsec_file.name} in [bold]{ms.workdir}[/]")
    # -d: Mosquitto 2.0 writes its pid file (which the sync HUPs) only as a daemon; under systemd set
    # [mqtt.mosquitto] reload_command instead.
    _say(f"start the broker:   {ms.binary} -d -c {ms.conf_path}")
    _say("keep it in sync:    otpki mqtt sync"
                  + ("" if out is None else f" --workdir {ms.workdir}"))
    _say(f"devices trust:      {ms.workdir / 'server-ca.pem'} and connect to {ms.host}:{ms.port}")


@mqtt_app.command("sync")
@handle_errors
def sync(
    workdir: Annotated[Path | None, typer.Option(help="The broker's directory (default: \\[mqtt.mosquitto] "
                                                      "workdir)")] = None,
    once: Annotated[bool, typer.Option(help="One sync pass, then exit (1 if the new files were refused)")] = False,
    enrollment: Annotated[bool, typer.Option(help="Run the enrollment service on the broker")] = True,
) -> None:
    """Keep Mosquitto's cafile/crlfile and dynsec ACLs in step with the engine, kick revoked devices."""
    s = settings()
    _logging()
    ms = mosquitto_settings(s, workdir)
    if once:
        report = asyncio.run(_sync_once(s, ms))
        if report.refused:
            _say_err(f"[bold red]not installed:[/] the new cafile/crlfile were refused ({report.refused}); "
                              "the broker keeps its previous files")
        _say(f"trust list v{report.trust_version}: files "
                      f"{'installed' if report.files_installed else 'unchanged' if not report.refused else 'refused'}"
                      f"; clients created {len(report.created)}, updated {len(report.updated)}, deleted "
                      f"{len(report.deleted)}; kicked {', '.join(report.kicked) or 'none'}")
        for cn, why in report.skipped_bootstrap.items():
            _say(f"bootstrap CN {cn!r} has no dynsec client: {why}")
        if report.refused:
            raise typer.Exit(EXIT_PROBLEM)
        return
    try:
        asyncio.run(_sync_forever(s, ms, enrollment))
    except OSError as exc:
        raise fail(str(exc)) from None


def _reload(s: Settings):  # type: ignore[no-untyped-def]
    """How the sync tells Mosquitto to reload: the configured command, else SIGHUP via the pid file."""
    command = s.file.mqtt.mosquitto.reload_command
    if not command:
        return None  # MosquittoSync's default: hup_from_pid_file

    def run() -> None:
        try:
            res = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OtpkiError(f"reload command {command} failed: {exc}", reason="mosquitto_reload_failed") from None
        if res.returncode != 0:
            raise OtpkiError(f"reload command {command} exited {res.returncode}: "
                             f"{(res.stderr or res.stdout).strip()[-300:]}", reason="mosquitto_reload_failed")
    return run


async def _sync_once(s: Settings, ms):  # type: ignore[no-untyped-def]
    from mqtt_broker_auth.mosquitto.sync import MosquittoSync

    eng = open_engine(s)
    syncer = MosquittoSync(eng, ms, s.file.mqtt.group, reload=_reload(s))
    try:
        return await syncer.sync_once()
    finally:
        await syncer.close()
        eng.close()


async def _sync_forever(s: Settings, ms, with_enrollment: bool) -> None:  # type: ignore[no-untyped-def]
    from mqtt_broker_auth.enrollment import EnrollmentService
    from mqtt_broker_auth.mosquitto.sync import MosquittoSync

    cfg = s.file.mqtt
    eng = open_engine(s)
    syncer = MosquittoSync(eng, ms, cfg.group, interval_s=cfg.mosquitto.sync_interval_s, reload=_reload(s))
    service: EnrollmentService | None = None
    runner: asyncio.Task[None] | None = None
    refresher: asyncio.Task[None] | None = None
    try:
        stop = _stop_event()
        if with_enrollment:
            # The service's identity first, so the first round gives it its dynsec client before it subscribes.
            cert_file, key_file = await run_blocking(ensure_service_identity, eng, s, ms.workdir / "enrollment")
        report = await syncer.sync_once()
        _say(f"Mosquitto {ms.host}:{ms.port} in sync with {cfg.group} trust list v{report.trust_version}")
        if with_enrollment:
            ca_file = ms.workdir / "server-ca.pem"
            await run_blocking(atomic_write, ca_file, server_ca_pem(eng, cfg.broker_group), mode=0o644)
            enrollment = cfg.enrollment
            if enrollment.replay_file is None:
                enrollment = enrollment.model_copy(update={"replay_file": ms.workdir / "enrollment" / "replay.json"})
            service = EnrollmentService(eng, host=ms.host, port=ms.port, ca_file=ca_file, cert_file=cert_file,
                                        key_file=key_file, group=cfg.group, settings=enrollment)
            await service.start()
            _say(f"enrollment service {service.client_id} answering {service.prefix}/+/csr")
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
        if service is not None:
            await service.stop()
        eng.close()


# -- ca-file ----------------------------------------------------------------------------------------------------------

@mqtt_app.command("ca-file")
@handle_errors
def ca_file(out: Annotated[Path, typer.Option(help="Where to write the PEM file")]) -> None:
    """Write the CA file a device needs to verify the broker's TLS certificate."""
    cfg = settings().file.mqtt
    with engine() as (eng, _):
        pem = server_ca_pem(eng, cfg.broker_group)
    write_output_file(out, pem)
    _say(f"wrote {out} ({pem.count(b'BEGIN CERTIFICATE')} CA certificates of {cfg.broker_group})")
