"""otpki's push target (opcua_gds.push.target, here the PLC simulator) updated by node-opcua 2.157.0's own
push-management client (push_trustlist_client.js): a GDS built on node-opcua must be able to manage an otpki PLC.

node-opcua's TrustListClient.closeAndUpdate sends CloseAndUpdate with an argument more than OPC 10000-12 declares;
the push target answers BadTooManyArguments (OPC 10000-4 Call), the status that names the cause (it answered
BadInvalidArgument before), and the declared call then completes the update.
"""

from __future__ import annotations

import base64
from pathlib import Path

from opcua_gds.trustlist_binary import encode_trustlist
from simulators.plc import PlcSimulator
from tests.interop.node_clients import node_client_identity, run_script
from tests.opcua_gds.push.target.pki import USERS, access_config
from trustlists.models import TrustListContent
from trustlists.testing import free_port, initialized_engine

ADMIN = ("secadmin", USERS["secadmin"][0])


async def test_node_opcua_updates_a_push_target_trust_list(tmp_path: Path) -> None:
    engine = initialized_engine(tmp_path / "engine")
    plc = PlcSimulator("plc-5", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", access_config())
    await plc.start()
    try:
        assert plc.push is not None
        trust = engine.trustlists.get("opcua-application").content
        assert plc.push.trust_list != trust  # factory state: the update below is what changes it
        # The client trusts the PLC's factory certificate; the PLC takes its first trust list from a SecurityAdmin
        # (trust on first push), and that list holds the CA that issued the client's certificate.
        me = node_client_identity(engine, tmp_path / "node-client", "node-push-client",
                                  "urn:otpki:interop:node-push-client", trust=trust,
                                  extra_trusted=[plc.certificate_der])
        encoded = tmp_path / "trustlist.bin"
        encoded.write_bytes(encode_trustlist(trust))
        out = await run_script("push_trustlist_client.js", [
            *me.args(plc.endpoint), "--user", ADMIN[0], "--password", ADMIN[1], "--trust-list", str(encoded)],
            tmp_path / "push.log")

        assert out["trustListId"] == "ns=0;i=12642"  # ServerConfiguration's DefaultApplicationGroup TrustList
        assert out["nodeOpcuaCloseAndUpdate"] == "BadTooManyArguments"
        assert (out["closeAndUpdate"], out["applyChangesRequired"], out["applyChanges"]) == ("Good", True, "Good")
        read_back = out["trustList"]
        assert TrustListContent(
            specified_lists=read_back["specifiedLists"],
            trusted_certificates=[base64.b64decode(c) for c in read_back["trustedCertificates"]],
            trusted_crls=[base64.b64decode(c) for c in read_back["trustedCrls"]],
            issuer_certificates=[base64.b64decode(c) for c in read_back["issuerCertificates"]],
            issuer_crls=[base64.b64decode(c) for c in read_back["issuerCrls"]]) == trust
        assert plc.push.trust_list == trust
    finally:
        await plc.stop()
        engine.close()
