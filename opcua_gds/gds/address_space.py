"""The GDS namespace as the OPC Foundation's GDS NodeSet (OPC 10000-12) defines it.

`build(server, idx, certificate_types)` adds, with the NodeSet's NodeIds, BrowseNames (with their namespace: the
NodeSet mixes GDS and ns0 names, e.g. `1:DefaultApplicationGroup` under `1:CertificateGroups` but `0:TrustList`
and `0:Open` below it), TypeDefinitions, ModellingRules and argument lists:

- DirectoryType (i=13) and CertificateDirectoryType (i=63) with their InstanceDeclarations;
- the GDS audit event types (i=26, 91, 109) under AuditUpdateMethodEventType;
- the Directory (i=141) under Objects: Applications, the Directory and CertificateDirectory methods (the three
  optional ones otpki implements, RevokeCertificate, GetCertificates and CheckRevocationStatus, with the ids
  UA-.NETStandard's GDS uses: 15005, 174, 177), and CertificateGroups with the three CertificateGroupType
  objects, their CertificateTypes and their TrustList file objects.

Nodes are added with AddNodes items built here rather than with asyncua's instantiate(), which would number the
children itself in the GDS namespace; giving the TypeDefinition in the AddNodesItem also puts it into the
parent's ReferenceDescription, which is what a browsing client sees. Method nodes get no callback here: the
method modules bind them with `Server.link_method` (an unbound method answers BadNothingToDo).

ApplicationRecordDataType (i=1) and its Default Binary encoding (i=134) are added by application_record.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asyncua import Node, Server, ua

from opcua_gds.nodeids import (
    CERTIFICATE_DIRECTORY_TYPE_GROUP,
    CertificateDirectoryMethods,
    CertificateGroupIds,
    CertificateGroups,
    DirectoryMethods,
    GdsEventTypeProperties,
    GdsEventTypes,
    GdsObjects,
    GdsObjectTypes,
    GdsTypeDeclarations,
    MethodSpec,
    Ns0EventTypes,
    Ns0ObjectTypes,
    TrustListMethodTypes,
    gds_node_id,
    ns0_node_id,
    numeric_node_id,
)

_O = ua.ObjectIds
MANDATORY = _O.ModellingRule_Mandatory
OPTIONAL = _O.ModellingRule_Optional
# Every GDS method numbers its InputArguments / OutputArguments properties method id + 1 (+ 2), except these two
# declarations of CertificateDirectoryType (GDS NodeSet).
_ARGUMENT_IDS = {89: (90, 108), 126: (160, 161)}
# The Directory's methods in the NodeSet's order, then the optional ones otpki serves beyond it.
_DIRECTORY_METHODS = (*DirectoryMethods.all(), *(CertificateDirectoryMethods.by_name(n) for n in (
    "StartSigningRequest", "StartNewKeyPairRequest", "FinishRequest", "GetCertificateGroups", "GetTrustList",
    "GetCertificateStatus")))
OPTIONAL_DIRECTORY_METHODS = tuple(CertificateDirectoryMethods.by_name(n) for n in (
    "RevokeCertificate", "GetCertificates", "CheckRevocationStatus"))
_CERTIFICATE_DIRECTORY_TYPE_METHODS = tuple(CertificateDirectoryMethods.by_name(n) for n in (
    "StartSigningRequest", "StartNewKeyPairRequest", "FinishRequest", "RevokeCertificate", "GetCertificateGroups",
    "GetCertificates", "GetTrustList", "GetCertificateStatus", "CheckRevocationStatus"))
_FILE_PROPERTIES: tuple[tuple[str, int], ...] = (  # the TrustList's FileType properties and their DataTypes
    ("Size", _O.UInt64), ("Writable", _O.Boolean), ("UserWritable", _O.Boolean), ("OpenCount", _O.UInt16))


def argument_ids(method_id: int, spec: MethodSpec) -> tuple[int | None, int | None]:
    """The NodeIds (GDS namespace) of a GDS method's InputArguments and OutputArguments properties."""
    if method_id in _ARGUMENT_IDS:
        return _ARGUMENT_IDS[method_id]
    following = iter(range(method_id + 1, method_id + 3))
    return (next(following) if spec.inputs else None), (next(following) if spec.outputs else None)


