"""The REST API, `/api/v1`: what the console shows and does, as JSON (OpenAPI at /api/openapi.json).

Reads need the viewer role; issuing, rejecting and pushing the operator role; revoking and approving the ca-admin
role and a TOTP code (header X-Otpki-Totp). State changes made with a session cookie carry its CSRF token (header
X-CSRF-Token); bearer tokens need none. Every engine call runs off the event loop (`run_blocking`); every number
is the engine's.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time, and the role
# dependencies (`viewer`, `operator`, `ca_admin`) are local to `api_router`.
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from otpki.web import views
from otpki.web.auth import (
    CSRF_HEADER,
    TOTP_HEADER,
    Principal,
    check_csrf,
    check_role,
    client_address,
    cookie_name,
    identify,
)
from otpki.web.errors import ERROR_RESPONSES, ApiError
from otpki.web.overview_cache import OverviewCache
from otpki.web.push_progress import Pusher, push_events
from otpki.web.settings import ConsoleSettings
from trustlists.accounts import Role
from trustlists.audit import AuditVerification
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.models import (
    AuditRecord,
    CertificateStatus,
    DeliveryTarget,
    Owner,
    RequestStatus,
    RevocationReason,
)


class LoginIn(BaseModel):
    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    totp: str = Field(max_length=16)


class SessionOut(BaseModel):
    user: str
    role: Role
    csrf_token: str = Field(description=f"Send it in {CSRF_HEADER} with every state change made with the cookie")
    expires_at: datetime


class Me(BaseModel):
    name: str
    role: Role
    via: str


class CertificatePageOut(BaseModel):
    total: int
    total_capped: bool = Field(description="true: at least `total` match (counting stops 10000 lines past the page)")
    offset: int
    limit: int
    items: list[views.CertificateLine]


class DevicePageOut(BaseModel):
    total: int
    offset: int
    limit: int
    devices: list[views.DeviceRow]


class RevokeIn(BaseModel):
    reason: str = Field(default="unspecified", max_length=40,
                        description="RFC 5280 reason: key-compromise, superseded, cessation-of-operation, ...")


class IssueIn(BaseModel):
    csr_pem: str = Field(max_length=64 * 1024, description="A PKCS#10 request, PEM")


class IssuedOut(BaseModel):
    serial: str
    certificate_pem: str
    chain_pem: str


class RejectIn(BaseModel):
    reason: str = Field(default="rejected by an operator", max_length=500)


class AuditPageOut(BaseModel):
    items: list[AuditRecord]
    next_before_seq: int | None = Field(description="Pass as before_seq for the next (older) page; null at the end")


class TrustFormat(StrEnum):
    json = "json"
    binary = "binary"
    pki = "pki"
    mosquitto = "mosquitto"


class TrustImportIn(BaseModel):
    data_pem: str = Field(max_length=1024 * 1024, description="PEM certificates (a bundle) or one PEM CRL")
    list: Literal["trusted", "issuer"] = "trusted"
    note: str = Field(default="", max_length=500, description="Why this is trusted (kept in the audit log)")


class TrustImportOut(BaseModel):
    imported: list[str]
    version: int


class CaCreateIn(BaseModel):
    group: str = Field(max_length=64)
    site: str | None = Field(default=None, max_length=64)


class CrlFormat(StrEnum):
    der = "der"
    pem = "pem"


def api_router(engine: Engine, settings: ConsoleSettings, pusher: Pusher | None = None,
               overview_cache: OverviewCache | None = None) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    overview_cache = overview_cache or OverviewCache(engine, settings.overview_max_age_s)
    policy = settings.accounts

    def needs(role: Role, *, change: bool) -> Callable[[Request], Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            principal = check_role(await identify(request, engine, secure=settings.secure_cookies), role)
            if change:
                check_csrf(principal, request.headers.get(CSRF_HEADER))
            return principal

        return dependency

    viewer = Annotated[Principal, Depends(needs(Role.VIEWER, change=False))]
    operator = Annotated[Principal, Depends(needs(Role.OPERATOR, change=True))]
    ca_admin = Annotated[Principal, Depends(needs(Role.CA_ADMIN, change=True))]

    async def second_factor(principal: Principal, request: Request) -> None:
        code = request.headers.get(TOTP_HEADER, "").strip()
        if not code:
            raise ApiError(403, "totp_required", f"a CA-admin action carries a TOTP code ({TOTP_HEADER})")
        if principal.totp_user is None:
            raise ApiError(403, "totp_required", "this token names no user whose TOTP code could confirm it")
        await run_blocking(engine.accounts.check_totp, principal.totp_user, code, client=client_address(request),
                           policy=policy)

    # -- session ---------------------------------------------------------------------------------------
    @router.post("/session", response_model=SessionOut, tags=["session"])
    async def login(body: LoginIn, request: Request, response: Response) -> SessionOut:
        """Log in with password and TOTP code: sets the session cookie and returns its CSRF token."""
        session_id, session = await run_blocking(engine.accounts.login, body.name, body.password, body.totp,
                                                 client=client_address(request), policy=policy)
        response.set_cookie(cookie_name(settings.secure_cookies), session_id, max_age=policy.session_ttl_s,
                            secure=settings.secure_cookies, httponly=True, samesite="strict", path="/")
        return SessionOut(user=session.user.name, role=session.user.role, csrf_token=session.csrf_token,
                          expires_at=session.expires_at)

    @router.delete("/session", status_code=204, tags=["session"])
    async def logout(principal: viewer, request: Request, response: Response) -> None:
        check_csrf(principal, request.headers.get(CSRF_HEADER))
        if principal.session_id is not None:
            await run_blocking(engine.accounts.logout, principal.session_id)
        response.delete_cookie(cookie_name(settings.secure_cookies), path="/")

    @router.get("/me", response_model=Me, tags=["session"])
    async def me(principal: viewer) -> Me:
        return Me(name=principal.name, role=principal.role, via=principal.via)

    # -- overview --------------------------------------------------------------------------------------
    @router.get("/overview", response_model=views.Overview, tags=["overview"])
    async def overview(principal: viewer) -> views.Overview:
        """The plant overview as of `at` (recomputed when older than the console's overview_max_age_s)."""
        return await overview_cache.get()

    # -- inventory -------------------------------------------------------------------------------------
    @router.get("/certificates", response_model=CertificatePageOut, tags=["certificates"])
    async def certificates(
        principal: viewer,
        status: CertificateStatus | None = None,
        group: str | None = None,
        site: str | None = None,
        owner_id: str | None = None,
        expiring_within_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> CertificatePageOut:
        page = await run_blocking(views.certificate_page, engine, status=status, group=group, site=site,
                                  owner_id=owner_id, expiring_within_days=expiring_within_days, offset=offset,
                                  limit=limit)
        return CertificatePageOut(total=page.total, total_capped=page.total_capped, offset=page.offset,
                                  limit=page.limit, items=[views.CertificateLine.of(x) for x in page.lines])

    @router.get("/certificates/{serial}", response_model=views.CertificateDetail, tags=["certificates"])
    async def certificate(serial: str, principal: viewer) -> views.CertificateDetail:
        return await run_blocking(views.certificate_detail, engine, serial)

    @router.get("/certificates/{serial}/pem", tags=["certificates"],
                responses={200: {"content": {"application/x-pem-file": {}}}})
    async def certificate_pem(serial: str, principal: viewer) -> Response:
        record = await run_blocking(engine.inventory.get, serial)
        return Response(views.pem(record.der or b""), media_type="application/x-pem-file",
                        headers=views.attachment(f"{record.serial}.pem"))

    @router.get("/certificates/{serial}/der", tags=["certificates"],
                responses={200: {"content": {"application/pkix-cert": {}}}})
    async def certificate_der(serial: str, principal: viewer) -> Response:
        record = await run_blocking(engine.inventory.get, serial)
        return Response(record.der or b"", media_type="application/pkix-cert",
                        headers=views.attachment(f"{record.serial}.der"))

    @router.post("/certificates/{serial}/revoke", response_model=views.CertificateDetail, tags=["certificates"])
    async def revoke(serial: str, body: RevokeIn, principal: ca_admin, request: Request) -> views.CertificateDetail:
        """Revoke with a reason (ca-admin, TOTP code in X-Otpki-Totp)."""
        try:
            reason = RevocationReason.parse(body.reason)
        except ValueError as exc:
            raise ApiError(400, "invalid_reason", str(exc)) from None
        record = await run_blocking(engine.inventory.get, serial)  # a 404 before the TOTP code is spent
        await second_factor(principal, request)
        await run_blocking(engine.authority.revoke, record.serial, reason=reason, actor=principal.name)
        return await run_blocking(views.certificate_detail, engine, record.serial)

    # -- owners and issuance ---------------------------------------------------------------------------
    @router.get("/owners", response_model=list[Owner], tags=["owners"])
    async def owners(principal: viewer, group: str | None = None) -> list[Owner]:
        return await run_blocking(engine.registry.list, group)

    @router.get("/devices", response_model=DevicePageOut, tags=["owners"])
    async def devices(
        principal: viewer,
        group: str = "mqtt-device",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> DevicePageOut:
        """A page of a group's devices by name: each one's newest certificate and when a broker last saw it."""
        rows, total = await run_blocking(views.device_rows, engine, group, offset=offset, limit=limit)
        return DevicePageOut(total=total, offset=offset, limit=limit, devices=rows)

    @router.get("/owners/{owner_id}", response_model=Owner, tags=["owners"])
    async def owner(owner_id: str, principal: viewer) -> Owner:
        return await run_blocking(engine.registry.get, owner_id)

    @router.post("/owners/{owner_id}/certificates", response_model=IssuedOut, status_code=201, tags=["owners"])
    async def issue(owner_id: str, body: IssueIn, principal: operator) -> IssuedOut:
        """Issue a certificate to a registered owner from its CSR (PEM), under the group's policy."""
        issued = await run_blocking(engine.authority.issue_from_csr, body.csr_pem.encode(), owner_id=owner_id,
                                    actor=principal.name)
        return IssuedOut(serial=issued.record.serial, certificate_pem=views.pem(issued.certificate_der),
                         chain_pem="".join(views.pem(der) for der in issued.chain_der))

    # -- trust lists and CRLs --------------------------------------------------------------------------
    @router.get("/trustlists/{group}", tags=["trust"],
                responses={200: {"content": {"application/json": {}, "application/octet-stream": {},
                                             "application/zip": {}}}})
    async def trustlist(group: str, principal: viewer, format: TrustFormat = TrustFormat.json) -> Response:
        """The group's trust list: json, binary (OPC UA TrustListDataType), pki (PKI folders, zip), mosquitto
        (ca.pem and crl.pem of the engine's own CAs, zip)."""
        data, media, name = await run_blocking(views.trustlist_export, engine, group, format.value)
        return Response(data, media_type=media, headers=views.attachment(name))

    @router.post("/trustlists/{group}/import", response_model=TrustImportOut, tags=["trust"])
    async def trust_import(group: str, body: TrustImportIn, principal: ca_admin, request: Request) -> TrustImportOut:
        """Import external trust (a vendor's certificate, a manufacturer CA, its CRL): ca-admin, TOTP code."""
        await second_factor(principal, request)
        imported = await run_blocking(engine.trustlists.import_external, group, body.data_pem.encode(),
                                      list_name=body.list, note=body.note, actor=principal.name)
        trust = await run_blocking(engine.trustlists.get, group)
        return TrustImportOut(imported=imported, version=trust.version)

    @router.post("/cas", response_model=views.CaHealth, status_code=201, tags=["trust"])
    async def ca_create(body: CaCreateIn, principal: ca_admin, request: Request) -> views.CaHealth:
        """Create an issuing CA for a group (and site): ca-admin, TOTP code; the root key must be reachable."""
        await second_factor(principal, request)
        ca = await run_blocking(engine.hierarchy.create_issuing_ca, body.group, body.site, actor=principal.name)
        found = [c for c in await run_blocking(views.ca_health, engine, probe=False) if c.ca_id == ca.id]
        return found[0]

    @router.get("/cas", response_model=list[views.CaHealth], tags=["trust"])
    async def cas(principal: viewer) -> list[views.CaHealth]:
        return await run_blocking(views.ca_health, engine, probe=False)

    @router.get("/crls/{ca_id}", tags=["trust"],
                responses={200: {"content": {"application/pkix-crl": {}, "application/x-pem-file": {}}}})
    async def crl(ca_id: str, principal: viewer, format: CrlFormat = CrlFormat.der) -> Response:
        await run_blocking(engine.ca_status, ca_id)  # NotFound for a CA that is not ours
        record = await run_blocking(engine.latest_crl, ca_id)
        if record is None:
            raise ApiError(404, "no_crl", f"CA {ca_id} has published no CRL yet")
        if format is CrlFormat.pem:
            return Response(views.pem(record.der, "X509 CRL"), media_type="application/x-pem-file",
                            headers=views.attachment(f"{ca_id}.crl.pem"))
        return Response(record.der, media_type="application/pkix-crl", headers=views.attachment(f"{ca_id}.crl"))

    # -- requests --------------------------------------------------------------------------------------
    @router.get("/requests", response_model=list[views.RequestOut], tags=["requests"])
    async def requests(principal: viewer, status: RequestStatus | None = None,
                       group: str | None = None) -> list[views.RequestOut]:
        found = await run_blocking(engine.requests.list, status, group)
        return [views.RequestOut.of(r) for r in found]

    @router.post("/requests/{request_id}/approve", response_model=views.RequestOut, tags=["requests"])
    async def approve(request_id: str, principal: ca_admin, request: Request) -> views.RequestOut:
        """Approve a waiting request (ca-admin, TOTP code in X-Otpki-Totp): its certificate is issued."""
        await run_blocking(engine.requests.get, request_id)
        await second_factor(principal, request)
        return views.RequestOut.of(await run_blocking(engine.requests.approve, request_id, actor=principal.name))

    @router.post("/requests/{request_id}/reject", response_model=views.RequestOut, tags=["requests"])
    async def reject(request_id: str, body: RejectIn, principal: operator) -> views.RequestOut:
        return views.RequestOut.of(await run_blocking(engine.requests.reject, request_id, actor=principal.name,
                                                      reason=body.reason))

    # -- push targets ----------------------------------------------------------------------------------
    @router.get("/targets", response_model=list[DeliveryTarget], tags=["targets"])
    async def targets(principal: viewer, group: str | None = None, site: str | None = None
                      ) -> list[DeliveryTarget]:
        return await run_blocking(engine.targets.list, group=group, site=site)

    @router.post("/targets/{target_id}/push", tags=["targets"])
    async def push(target_id: str, principal: operator) -> dict[str, Any]:
        """Push certificate and trust list to one target now; the outcome as the rollout reports it."""
        target = await run_blocking(engine.targets.get, target_id)
        if pusher is None:
            raise ApiError(503, "push_unavailable", "this instance runs no push client (start it with `otpki serve`)")
        await run_blocking(engine.record_event, actor=principal.name, action="console.push_now",
                           subject=target.address, details={"target": target.id})
        return await pusher(target.id)

    @router.post("/targets/{target_id}/push/events", tags=["targets"],
                 response_class=StreamingResponse,
                 responses={200: {"content": {"text/event-stream": {}},
                                  "description": "Server-sent events: `step` per stage, then `outcome` or `error`"}})
    async def push_live(target_id: str, principal: operator) -> StreamingResponse:
        """Push now, with live progress: each stage as a server-sent event (`step`: connecting, trust list
        written, certificate issued and updated, applied, verified), then the rollout's `outcome` for the target
        (delivered, not applied, or failed with its step and OPC UA status code), or `error` when it could not
        run. A POST (it changes state, and carries the CSRF token): the console reads it with fetch()."""
        target = await run_blocking(engine.targets.get, target_id)
        if pusher is None:
            raise ApiError(503, "push_unavailable", "this instance runs no push client (start it with `otpki serve`)")
        await run_blocking(engine.record_event, actor=principal.name, action="console.push_now",
                           subject=target.address, details={"target": target.id, "live": True})
        # No proxy buffering (X-Accel-Buffering, nginx): the stages must reach the browser as they happen.
        return StreamingResponse(push_events(pusher, target.id), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    # -- audit -----------------------------------------------------------------------------------------
    @router.get("/audit", response_model=AuditPageOut, tags=["audit"])
    async def audit_page(principal: viewer, before_seq: Annotated[int | None, Query(ge=1)] = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> AuditPageOut:
        records = await run_blocking(engine.audit_page, before_seq=before_seq, limit=limit)
        more = len(records) == limit and records[-1].seq > 1
        return AuditPageOut(items=records, next_before_seq=records[-1].seq if more else None)

    @router.get("/audit/verify", response_model=AuditVerification, tags=["audit"])
    async def audit_verify(principal: viewer) -> AuditVerification:
        return await run_blocking(engine.verify_audit)

    return router
