"""The console in a real headless Chromium (Debian's package, driven by Playwright; never a downloaded browser):
log in with password and TOTP, the overview renders without a console error, a certificate is revoked from its page,
an MQTT device revoked from the console is dropped by the embedded broker on the same engine, "push now" to a simulated
PLC shows each stage live and ends delivered, a SCADA simulator's GDS signing request approved on the Requests page
lets its FinishRequest succeed. Screenshots of each page go under the test's tmp dir, or into $OTPKI_SCREENSHOT_DIR
when set (how the README's pictures are made:
`OTPKI_SCREENSHOT_DIR=docs/screenshots pytest tests/otpki/web/test_browser.py`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
def screenshot_dir(tmp_path: Path) -> Path:
    """Where this test's screenshots go: $OTPKI_SCREENSHOT_DIR (the README's pictures) or the test's tmp dir."""
    configured = os.environ.get("OTPKI_SCREENSHOT_DIR")
    shots = Path(configured) if configured else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    return shots


ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@asynccontextmanager
async def signed_in_page(console: Console, user: str, *, url: str | None = None, shots: Path | None = None,
                         watch_requests: bool = False) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page of a fresh headless Chromium, logged in to the console at `url` (default: the fixture's) as `user`
    with password and TOTP code; yields it with the list of console errors and warnings and page errors it meets
    (each test asserts it empty at the end). `shots`: screenshots of the two login steps (login.png, totp.png);
    `watch_requests`: failed requests count as problems too."""
    from playwright.async_api import async_playwright

    base = url or console.url
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
            if watch_requests:
                page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            await page.goto(f"{base}/")
            assert page.url.endswith("/login")  # no session: the console sends the browser to log in
            if shots is not None:
                await page.screenshot(path=shots / "login.png")
            await page.fill("input[name=name]", user)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/login/totp")
            await page.fill("input[name=code]", console.code(user))
            if shots is not None:
                await page.screenshot(path=shots / "totp.png")
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/")
            yield page, problems
        finally:
            await browser.close()


async def test_login_overview_and_revoke_in_a_real_browser(console: Console, tmp_path: Path) -> None:
    def issue() -> str:
        owner = console.engine.registry.register(group="mqtt-device", name="pump-7", actor="tester")
        return console.engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=owner.id,
                                                       actor="tester").record.serial

    serial = await run_blocking(issue)
    shots = screenshot_dir(tmp_path)
    async with signed_in_page(console, "admin", shots=shots, watch_requests=True) as (page, problems):
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
            # The audit log is long: its first screenful is the picture (a full page would be ~0.5 MB).
            await page.screenshot(path=shots / f"{name}.png", full_page=name != "audit")
    assert problems == []
    record = await run_blocking(console.engine.inventory.get, serial)
    assert record.revoked_at is not None
    assert [r.actor for r in console.engine.audit_records(action="certificate.revoke")] == ["admin"]
    assert {p.name for p in shots.iterdir()} >= {"login.png", "overview.png", "certificate-revoked.png"}


async def test_a_device_revoked_in_the_console_is_dropped_by_the_embedded_broker(console: Console,
                                                                                 tmp_path: Path) -> None:
    """The simulated device runs on the embedded broker of the console's engine (as under `otpki serve`, whose
    console gets the broker's presence); the Devices page shows it online since it connected; an admin revokes it
    from its certificate's page (with a TOTP code) and the broker drops the session it holds, refuses it when it
    tries again, and the page shows it offline with the time it was last seen."""
    from otpki.web.app import create_app
    from otpki.web.testing import running

    engine = console.engine
    broker = EmbeddedBroker(engine, workdir=tmp_path / "broker", port=0)
    await broker.start()
    device: MqttDevice | None = None
    shots = screenshot_dir(tmp_path)
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
        since = broker.online_devices()["pump-9"]  # the engine's clock when the broker admitted it
        cert_file, key_file = console.tls_files
        app = create_app(engine, presence=broker)
        async with running(app, certfile=cert_file, keyfile=key_file) as url, \
                signed_in_page(console, "admin", url=url) as (page, problems):
            await page.click("nav >> text=Devices")
            await page.wait_for_url("**/devices")
            row = page.locator("tr", has_text="pump-9")
            assert "active" in await row.inner_text()
            assert await row.locator("td.presence").inner_text() == "online"
            assert f"connected since {since:%Y-%m-%d %H:%M:%S}" in await row.inner_text()
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
            row = page.locator("tr", has_text="pump-9")
            assert "revoked" in await row.inner_text()
            assert await row.locator("td.presence").inner_text() == "offline"
            last_seen = broker.last_seen()["pump-9"]
            assert last_seen > since and f"{last_seen:%Y-%m-%d %H:%M:%S}" in await row.inner_text()
            await page.screenshot(path=shots / "device-revoked.png", full_page=True)
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
    shots = screenshot_dir(tmp_path)
    try:
        target = await run_blocking(lambda: engine.add_target(
            owner=OwnerRegistration(group="opcua-application", name="plc-b", application_uri=plc.application_uri,
                                    dns_names=["localhost"], ip_addresses=["127.0.0.1"]),
            kind="opcua-push", address=plc.endpoint, credentials_ref="plc", actor="tester"))
        cert, key = console.tls_files
        app = create_app(engine, pusher=_pusher(engine, settings))
        async with running(app, certfile=cert, keyfile=key) as url, \
                signed_in_page(console, "op", url=url) as (page, problems):
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
        await plc.stop()
    assert problems == []
    assert (await run_blocking(engine.targets.get, target.id)).delivered_serial is not None


async def test_a_gds_request_approved_in_the_console_lets_the_scada_finish(console: Console, tmp_path: Path) -> None:
    """A SCADA simulator asks the GDS (on the console's engine) to sign its CSR; its group needs an approval, so it
    polls FinishRequest (Bad_RequestNotComplete) until a ca-admin approves the request on the Requests page with a
    TOTP code; then FinishRequest hands it the certificate the engine issued, and it serves with it."""
    from opcua_gds.gds.server import GdsServer
    from opcua_gds.gds.settings import GdsSettings
    from simulators.scada import ScadaSettings, ScadaSimulator
    from tests.opcua_gds.gds.gds_fixture import PASSWORDS, access_config
    from trustlists.models import CertificateRequest, RequestStatus
    from trustlists.testing import free_port

    engine = console.engine
    groups = engine.config.groups
    groups["opcua-application"] = groups["opcua-application"].model_copy(update={"auto_approve": False})
    gds_settings = GdsSettings(endpoint=f"opc.tcp://127.0.0.1:{free_port()}/otpki/gds", access=access_config())
    gds = GdsServer(engine, gds_settings, tmp_path / "gds")
    await gds.start()
    sim = ScadaSimulator(ScadaSettings(
        name="scada-north", application_uri="urn:plant:north:scada", pki_dir=tmp_path / "scada-pki",
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}/scada", gds_url=gds_settings.endpoint,
        registrar_user="registrar", registrar_password=PASSWORDS["registrar"][0]))
    shots = screenshot_dir(tmp_path)
    enroll: asyncio.Task[None] | None = None
    try:
        await sim.start()
        enroll = asyncio.create_task(sim.enroll())
        deadline = asyncio.get_running_loop().time() + 60
        pending: list[CertificateRequest] = []
        while not pending:  # the simulator registers, then starts its signing request
            assert not enroll.done(), enroll.exception() if not enroll.cancelled() else "cancelled"
            assert asyncio.get_running_loop().time() < deadline, "no request reached the engine"
            pending = await run_blocking(engine.requests.list, RequestStatus.PENDING, "opcua-application")
            await asyncio.sleep(0.1)
        (waiting,) = pending
        assert not enroll.done()  # it waits for the approval
        async with signed_in_page(console, "admin") as (page, problems):
            await page.click("nav >> text=Requests")
            await page.wait_for_url("**/requests")
            request_id = waiting.id
            row = page.locator("tr", has_text=request_id)
            assert "pending" in await row.inner_text()
            await page.screenshot(path=shots / "requests.png", full_page=True)
            await row.locator("input[name=totp]").fill(console.code("admin"))
            await row.locator("button", has_text="Approve").click()
            await page.wait_for_url("**/requests")
            await asyncio.wait_for(enroll, 60)  # FinishRequest answered with the certificate
            await page.select_option("select[name=status]", "issued")
            await page.click("form.filters button[type=submit]")
            await page.wait_for_url("**/requests?status=issued")
            assert await page.locator("tr", has_text=request_id).locator("a").count() == 1
    finally:
        if enroll is not None and not enroll.done():
            enroll.cancel()
            await asyncio.gather(enroll, return_exceptions=True)
        await sim.stop()
        await gds.stop()
    assert problems == []
    decided = await run_blocking(engine.requests.get, request_id)
    assert decided.status is RequestStatus.ISSUED and decided.decided_by == "admin" and decided.serial is not None
    from cryptography.hazmat.primitives import hashes

    record = await run_blocking(engine.inventory.by_fingerprint, sim.certificate().fingerprint(hashes.SHA256()).hex())
    assert record is not None and record.serial == decided.serial and record.san_uri == "urn:plant:north:scada"
    assert [r.actor for r in engine.audit_records(action="request.approve")] == ["admin"]


async def test_a_site_ca_is_created_and_trust_imported_through_the_console_forms(console: Console,
                                                                                 tmp_path: Path) -> None:
    """On the "CAs & trust" page a ca-admin creates an issuing CA for a site (a group with CAs per site) and imports
    a vendor's CA certificate into a group's trust list, each confirmed with a fresh TOTP code; a wrong PEM is refused
    on the page, its text shown as text; both actions are audited with the user's name."""
    from tests.otpki.web.test_api import self_signed_pem

    engine = console.engine
    # The plant has a site "north", and mqtt-device CAs per site (set on the running engine, as its config says).
    engine.config.sites.append("north")
    engine.config.groups["mqtt-device"] = engine.config.groups["mqtt-device"].model_copy(update={"per_site": True})
    vendor = self_signed_pem("vendor-hmi")
    before = (await run_blocking(engine.trustlists.get, "opcua-application")).version
    shots = screenshot_dir(tmp_path)
    async with signed_in_page(console, "admin") as (page, problems):
        await page.click("nav >> text=CAs & trust")
        await page.wait_for_url("**/trust")
        await page.screenshot(path=shots / "trust.png", full_page=True)

        form = page.locator("form#create-ca")
        await form.locator("select[name=group]").select_option("mqtt-device")
        await form.locator("input[name=site]").fill("north")
        await form.locator("input[name=totp]").fill(console.code("admin"))
        await form.locator("button[type=submit]").click()
        await page.wait_for_url("**/trust?created=*")
        assert "created" in await page.locator("#done").inner_text()
        row = page.locator("tr", has_text="north")
        assert "mqtt-device" in await row.inner_text() and "active" in await row.inner_text()

        form = page.locator("form#import-trust")
        await form.locator("select[name=group]").select_option("opcua-application")
        await form.locator("input[name=note]").fill("vendor HMI")
        await form.locator("textarea[name=data_pem]").fill("<b>not a certificate</b>")
        await form.locator("input[name=totp]").fill(console.code("admin"))
        await form.locator("button[type=submit]").click()
        await page.wait_for_url("**/trust/import")
        assert (await page.locator("#error").inner_text()).startswith("Nothing imported")
        assert await page.locator("#error b").count() == 0  # shown as text, never as markup
        # The refusal's page came with its status (400), which Chromium logs: that one is expected.
        refused = [p for p in problems if "status of 400" in p]
        assert len(refused) == 1, problems
        problems.remove(refused[0])

        form = page.locator("form#import-trust")
        await form.locator("select[name=group]").select_option("opcua-application")
        await form.locator("textarea[name=data_pem]").fill(vendor)
        await form.locator("input[name=totp]").fill(console.code("admin"))
        await form.locator("button[type=submit]").click()
        await page.wait_for_url("**/trust?imported=*")
        assert (await page.locator("#done").inner_text()).startswith("1 imported into the trust list of "
                                                                     "opcua-application")
        await page.screenshot(path=shots / "trust-imported.png", full_page=True)
    assert problems == []
    site_cas = [ca for ca in await run_blocking(engine.hierarchy.list) if ca.site == "north"]
    assert [(ca.group, ca.active) for ca in site_cas] == [("mqtt-device", True)]
    assert (await run_blocking(engine.trustlists.get, "opcua-application")).version == before + 1
    admin_actions = [r.action for r in engine.audit_records() if r.actor == "admin"]
    assert any(a.startswith("ca.") for a in admin_actions) and any(a.startswith("trust") for a in admin_actions)