class _Batch:
    """AddNodes and AddReferences items, sent to the server's own session in one call each."""

    def __init__(self, server: Server, idx: int) -> None:
        self.session = server.nodes.objects.session
        self.idx = idx
        self.nodes: list[ua.AddNodesItem] = []
        self.references: list[ua.AddReferencesItem] = []

    def gds(self, identifier: int) -> ua.NodeId:
        return gds_node_id(identifier, self.idx)

    def name(self, text: str, *, gds: bool) -> ua.QualifiedName:
        return ua.QualifiedName(text, self.idx if gds else 0)

    def _add(self, node_class: ua.NodeClass, node_id: ua.NodeId, browse_name: ua.QualifiedName, parent: ua.NodeId,
             reference: int, attributes: Any, type_definition: int | ua.NodeId | None = None,
             rule: int | None = None) -> ua.NodeId:
        attributes.DisplayName = ua.LocalizedText(browse_name.Name)
        attributes.WriteMask = 0
        attributes.UserWriteMask = 0
        item = ua.AddNodesItem(
            ParentNodeId=parent, ReferenceTypeId=ns0_node_id(reference), RequestedNewNodeId=node_id,
            BrowseName=browse_name, NodeClass=node_class, NodeAttributes=attributes,
            TypeDefinition=ua.NodeId() if type_definition is None else (
                type_definition if isinstance(type_definition, ua.NodeId) else ns0_node_id(type_definition)))
        self.nodes.append(item)
        if rule is not None:
            self.reference(node_id, _O.HasModellingRule, ns0_node_id(rule), ua.NodeClass.Object)
        return node_id

    def reference(self, source: ua.NodeId, reference: int, target: ua.NodeId, target_class: ua.NodeClass) -> None:
        self.references.append(ua.AddReferencesItem(
            SourceNodeId=source, ReferenceTypeId=ns0_node_id(reference), IsForward=True, TargetNodeId=target,
            TargetNodeClass=target_class))

    def object_type(self, node_id: ua.NodeId, name: str, supertype: int | ua.NodeId, *,
                    abstract: bool = False) -> ua.NodeId:
        attributes = ua.ObjectTypeAttributes(IsAbstract=abstract)
        parent = supertype if isinstance(supertype, ua.NodeId) else ns0_node_id(supertype)
        return self._add(ua.NodeClass.ObjectType, node_id, self.name(name, gds=True), parent, _O.HasSubtype,
                         attributes)

    def object(self, node_id: ua.NodeId, browse_name: ua.QualifiedName, parent: ua.NodeId,
               type_definition: int | ua.NodeId, *, reference: int = _O.HasComponent,
               rule: int | None = None) -> ua.NodeId:
        attributes = ua.ObjectAttributes(EventNotifier=0)
        return self._add(ua.NodeClass.Object, node_id, browse_name, parent, reference, attributes, type_definition,
                         rule)

    def property(self, node_id: ua.NodeId, browse_name: ua.QualifiedName, parent: ua.NodeId, data_type: int,
                 value: ua.Variant, *, array: bool = False, dimensions: Sequence[int] | None = None,
                 rule: int | None = None) -> ua.NodeId:
        attributes = ua.VariableAttributes(
            Value=value, DataType=ns0_node_id(data_type),
            ValueRank=ua.ValueRank.OneDimension if array else ua.ValueRank.Scalar,
            # asyncua types it as a list; None reads as a null ArrayDimensions, what OPC 10000-3 5.6.2 asks of a
            # scalar (an empty list would read as an empty array)
            ArrayDimensions=list(dimensions if dimensions is not None else [0]) if array else None,  # type: ignore[arg-type]
            AccessLevel=ua.AccessLevel.CurrentRead.mask, UserAccessLevel=ua.AccessLevel.CurrentRead.mask,
            Historizing=False)
        return self._add(ua.NodeClass.Variable, node_id, browse_name, parent, _O.HasProperty, attributes,
                         _O.PropertyType, rule)

    def method(self, node_id: ua.NodeId, browse_name: ua.QualifiedName, parent: ua.NodeId, spec: MethodSpec,
               arguments: tuple[int | None, int | None], *, rule: int | None = None,
               argument_rule: int | None = None) -> ua.NodeId:
        attributes = ua.MethodAttributes(Executable=True, UserExecutable=True)
        self._add(ua.NodeClass.Method, node_id, browse_name, parent, _O.HasComponent, attributes, rule=rule)
        for name, identifier, values in (("InputArguments", arguments[0], spec.input_arguments(self.idx)),
                                         ("OutputArguments", arguments[1], spec.output_arguments(self.idx))):
            if identifier is None:
                continue
            self.property(numeric_node_id(identifier, node_id.NamespaceIndex), ua.QualifiedName(name, 0), node_id,
                          _O.Argument, ua.Variant(values, ua.VariantType.ExtensionObject), array=True,
                          dimensions=[len(values)], rule=argument_rule)
        return node_id

    async def send(self) -> None:
        for item, result in zip(self.nodes, await self.session.add_nodes(self.nodes), strict=True):
            if not result.StatusCode.is_good():
                raise RuntimeError(f"adding {item.RequestedNewNodeId} ({item.BrowseName}) failed: {result.StatusCode}")
        for ref, status in zip(self.references, await self.session.add_references(self.references), strict=True):
            if not status.is_good():
                raise RuntimeError(f"reference {ref.SourceNodeId} -> {ref.TargetNodeId} failed: {status}")


