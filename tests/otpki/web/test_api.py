"""The REST API on a real uvicorn over HTTPS (127.0.0.1:0, a server certificate the engine issued): every endpoint,
and the refusals: no session, wrong role, missing CSRF token, replayed TOTP code, locked-out user, revoked token."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
from cryptography import x509

from otpki.web.app import create_app
from otpki.web.testing import running
from tests.otpki.web.conftest import PASSWORD, Console
from trustlists.blocking import run_blocking
from trustlists.models import RequestStatus
from trustlists.testing import make_csr


def self_signed_pem(cn: str) -> str:
    """A vendor's self-signed CA certificate, as an operator imports one."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def error_code(res: httpx.Response) -> str:
    return str(res.json()["error"]["code"])


async def issue(console: Console, name: str = "pump-7", cn: str | None = None) -> str:
    def work() -> str:
        owner = console.engine.registry.find("mqtt-device", name=name) or console.engine.registry.register(
            group="mqtt-device", name=name, actor="tester")
        return console.engine.authority.issue_from_csr(make_csr(cn or name), owner_id=owner.id,
                                                       actor="tester").record.serial
    return await run_blocking(work)


READS = ["/api/v1/me", "/api/v1/overview", "/api/v1/certificates", "/api/v1/owners", "/api/v1/devices", "/api/v1/cas",
         "/api/v1/requests", "/api/v1/targets", "/api/v1/audit", "/api/v1/audit/verify",
         "/api/v1/trustlists/mqtt-device"]


async def test_no_session_no_answer_on_any_endpoint(console: Console) -> None:
    serial = await issue(console)
    async with console.client() as client:
        for path in [*READS, f"/api/v1/certificates/{serial}", f"/api/v1/certificates/{serial}/pem"]:
            res = await client.get(path)
            assert (res.status_code, error_code(res)) == (401, "not_authenticated"), path
        for path in [f"/api/v1/certificates/{serial}/revoke", "/api/v1/requests/x/approve",
                     "/api/v1/requests/x/reject", "/api/v1/targets/x/push", "/api/v1/owners/x/certificates"]:
            res = await client.post(path, json={})
            assert res.status_code in (401, 422) and res.status_code != 200, path
            if res.status_code == 422:  # body checked first by FastAPI: then without a body problem
                continue
            assert error_code(res) == "not_authenticated", path
        res = await client.get("/api/v1/certificates", headers={"Authorization": "Bearer otpki_nope"})
        assert (res.status_code, error_code(res)) == (401, "not_authenticated")


async def test_login_sets_a_secure_httponly_strict_cookie_and_reads_work(console: Console) -> None:
    async with console.client() as client:
        res = await client.post("/api/v1/session", json={"name": "view", "password": PASSWORD,
                                                          "totp": console.code("view")})
        assert res.status_code == 200, res.text
        cookie = res.headers["set-cookie"]
        assert cookie.startswith("__Host-otpki_session=")
        for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower(), cookie
        for path in READS:
            res = await client.get(path)
            assert res.status_code == 200, (path, res.text)
        assert (await client.get("/api/v1/me")).json() == {"name": "view", "role": "viewer", "via": "session"}
        assert "/api/v1/certificates/{serial}/revoke" in (await client.get("/api/openapi.json")).json()["paths"]


async def test_inventory_pages_detail_and_downloads(console: Console) -> None:
    serials = [await issue(console, f"dev-{n}") for n in range(3)]
    async with console.client() as client:
        await console.login(client, "view")
        page = (await client.get("/api/v1/certificates", params={"group": "mqtt-device", "limit": 2})).json()
        assert page["total"] == 3 and len(page["items"]) == 2
        rest = (await client.get("/api/v1/certificates",
                                 params={"group": "mqtt-device", "limit": 2, "offset": 2})).json()
        assert {i["serial"] for i in page["items"] + rest["items"]} == set(serials)
        detail = (await client.get(f"/api/v1/certificates/{serials[0]}")).json()
        assert detail["status"] == "active" and detail["chain"] and "clientAuth" in detail["extended_key_usage"]
        pem = (await client.get(f"/api/v1/certificates/{serials[0]}/pem")).text
        der = (await client.get(f"/api/v1/certificates/{serials[0]}/der")).content
        assert x509.load_pem_x509_certificate(pem.encode()) == x509.load_der_x509_certificate(der)
        assert format(x509.load_der_x509_certificate(der).serial_number, "x") == serials[0]
        res = await client.get("/api/v1/certificates/abcdef123")
        assert (res.status_code, error_code(res)) == (404, "unknown_certificate")
        res = await client.get("/api/v1/certificates", params={"status": "bogus"})
        assert (res.status_code, error_code(res)) == (422, "invalid_request")
        res = await client.get("/api/v1/certificates", params={"group": "no-such-group"})
        assert res.status_code == 404 and error_code(res)


