"""nodeids against the reference tables (opcua-gds.md sections 1.2-1.5) and against asyncua's ns0 address space."""

from __future__ import annotations

from collections import Counter

import pytest
from asyncua import Server, ua

from opcua_gds.nodeids import (
    GDS_NAMESPACE_URI,
    AccessRestrictions,
    Arg,
    CertificateDirectoryMethods,
    CertificateGroups,
    CertificateTypes,
    DirectoryMethods,
    GdsDataTypes,
    MethodSpec,
    Namespace,
    Ns0DataTypes,
    Ns0EventTypes,
    Ns0ObjectTypes,
    ServerConfigurationIds,
    ServerConfigurationMethods,
    StatusCodes,
    TrustListMethodTypes,
    WellKnownRoles,
    all_method_specs,
    gds_namespace_index,
    resolve,
)

# The reference tables, retyped: method -> (type id, instance id, inputs, outputs); "T[]" is an array.
REFERENCE: dict[str, tuple[int, int, list[str], list[str]]] = {
    # 1.2 Directory
    "FindApplications": (15, 143, ["ApplicationUri:String"], ["Applications:ApplicationRecordDataType[]"]),
    "RegisterApplication": (18, 146, ["Application:ApplicationRecordDataType"], ["ApplicationId:NodeId"]),
    "UpdateApplication": (188, 200, ["Application:ApplicationRecordDataType"], []),
    "UnregisterApplication": (21, 149, ["ApplicationId:NodeId"], []),
    "GetApplication": (210, 216, ["ApplicationId:NodeId"], ["Application:ApplicationRecordDataType"]),
    "QueryApplications": (868, 992, [
        "StartingRecordId:UInt32", "MaxRecordsToReturn:UInt32", "ApplicationName:String", "ApplicationUri:String",
        "ApplicationType:UInt32", "ProductUri:String", "Capabilities:String[]"], [
        "LastCounterResetTime:UtcTime", "NextRecordId:UInt32", "Applications:ApplicationDescription[]"]),
    "QueryServers": (23, 151, [
        "StartingRecordId:UInt32", "MaxRecordsToReturn:UInt32", "ApplicationName:String", "ApplicationUri:String",
        "ProductUri:String", "ServerCapabilities:String[]"], [
        "LastCounterResetTime:UtcTime", "Servers:ServerOnNetwork[]"]),
    # 1.3 CertificateDirectory
    "StartSigningRequest": (79, 157, [
        "ApplicationId:NodeId", "CertificateGroupId:NodeId", "CertificateTypeId:NodeId",
        "CertificateRequest:ByteString"], ["RequestId:NodeId"]),
    "StartNewKeyPairRequest": (76, 154, [
        "ApplicationId:NodeId", "CertificateGroupId:NodeId", "CertificateTypeId:NodeId", "SubjectName:String",
        "DomainNames:String[]", "PrivateKeyFormat:String", "PrivateKeyPassword:String"], ["RequestId:NodeId"]),
    "FinishRequest": (85, 163, ["ApplicationId:NodeId", "RequestId:NodeId"], [
        "Certificate:ByteString", "PrivateKey:ByteString", "IssuerCertificates:ByteString[]"]),
    "RevokeCertificate": (15003, 15005, ["ApplicationId:NodeId", "Certificate:ByteString"], []),
    "GetCertificateGroups": (369, 508, ["ApplicationId:NodeId"], ["CertificateGroupIds:NodeId[]"]),
    "GetCertificates": (89, 174, ["ApplicationId:NodeId", "CertificateGroupId:NodeId"], [
        "CertificateTypeIds:NodeId[]", "Certificates:ByteString[]"]),
    "GetTrustList": (197, 204, ["ApplicationId:NodeId", "CertificateGroupId:NodeId"], ["TrustListId:NodeId"]),
    "GetCertificateStatus": (222, 225, [
        "ApplicationId:NodeId", "CertificateGroupId:NodeId", "CertificateTypeId:NodeId"], ["UpdateRequired:Boolean"]),
    "CheckRevocationStatus": (126, 177, ["Certificate:ByteString"], [
        "CertificateStatus:StatusCode", "ValidityTime:UtcTime"]),
}

