"""`/ocsp`: OCSP over HTTP, POST (application/ocsp-request) and GET (`/ocsp/<url-encoded base64 of the request>`).

The answer comes from the engine's responder (trustlists.ocsp_responses): the cached one without leaving the event
loop when it is still right, otherwise built and signed on the blocking executor. Successful answers that any
client may share get RFC 5019 6.2's headers (max-age up to nextUpdate, ETag, Last-Modified, Expires); answers to a
request with a nonce and errors are not to be cached. OCSP errors travel as OCSP responses (malformedRequest,
unauthorized, tryLater, internalError) with HTTP 200, except where HTTP has its own word for what happened
(413 too large, 414 URL too long, 415 not an OCSP request, 408 body too slow), which still carry malformedRequest.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response

from http_fronts.ocsp.settings import OcspSettings
from trustlists.blocking import run_blocking
from trustlists.ocsp_responses import MALFORMED, OcspAnswer

if TYPE_CHECKING:
    from trustlists.engine import Engine

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"


def ocsp_router(engine: Engine, settings: OcspSettings | None = None) -> APIRouter:
    settings = settings or OcspSettings()
    # base64 makes 4 characters of 3 bytes; percent-encoding '/', '+' and '=' triples them at worst.
    max_get_chars = (settings.max_request_bytes + 2) // 3 * 4 * 3
    router = APIRouter(tags=["ocsp"])

    async def answer(der: bytes, request: Request) -> Response:
        result = engine.ocsp.cached(der)
        if result is None:
            result = await run_blocking(engine.ocsp.respond, der)
        return _response(result, request, engine.now())

    @router.post("/ocsp", response_class=Response, summary="OCSP request (RFC 6960 A.1.1, POST)")
    async def ocsp_post(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != OCSP_REQUEST:
            return _refused(415)
        body = await _read_body(request, settings)
        if isinstance(body, int):
            return _refused(body)
        return await answer(body, request)

    @router.get("/ocsp/{encoded:path}", response_class=Response, summary="OCSP request (RFC 6960 A.1.1, GET)")
    async def ocsp_get(encoded: str, request: Request) -> Response:
        # The server has percent-decoded the path already ('%2F' is '/' here, hence the path converter).
        if len(encoded) > max_get_chars:
            return _refused(414)
        try:
            der = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return _response(MALFORMED, request, engine.now())
        if len(der) > settings.max_request_bytes:
            return _refused(414)
        return await answer(der, request)

    return router


async def _read_body(request: Request, settings: OcspSettings) -> bytes | int:
    """The POST body, or the HTTP status that refuses it (too large, malformed length, too slow)."""
    limit = settings.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return 400
        if int(declared) > limit:
            return 413  # refused before reading a byte of it
    body = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    return 413  # a chunked body without a length
    except TimeoutError:
        return 408
    return bytes(body)


def _refused(status_code: int) -> Response:
    return Response(MALFORMED.der, status_code=status_code, media_type=OCSP_RESPONSE,
                    headers={"Cache-Control": "no-store"})


def _http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)


def _response(result: OcspAnswer, request: Request, now: datetime) -> Response:
    if result.etag is None or result.this_update is None or result.next_update is None:
        return Response(result.der, media_type=OCSP_RESPONSE, headers={"Cache-Control": "no-store"})
    max_age = max(0, int((result.next_update - now).total_seconds()))
    etag = f'"{result.etag}"'
    headers = {
        # RFC 5019 6.2: caches may keep the answer until nextUpdate, and must not keep it longer.
        "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate",
        "ETag": etag,
        "Last-Modified": _http_date(result.this_update),
        "Expires": _http_date(result.next_update),
    }
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(result.der, media_type=OCSP_RESPONSE, headers=headers)
