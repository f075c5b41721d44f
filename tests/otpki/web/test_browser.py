"""The console in a real headless Chromium (Debian's package, driven by Playwright; never a downloaded browser):
log in with password and TOTP, the overview renders without a console error, a certificate is revoked from its page.
Screenshots of each page go under the test's tmp dir."""

from __future__ import annotations

from pathlib import Path

from tests.otpki.web.conftest import PASSWORD, Console
from trustlists.blocking import run_blocking
from trustlists.testing import make_csr

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