async def test_revoke_needs_ca_admin_csrf_and_a_fresh_totp_code(console: Console) -> None:
    serial = await issue(console)
    path = f"/api/v1/certificates/{serial}/revoke"
    async with console.client() as client:
        csrf = await console.login(client, "op")
        res = await client.post(path, json={"reason": "key-compromise"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": console.code("op")})
        assert (res.status_code, error_code(res)) == (403, "forbidden")
    async with console.client() as client:
        csrf = await console.login(client, "admin")
        res = await client.post(path, json={"reason": "key-compromise"},
                                headers={"X-Otpki-Totp": console.code("admin")})
        assert (res.status_code, error_code(res)) == (403, "csrf_token_invalid")
        res = await client.post(path, json={"reason": "key-compromise"},
                                headers={"X-CSRF-Token": csrf + "x", "X-Otpki-Totp": console.code("admin")})
        assert (res.status_code, error_code(res)) == (403, "csrf_token_invalid")
        res = await client.post(path, json={"reason": "key-compromise"}, headers={"X-CSRF-Token": csrf})
        assert (res.status_code, error_code(res)) == (403, "totp_required")
        code = console.code("admin")
        res = await client.post(path, json={"reason": "key-compromise"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": code})
        assert res.status_code == 200, res.text
        assert res.json()["status"] == "revoked" and res.json()["revocation_reason"] == "key_compromise"
        other = await issue(console, "pump-8")
        res = await client.post(f"/api/v1/certificates/{other}/revoke", json={"reason": "superseded"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": code})
        assert (res.status_code, error_code(res)) == (403, "totp_replayed")
        res = await client.post(f"/api/v1/certificates/{other}/revoke", json={"reason": "whatever"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": console.code("admin")})
        assert (res.status_code, error_code(res)) == (400, "invalid_reason")
    assert console.engine.is_revoked((await run_blocking(console.engine.inventory.get, serial)).issuer_ca_id,
                                     int(serial, 16))
    revokes = console.engine.audit_records(action="certificate.revoke")
    assert [(r.actor, r.subject) for r in revokes] == [("admin", serial)]


async def test_a_locked_out_user_is_refused_even_with_the_right_password(console: Console) -> None:
    async with console.client() as client:
        for _ in range(5):  # AccountPolicy().user_failures
            res = await client.post("/api/v1/session", json={"name": "op", "password": "wrong password",
                                                              "totp": "000000"})
            assert (res.status_code, error_code(res)) == (401, "bad_credentials")
        res = await client.post("/api/v1/session", json={"name": "op", "password": PASSWORD,
                                                          "totp": console.code("op")})
        assert (res.status_code, error_code(res)) == (429, "locked_out")
    assert "console.locked_out" in {r.action for r in console.engine.audit_records()}


async def test_bearer_tokens_work_without_csrf_and_stop_when_revoked(console: Console) -> None:
    raw, _ = await run_blocking(console.engine.accounts.create_token, "ci", "operator", actor="tester")
    owner = await run_blocking(lambda: console.engine.registry.register(group="mqtt-device", name="pump-9",
                                                                        actor="tester"))
    headers = {"Authorization": f"Bearer {raw}"}
    async with console.client() as client:
        res = await client.post(f"/api/v1/owners/{owner.id}/certificates",
                                json={"csr_pem": make_csr("pump-9").decode()}, headers=headers)
        assert res.status_code == 201, res.text
        issued = res.json()
        assert x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
        record = await run_blocking(console.engine.inventory.get, issued["serial"])
        assert record.owner_id == owner.id
        res = await client.post(f"/api/v1/owners/{owner.id}/certificates", json={"csr_pem": "garbage"},
                                headers=headers)
        assert res.status_code == 400 and error_code(res)
        res = await client.post(f"/api/v1/certificates/{issued['serial']}/revoke", json={}, headers=headers)
        assert (res.status_code, error_code(res)) == (403, "forbidden")
        await run_blocking(console.engine.accounts.revoke_token, "ci", actor="tester")
        res = await client.get("/api/v1/certificates", headers=headers)
        assert (res.status_code, error_code(res)) == (401, "not_authenticated")
    issuers = [r.actor for r in console.engine.audit_records() if r.subject == issued["serial"]]
    assert "token:ci" in issuers


async def test_trust_lists_in_every_format_and_crls(console: Console) -> None:
    async with console.client() as client:
        await console.login(client, "view")
        res = await client.get("/api/v1/trustlists/mqtt-device")
        assert res.status_code == 200 and json.loads(res.content)["group"] == "mqtt-device"
        res = await client.get("/api/v1/trustlists/mqtt-device", params={"format": "binary"})
        assert res.status_code == 200 and res.headers["content-type"] == "application/octet-stream"
        for fmt, expected in (("pki", "trusted/certs/"), ("mosquitto", "ca.pem")):
            res = await client.get("/api/v1/trustlists/mqtt-device", params={"format": fmt})
            names = zipfile.ZipFile(io.BytesIO(res.content)).namelist()
            assert any(n.startswith(expected) for n in names), (fmt, names)
        res = await client.get("/api/v1/trustlists/nope")
        assert res.status_code == 404
        cas = (await client.get("/api/v1/cas")).json()
        with_crl = [ca for ca in cas if ca["crl_number"] is not None]
        assert with_crl
        der = (await client.get(f"/api/v1/crls/{with_crl[0]['ca_id']}")).content
        pem = (await client.get(f"/api/v1/crls/{with_crl[0]['ca_id']}", params={"format": "pem"})).text
        assert x509.load_der_x509_crl(der) == x509.load_pem_x509_crl(pem.encode())
        res = await client.get("/api/v1/crls/not-a-ca")
        assert res.status_code == 404 and error_code(res)


async def test_requests_are_approved_with_totp_and_rejected_by_an_operator(console: Console) -> None:
    def submit() -> tuple[str, str]:
        eng = console.engine
        ids = []
        for name in ("alice", "bob"):
            owner = eng.registry.register(group="opcua-user", name=name, actor="tester")
            ids.append(eng.requests.submit_csr(owner.id, make_csr(name), actor="front",
                                               requester_fingerprint=None).id)
        return ids[0], ids[1]

    first, second = await run_blocking(submit)
    async with console.client() as client:
        csrf = await console.login(client, "op")
        waiting = (await client.get("/api/v1/requests", params={"status": "pending"})).json()
        assert {r["id"] for r in waiting} == {first, second}
        res = await client.post(f"/api/v1/requests/{first}/approve", headers={"X-CSRF-Token": csrf,
                                                                              "X-Otpki-Totp": console.code("op")})
        assert (res.status_code, error_code(res)) == (403, "forbidden")
        res = await client.post(f"/api/v1/requests/{second}/reject", json={"reason": "unknown laptop"},
                                headers={"X-CSRF-Token": csrf})
        assert res.status_code == 200 and res.json()["status"] == "rejected"
    async with console.client() as client:
        csrf = await console.login(client, "admin")
        res = await client.post(f"/api/v1/requests/{first}/approve", headers={"X-CSRF-Token": csrf})
        assert (res.status_code, error_code(res)) == (403, "totp_required")
        res = await client.post(f"/api/v1/requests/{first}/approve", headers={"X-CSRF-Token": csrf,
                                                                              "X-Otpki-Totp": console.code("admin")})
        assert res.status_code == 200, res.text
        assert res.json()["status"] in (RequestStatus.APPROVED.value, RequestStatus.ISSUED.value)
        res = await client.post(f"/api/v1/requests/{second}/approve", headers={"X-CSRF-Token": csrf,
                                                                               "X-Otpki-Totp": console.code("admin")})
        assert res.status_code == 409, res.text


async def test_targets_list_and_push_now(console: Console) -> None:
    from trustlists.models import OwnerRegistration

    target = await run_blocking(lambda: console.engine.add_target(
        owner=OwnerRegistration(group="opcua-application", name="plc-1", application_uri="urn:plc-1"),
        kind="opcua-push", address="opc.tcp://127.0.0.1:4840", credentials_ref="plc", actor="tester"))
    async with console.client() as client:
        csrf = await console.login(client, "op")
        listed = (await client.get("/api/v1/targets")).json()
        assert [t["id"] for t in listed] == [target.id]
        res = await client.post(f"/api/v1/targets/{target.id}/push", headers={"X-CSRF-Token": csrf})
        assert (res.status_code, error_code(res)) == (503, "push_unavailable")
        res = await client.post("/api/v1/targets/nope/push", headers={"X-CSRF-Token": csrf})
        assert res.status_code == 404

    pushed: list[str] = []

    async def pusher(target_id: str) -> dict[str, object]:
        pushed.append(target_id)
        return {"delivered": 1}

    app = create_app(console.engine, pusher=pusher)
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        # Plain HTTP on loopback: the cookie would not be Secure-only here, so this part uses a bearer token.
        raw, _ = await run_blocking(console.engine.accounts.create_token, "pushbot", "operator", actor="tester")
        res = await client.post(f"/api/v1/targets/{target.id}/push", headers={"Authorization": f"Bearer {raw}"})
        assert res.status_code == 200 and res.json() == {"delivered": 1}
    assert pushed == [target.id]
    assert any(r.action == "console.push_now" and r.actor == "token:pushbot" for r in console.engine.audit_records())


async def test_audit_pages_and_verify(console: Console) -> None:
    async with console.client() as client:
        csrf = await console.login(client, "view")
        first = (await client.get("/api/v1/audit", params={"limit": 2})).json()
        assert len(first["items"]) == 2 and first["items"][0]["action"] == "console.login"
        older = (await client.get("/api/v1/audit", params={"before_seq": first["next_before_seq"]})).json()
        assert older["items"][0]["seq"] == first["items"][1]["seq"] - 1
        assert (await client.get("/api/v1/audit/verify")).json()["ok"] is True
        res = await client.delete("/api/v1/session")
        assert (res.status_code, error_code(res)) == (403, "csrf_token_invalid")
        assert (await client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})).status_code == 204
        assert (await client.get("/api/v1/me")).status_code == 401


async def test_a_replayed_login_code_is_refused(console: Console) -> None:
    code = console.code("view")
    async with console.client() as client:
        body = {"name": "view", "password": PASSWORD, "totp": code}
        assert (await client.post("/api/v1/session", json=body)).status_code == 200
        res = await client.post("/api/v1/session", json=body)
        assert (res.status_code, error_code(res)) == (403, "totp_replayed")


async def test_trust_import_and_ca_creation_need_ca_admin_and_totp(console: Console) -> None:
    vendor = self_signed_pem("vendor-hmi")
    async with console.client() as client:
        csrf = await console.login(client, "op")
        res = await client.post("/api/v1/trustlists/opcua-application/import", json={"data_pem": vendor},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": console.code("op")})
        assert (res.status_code, error_code(res)) == (403, "forbidden")
    async with console.client() as client:
        csrf = await console.login(client, "admin")
        before = (await client.get("/api/v1/trustlists/opcua-application")).json()["version"]
        res = await client.post("/api/v1/trustlists/opcua-application/import", json={"data_pem": vendor},
                                headers={"X-CSRF-Token": csrf})
        assert (res.status_code, error_code(res)) == (403, "totp_required")
        res = await client.post("/api/v1/trustlists/opcua-application/import",
                                json={"data_pem": vendor, "note": "vendor HMI"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": console.code("admin")})
        assert res.status_code == 200, res.text
        assert len(res.json()["imported"]) == 1 and res.json()["version"] > before
        res = await client.post("/api/v1/trustlists/opcua-application/import", json={"data_pem": "garbage"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": console.code("admin")})
        assert res.status_code == 400 and error_code(res)

        cas_before = {c["ca_id"] for c in (await client.get("/api/v1/cas")).json()}
        res = await client.post("/api/v1/cas", json={"group": "mqtt-device"}, headers={"X-CSRF-Token": csrf})
        assert (res.status_code, error_code(res)) == (403, "totp_required")
        res = await client.post("/api/v1/cas", json={"group": "mqtt-device"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": console.code("admin")})
        assert res.status_code == 201, res.text
        assert res.json()["ca_id"] not in cas_before and res.json()["group"] == "mqtt-device"
        res = await client.post("/api/v1/cas", json={"group": "no-such-group"},
                                headers={"X-CSRF-Token": csrf, "X-Otpki-Totp": console.code("admin")})
        assert res.status_code == 404
    actors = {(r.action, r.actor) for r in console.engine.audit_records() if r.actor == "admin"}
    assert any(a.startswith("trust") for a, _ in actors) and any(a.startswith("ca.") for a, _ in actors), actors


async def test_a_session_made_on_one_instance_works_on_another_on_the_same_store(console: Console,
                                                                               tmp_path: Path) -> None:
    from otpki.web.settings import ConsoleSettings
    from trustlists.testing import make_engine

    second = make_engine(tmp_path / "pki", clock=console.clock, config=console.engine.config)
    try:
        cert, key = console.tls_files
        async with running(create_app(second, ConsoleSettings()), certfile=cert, keyfile=key) as other_url, \
                console.client() as client:
            csrf = await console.login(client, "view")  # on the first instance
            res = await client.get(f"{other_url}/api/v1/me")  # the same cookie, the other instance
            assert res.status_code == 200 and res.json()["name"] == "view"
            assert (await client.delete(f"{other_url}/api/v1/session", headers={"X-CSRF-Token": csrf})
                    ).status_code == 204
            assert (await client.get("/api/v1/me")).status_code == 401  # logged out on both
    finally:
        second.close()
