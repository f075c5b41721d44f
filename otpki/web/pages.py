"""The console's pages: server-rendered Jinja2 (autoescape on: certificate fields, PLC error texts and names come from
outside), forms with the session's CSRF token, no script.

Login is two steps: the password (a session that is not yet complete), then the TOTP code. The login form itself
carries a token bound to a cookie (double submit), so another site cannot log a browser into an account of its
choosing.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from otpki.web import views
from otpki.web.api import Pusher
from otpki.web.auth import Principal, check_csrf, client_address, cookie_name, identify
from otpki.web.errors import ApiError, from_engine
from otpki.web.overview_cache import OverviewCache
from otpki.web.presence import DevicePresence, PresenceSnapshot
from otpki.web.settings import ConsoleSettings
from trustlists.accounts import LoginRefused, Role
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import OtpkiError
from trustlists.models import CertificateStatus, RequestStatus, RevocationReason
from trustlists.trustlist import ListName

TEMPLATES = Path(__file__).parent / "templates"
LOGIN_CSRF_COOKIE = "otpki_login_csrf"
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined)
NAV = (("/", "Overview"), ("/certificates", "Certificates"), ("/requests", "Requests"), ("/plcs", "PLCs"),
       ("/devices", "Devices"), ("/trust", "CAs & trust"), ("/audit", "Audit log"))
TRUST_LISTS: dict[str, ListName] = {"trusted": "trusted", "issuer": "issuer"}
DEVICE_GROUP = "mqtt-device"
REVOCATION_REASONS = [r.name.lower().replace("_", "-") for r in RevocationReason]


def render(name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("principal", None)
    context.setdefault("nav", NAV)
    context.setdefault("active", "")
    return HTMLResponse(_env.get_template(name).render(**context), status_code=status)


def error_page(request: Request, error: ApiError) -> Response:
    if error.code == "not_authenticated" and request.method == "GET":
        return RedirectResponse("/login", status_code=303)
    return render("error.html", status=error.status, error=error)


def expiry_chart(buckets: list[Any]) -> dict[str, Any]:
    """Bar geometry of the expiry chart (an inline SVG): heights scaled to the tallest bar of the engine's counts."""
    width, height, pad = 720, 200, 30
    tallest = max((b.certificates for b in buckets), default=0) or 1
    step = (width - pad) / max(len(buckets), 1)
    bars = []
    for i, b in enumerate(buckets):
        h = round((height - 2 * pad) * b.certificates / tallest)
        bars.append({"x": round(pad + i * step + 4), "y": height - pad - h, "w": round(step - 8), "h": h,
                     "count": b.certificates, "label": f"{b.start:%d %b}"})
    return {"width": width, "height": height, "base": height - pad, "bars": bars}