REFERENCE_PUSH: dict[str, tuple[int, int, int, list[str], list[str]]] = {  # 1.4: type, instance, AR, in, out
    "UpdateCertificate": (12616, 13737, 3, [
        "CertificateGroupId:NodeId", "CertificateTypeId:NodeId", "Certificate:ByteString",
        "IssuerCertificates:ByteString[]", "PrivateKeyFormat:String", "PrivateKey:ByteString"],
        ["ApplyChangesRequired:Boolean"]),
    "CreateSigningRequest": (12731, 12737, 3, [
        "CertificateGroupId:NodeId", "CertificateTypeId:NodeId", "SubjectName:String",
        "RegeneratePrivateKey:Boolean", "Nonce:ByteString"], ["CertificateRequest:ByteString"]),
    "ApplyChanges": (12734, 12740, 5, [], []),
    "CancelChanges": (25698, 25708, 5, [], []),
    "GetRejectedList": (12775, 12777, 1, [], ["Certificates:ByteString[]"]),
    "ResetToServerDefaults": (25699, 25709, 1, [], []),
    "GetCertificates": (32296, 32333, 0, ["CertificateGroupId:NodeId"], [
        "CertificateTypeIds:NodeId[]", "Certificates:ByteString[]"]),
    "CreateSelfSignedCertificate": (19337, 19342, 0, [
        "CertificateGroupId:NodeId", "CertificateTypeId:NodeId", "SubjectName:String", "DnsNames:String[]",
        "IpAddresses:String[]", "LifetimeInDays:UInt16", "KeySizeInBits:UInt16"], ["Certificate:ByteString"]),
    "DeleteCertificate": (19340, 19345, 0, ["CertificateGroupId:NodeId", "CertificateTypeId:NodeId"], []),
}

REFERENCE_TRUST_LIST: dict[str, tuple[int, list[str], list[str]]] = {  # 1.5: type id, in, out
    "Open": (11580, ["Mode:Byte"], ["FileHandle:UInt32"]),
    "Close": (11583, ["FileHandle:UInt32"], []),
    "Read": (11585, ["FileHandle:UInt32", "Length:Int32"], ["Data:ByteString"]),
    "Write": (11588, ["FileHandle:UInt32", "Data:ByteString"], []),
    "GetPosition": (11590, ["FileHandle:UInt32"], ["Position:UInt64"]),
    "SetPosition": (11593, ["FileHandle:UInt32", "Position:UInt64"], []),
    "OpenWithMasks": (12543, ["Masks:UInt32"], ["FileHandle:UInt32"]),
    "CloseAndUpdate": (12546, ["FileHandle:UInt32"], ["ApplyChangesRequired:Boolean"]),
    "AddCertificate": (12548, ["Certificate:ByteString", "IsTrustedCertificate:Boolean"], []),
    "RemoveCertificate": (12550, ["Thumbprint:String", "IsTrustedCertificate:Boolean"], []),
    "GetRejectedList": (23526, [], ["Certificates:ByteString[]"]),
}

# Instance ids the reference gives for TrustList methods (1.3 GDS DefaultApplicationGroup, 1.5 ns0).
REFERENCE_TRUST_LIST_INSTANCES = {
    "GdsDefaultApplicationGroup": {"Open": 622, "Read": 627, "Write": 630, "OpenWithMasks": 638,
                                   "CloseAndUpdate": 641, "AddCertificate": 644, "RemoveCertificate": 646},
    "PushDefaultApplicationGroup": {"Open": 12647, "Close": 12650, "Read": 12652, "Write": 12655,
                                    "GetPosition": 12657, "SetPosition": 12660, "OpenWithMasks": 12663,
                                    "CloseAndUpdate": 12666, "AddCertificate": 12668, "RemoveCertificate": 12670,
                                    "GetRejectedList": 23550},
    "PushDefaultHttpsGroup": {"Open": 14095, "Close": 14098, "Read": 14100, "Write": 14103, "OpenWithMasks": 14111,
                              "CloseAndUpdate": 14114, "AddCertificate": 14117, "RemoveCertificate": 14119,
                              "GetRejectedList": 23552},
    "PushDefaultUserTokenGroup": {"Open": 14129, "Close": 14132, "Read": 14134, "Write": 14137,
                                  "OpenWithMasks": 14145, "CloseAndUpdate": 14148, "AddCertificate": 14151,
                                  "RemoveCertificate": 14153, "GetRejectedList": 23554},
}


