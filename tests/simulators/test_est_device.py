"""The EST device simulator as its own process against the HTTPS listener (otpki.web's, with EST and OCSP mounted
as `otpki serve` mounts them): enroll with the IDevID, re-enroll, and OCSP says good; after a revocation it says
revoked."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI

from http_fronts.est.router import est_router
from http_fronts.ocsp.router import ocsp_router
from otpki.web.listener import ListenAddress, UvicornListener
from otpki.web.tls import client_trust_pem, ensure_server_identity, server_context
from simulators.est_device import EstDevice
from simulators.manufacturer import Manufacturer
from tests.http_fronts.conftest import ec_root_config
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import PASSPHRASE, initialized_engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = initialized_engine(tmp_path / "pki", config=ec_root_config(), actor="tester")
    eng.ocsp_signers.ensure(actor="tester")
    return eng


@pytest.fixture
async def listener(engine: Engine, tmp_path: Path) -> AsyncIterator[UvicornListener]:
    identity, _ = ensure_server_identity(engine, tmp_path / "web", group="web-server", names=["127.0.0.1"],
                                         actor="tester", password=PASSPHRASE)
    maker = Manufacturer.create("ACME Devices")
    engine.trustlists.import_external("mqtt-device", maker.ca_pem.encode(), list_name="trusted", note="ACME",
                                      actor="tester")
    credential = maker.issue_idevid("SN-4711")
    engine.registry.register(group="mqtt-device", name="hmi-1", site="north", actor="tester",
                             attributes={"bootstrap": [credential.allow_list_entry()]})
    credential.write(tmp_path / "factory")
    app = FastAPI()
    app.include_router(est_router(engine))
    app.include_router(ocsp_router(engine))
    server = UvicornListener(app, ListenAddress("127.0.0.1", 0, "test"), what="the test listener",
                             ssl_context=server_context(identity, client_trust_pem(engine)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        engine.close()


async def test_est_device_enrolls_reenrolls_and_is_checked_over_ocsp(engine: Engine, listener: UvicornListener,
                                                                      tmp_path: Path) -> None:
    root = next(ca for ca in engine.hierarchy.list() if ca.parent_id is None)
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(x509.load_der_x509_certificate(root.certificate_der).public_bytes(Encoding.PEM))
    factory = tmp_path / "factory"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.est_device", "--est", listener.url, "--ca-file", str(root_pem),
        "--name", "hmi-1", "--idevid-cert", str(factory / "bootstrap.crt"), "--idevid-key",
        str(factory / "bootstrap.key"), "--dir", str(tmp_path / "hmi-1"), "--ocsp", f"{listener.url}/ocsp",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["ocsp"] == "good" and report["enrolled"] != report["reenrolled"]
    first = engine.inventory.get(report["enrolled"])
    assert first.superseded_by is not None  # the re-enrollment replaced it

    # The operator revokes the device's certificate: the responder now says so.
    await asyncio.to_thread(engine.authority.revoke, report["reenrolled"], reason=RevocationReason.KEY_COMPROMISE,
                            actor="tester")
    device = EstDevice(listener.url, ca_file=root_pem, name="hmi-1", idevid_cert=factory / "bootstrap.crt",
                       idevid_key=factory / "bootstrap.key", directory=tmp_path / "hmi-1")
    await asyncio.to_thread(device.cacerts)
    device.certificate = x509.load_pem_x509_certificate((tmp_path / "hmi-1" / "device.crt").read_bytes())
    assert await asyncio.to_thread(device.ocsp_status, f"{listener.url}/ocsp") == "revoked"
