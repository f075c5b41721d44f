"""The demo's EST step: an HMI from another manufacturer enrolls over EST (RFC 7030) with its IDevID on the HTTPS
listener, re-enrolls with the operational certificate it got, and is checked over OCSP; then the operator revokes
it and OCSP says so.

The listener is otpki's (otpki.web: uvicorn with the TLS client-certificate extension) with the EST and OCSP
routers, as `otpki serve` mounts them; the device is `simulators.est_device` (plain http.client over ssl), run on a
worker thread because a device's firmware blocks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI

from http_fronts.est.router import est_router
from http_fronts.ocsp.router import ocsp_router
from otpki.web.listener import ListenAddress, UvicornListener
from otpki.web.tls import client_trust_pem, ensure_server_identity, server_context
from simulators.est_device import EstDevice
from simulators.manufacturer import Manufacturer
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.models import RevocationReason

GROUP = "mqtt-device"
ACTOR = "demo"


class EstDemo:
    def __init__(self, engine: Engine, workdir: Path, site: str, key_password: bytes | None) -> None:
        self._engine = engine
        self._dir = workdir
        self._site = site
        self._password = key_password
        self.listener: UvicornListener | None = None

    def _prepare(self) -> tuple[FastAPI, object, Path, Path]:
        """Blocking: the listener's certificate, the HMI maker's CA imported, the HMI registered."""
        engine = self._engine
        identity, _ = ensure_server_identity(engine, self._dir / "web", group="web-server", names=["127.0.0.1"],
                                             actor=ACTOR, password=self._password)
        engine.ocsp_signers.ensure(actor=ACTOR)
        maker = Manufacturer.create("Panel Works")
        engine.trustlists.import_external(GROUP, maker.ca_pem.encode(), list_name="trusted",
                                          note="Panel Works IDevID CA (demo)", actor=ACTOR)
        credential = maker.issue_idevid("PW-000123")
        engine.registry.register(group=GROUP, name="hmi-1", site=self._site, actor=ACTOR,
                                 attributes={"bootstrap": [credential.allow_list_entry()]})
        factory = self._dir / "hmi-1-factory"
        credential.write(factory)
        root = next(ca for ca in engine.hierarchy.list() if ca.parent_id is None)
        root_pem = self._dir / "root.pem"
        root_pem.write_bytes(x509.load_der_x509_certificate(root.certificate_der).public_bytes(Encoding.PEM))
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        app.include_router(est_router(engine))
        app.include_router(ocsp_router(engine))
        return app, server_context(identity, client_trust_pem(engine)), root_pem, factory

    async def run(self) -> str:
        app, context, root_pem, factory = await run_blocking(self._prepare)
        self.listener = UvicornListener(app, ListenAddress("127.0.0.1", 0, "demo"), what="the demo's EST listener",
                                        ssl_context=context)
        await self.listener.start()
        url = self.listener.url
        device = EstDevice(url, ca_file=root_pem, name="hmi-1", idevid_cert=factory / "bootstrap.crt",
                           idevid_key=factory / "bootstrap.key", directory=self._dir / "hmi-1")
        await asyncio.to_thread(device.cacerts)
        first = await asyncio.to_thread(device.enroll)
        second = await asyncio.to_thread(device.reenroll)
        good = await asyncio.to_thread(device.ocsp_status, f"{url}/ocsp")
        if good != "good" or first.serial_number == second.serial_number:
            raise RuntimeError(f"hmi-1 enrolled {first.serial_number:x}, re-enrolled {second.serial_number:x}, "
                               f"OCSP said {good}")
        await run_blocking(self._engine.authority.revoke, f"{second.serial_number:x}",
                           reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)
        revoked = await asyncio.to_thread(device.ocsp_status, f"{url}/ocsp")
        if revoked != "revoked":
            raise RuntimeError(f"OCSP still says {revoked} for the revoked certificate of hmi-1")
        return (f"hmi-1 enrolled over EST with its IDevID ({first.serial_number:x}), re-enrolled "
                f"({second.serial_number:x}); OCSP good, then revoked after the operator revoked it")

    async def stop(self) -> None:
        if self.listener is not None:
            listener, self.listener = self.listener, None
            await listener.stop()