def _describe(arg: Arg) -> str:
    if arg.gds_type:
        assert arg.data_type == GdsDataTypes.ApplicationRecordDataType
        name = "ApplicationRecordDataType"
    else:
        name = ua.ObjectIdNames[arg.data_type_id().Identifier]
    return f"{arg.name}:{name}{'[]' if arg.is_array else ''}"


def _signature(spec: MethodSpec) -> tuple[list[str], list[str]]:
    return [_describe(a) for a in spec.inputs], [_describe(a) for a in spec.outputs]


def test_gds_methods_match_reference_tables() -> None:
    specs = DirectoryMethods.all() + CertificateDirectoryMethods.all()
    assert [s.name for s in specs] == list(REFERENCE)
    for spec in specs:
        type_id, instance_id, inputs, outputs = REFERENCE[spec.name]
        assert (spec.type_id, spec.instance_id) == (type_id, instance_id), spec.name
        assert _signature(spec) == (inputs, outputs), spec.name
        assert spec.namespace is Namespace.GDS
    assert {s.name for s in specs if not s.mandatory} == {"RevokeCertificate", "GetCertificates",
                                                           "CheckRevocationStatus"}


def test_push_methods_match_reference_tables() -> None:
    specs = ServerConfigurationMethods.all()
    assert [s.name for s in specs] == list(REFERENCE_PUSH)
    for spec in specs:
        type_id, instance_id, ar, inputs, outputs = REFERENCE_PUSH[spec.name]
        assert (spec.type_id, spec.instance_id, int(spec.access_restrictions)) == (type_id, instance_id, ar)
        assert _signature(spec) == (inputs, outputs), spec.name
        assert spec.namespace is Namespace.NS0


def test_trust_list_methods_match_reference_tables() -> None:
    for name, (type_id, inputs, outputs) in REFERENCE_TRUST_LIST.items():
        sig = TrustListMethodTypes.get(name)
        assert sig.type_id == type_id
        assert ([_describe(a) for a in sig.inputs], [_describe(a) for a in sig.outputs]) == (inputs, outputs)
    for group_attr, expected in REFERENCE_TRUST_LIST_INSTANCES.items():
        group = getattr(CertificateGroups, group_attr)
        for method_name, instance_id in expected.items():
            spec = group.method(method_name)
            assert spec.instance_id == instance_id, (group_attr, method_name)
            assert spec.type_id == REFERENCE_TRUST_LIST[method_name][0]
            assert spec.access_restrictions == (AccessRestrictions.SigningRequired
                                                if group.namespace is Namespace.NS0 else AccessRestrictions.NONE)
    gds = {g.name: (g.group_id, g.trust_list_id) for g in CertificateGroups.gds()}
    assert gds == {"DefaultApplicationGroup": (615, 616), "DefaultHttpsGroup": (649, 650),
                   "DefaultUserTokenGroup": (683, 684)}
    push = {g.name: (g.group_id, g.trust_list_id) for g in CertificateGroups.push()}
    assert push == {"DefaultApplicationGroup": (14156, 12642), "DefaultHttpsGroup": (14088, 14089),
                    "DefaultUserTokenGroup": (14122, 14123)}


def test_method_ids_are_unique_per_namespace() -> None:
    ids = Counter((s.namespace, s.instance_id) for s in all_method_specs())
    assert [k for k, n in ids.items() if n > 1] == []
    assert len(ids) == 7 + 9 + 9 + 6 * 11


