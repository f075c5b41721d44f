"""The console's pages over HTTPS on a real uvicorn: two-step login, CSRF on every form, TOTP on CA-admin forms,
escaping of what comes from outside (a certificate whose CN holds `<script>`)."""

from __future__ import annotations

import re

import httpx

from tests.otpki.web.conftest import PASSWORD, Console
from trustlists.blocking import run_blocking
from trustlists.testing import make_csr

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


async def page_login(console: Console, client: httpx.AsyncClient, user: str) -> str:
    """Log in through the forms; returns the session's CSRF token (from the overview's logout form)."""
    form = await client.get("/login")
    res = await client.post("/login", data={"name": user, "password": PASSWORD, "csrf_token": csrf_of(form.text)})
    assert (res.status_code, res.headers.get("location")) == (303, "/login/totp"), res.text
    step = await client.get("/login/totp")
    res = await client.post("/login/totp", data={"code": console.code(user), "csrf_token": csrf_of(step.text)})
    assert (res.status_code, res.headers.get("location")) == (303, "/"), res.text
    overview = await client.get("/")
    assert overview.status_code == 200
    return csrf_of(overview.text)


async def test_pages_need_a_complete_login(console: Console) -> None:
    async with console.client() as client:
        for path in ("/", "/certificates", "/requests", "/audit"):
            res = await client.get(path)
            assert (res.status_code, res.headers.get("location")) == (303, "/login"), path
        form = await client.get("/login")
        assert "default-src 'none'" in form.headers["content-security-policy"]
        res = await client.post("/login", data={"name": "view", "password": PASSWORD})
        assert res.status_code == 403  # no login-form token
        res = await client.post("/login", data={"name": "view", "password": "wrong password",
                                                "csrf_token": csrf_of(form.text)})
        assert res.status_code == 401 and "unknown user or wrong password" in res.text
        res = await client.post("/login", data={"name": "view", "password": PASSWORD,
                                                "csrf_token": csrf_of(form.text)})
        assert res.status_code == 303
        # Past the password, before the code: still no page.
        assert (await client.get("/")).headers.get("location") == "/login"
        step = await client.get("/login/totp")
        res = await client.post("/login/totp", data={"code": "12345", "csrf_token": csrf_of(step.text)})
        assert res.status_code == 403 and "wrong TOTP code" in res.text


async def test_overview_certificates_and_the_revoke_form(console: Console) -> None:
    def issue() -> str:
        owner = console.engine.registry.register(group="mqtt-device", name="pump-7", actor="tester")
        return console.engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=owner.id,
                                                       actor="tester").record.serial

    serial = await run_blocking(issue)
    async with console.client() as client:
        csrf = await page_login(console, client, "admin")
        overview = (await client.get("/")).text
        assert "Plant overview" in overview and "<svg" in overview and "mqtt-device" in overview
        assert "MQTT devices online (no embedded broker to ask)" in overview  # no broker: not a guessed 0
        listing = await client.get("/certificates", params={"group": "mqtt-device", "status": "active"})
        assert serial in listing.text
        assert (await client.get("/certificates", params={"q": serial})).headers["location"] == \
            f"/certificates/{serial}"
        detail = await client.get(f"/certificates/{serial}")
        assert 'id="revoke"' in detail.text
        path = f"/certificates/{serial}/revoke"
        res = await client.post(path, data={"reason": "key-compromise", "totp": console.code("admin")})
        assert res.status_code == 403 and "CSRF" in res.text
        res = await client.post(path, data={"reason": "key-compromise", "csrf_token": csrf})
        assert res.status_code == 403 and "TOTP" in res.text
        res = await client.post(path, data={"reason": "key-compromise", "csrf_token": csrf,
                                            "totp": console.code("admin")})
        assert (res.status_code, res.headers["location"]) == (303, f"/certificates/{serial}")
        detail = await client.get(f"/certificates/{serial}")
        assert "revoked (key_compromise)" in detail.text
        audit = await client.get("/audit")
        assert "certificate.revoke" in audit.text
        verified = await client.post("/audit/verify", data={"csrf_token": csrf})
        assert "chain intact" in verified.text
    async with console.client() as client:
        await page_login(console, client, "view")
        assert 'id="revoke"' not in (await client.get(f"/certificates/{serial}")).text
        res = await client.post(f"/certificates/{serial}/revoke", data={"reason": "superseded"})
        assert res.status_code == 403