def _gds_method(batch: _Batch, parent: ua.NodeId, spec: MethodSpec, method_id: int, *, rule: int | None = None,
                argument_rule: int | None = None) -> None:
    batch.method(batch.gds(method_id), spec.browse_name(batch.idx), parent, spec, argument_ids(method_id, spec),
                 rule=rule, argument_rule=argument_rule)


def _certificate_group(batch: _Batch, parent: ua.NodeId, ids: CertificateGroupIds, browse_name: ua.QualifiedName,
                       certificate_types: Sequence[ua.NodeId], last_update: ua.Variant, *,
                       declaration: bool = False) -> None:
    """A CertificateGroupType object, its TrustList (TrustListType) and CertificateTypes.

    declaration: the InstanceDeclaration on CertificateDirectoryType (Mandatory ModellingRules, no values).
    """
    rule = MANDATORY if declaration else None
    group = batch.object(ids.group_node_id(batch.idx), browse_name, parent, Ns0ObjectTypes.CertificateGroupType,
                         rule=rule)
    trust_list = batch.object(ids.trust_list_node_id(batch.idx), ua.QualifiedName("TrustList", 0), group,
                              Ns0ObjectTypes.TrustListType, rule=rule)
    initial = {"Size": ua.Variant(0, ua.VariantType.UInt64), "Writable": ua.Variant(False, ua.VariantType.Boolean),
               "UserWritable": ua.Variant(False, ua.VariantType.Boolean),
               "OpenCount": ua.Variant(0, ua.VariantType.UInt16)}
    for name, data_type in _FILE_PROPERTIES:
        batch.property(ids.property_node_id(name, batch.idx), ua.QualifiedName(name, 0), trust_list, data_type,
                       ua.Variant() if declaration else initial[name], rule=rule)
    methods = dict(ids.trust_list_methods)
    for name in TrustListMethodTypes.TRUST_LIST_ORDER:
        if name == "OpenWithMasks":  # the NodeSet lists LastUpdateTime (a TrustListType property) here
            batch.property(ids.property_node_id("LastUpdateTime", batch.idx), ua.QualifiedName("LastUpdateTime", 0),
                           trust_list, _O.UtcTime, ua.Variant() if declaration else last_update, rule=rule)
        spec = ids.method(name)
        batch.method(spec.node_id(batch.idx), spec.browse_name(batch.idx), trust_list, spec,
                     argument_ids(methods[name], spec), rule=rule, argument_rule=rule)
    batch.property(ids.property_node_id("CertificateTypes", batch.idx), ua.QualifiedName("CertificateTypes", 0),
                   group, _O.NodeId,
                   ua.Variant() if declaration else ua.Variant(list(certificate_types), ua.VariantType.NodeId),
                   array=True, rule=rule)
    batch.reference(group, _O.HasCondition, ns0_node_id(Ns0EventTypes.CertificateExpirationAlarmType),
                    ua.NodeClass.ObjectType)