def pages_router(engine: Engine, settings: ConsoleSettings, status_provider: Callable[[], Any] | None = None,
                 pusher: Pusher | None = None, overview_cache: OverviewCache | None = None,
                 presence: DevicePresence | None = None) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    overview_cache = overview_cache or OverviewCache(engine, settings.overview_max_age_s)
    policy = settings.accounts
    session_cookie = cookie_name(settings.secure_cookies)

    async def signed_in(request: Request, role: Role = Role.VIEWER) -> Principal:
        principal = await identify(request, engine, secure=settings.secure_cookies)
        if principal is None or principal.via != "session":
            raise ApiError(401, "not_authenticated", "log in first")
        if not principal.role.allows(role):
            raise ApiError(403, "forbidden", f"this needs the {role.value} role")
        return principal

    async def form_of(request: Request, principal: Principal) -> dict[str, str]:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        check_csrf(principal, fields.get("csrf_token"))
        return fields

    async def second_factor(principal: Principal, fields: dict[str, str], request: Request) -> None:
        code = fields.get("totp", "").strip()
        if not code:
            raise ApiError(403, "totp_required", "enter a TOTP code to confirm this CA-admin action")
        await run_blocking(engine.accounts.check_totp, principal.name, code, client=client_address(request),
                           policy=policy)

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, secure=settings.secure_cookies, httponly=True,
                            samesite="strict", path="/")

    # -- login -----------------------------------------------------------------------------------------
    @router.get("/login")
    async def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(32)
        response = render("login.html", csrf_token=token, error=None)
        set_cookie(response, LOGIN_CSRF_COOKIE, token, policy.login_ttl_s)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(expected, str(form.get("csrf_token", ""))):
            raise ApiError(403, "csrf_token_invalid", "the login form expired: reload the page")
        try:
            session_id, _ = await run_blocking(engine.accounts.login_password, name, password,
                                               client=client_address(request), policy=policy)
        except LoginRefused as exc:
            return render("login.html", status=from_engine(exc).status, csrf_token=expected, error=exc.message)
        response = RedirectResponse("/login/totp", status_code=303)
        set_cookie(response, session_cookie, session_id, policy.login_ttl_s)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    async def pending(request: Request) -> tuple[str, Any]:
        session_id = request.cookies.get(session_cookie, "")
        session = await run_blocking(engine.accounts.session, session_id) if session_id else None
        if session is None:
            raise ApiError(401, "not_authenticated", "log in first")
        return session_id, session

    @router.get("/login/totp")
    async def totp_form(request: Request) -> Response:
        _, session = await pending(request)
        if session.complete:
            return RedirectResponse("/", status_code=303)
        return render("totp.html", csrf_token=session.csrf_token, user=session.user.name, error=None)

    @router.post("/login/totp")
    async def totp(request: Request) -> Response:
        session_id, session = await pending(request)
        form = await request.form()
        if not hmac.compare_digest(session.csrf_token, str(form.get("csrf_token", ""))):
            raise ApiError(403, "csrf_token_invalid", "missing or wrong CSRF token")
        try:
            session_id, _ = await run_blocking(engine.accounts.login_totp, session_id, str(form.get("code", "")),
                                               client=client_address(request), policy=policy)
        except LoginRefused as exc:
            if exc.reason == "session_invalid":
                return RedirectResponse("/login", status_code=303)
            return render("totp.html", status=from_engine(exc).status, csrf_token=session.csrf_token,
                          user=session.user.name, error=exc.message)
        response = RedirectResponse("/", status_code=303)
        set_cookie(response, session_cookie, session_id, policy.session_ttl_s)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        principal = await signed_in(request)
        await form_of(request, principal)
        assert principal.session_id is not None
        await run_blocking(engine.accounts.logout, principal.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(session_cookie, path="/")
        return response

    # -- overview --------------------------------------------------------------------------------------
    @router.get("/")
    async def overview(request: Request) -> Response:
        principal = await signed_in(request)
        data = await overview_cache.get()
        parts = status_provider() if status_provider is not None else None
        online = presence.online_devices() if presence is not None else None  # None: no broker to ask
        groups: dict[tuple[str, str], dict[str, int]] = {}
        for c in data.counts:
            groups.setdefault((c.group, c.site or "-"), {})[c.status] = c.certificates
        return render("overview.html", principal=principal, active="/", data=data, chart=expiry_chart(data.expiry),
                      groups=groups, statuses=[s.value for s in CertificateStatus], parts=parts,
                      devices_online=None if online is None else len(online))

    # -- certificates ----------------------------------------------------------------------------------
    @router.get("/certificates")
    async def certificates(request: Request, q: str = "", group: str = "", site: str = "", status: str = "",
                           page: int = 1) -> Response:
        principal = await signed_in(request)
        if q.strip():  # a serial: straight to it
            return RedirectResponse(f"/certificates/{_serial_path(q)}", status_code=303)
        state = CertificateStatus(status) if status in {s.value for s in CertificateStatus} else None
        page = max(page, 1)
        found = await run_blocking(views.certificate_page, engine, status=state, group=group or None,
                                   site=site or None, owner_id=None, expiring_within_days=None,
                                   offset=(page - 1) * settings.page_size, limit=settings.page_size)
        pages = max(1, -(-found.total // settings.page_size))
        filters = {"group": group, "site": site, "status": status}

        def link(n: int) -> str:
            return "/certificates?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": n})

        return render("certificates.html", principal=principal, active="/certificates", found=found,
                      lines=[views.CertificateLine.of(x) for x in found.lines], filters=filters, page=page,
                      pages=pages, link=link, groups=sorted(engine.config.groups),
                      statuses=[s.value for s in CertificateStatus])

    @router.get("/certificates/{serial}")
    async def certificate(request: Request, serial: str) -> Response:
        principal = await signed_in(request)
        detail = await run_blocking(views.certificate_detail, engine, serial)
        return render("certificate.html", principal=principal, active="/certificates", cert=detail,
                      reasons=REVOCATION_REASONS, can_revoke=principal.role.allows(Role.CA_ADMIN))

    @router.post("/certificates/{serial}/revoke")
    async def revoke(request: Request, serial: str) -> Response:
        principal = await signed_in(request, Role.CA_ADMIN)
        fields = await form_of(request, principal)
        try:
            reason = RevocationReason.parse(fields.get("reason", "unspecified"))
        except ValueError as exc:
            raise ApiError(400, "invalid_reason", str(exc)) from None
        record = await run_blocking(engine.inventory.get, serial)
        await second_factor(principal, fields, request)
        await run_blocking(engine.authority.revoke, record.serial, reason=reason, actor=principal.name)
        return RedirectResponse(f"/certificates/{record.serial}", status_code=303)

    # -- requests --------------------------------------------------------------------------------------
    @router.get("/requests")
    async def requests(request: Request, status: str = RequestStatus.PENDING.value) -> Response:
        principal = await signed_in(request)
        state = RequestStatus(status) if status in {s.value for s in RequestStatus} else None
        found = await run_blocking(engine.requests.list, state, None)
        return render("requests.html", principal=principal, active="/requests",
                      items=[views.RequestOut.of(r) for r in found], shown=status,
                      statuses=[s.value for s in RequestStatus], can_approve=principal.role.allows(Role.CA_ADMIN),
                      can_reject=principal.role.allows(Role.OPERATOR))

    @router.post("/requests/{request_id}/approve")
    async def approve(request: Request, request_id: str) -> Response:
        principal = await signed_in(request, Role.CA_ADMIN)
        fields = await form_of(request, principal)
        await run_blocking(engine.requests.get, request_id)
        await second_factor(principal, fields, request)
        await run_blocking(engine.requests.approve, request_id, actor=principal.name)
        return RedirectResponse("/requests", status_code=303)

    @router.post("/requests/{request_id}/reject")
    async def reject(request: Request, request_id: str) -> Response:
        principal = await signed_in(request, Role.OPERATOR)
        fields = await form_of(request, principal)
        await run_blocking(engine.requests.reject, request_id, actor=principal.name,
                           reason=fields.get("reason", "").strip() or "rejected in the console")
        return RedirectResponse("/requests", status_code=303)

    # -- PLCs (push targets) ---------------------------------------------------------------------------
    @router.get("/plcs")
    async def plcs(request: Request, group: str = "", site: str = "") -> Response:
        principal = await signed_in(request)
        rows = await run_blocking(views.plc_rows, engine, group=group or None, site=site or None)
        return render("plcs.html", principal=principal, active="/plcs", rows=rows,
                      filters={"group": group, "site": site}, can_push=principal.role.allows(Role.OPERATOR),
                      push_available=pusher is not None, outcome=None)

    @router.post("/plcs/{target_id}/push")
    async def push_now(request: Request, target_id: str) -> Response:
        principal = await signed_in(request, Role.OPERATOR)
        await form_of(request, principal)
        target = await run_blocking(engine.targets.get, target_id)
        if pusher is None:
            raise ApiError(503, "push_unavailable", "this instance runs no push client (start it with `otpki serve`)")
        await run_blocking(engine.record_event, actor=principal.name, action="console.push_now",
                           subject=target.address, details={"target": target.id})
        outcome = await pusher(target.id)
        rows = await run_blocking(views.plc_rows, engine, group=None, site=None)
        return render("plcs.html", principal=principal, active="/plcs", rows=rows, filters={"group": "", "site": ""},
                      can_push=True, push_available=True, outcome={"address": target.address, "report": outcome})

    # -- CAs and trust ---------------------------------------------------------------------------------
    # The API's two CA-admin operations (POST /api/v1/cas, /api/v1/trustlists/{group}/import) as forms: the same
    # engine calls, audited with the user's name; a refusal is shown on the page it came from (escaped).
    async def trust_page(principal: Principal, *, status: int = 200, error: str | None = None,
                         done: str | None = None, form: dict[str, str] | None = None) -> Response:
        cas = await run_blocking(views.ca_health, engine, probe=False)
        return render("trust.html", status=status, principal=principal, active="/trust", cas=cas,
                      groups=sorted(engine.config.groups), sites=list(engine.config.sites), lists=TRUST_LISTS,
                      can_admin=principal.role.allows(Role.CA_ADMIN), error=error, done=done, form=form or {})

    @router.get("/trust")
    async def trust(request: Request, created: str = "", imported: int = -1, group: str = "",
                    version: int = 0) -> Response:
        principal = await signed_in(request)
        done = None
        if created:
            done = f"Issuing CA {created} created."
        elif imported >= 0:
            done = f"{imported} imported into the trust list of {group}, now version {version}."
        return await trust_page(principal, done=done)

    @router.post("/trust/cas")
    async def trust_create_ca(request: Request) -> Response:
        principal = await signed_in(request, Role.CA_ADMIN)
        fields = await form_of(request, principal)
        group, site = fields.get("group", "").strip(), fields.get("site", "").strip() or None
        try:
            await second_factor(principal, fields, request)
            ca = await run_blocking(engine.hierarchy.create_issuing_ca, group, site, actor=principal.name)
        except (ApiError, OtpkiError) as exc:
            refusal = exc if isinstance(exc, ApiError) else from_engine(exc)
            return await trust_page(principal, status=refusal.status, error=f"CA not created: {refusal.message}",
                                    form={k: v for k, v in fields.items() if k in ("group", "site")})
        return RedirectResponse("/trust?" + urlencode({"created": ca.id}), status_code=303)

    @router.post("/trust/import")
    async def trust_import(request: Request) -> Response:
        principal = await signed_in(request, Role.CA_ADMIN)
        fields = await form_of(request, principal)
        group, list_name = fields.get("group", "").strip(), TRUST_LISTS.get(fields.get("list", "trusted"))
        try:
            if list_name is None:
                raise ApiError(400, "invalid_list", f"the list is one of {', '.join(TRUST_LISTS)}")
            await second_factor(principal, fields, request)
            imported = await run_blocking(engine.trustlists.import_external, group,
                                          fields.get("data_pem", "").encode(), list_name=list_name,
                                          note=fields.get("note", "").strip(), actor=principal.name)
            version = (await run_blocking(engine.trustlists.get, group)).version
        except (ApiError, OtpkiError) as exc:
            refusal = exc if isinstance(exc, ApiError) else from_engine(exc)
            return await trust_page(principal, status=refusal.status, error=f"Nothing imported: {refusal.message}",
                                    form={k: v for k, v in fields.items() if k in ("group", "list", "note")})
        return RedirectResponse("/trust?" + urlencode({"imported": len(imported), "group": group,
                                                       "version": version}), status_code=303)

    # -- devices ---------------------------------------------------------------------------------------
    @router.get("/devices")
    async def devices(request: Request, page: int = 1) -> Response:
        principal = await signed_in(request)
        page = max(page, 1)
        rows, total = await run_blocking(views.device_rows, engine, DEVICE_GROUP,
                                         offset=(page - 1) * settings.page_size, limit=settings.page_size)
        pages = max(1, -(-total // settings.page_size))
        # On the event loop, not in a worker thread: the broker's session table belongs to this loop.
        seen = PresenceSnapshot(presence)
        return render("devices.html", principal=principal, active="/devices", rows=rows, total=total, page=page,
                      pages=pages, presence={row.name: seen.of(row.name, row.last_seen) for row in rows})

    # -- audit -----------------------------------------------------------------------------------------
    async def audit_view(request: Request, principal: Principal, before: int | None,
                         verification: Any = None) -> Response:
        records = await run_blocking(engine.audit_page, before_seq=before, limit=settings.page_size)
        older = records[-1].seq if len(records) == settings.page_size and records[-1].seq > 1 else None
        return render("audit.html", principal=principal, active="/audit", records=records, older=older,
                      verification=verification)

    @router.get("/audit")
    async def audit(request: Request, before: int | None = None) -> Response:
        return await audit_view(request, await signed_in(request), before)

    @router.post("/audit/verify")
    async def audit_verify(request: Request) -> Response:
        principal = await signed_in(request)
        await form_of(request, principal)
        verification = await run_blocking(engine.verify_audit)
        return await audit_view(request, principal, None, verification)

    return router


def _serial_path(q: str) -> str:
    cleaned = q.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise ApiError(400, "invalid_serial", "a serial number is hexadecimal")
    return cleaned


__all__ = ["error_page", "pages_router"]
