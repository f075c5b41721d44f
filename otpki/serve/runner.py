"""`otpki serve` in one event loop: the parts the configuration enables, supervised, until SIGTERM or SIGINT.

On start it prints one line per part and writes `<data dir>/serve/state.json` (pid, each part's address, the
listeners' URLs with the ports actually bound) for scripts and tests; on stop it removes it. Under systemd with
Type=notify it reports READY=1 once every part was started and STOPPING=1 when it stops.

Test-only fault hook: with OTPKI_SERVE_TEST_FAULTS=1 in the environment, SIGUSR1 makes the part named in
`<data dir>/serve/fault` crash (what a part's real crash looks like to the supervisor: it is stopped, reported
and restarted). Never set it in production: it lets anyone who can signal the process interrupt a part.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otpki.config import Settings
from otpki.serve.supervisor import Part, Supervisor
from trustlists.blocking import run_blocking
from trustlists.engine import Engine

if TYPE_CHECKING:
    from otpki.web.presence import DevicePresence

log = logging.getLogger(__name__)

FAULTS_ENV = "OTPKI_SERVE_TEST_FAULTS"
ACTOR = "otpki-serve"


@dataclass(frozen=True)
class ServeOptions:
    listen: str | None = None  # --listen, else [web] listen
    http_listen: str | None = None  # --http-listen, else [web] http_listen
    insecure_http: bool = False  # --insecure-http, or [web] tls = false


def state_dir(s: Settings) -> Path:
    return s.data_dir / "serve"


def web_addresses(s: Settings, options: ServeOptions) -> tuple[Any, bool, Any]:
    """(main address, tls, plain-HTTP address or None), checked: plain HTTP for the console only on loopback."""
    from otpki.config import CONFIG_FILE
    from otpki.web.listener import check_plain_http, parse_listen

    where = s.data_dir / CONFIG_FILE
    main = parse_listen(options.listen, "--listen") if options.listen is not None else parse_listen(
        s.file.web.listen, f"[web] listen in {where}")
    tls = s.file.web.tls and not options.insecure_http
    check_plain_http(main, tls=tls)
    http_text = options.http_listen if options.http_listen is not None else s.file.web.http_listen
    http = None if not http_text else parse_listen(
        http_text, "--http-listen" if options.http_listen is not None else f"[web] http_listen in {where}")
    return main, tls, http


def check_addresses(s: Settings, options: ServeOptions) -> None:
    """Every enabled listener's address can be bound now: one line naming the address and the setting otherwise,
    before anything starts (as the stand-alone commands check theirs). Port 0 is always free."""
    from opcua_gds.endpoint_url import parse_opc_tcp_url
    from otpki.config import CONFIG_FILE
    from otpki.listen import Listen

    where = s.data_dir / CONFIG_FILE
    enabled = s.file.serve
    checks: list[Listen] = []
    if enabled.web:
        main, _tls, http = web_addresses(s, options)
        checks.append(Listen(main.host, main.port, what="the web console", setting=main.setting,
                             allow_any_port=True))
        if http is not None:
            checks.append(Listen(http.host, http.port, what="the plain-HTTP listener", setting=http.setting,
                                 allow_any_port=True))
    if enabled.gds:
        checks.append(Listen(*parse_opc_tcp_url(s.file.gds.endpoint), what="the GDS",
                             setting=f"[gds] endpoint in {where}"))
    if enabled.mqtt and s.file.mqtt.broker == "embedded":
        checks.append(Listen(s.file.mqtt.host, s.file.mqtt.port, what="the MQTT broker", allow_any_port=True,
                             setting=f"[mqtt] host and port in {where}"))
    for listen in checks:
        listen.check()


def build_parts(eng: Engine, s: Settings, options: ServeOptions, supervisor: Supervisor,
                announce: Callable[[str], None]) -> list[Part]:
    """The enabled parts, in start order; the web listener last (its /readyz reads the supervisor's status)."""
    from otpki.serve.app import build_asgi_app, build_plain_http_app
    from otpki.serve.parts import GdsPart, MaintenancePart, PushPart

    enabled = s.file.serve
    parts: list[Part] = [MaintenancePart(eng, s)]
    presence: DevicePresence | None = None  # the embedded broker's part: who is online, for the console's Devices page
    if enabled.gds:
        parts.append(GdsPart(eng, s))
    if enabled.push:
        parts.append(PushPart(eng, s))
    if enabled.mqtt:
        from otpki.serve.mqtt import EmbeddedMqtt, MosquittoMqtt, mosquitto_settings

        mqtt = s.file.mqtt
        if mqtt.broker == "embedded":
            presence = EmbeddedMqtt(eng, s, host=mqtt.host, port=mqtt.port, crl_upkeep=False, announce=announce)
            parts.append(presence)
        else:
            parts.append(MosquittoMqtt(eng, s, mosquitto_settings(s), crl_upkeep=False, announce=announce))
    if enabled.web:
        from otpki.web.listener import WebListeners

        main, tls, http = web_addresses(s, options)
        parts.append(WebListeners(eng, s, main=main, tls=tls, http=http,
                                  main_app=build_asgi_app(eng, s, supervisor, presence),
                                  http_app=build_plain_http_app(eng, s, supervisor) if http else None,
                                  announce=announce))
    return parts


def describe(part: Part) -> str | None:
    from otpki.web.listener import WebListeners

    if isinstance(part, WebListeners):
        return ", ".join(part.addresses().values()) or None
    address = getattr(part, "address", None)
    return address if isinstance(address, str) else None


def _notify(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd gave one."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), path)
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", message, exc)


def _write_state(s: Settings, supervisor: Supervisor, parts: list[Part]) -> None:
    from trustlists.safe_files import write_public

    directory = state_dir(s)
    directory.mkdir(parents=True, exist_ok=True)
    listeners: dict[str, str] = {}
    for part in parts:
        addresses = getattr(part, "addresses", None)
        if callable(addresses):
            listeners.update(addresses())
    state = {"pid": os.getpid(), "listeners": listeners,
             "parts": {st.name: {"state": st.state, "detail": st.detail} for st in supervisor.status()}}
    write_public(directory / "state.json", json.dumps(state, indent=2).encode())


def _audit_done(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not audit a part's failure: %s", task.exception())
    return done


async def run_serve(eng: Engine, s: Settings, options: ServeOptions, announce: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    audits: set[asyncio.Task[None]] = set()

    def failed(name: str, error: str, restarts: int) -> None:
        announce(f"part {name} failed: {error}; restarting (restart {restarts})")
        task = loop.create_task(run_blocking(eng.record_event, actor=ACTOR, action="serve.part_failed",
                                             subject=name, details={"error": error, "restarts": restarts}))
        audits.add(task)
        task.add_done_callback(_audit_done(audits))

    serve = s.file.serve
    supervisor = Supervisor([], initial_backoff_s=serve.restart_initial_s, max_backoff_s=serve.restart_max_s,
                            stop_timeout_s=serve.stop_timeout_s, on_failure=failed, describe=describe)
    parts = build_parts(eng, s, options, supervisor, announce)
    for part in parts:
        supervisor.add(part)
    if os.environ.get(FAULTS_ENV) == "1":
        def inject() -> None:
            try:
                name = (state_dir(s) / "fault").read_text().strip()
            except OSError as exc:
                log.warning("fault hook: %s", exc)
                return
            log.warning("fault hook: crashing %s", name)
            supervisor.inject_fault(name)

        loop.add_signal_handler(signal.SIGUSR1, inject)
    try:
        # A SIGTERM while the parts start (a GDS building its address space) stops at once, not after them.
        starting = asyncio.ensure_future(supervisor.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            starting.result()
            for status in supervisor.status():
                announce(f"{status.name}: {status.state}" + (f" ({status.detail})" if status.detail else "")
                         + (f": {status.last_error}" if status.last_error else ""))
            await run_blocking(_write_state, s, supervisor, parts)
            _notify("READY=1")
            announce("ready; stop with Ctrl-C or SIGTERM")
            await stop.wait()
    finally:
        starting.cancel()
        stopping.cancel()
        _notify("STOPPING=1")
        announce("stopping")
        await supervisor.stop()
        if audits:
            await asyncio.wait(audits, timeout=5)  # a failure reported just before the stop still reaches the log
        (state_dir(s) / "state.json").unlink(missing_ok=True)
        announce("stopped")
