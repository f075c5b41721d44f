"""A push target answers a wrong argument count as OPC 10000-4 (Call) says: BadArgumentsMissing / BadTooManyArguments.

node-opcua's client sends CloseAndUpdate with an argument more than the method declares; it used to get
BadInvalidArgument, which names no cause.
"""

from __future__ import annotations

from pathlib import Path

from asyncua import ua

from opcua_gds.nodeids import CertificateGroups, MethodSpec, ServerConfigurationIds, ServerConfigurationMethods
from simulators.plc import PlcSimulator
from tests.opcua_gds.push.target.pki import TestCa, access_config, connect
from trustlists.testing import free_port

S = ua.StatusCodes
GROUP = CertificateGroups.PushDefaultApplicationGroup
M = ServerConfigurationMethods


async def _code(node: object, spec: MethodSpec, count: int) -> int:
    try:
        await node.call_method(spec.node_id(), *[ua.Variant() for _ in range(count)])  # type: ignore[attr-defined]
    except ua.UaStatusCodeError as exc:
        return exc.code
    return S.Good


async def test_push_methods_answer_arguments_missing_or_too_many(tmp_path: Path) -> None:
    admin = TestCa().client(tmp_path / "clients", "admin")
    plc = PlcSimulator("plc-1", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", access_config())
    await plc.start()
    try:
        client = await connect(plc.endpoint, admin)  # first contact: trust on first push, SecurityAdmin
        try:
            config = client.get_node(ua.NodeId(ServerConfigurationIds.ServerConfiguration))
            trust_list = client.get_node(GROUP.trust_list_node_id())
            methods = [(config, M.CreateSigningRequest), (config, M.UpdateCertificate), (config, M.ApplyChanges),
                       (config, M.GetRejectedList)]
            methods += [(trust_list, GROUP.method(name)) for name, _ in GROUP.trust_list_methods]
            answers = {}
            for node, spec in methods:
                missing = await _code(node, spec, len(spec.inputs) - 1) if spec.inputs else S.BadArgumentsMissing
                answers[spec.name] = (missing, await _code(node, spec, len(spec.inputs) + 1))
            assert answers == {name: (S.BadArgumentsMissing, S.BadTooManyArguments) for name in answers}
            assert len(answers) == 14
            # The node-opcua case: a valid handle, plus one argument.
            handle = await trust_list.call_method(GROUP.method("Open").node_id(), ua.Variant(0x06, ua.VariantType.Byte))
            try:
                await trust_list.call_method(GROUP.method("CloseAndUpdate").node_id(),
                                             ua.Variant(handle, ua.VariantType.UInt32),
                                             ua.Variant(0, ua.VariantType.UInt32))
            except ua.UaStatusCodeError as exc:
                assert exc.code == S.BadTooManyArguments
            else:
                raise AssertionError("CloseAndUpdate with an extra argument succeeded")
        finally:
            await client.disconnect()
    finally:
        await plc.stop()
