"""`/crl/<CA id>.crl`: each CA's latest CRL (DER, application/pkix-crl), the URL a group's certificates may name
(`crl_url_in_certificates`, trustlists.policy).

The engine publishes a new CRL on every revocation and before nextUpdate; the front asks it for the latest at most
once per `recheck_s` per CA (a CRL can be megabytes) and tells HTTP caches to keep it at most `max_age_s`.
"""

from __future__ import annotations

import hashlib
import time
from email.utils import format_datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response

from http_fronts.crl_settings import CrlSettings
from trustlists.blocking import run_blocking
from trustlists.errors import NotFound, OtpkiError
from trustlists.models import CrlRecord

if TYPE_CHECKING:
    from trustlists.engine import Engine

PKIX_CRL = "application/pkix-crl"
_MAX_CA_ID = 200


class _Served:
    def __init__(self, record: CrlRecord) -> None:
        self.record = record
        self.etag = f'"{hashlib.sha256(record.der).hexdigest()[:32]}"'
        self.read_at = time.monotonic()


def crl_router(engine: Engine, settings: CrlSettings | None = None) -> APIRouter:
    settings = settings or CrlSettings()
    router = APIRouter(tags=["crl"])
    served: dict[str, _Served] = {}  # one entry per CA that has a CRL: bounded by the hierarchy

    def latest(ca_id: str) -> CrlRecord | None:
        try:
            engine.ca_status(ca_id)
        except NotFound:
            return None
        return engine.latest_crl(ca_id)

    @router.get("/crl/{name}", response_class=Response, summary="The latest CRL of a CA (DER)")
    async def crl(name: str, request: Request) -> Response:
        ca_id = name.removesuffix(".crl")
        if ca_id == name or not ca_id or len(ca_id) > _MAX_CA_ID:
            return Response("not found: CRLs are at /crl/<CA id>.crl\n", status_code=404, media_type="text/plain")
        entry = served.get(ca_id)
        if entry is None or time.monotonic() - entry.read_at >= settings.recheck_s:
            try:
                record = await run_blocking(latest, ca_id)
            except OtpkiError as exc:  # the store is unreachable or busy: say so, never a 500
                if entry is None:
                    return Response(f"unavailable: {exc.reason}\n", status_code=503, media_type="text/plain",
                                    headers={"Retry-After": "5"})
                record = entry.record  # the CRL served until now is still signed and valid until its nextUpdate
            if record is None:
                return Response("not found: no such CA, or it has no CRL yet\n", status_code=404,
                                media_type="text/plain")
            entry = served[ca_id] = (entry if entry is not None and entry.record.der == record.der
                                     else _Served(record))
            entry.read_at = time.monotonic()
        record = entry.record
        until_next = int((record.next_update - engine.now()).total_seconds())
        headers = {
            "Cache-Control": f"max-age={max(0, min(settings.max_age_s, until_next))}, public, no-transform",
            "ETag": entry.etag,
            "Last-Modified": format_datetime(record.this_update, usegmt=True),
            "Expires": format_datetime(record.next_update, usegmt=True),
        }
        if entry.etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        return Response(record.der, media_type=PKIX_CRL, headers=headers)

    return router