async def test_what_comes_from_outside_is_escaped(console: Console) -> None:
    def issue() -> str:
        # OPC UA applications choose their subject CN (the group's policy takes any): a CN from outside.
        owner = console.engine.registry.register(group="opcua-application", name="hmi-3", actor="tester",
                                                 application_uri="urn:plant:hmi-3")
        return console.engine.authority.issue_from_csr(make_csr(EVIL, uris=["urn:plant:hmi-3"]), owner_id=owner.id,
                                                       actor="tester").record.serial

    serial = await run_blocking(issue)
    async with console.client() as client:
        await page_login(console, client, "view")
        for path in ("/certificates", f"/certificates/{serial}", "/audit"):
            html = (await client.get(path)).text
            assert "<script>" not in html and "<img" not in html, path
        assert "&lt;script\\&gt;" in (await client.get(f"/certificates/{serial}")).text  # RFC 4514 escapes, then HTML


async def test_requests_page_approves_with_totp_and_rejects(console: Console) -> None:
    def submit() -> list[str]:
        ids = []
        for name in ("alice", "bob"):
            owner = console.engine.registry.register(group="opcua-user", name=name, actor="tester")
            ids.append(console.engine.requests.submit_csr(owner.id, make_csr(name), actor="front",
                                                          requester_fingerprint=None).id)
        return ids

    first, second = await run_blocking(submit)
    async with console.client() as client:
        csrf = await page_login(console, client, "admin")
        page = (await client.get("/requests")).text
        assert first in page and second in page
        res = await client.post(f"/requests/{first}/approve", data={"csrf_token": csrf,
                                                                    "totp": console.code("admin")})
        assert res.status_code == 303
        res = await client.post(f"/requests/{second}/reject", data={"csrf_token": csrf, "reason": "no"})
        assert res.status_code == 303
    statuses = {r.id: r.status.value for r in console.engine.requests.list()}
    assert statuses[second] == "rejected" and statuses[first] != "pending"


async def test_logout_ends_the_session(console: Console) -> None:
    async with console.client() as client:
        csrf = await page_login(console, client, "view")
        assert (await client.post("/logout", data={})).status_code == 403
        res = await client.post("/logout", data={"csrf_token": csrf})
        assert res.headers["location"] == "/login"
        assert (await client.get("/")).headers.get("location") == "/login"


async def test_plcs_page_escapes_the_plcs_error_text_and_pushes_now(console: Console) -> None:
    from otpki.web.app import create_app
    from otpki.web.settings import ConsoleSettings
    from otpki.web.testing import running
    from trustlists.models import OwnerRegistration

    def add() -> str:
        target = console.engine.add_target(
            owner=OwnerRegistration(group="opcua-application", name="plc-1", application_uri="urn:plc-1"),
            kind="opcua-push", address="opc.tcp://127.0.0.1:4840", credentials_ref="plc", actor="tester")
        console.engine.targets.record_failure(target.id, error=f"BadSecurityChecksFailed {EVIL}", actor="tester")
        return target.id

    target_id = await run_blocking(add)
    async with console.client() as client:
        await page_login(console, client, "view")
        html = (await client.get("/plcs")).text
        assert "BadSecurityChecksFailed" in html and "<script>" not in html and "<img" not in html
        assert ">Push now</button>" not in html  # a viewer, and no push client in this app

    pushed: list[str] = []

    async def pusher(tid: str) -> dict[str, object]:
        pushed.append(tid)
        return {"delivered": 1, "outcomes": [{"address": "opc.tcp://127.0.0.1:4840", "result": "delivered"}]}

    app = create_app(console.engine, ConsoleSettings(), pusher=pusher)
    cert, key = console.tls_files
    async with running(app, certfile=cert, keyfile=key) as url:
        other = Console(url=url, engine=console.engine, clock=console.clock, tls=console.tls,
                        secrets=console.secrets, tls_files=console.tls_files)
        async with other.client() as client:
            csrf = await page_login(other, client, "op")
            assert ">Push now</button>" in (await client.get("/plcs")).text
            assert (await client.post(f"/plcs/{target_id}/push", data={})).status_code == 403
            res = await client.post(f"/plcs/{target_id}/push", data={"csrf_token": csrf})
            assert res.status_code == 200 and 'id="outcome"' in res.text and "delivered" in res.text
    assert pushed == [target_id]


