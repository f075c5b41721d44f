"""The PLC simulator: factory self-signed identity, process variables, push management, a small plant."""

from __future__ import annotations

from pathlib import Path

from asyncua import Client, ua
from cryptography import x509

from opcua_gds.nodeids import ServerConfigurationIds
from simulators.plc import PLC_NAMESPACE, start_plant
from tests.opcua_gds.push.target.pki import Push, TestCa, access_config, connect
from trustlists.testing import free_port


async def test_plant_of_plcs_with_push_management(tmp_path: Path) -> None:
    base = free_port()
    plcs = await start_plant(2, base, tmp_path / "plant", access_config())
    try:
        assert [p.endpoint for p in plcs] == [f"opc.tcp://127.0.0.1:{base + i}/plc" for i in range(2)]
        certs = [x509.load_der_x509_certificate(p.certificate_der) for p in plcs]
        assert all(c.issuer == c.subject for c in certs)  # factory self-signed
        assert certs[0].subject != certs[1].subject

        endpoints = await Client(plcs[1].endpoint, timeout=5).connect_and_get_server_endpoints()
        assert bytes(endpoints[0].ServerCertificate) == plcs[1].certificate_der

        admin = TestCa().client(tmp_path / "clients", "admin")
        client = await connect(plcs[0].endpoint, admin)
        try:
            idx = await client.get_namespace_index(PLC_NAMESPACE)
            plc = await client.nodes.objects.get_child(f"{idx}:PLC")
            assert await (await plc.get_child(f"{idx}:Temperature")).read_value() == 21.5
            assert await (await plc.get_child(f"{idx}:MotorRunning")).read_value() is False
            capabilities = await client.get_node(ua.NodeId(ServerConfigurationIds.ServerCapabilities)).read_value()
            assert capabilities == ["DA"]
            assert len(await Push(client).csr(False)) > 100  # push management is installed
        finally:
            await client.disconnect()
    finally:
        for p in plcs:
            await p.stop()
