"""EST over HTTPS (RFC 7030, with RFC 8951's clarifications): `/.well-known/est/` and `/.well-known/est/<label>/`.

    GET  cacerts         the group's CA certificates, certs-only CMS, base64 (no authentication, 4.1)
    GET  csrattrs        what the group's policy wants in a CSR, DER CsrAttrs, base64 (4.5)
    POST simpleenroll    a CSR (application/pkcs10, base64) -> the certificate, certs-only CMS (4.2)
    POST simplereenroll  the same, authenticated by the certificate being renewed (4.2.2)
    POST serverkeygen    a CSR naming the device -> multipart/mixed: the new key (application/pkcs8) and the
                         certificate (4.4)

Who may enroll: a TLS client certificate (the listener requests one; `trustlists.device_auth` decides whose it is),
or HTTP Basic for a registrar account (`[web.est] registrars`). Answers: 200 with the certificate; 202 with
Retry-After while the request waits for approval in a group with `auto_approve = false`, whoever made it (a
registrar, or a device with its IDevID or operational certificate); the same request again collects it once
approved;
400 malformed; 401 with WWW-Authenticate when there is no usable credential; 403 refused; 404 unknown label;
413 body too large; 415 not a CSR; 429 too many requests; 503 the CA cannot answer now. Error bodies are one line of
text saying why. Nothing is issued on any refusal, and every refusal is audited (`est.refuse`), except a request
that brought no credential at all (the usual first step of an EST client, answered 401). A client certificate the
TLS handshake refuses (a CA the engine does not trust) never becomes a request: the listener audits it
(`web.tls_refused`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response

from http_fronts.est.csrattrs import csr_attributes
from http_fronts.est.service import CertificateChain, EstService, Issued, Operation, Pending, Refused, Registrar
from http_fronts.est.settings import EstSettings
from http_fronts.est.wire import CSRATTRS, PKCS7_CERTS_ONLY, PKCS10, b64, certs_only, keygen_multipart, unb64
from trustlists.blocking import run_blocking

if TYPE_CHECKING:
    from trustlists.engine import Engine

PREFIX = "/.well-known/est"
REALM = 'Basic realm="otpki EST", charset="UTF-8"'

Handler = Callable[[Request], Awaitable[Response]]


def est_router(engine: Engine, settings: EstSettings | None = None) -> APIRouter:
    settings = settings or EstSettings()
    service = EstService(engine, settings)
    router = APIRouter(tags=["est"])

    def group_of(request: Request) -> str | None:
        return service.groups.get(request.path_params.get("label"))

    async def cacerts(request: Request) -> Response:
        group = group_of(request)
        if group is None:
            return _unknown_label(request)
        ders = await run_blocking(service.ca_certificates, group)
        return _b64_response(certs_only(ders), PKCS7_CERTS_ONLY)

    async def csrattrs(request: Request) -> Response:
        group = group_of(request)
        if group is None:
            return _unknown_label(request)
        return _b64_response(csr_attributes(engine.config.group(group)), CSRATTRS)

    def enrollment(operation: Operation) -> Handler:
        async def handler(request: Request) -> Response:
            group = group_of(request)
            if group is None:
                return _unknown_label(request)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != PKCS10:
                return _text(415, f"the body must be a CSR, Content-Type {PKCS10} (base64)")
            body = await _read_body(request, settings)
            if isinstance(body, Refused):
                return _answer(body, settings)
            csr_der = unb64(body)
            if csr_der is None:
                return _text(400, "the body is not base64 (RFC 7030 4.2.1: a base64-encoded PKCS#10 CSR)")
            client = await _client(request, service, group, operation)
            if isinstance(client, Refused):
                return _answer(client, settings)
            # One trip to the blocking executor: authenticating the certificate reads the store too.
            outcome = await run_blocking(service.enroll, operation, group, client, csr_der)
            return _answer(outcome, settings)

        return handler

    routes: list[tuple[str, Handler, str, str]] = [
        ("cacerts", cacerts, "GET", "The group's CA certificates (RFC 7030 4.1)"),
        ("csrattrs", csrattrs, "GET", "CSR attributes the group's policy wants (RFC 7030 4.5)"),
        ("simpleenroll", enrollment("simpleenroll"), "POST", "Enroll (RFC 7030 4.2.1)"),
        ("simplereenroll", enrollment("simplereenroll"), "POST", "Re-enroll (RFC 7030 4.2.2)"),
        ("serverkeygen", enrollment("serverkeygen"), "POST", "Server-side key generation (RFC 7030 4.4)"),
    ]
    for base in (PREFIX, PREFIX + "/{label}"):
        for name, handler, method, summary in routes:
            router.add_api_route(f"{base}/{name}", handler, methods=[method], response_class=Response,
                                 summary=summary, name=f"est_{name}" + ("_label" if "{" in base else ""))
    return router


async def _client(request: Request, service: EstService, group: str,
                  operation: str) -> Registrar | CertificateChain | Refused:
    """A registrar authenticated by HTTP Basic if the request carries it, else the TLS client certificate chain (the
    service decides whose it is); a Refused (401) when there is no usable credential."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        credentials = _basic(authorization)
        if credentials is None:
            return _challenge("the Authorization header is not HTTP Basic with user:password")
        name, password = credentials
        registrar = await run_blocking(service.authenticate_registrar, group, name, password)
        if registrar is None:
            await run_blocking(service.refuse_unauthenticated, f"est-registrar:{name[:64]}", group, operation, 401,
                               "bad_credentials", "wrong user name or password, or not a registrar of this group")
            return _challenge("wrong user name or password, or not a registrar of this group")
        return registrar
    chain = _tls_chain(request)
    if not chain:
        return _challenge("no credential: present a client certificate (an IDevID or your operational "
                          "certificate) or HTTP Basic credentials of a registrar")
    return CertificateChain(chain)