async def test_devices_page_lists_devices_with_their_newest_certificate(console: Console) -> None:
    def issue() -> str:
        owner = console.engine.registry.register(group="mqtt-device", name="pump-7", actor="tester")
        console.engine.registry.register(group="mqtt-device", name="pump-8", actor="tester")
        return console.engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=owner.id,
                                                       actor="tester").record.serial

    serial = await run_blocking(issue)
    async with console.client() as client:
        await page_login(console, client, "view")
        html = (await client.get("/devices")).text
        assert "2 devices" in html and f'href="/certificates/{serial}"' in html and "no certificate" in html
        # This console runs without a broker: whether a device is online is unknown, and the page says so.
        assert html.count('<td class="presence">unknown</td>') == 2 and "online: unknown" in html
        assert "presence online" not in html and "presence offline" not in html


async def test_ca_and_trust_forms_need_ca_admin_csrf_and_a_fresh_code(console: Console) -> None:
    from tests.otpki.web.test_api import self_signed_pem

    vendor = self_signed_pem("vendor-hmi")
    async with console.client() as client:
        csrf = await page_login(console, client, "op")
        page = await client.get("/trust")
        assert page.status_code == 200 and 'action="/trust/cas"' not in page.text  # no forms for an operator
        res = await client.post("/trust/import", data={"csrf_token": csrf, "group": "opcua-application",
                                                       "data_pem": vendor, "totp": console.code("op")})
        assert res.status_code == 403
    async with console.client() as client:
        csrf = await page_login(console, client, "admin")
        page = await client.get("/trust")
        assert 'action="/trust/cas"' in page.text and 'action="/trust/import"' in page.text
        before = console.engine.trustlists.get("opcua-application").version
        form = {"group": "opcua-application", "list": "trusted", "data_pem": vendor, "note": EVIL}
        res = await client.post("/trust/import", data=form)  # no CSRF token
        assert res.status_code == 403
        res = await client.post("/trust/import", data={**form, "csrf_token": csrf})  # no code
        assert res.status_code == 403 and "Nothing imported" in res.text and "TOTP" in res.text
        code = console.code("admin")
        res = await client.post("/trust/import", data={**form, "csrf_token": csrf, "totp": code})
        assert (res.status_code, res.headers["location"].split("?")[0]) == (303, "/trust")
        res = await client.post("/trust/import", data={**form, "csrf_token": csrf, "totp": code})  # replayed
        assert res.status_code == 403 and "Nothing imported" in res.text
        bad = await client.post("/trust/import", data={**form, "data_pem": EVIL, "csrf_token": csrf,
                                                       "totp": console.code("admin")})
        assert bad.status_code == 400 and "Nothing imported" in bad.text
        assert "<script>" not in bad.text and "&lt;script&gt;" in bad.text  # the note comes back, escaped
        assert console.engine.trustlists.get("opcua-application").version == before + 1

        res = await client.post("/trust/cas", data={"csrf_token": csrf, "group": "no-such-group",
                                                    "totp": console.code("admin")})
        assert res.status_code == 404 and "CA not created" in res.text
        res = await client.post("/trust/cas", data={"csrf_token": csrf, "group": "mqtt-device",
                                                    "totp": console.code("admin")})
        assert res.status_code == 303 and "created=" in res.headers["location"]
        shown = await client.get(res.headers["location"])
        assert "Issuing CA" in shown.text and "created" in shown.text
    audited = {(r.action, r.actor) for r in console.engine.audit_records() if r.actor == "admin"}
    assert any(a.startswith("trust") for a, _ in audited) and any(a.startswith("ca.") for a, _ in audited), audited
