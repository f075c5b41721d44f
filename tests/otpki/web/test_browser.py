"""The console in a real headless Chromium (Debian's package, driven by Playwright; never a downloaded browser):
log in with password and TOTP, the overview renders without a console error, a certificate is revoked from its page,
an MQTT device revoked from the console is dropped by the embedded broker on the same engine, "push now" to a simulated
PLC shows each stage live and ends delivered. Screenshots of each page go under the test's tmp dir."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from tests.mqtt_broker_auth.conftest import issue_device
from tests.otpki.web.conftest import PASSWORD, Console
from trustlists.blocking import run_blocking
from trustlists.testing import make_csr

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


async def test_login_overview_and_revoke_in_a_real_browser(console: Console, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    def issue() -> str:
        owner = console.engine.registry.register(group="mqtt-device", name="pump-7", actor="tester")
        return console.engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=owner.id,
                                                       actor="tester").record.serial

    serial = await run_blocking(issue)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # The server certificate chains to the engine's root, which this browser profile does not trust; the
            # TLS chain itself is checked by the API tests (httpx with the root as its only CA).
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in (
                "error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))

            await page.goto(f"{console.url}/")
            assert page.url.endswith("/login")
            await page.screenshot(path=shots / "login.png")
            await page.fill("input[name=name]", "admin")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/login/totp")
            await page.fill("input[name=code]", console.code("admin"))
            await page.screenshot(path=shots / "totp.png")
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{console.url}/")
            assert await page.locator("h1").inner_text() == "Plant overview"
            assert await page.locator("svg.chart rect").count() == 12
            await page.screenshot(path=shots / "overview.png", full_page=True)

            await page.click("nav >> text=Certificates")
            await page.wait_for_url("**/certificates")
            await page.screenshot(path=shots / "certificates.png", full_page=True)
            await page.click(f"a[href='/certificates/{serial}']")
            await page.wait_for_url(f"**/certificates/{serial}")
            assert await page.locator("#state").inner_text() == "active"
            await page.select_option("select[name=reason]", "key-compromise")
            await page.fill("input[name=totp]", console.code("admin"))
            await page.click("#revoke")
            await page.wait_for_url(f"**/certificates/{serial}")
            assert (await page.locator("#state").inner_text()).startswith("revoked")
            await page.screenshot(path=shots / "certificate-revoked.png", full_page=True)

            for name, label in (("requests", "Requests"), ("plcs", "PLCs"), ("devices", "Devices"),
                                ("audit", "Audit log")):
                await page.click(f"nav >> text={label}")
                await page.wait_for_url(f"**/{name}")
                await page.screenshot(path=shots / f"{name}.png", full_page=True)
        finally:
            await browser.close()
    assert problems == []
    record = await run_blocking(console.engine.inventory.get, serial)
    assert record.revoked_at is not None
    assert [r.actor for r in console.engine.audit_records(action="certificate.revoke")] == ["admin"]
    assert {p.name for p in shots.iterdir()} >= {"login.png", "overview.png", "certificate-revoked.png"}


async def log_in(page: Page, console: Console, user: str) -> None:
    await page.goto(f"{console.url}/login")
    await page.fill("input[name=name]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/login/totp")
    await page.fill("input[name=code]", console.code(user))
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{console.url}/")


async def test_a_device_revoked_in_the_console_is_dropped_by_the_embedded_broker(console: Console,
                                                                                 tmp_path: Path) -> None:
    """The simulated device runs on the embedded broker of the console's engine (as under `otpki serve`); an
    admin revokes it from the Devices page (its certificate's page, with a TOTP code) and the broker drops the
    session it holds, and refuses it when it tries again."""
    from playwright.async_api import async_playwright

    engine = console.engine
    broker = EmbeddedBroker(engine, workdir=tmp_path / "broker", port=0)
    await broker.start()
    device: MqttDevice | None = None
    problems: list[str] = []
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        ca_file = tmp_path / "broker-ca.pem"
        ca_file.write_bytes(broker.server_ca_pem())
        workdir = tmp_path / "devices" / "pump-9"
        # Its operational certificate is where the simulator looks: it connects with it (no enrollment needed).
        cert = await run_blocking(issue_device, engine, "pump-9", workdir)
        device = MqttDevice(DeviceConfig(name="pump-9", site="north", port=broker.port, ca_file=ca_file,
                                         workdir=workdir, bootstrap_cert_file=cert.cert_file,
                                         bootstrap_key_file=cert.key_file, telemetry_interval_s=0.2,
                                         reconnect_attempts=2, reconnect_delay_s=0.2))
        assert device.serial_hex is not None
        device.start()
        await asyncio.wait_for(device.online.wait(), 30)
        serial = device.serial_hex
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in (
                    "error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                await log_in(page, console, "admin")
                await page.click("nav >> text=Devices")
                await page.wait_for_url("**/devices")
                row = page.locator("tr", has_text="pump-9")
                assert "active" in await row.inner_text()
                await page.screenshot(path=shots / "devices.png", full_page=True)
                await row.locator(f"a[href='/certificates/{serial}']").click()
                await page.wait_for_url(f"**/certificates/{serial}")
                await page.select_option("select[name=reason]", "key-compromise")
                await page.fill("input[name=totp]", console.code("admin"))
                await page.click("#revoke")
                await page.wait_for_url(f"**/certificates/{serial}")
                assert (await page.locator("#state").inner_text()).startswith("revoked")
                await asyncio.wait_for(device.ended.wait(), 30)  # dropped, and its reconnects refused
                await page.click("nav >> text=Devices")
                await page.wait_for_url("**/devices")
                assert "revoked" in await page.locator("tr", has_text="pump-9").inner_text()
                await page.screenshot(path=shots / "device-revoked.png", full_page=True)
            finally:
                await browser.close()
        assert device.state == DeviceState.REVOKED, (device.state, device.last_error)
        assert DeviceState.ONLINE in device.history
        assert broker.broker is not None and "pump-9" not in broker.broker.sessions
    finally:
        if device is not None:
            await device.stop()
        await broker.stop()
    assert problems == []
    assert [r.actor for r in engine.audit_records(action="certificate.revoke")] == ["admin"]


async def test_push_now_shows_live_progress_and_ends_delivered(console: Console, tmp_path: Path) -> None:
    """The PLCs page's "push now" reads the push's server-sent events (the package's push.js under the CSP) while
    `otpki serve`'s push client pushes to a simulated PLC: the stages appear, then "delivered"."""
    from playwright.async_api import async_playwright

    from opcua_gds.push.settings import PushCredential, PushSettings
    from otpki.config import EnvSettings, FileSettings, build_settings
    from otpki.serve.app import _pusher
    from otpki.web.app import create_app
    from otpki.web.testing import running
    from simulators.plc import PlcSimulator
    from tests.otpki.web.test_push_live import ACCESS
    from trustlists.models import OwnerRegistration
    from trustlists.testing import free_port

    engine = console.engine
    password = tmp_path / "plc-password"
    password.write_text("plc-admin-pw\n")
    settings = build_settings(FileSettings(push=PushSettings(credentials={
        "plc": PushCredential(username="plc-admin", password_file=password)})), tmp_path / "serve", EnvSettings())
    plc = PlcSimulator("plc-b", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", ACCESS)
    await plc.start()
    problems: list[str] = []
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        target = await run_blocking(lambda: engine.add_target(
            owner=OwnerRegistration(group="opcua-application", name="plc-b", application_uri=plc.application_uri,
                                    dns_names=["localhost"], ip_addresses=["127.0.0.1"]),
            kind="opcua-push", address=plc.endpoint, credentials_ref="plc", actor="tester"))
        cert, key = console.tls_files
        app = create_app(engine, pusher=_pusher(engine, settings))
        async with running(app, certfile=cert, keyfile=key) as url, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in (
                    "error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                await log_in(page, Console(url=url, engine=engine, clock=console.clock, tls=console.tls,
                                           secrets=console.secrets, tls_files=console.tls_files), "op")
                await page.click("nav >> text=PLCs")
                await page.wait_for_url("**/plcs")
                await page.locator(f"form[action='/plcs/{target.id}/push'] button").click()
                progress = page.locator("#push-progress")
                await progress.locator("li", has_text="connecting").wait_for(timeout=30_000)
                # (A locator, not wait_for_function: the console's CSP forbids the eval that one needs.)
                await page.locator("#push-progress:not([data-state=running])").wait_for(timeout=120_000)
                assert await progress.get_attribute("data-state") == "delivered", await progress.inner_text()
                assert page.url.endswith("/plcs")  # no form post: the page stayed and showed the stream
                stages = await progress.locator("li").all_inner_texts()
                for stage in ("connecting", "write_trust_list", "update_certificate", "apply_changes",
                              "verify_certificate"):
                    assert any(line.startswith(stage) for line in stages), (stage, stages)
                assert "delivered" in await progress.locator(".result").inner_text()
                await page.screenshot(path=shots / "plcs-push-now.png", full_page=True)
            finally:
                await browser.close()
    finally:
        await plc.stop()
    assert problems == []
    assert (await run_blocking(engine.targets.get, target.id)).delivered_serial is not None