def test_arguments_resolve_the_gds_namespace_at_runtime() -> None:
    register = DirectoryMethods.RegisterApplication
    assert register.node_id(4) == ua.NodeId(146, 4)
    assert register.type_node_id(4) == ua.NodeId(18, 4)
    assert register.browse_name(4) == ua.QualifiedName("RegisterApplication", 4)
    [arg] = register.input_arguments(4)
    assert (arg.Name, arg.DataType, arg.ValueRank, arg.ArrayDimensions) == ("Application", ua.NodeId(1, 4), -1, [])
    [out] = DirectoryMethods.FindApplications.output_arguments(4)
    assert (out.DataType, out.ValueRank, out.ArrayDimensions) == (ua.NodeId(1, 4), 1, [0])
    with pytest.raises(ValueError, match="GDS namespace index"):
        register.node_id()
    assert ServerConfigurationMethods.UpdateCertificate.node_id() == ua.NodeId(13737)
    assert resolve(Namespace.GDS, CertificateGroups.GdsDefaultApplicationGroup.group_id, 3) == ua.NodeId(615, 3)
    assert CertificateGroups.PushDefaultApplicationGroup.trust_list_node_id() == ua.NodeId(12642)
    assert GDS_NAMESPACE_URI == "http://opcfoundation.org/UA/GDS/"


def test_ns0_ids_agree_with_asyncua() -> None:
    oid = ua.ObjectIds
    for member in ServerConfigurationIds:
        assert getattr(oid, "ServerConfiguration" if member.name == "ServerConfiguration"
                       else f"ServerConfiguration_{_sc_path(member.name)}") == member.value, member.name
    for enum, prefix in ((Ns0ObjectTypes, ""), (Ns0DataTypes, ""), (Ns0EventTypes, ""),
                         (WellKnownRoles, "WellKnownRole_")):
        for member in enum:
            assert getattr(oid, prefix + member.name) == member.value, member.name
    checked = 0
    for member in CertificateTypes:
        if hasattr(oid, member.name):  # asyncua's nodeset predates some 1.05.07 types
            assert getattr(oid, member.name) == member.value, member.name
            checked += 1
    assert checked >= 12
    for member in StatusCodes:
        assert getattr(ua.StatusCodes, member.name) == member.value, member.name
    for spec in ServerConfigurationMethods.all():
        assert getattr(oid, f"ServerConfiguration_{spec.name}") == spec.instance_id
        assert getattr(oid, f"ServerConfigurationType_{spec.name}") == spec.type_id
    for group in CertificateGroups.push():
        for spec in group.methods():
            path = "" if spec.name == "GetRejectedList" else "TrustList_"
            assert getattr(oid, f"ServerConfiguration_CertificateGroups_{group.name}_{path}{spec.name}") \
                == spec.instance_id, (group.name, spec.name)


def _sc_path(name: str) -> str:
    if name.startswith("Default"):
        return f"CertificateGroups_{name}"
    return name


async def test_ns0_signatures_agree_with_asyncua_address_space() -> None:
    server = Server()
    await server.init()
    idx = await gds_namespace_index(server, register=True)
    assert idx == await gds_namespace_index(server)
    specs = list(ServerConfigurationMethods.all())
    for group in CertificateGroups.push():
        specs += list(group.methods())
    # The method declarations on the types carry the same signatures.
    specs += [MethodSpec(s.name, Namespace.NS0, s.type_id, None, s.inputs, s.outputs)
              for s in vars(TrustListMethodTypes).values() if hasattr(s, "type_id")]
    compared = 0
    for spec in specs:
        node = server.get_node(spec.node_id())
        try:
            browse_name = await node.read_browse_name()
        except ua.UaStatusCodeError:
            continue  # optional instances asyncua's ns0 does not instantiate (GetCertificates, GetRejectedList)
        assert browse_name == spec.browse_name(), spec
        for prop, expected in (("InputArguments", spec.input_arguments()),
                               ("OutputArguments", spec.output_arguments())):
            try:
                actual = await (await node.get_child(f"0:{prop}")).read_value()
            except ua.UaStatusCodeError:
                actual = []
            assert [(a.Name, a.DataType, a.ValueRank, a.ArrayDimensions) for a in actual] == \
                [(a.Name, a.DataType, a.ValueRank, a.ArrayDimensions) for a in expected], (spec.name, prop)
        compared += 1
    assert compared >= 40