def _types(batch: _Batch) -> None:
    """DirectoryType, CertificateDirectoryType and the audit event types, as the NodeSet declares them."""
    directory_type = batch.object_type(batch.gds(GdsObjectTypes.DirectoryType), "DirectoryType", _O.FolderType)
    batch.object(batch.gds(GdsTypeDeclarations.DirectoryType_Applications), batch.name("Applications", gds=True),
                 directory_type, _O.FolderType, rule=MANDATORY)
    for spec in DirectoryMethods.all():
        assert spec.type_id is not None
        _gds_method(batch, directory_type, spec, spec.type_id, rule=MANDATORY, argument_rule=MANDATORY)

    cert_directory_type = batch.object_type(batch.gds(GdsObjectTypes.CertificateDirectoryType),
                                            "CertificateDirectoryType", directory_type)
    groups = batch.object(batch.gds(GdsTypeDeclarations.CertificateDirectoryType_CertificateGroups),
                          batch.name("CertificateGroups", gds=True), cert_directory_type,
                          Ns0ObjectTypes.CertificateGroupFolderType, reference=_O.Organizes, rule=MANDATORY)
    _certificate_group(batch, groups, CERTIFICATE_DIRECTORY_TYPE_GROUP,
                       ua.QualifiedName("DefaultApplicationGroup", 0), [], ua.Variant(), declaration=True)
    for spec in _CERTIFICATE_DIRECTORY_TYPE_METHODS:
        assert spec.type_id is not None
        _gds_method(batch, cert_directory_type, spec, spec.type_id, rule=MANDATORY if spec.mandatory else OPTIONAL,
                    argument_rule=MANDATORY)

    event_properties = {
        GdsEventTypes.CertificateRequestedAuditEventType: (
            GdsEventTypeProperties.CertificateRequestedAuditEventType_CertificateGroup,
            GdsEventTypeProperties.CertificateRequestedAuditEventType_CertificateType),
        GdsEventTypes.CertificateDeliveredAuditEventType: (
            GdsEventTypeProperties.CertificateDeliveredAuditEventType_CertificateGroup,
            GdsEventTypeProperties.CertificateDeliveredAuditEventType_CertificateType),
    }
    for event_type in GdsEventTypes:
        node = batch.object_type(batch.gds(event_type), event_type.name, _O.AuditUpdateMethodEventType, abstract=True)
        for name, identifier in zip(("CertificateGroup", "CertificateType"), event_properties.get(event_type, ()),
                                    strict=False):
            batch.property(batch.gds(identifier), batch.name(name, gds=True), node, _O.NodeId, ua.Variant(),
                           rule=MANDATORY)


def _directory(batch: _Batch, certificate_types: Mapping[CertificateGroupIds, Sequence[ua.NodeId]],
               last_update: Mapping[CertificateGroupIds, ua.Variant]) -> ua.NodeId:
    directory = batch.object(batch.gds(GdsObjects.Directory), batch.name("Directory", gds=True),
                             ns0_node_id(_O.ObjectsFolder), batch.gds(GdsObjectTypes.CertificateDirectoryType),
                             reference=_O.Organizes)
    batch.object(batch.gds(GdsObjects.Directory_Applications), batch.name("Applications", gds=True), directory,
                 _O.FolderType)
    for spec in DirectoryMethods.all():
        _gds_method(batch, directory, spec, spec.instance_id)
    groups = batch.object(batch.gds(GdsObjects.Directory_CertificateGroups), batch.name("CertificateGroups", gds=True),
                          directory, Ns0ObjectTypes.CertificateGroupFolderType)
    for ids in CertificateGroups.gds():
        _certificate_group(batch, groups, ids, batch.name(ids.name, gds=True), certificate_types.get(ids, []),
                           last_update.get(ids, ua.Variant(ua.get_win_epoch(), ua.VariantType.DateTime)))
    for spec in _DIRECTORY_METHODS[len(DirectoryMethods.all()):] + OPTIONAL_DIRECTORY_METHODS:
        _gds_method(batch, directory, spec, spec.instance_id)
    return directory


async def build(server: Server, idx: int, certificate_types: Mapping[CertificateGroupIds, Sequence[ua.NodeId]],
                last_update: Mapping[CertificateGroupIds, ua.Variant] | None = None) -> Node:
    """Add the GDS types and the Directory to a server whose GDS namespace has index `idx`; returns the Directory.

    certificate_types: each CertificateGroup's CertificateTypes value (what the group issues);
    last_update: each TrustList's LastUpdateTime (null DateTime when absent).
    """
    batch = _Batch(server, idx)
    _types(batch)
    directory = _directory(batch, certificate_types, last_update or {})
    await batch.send()
    return server.get_node(directory)
