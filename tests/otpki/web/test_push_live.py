""""Push now" with live progress: the API's server-sent event stream, read with httpx streaming, over a real
push to a simulated PLC (simulators/plc.py on 127.0.0.1) by the push client `otpki serve` gives the console
(otpki.serve.app._pusher), and a push to an endpoint where nothing listens."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.push.settings import PushCredential, PushSettings
from otpki.config import EnvSettings, FileSettings, build_settings
from otpki.serve.app import _pusher
from otpki.web.app import create_app
from otpki.web.testing import running
from simulators.plc import PlcSimulator
from tests.otpki.web.conftest import Console
from trustlists.blocking import run_blocking
from trustlists.models import OwnerRegistration
from trustlists.testing import eventually, free_port

ACCESS = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                          roles=[GdsRole.SECURITY_ADMIN])])


async def read_events(client: httpx.AsyncClient, url: str, csrf: str,
                      on_first: Callable[[], Awaitable[None]] | None = None) -> tuple[str, list[tuple[str, Any]]]:
    """(content type, [(event, data)]) of one push's stream, read as it arrives; `on_first` runs when the first
    event has come in, before the rest is read."""
    events: list[tuple[str, Any]] = []
    async with client.stream("POST", url, headers={"X-CSRF-Token": csrf}) as res:
        assert res.status_code == 200, await res.aread()
        name = ""
        async for line in res.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                if len(events) == 1 and on_first is not None:
                    await on_first()
        return res.headers["content-type"], events


async def test_push_now_streams_each_stage_and_the_outcome(console: Console, tmp_path: Path) -> None:
    engine = console.engine
    password = tmp_path / "plc-password"
    password.write_text("plc-admin-pw\n")
    settings = build_settings(FileSettings(push=PushSettings(credentials={
        "plc": PushCredential(username="plc-admin", password_file=password)})), tmp_path / "serve", EnvSettings())
    plc = PlcSimulator("plc-live", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", ACCESS)
    await plc.start()
    try:
        live = await run_blocking(lambda: engine.add_target(
            owner=OwnerRegistration(group="opcua-application", name="plc-live", application_uri=plc.application_uri,
                                    dns_names=["localhost"], ip_addresses=["127.0.0.1"]),
            kind="opcua-push", address=plc.endpoint, credentials_ref="plc", actor="tester"))
        dead = await run_blocking(lambda: engine.add_target(
            owner=OwnerRegistration(group="opcua-application", name="plc-dead", application_uri="urn:plc:dead"),
            kind="opcua-push", address=f"opc.tcp://127.0.0.1:{free_port()}/nothing-listens", credentials_ref="plc",
            actor="tester"))
        cert, key = console.tls_files
        app = create_app(engine, pusher=_pusher(engine, settings))
        async with running(app, certfile=cert, keyfile=key) as url, httpx.AsyncClient(
                base_url=url, verify=console.tls, timeout=120) as client:
            csrf = await console.login(client, "op")
            no_csrf = await client.post(f"/api/v1/targets/{live.id}/push/events")
            assert no_csrf.status_code == 403
            seen_while_running: list[str | None] = []

            async def first_event() -> None:
                # Live, not buffered to the end: when the first stage arrives, the push has recorded nothing yet.
                seen_while_running.append((await run_blocking(engine.targets.get, live.id)).delivered_serial)

            content_type, events = await read_events(client, f"/api/v1/targets/{live.id}/push/events", csrf,
                                                     on_first=first_event)
            assert seen_while_running == [None]
            assert content_type.startswith("text/event-stream")
            names = [name for name, _ in events]
            assert names[-1] == "outcome" and set(names[:-1]) == {"step"}
            steps = [data["step"] for name, data in events if name == "step"]
            # In order, as the push went: connecting, connected, trust list written, certificate, applied, verified.
            for stage in ("connecting", "connect", "write_trust_list", "issue", "update_certificate", "apply_changes",
                          "verify_certificate", "verify_trust_list"):
                assert stage in steps, (stage, steps)
            assert steps.index("connecting") < steps.index("write_trust_list") < steps.index("update_certificate") \
                < steps.index("apply_changes") < steps.index("verify_certificate")
            assert all(data["target_id"] == live.id for name, data in events if name == "step")
            outcome = events[-1][1]["outcomes"][0]
            assert (outcome["target_id"], outcome["result"]) == (live.id, "delivered")
            assert (await run_blocking(engine.targets.get, live.id)).delivered_serial == outcome["serial"]

            _, events = await read_events(client, f"/api/v1/targets/{dead.id}/push/events", csrf)
            assert [name for name, _ in events] == ["step", "outcome"]  # connecting, then the refusal
            assert events[0][1]["step"] == "connecting"
            failed = events[1][1]["outcomes"][0]
            assert (failed["result"], failed["step"]) == ("failed", "connect") and failed["status"], failed

            missing = await client.post("/api/v1/targets/nope/push/events", headers={"X-CSRF-Token": csrf})
            assert missing.status_code == 404 and missing.json()["error"]["code"]
        audit = [r for r in engine.audit_records() if r.action == "console.push_now"]
        assert [r.subject for r in audit] == [plc.endpoint, dead.address] and audit[0].actor == "op"
    finally:
        await plc.stop()


async def test_a_listener_that_leaves_does_not_cut_the_push_off(console: Console, tmp_path: Path) -> None:
    """The browser goes away after the first stage: the push goes on to the end (a PLC left with a certificate and
    no trust list would be worse off than either way), and its result is recorded."""
    engine = console.engine
    password = tmp_path / "plc-password"
    password.write_text("plc-admin-pw\n")
    settings = build_settings(FileSettings(push=PushSettings(credentials={
        "plc": PushCredential(username="plc-admin", password_file=password)})), tmp_path / "serve", EnvSettings())
    plc = PlcSimulator("plc-left", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", ACCESS)
    await plc.start()
    try:
        target = await run_blocking(lambda: engine.add_target(
            owner=OwnerRegistration(group="opcua-application", name="plc-left", application_uri=plc.application_uri,
                                    dns_names=["localhost"], ip_addresses=["127.0.0.1"]),
            kind="opcua-push", address=plc.endpoint, credentials_ref="plc", actor="tester"))
        cert, key = console.tls_files
        app = create_app(engine, pusher=_pusher(engine, settings))
        async with running(app, certfile=cert, keyfile=key) as url:
            async with httpx.AsyncClient(base_url=url, verify=console.tls, timeout=120) as client:
                csrf = await console.login(client, "op")
                async with client.stream("POST", f"/api/v1/targets/{target.id}/push/events",
                                         headers={"X-CSRF-Token": csrf}) as res:
                    async for line in res.aiter_lines():
                        if line.startswith("data: "):
                            break  # the first stage came: hang up
            assert (await run_blocking(engine.targets.get, target.id)).delivered_serial is None

            def delivered() -> bool:
                return engine.targets.get(target.id).delivered_serial is not None

            await eventually(delivered, "the push delivered after its listener left", timeout=120)
    finally:
        await plc.stop()