def _tls_chain(request: Request) -> list[bytes]:
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    pems = tls.get("client_cert_chain") or []
    # The listener wrote these PEM blocks from verified certificates: unwrapping the base64 is enough (the service
    # parses each certificate once, cached by its bytes).
    return [ssl.PEM_cert_to_DER_cert(pem) for pem in pems]


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep and name else None


def _challenge(text: str) -> Refused:
    return Refused(401, "unauthenticated", text, {"WWW-Authenticate": REALM})


async def _read_body(request: Request, settings: EstSettings) -> bytes | Refused:
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return Refused(400, "bad_length", "Content-Length is not a number")
        if int(declared) > limit:
            return Refused(413, "too_large", f"the body of {declared} bytes exceeds {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return Refused(413, "too_large", f"the body exceeds {limit} bytes")
    except TimeoutError:
        return Refused(408, "too_slow", f"the body did not arrive within {settings.body_timeout_s:g} s")
    return bytes(body)


def _answer(outcome: Issued | Pending | Refused, settings: EstSettings) -> Response:
    if isinstance(outcome, Refused):
        return _text(outcome.status, f"{outcome.reason}: {outcome.text}", outcome.headers)
    if isinstance(outcome, Pending):
        return _text(202, f"request {outcome.request_id} waits for an administrator's approval; send the same "
                          f"request again after {settings.retry_after_s} s",
                     {"Retry-After": str(settings.retry_after_s)})
    if outcome.pkcs8_der is not None:
        body, content_type = keygen_multipart(outcome.pkcs8_der, outcome.certificate_der)
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
    return _b64_response(certs_only([outcome.certificate_der]), PKCS7_CERTS_ONLY)


def _b64_response(der: bytes, media_type: str) -> Response:
    return Response(b64(der), media_type=media_type,
                    headers={"Content-Transfer-Encoding": "base64", "Cache-Control": "no-store"})


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text.rstrip("\n") + "\n", status_code=status, media_type="text/plain; charset=utf-8",
                    headers={"Cache-Control": "no-store", **(headers or {})})


def _unknown_label(request: Request) -> Response:
    return _text(404, f"no EST label {request.path_params.get('label')!r} here; the labels are configured in "
                      "[web.est] labels")
