"""The SCADA simulator enrolls through the real GDS: register, pull, install, restart, trust list, renew."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import Client
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds._asyncua_compat import live_channels
from opcua_gds.certificate_chain import split_chain
from simulators.scada import ScadaSettings, ScadaSimulator
from tests.opcua_gds.gds.gds_fixture import PASSWORDS, running_gds
from trustlists.models import CertificateStatus
from trustlists.testing import free_port


async def _presented_chain(url: str) -> list[x509.Certificate]:
    client = Client(url, timeout=10, watchdog_intervall=10)
    endpoints = await client.connect_and_get_server_endpoints()
    return [x509.load_der_x509_certificate(der) for der in split_chain(endpoints[0].ServerCertificate)]


async def _presented_certificate(url: str) -> x509.Certificate:
    return (await _presented_chain(url))[0]


@pytest.mark.parametrize("key_flow", ["csr", "new-key"])
async def test_scada_enrolls_installs_and_renews(tmp_path: Path, key_flow: str) -> None:
    async for env in running_gds(tmp_path):
        engine = env.engine
        settings = ScadaSettings(
            name="scada-north", application_uri="urn:plant:north:scada", pki_dir=tmp_path / "scada-pki",
            endpoint=f"opc.tcp://127.0.0.1:{free_port()}/scada", gds_url=env.url,
            registrar_user="registrar", registrar_password=PASSWORDS["registrar"][0], key_flow=key_flow)
        sim = ScadaSimulator(settings)
        await sim.start()
        try:
            factory = await _presented_certificate(settings.endpoint)
            assert factory.issuer == factory.subject  # starts self-signed

            assert len(await _presented_chain(settings.endpoint)) == 1  # a self-signed certificate, alone

            await sim.enroll()
            presented, *issuers = await _presented_chain(settings.endpoint)
            assert presented == sim.certificate() and presented.issuer != presented.subject
            # The issuing CA goes with it (the root does not): a client that trusts the root builds the path.
            issuing_ca = engine.hierarchy.issuing_ca_for("opcua-application", None)
            assert [c.public_bytes(Encoding.DER) for c in issuers] == [issuing_ca.certificate_der]
            # As a client of the GDS it sends the same chain.
            leaf = presented.public_bytes(Encoding.DER)
            session = await sim._gds_session(as_registrar=False)
            try:
                assert env.gds.server is not None
                sent = {c.peer_chain for c in live_channels(env.gds.server) if c.peer_certificate == leaf}
                assert sent == {(leaf, issuing_ca.certificate_der)}
            finally:
                await session.disconnect()
            record = engine.inventory.by_fingerprint(presented.fingerprint(hashes.SHA256()).hex())
            assert record is not None and record.san_uri == settings.application_uri
            assert record.status_at(engine.now()) is CertificateStatus.ACTIVE
            trusted = list((settings.pki_dir / "trusted" / "certs").glob("*.der"))
            assert trusted and sim.trust_list is not None
            assert sim.trust_list == engine.trustlists.get("opcua-application").content

            assert await sim.renew_if_needed() is False  # fresh certificate: nothing to do
            # Make the current certificate due: a renewal window longer than its lifetime.
            policy = engine.config.groups["opcua-application"]
            engine.config.groups["opcua-application"] = policy.model_copy(update={"renewal_window_days": 800})
            assert await sim.renew_if_needed() is True
            engine.config.groups["opcua-application"] = policy
            renewed = await _presented_certificate(settings.endpoint)
            assert renewed != presented and renewed.issuer == presented.issuer
        finally:
            await sim.stop()
