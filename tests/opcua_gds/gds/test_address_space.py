"""What `otpki gds serve` serves in the GDS namespace, compared node by node with the OPC Foundation's GDS NodeSet.

The NodeSet (`../shared/reference/nodesets/Opc.Ua.Gds.NodeSet2.xml`, reference data, never shipped) is parsed here;
the served nodes are found and read over a real asyncua client session: a breadth-first Browse from the Root
along every hierarchical reference and HasEncoding. For every served node in the GDS namespace:
NodeClass, BrowseName (with its namespace), DisplayName, every reference in both directions (the NodeSet states a
reference once; its other end is implied), the TypeDefinition a client sees in the ReferenceDescription when it
browses the node from its parent, and per NodeClass DataType, ValueRank, ArrayDimensions, AccessLevel, the
argument lists, IsAbstract, EventNotifier, Executable and the DataTypeDefinition fields.

What the NodeSet has and otpki does not serve is listed below with the reason; the three optional methods otpki
serves beyond the NodeSet's Directory are compared with their InstanceDeclarations on CertificateDirectoryType.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from opcua_gds.nodeids import GDS_NAMESPACE_URI
from opcua_gds.testing import connect, issue_app_identity
from tests.opcua_gds.gds.gds_fixture import RunningGds, running_gds

NODESET = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "nodesets" / "Opc.Ua.Gds.NodeSet2.xml"
_NS = {"u": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd", "t": "http://opcfoundation.org/UA/2008/02/Types.xsd"}
_O = ua.ObjectIds

# NodeSet parts otpki does not serve (each with everything below it, by ParentNodeId), and why.
NOT_SERVED: dict[int, str] = {
    721: "the GDS namespace's NamespaceMetadata object (optional; asyncua publishes none for any namespace)",
    55: "KeyCredentialManagementFolderType: KeyCredential management (OPC 10000-12 §8) is not implemented",
    1008: "KeyCredentialManagement (§8)",
    1020: "KeyCredentialServiceType (§8)",
    1039: "KeyCredentialRequestedAuditEventType (§8)",
    1057: "KeyCredentialDeliveredAuditEventType (§8)",
    1075: "KeyCredentialRevokedAuditEventType (§8)",
    233: "AuthorizationServicesFolderType: Authorization Services (§9) are not implemented",
    959: "AuthorizationServices (§9)",
    966: "AuthorizationServiceType (§9)",
    975: "AccessTokenIssuedAuditEventType (§9)",
    127: "Default XML encoding of ApplicationRecordDataType: otpki speaks UA Binary only",
    8001: "Default JSON encoding of ApplicationRecordDataType: otpki speaks UA Binary only",
    128: "the XML schema dictionary (deprecated; the DataType carries its DataTypeDefinition)",
    135: "the binary schema dictionary (deprecated; the DataType carries its DataTypeDefinition)",
}
# Optional Directory methods otpki serves with UA-.NETStandard's ids, not in the NodeSet's Directory:
# served node -> its InstanceDeclaration on CertificateDirectoryType.
OPTIONAL_INSTANCES = {15005: 15003, 15006: 15004,  # RevokeCertificate
                      174: 89, 175: 90, 176: 108,  # GetCertificates
                      177: 126, 178: 160, 179: 161}  # CheckRevocationStatus
DIRECTORY, CERTIFICATE_DIRECTORY_TYPE = 141, 63
_IGNORED_INVERSE = {_O.HasTypeDefinition, _O.HasModellingRule}  # servers keep these one way (asyncua does)
_NODE_CLASS = {"UAObject": ua.NodeClass.Object, "UAVariable": ua.NodeClass.Variable,
               "UAMethod": ua.NodeClass.Method, "UAObjectType": ua.NodeClass.ObjectType,
               "UADataType": ua.NodeClass.DataType}

Ref = tuple[int, bool, ua.NodeId]  # (ReferenceTypeId, IsForward, target)
Argument = tuple[str, ua.NodeId, int, tuple[int, ...]]


@dataclass
class NodeSetNode:
    node_id: ua.NodeId
    node_class: ua.NodeClass
    browse_name: ua.QualifiedName
    display_name: str
    parent: ua.NodeId | None
    attributes: dict[str, str]
    declared: list[Ref]
    arguments: list[Argument] | None = None
    fields: list[tuple[str, ua.NodeId, int]] | None = None
    references: set[Ref] = field(default_factory=set)  # declared here and implied by the other end


class NodeSet:
    """The GDS NodeSet with ns=1 mapped to the index the GDS namespace has on the server."""

    def __init__(self, path: Path, gds_idx: int) -> None:
        if not path.is_file():
            pytest.fail(f"the GDS NodeSet is not at {path} (the reference data tests compare against)")
        self.idx = gds_idx
        root = ET.parse(path).getroot()
        self.aliases = {a.get("Alias"): a.text for a in root.findall("u:Aliases/u:Alias", _NS)}
        self.nodes: dict[ua.NodeId, NodeSetNode] = {}
        for element in root:
            tag = element.tag.split("}")[1]
            if tag in _NODE_CLASS:
                node = self._node(element, _NODE_CLASS[tag])
                self.nodes[node.node_id] = node
        for node in self.nodes.values():
            for ref_type, forward, target in node.declared:
                node.references.add((ref_type, forward, target))
                if target in self.nodes:
                    self.nodes[target].references.add((ref_type, not forward, node.node_id))

    def node_id(self, text: str) -> ua.NodeId:
        parsed = ua.NodeId.from_string(self.aliases.get(text, text))
        return ua.NodeId(parsed.Identifier, self.idx if parsed.NamespaceIndex == 1 else parsed.NamespaceIndex)

    def gds(self, identifier: int) -> ua.NodeId:
        return ua.NodeId(identifier, self.idx)

    def _qualified(self, text: str) -> ua.QualifiedName:
        ns, sep, name = text.partition(":")
        if sep and ns.isdigit():
            return ua.QualifiedName(name, self.idx if ns == "1" else 0)
        return ua.QualifiedName(text, 0)

    def _node(self, element: ET.Element, node_class: ua.NodeClass) -> NodeSetNode:
        declared: list[Ref] = [
            (int(self.node_id(r.get("ReferenceType") or "").Identifier), r.get("IsForward", "true") == "true",
             self.node_id((r.text or "").strip()))
            for r in element.findall("u:References/u:Reference", _NS)]
        parent = element.get("ParentNodeId")
        node = NodeSetNode(self.node_id(element.get("NodeId") or ""), node_class,
                           self._qualified(element.get("BrowseName") or ""),
                           element.findtext("u:DisplayName", "", _NS), self.node_id(parent) if parent else None,
                           dict(element.attrib), declared)
        arguments = element.findall("u:Value/t:ListOfExtensionObject/t:ExtensionObject/t:Body/t:Argument", _NS)
        if arguments:
            node.arguments = [(a.findtext("t:Name", "", _NS),
                               self.node_id(a.findtext("t:DataType/t:Identifier", "", _NS)),
                               int(a.findtext("t:ValueRank", "-1", _NS)),
                               tuple(int(d.text or 0) for d in a.findall("t:ArrayDimensions/t:UInt32", _NS)))
                              for a in arguments]
        definition = element.find("u:Definition", _NS)
        if definition is not None:
            node.fields = [(f.get("Name") or "", self.node_id(f.get("DataType") or ""), int(f.get("ValueRank", "-1")))
                           for f in definition.findall("u:Field", _NS)]
        return node

    def below(self, identifiers: set[int]) -> set[ua.NodeId]:
        """The nodes with these ids and every node whose ParentNodeId chain reaches one of them."""
        roots = {self.gds(i) for i in identifiers}
        found = set(roots)
        changed = True
        while changed:
            changed = False
            for node in self.nodes.values():
                if node.node_id not in found and node.parent in found:
                    found.add(node.node_id)
                    changed = True
        return found


@dataclass
class ServedNode:
    node_id: ua.NodeId
    attributes: dict[str, Any]
    references: list[ua.ReferenceDescription]


_ATTRIBUTES = {
    ua.NodeClass.Object: ["EventNotifier"],
    ua.NodeClass.Variable: ["DataType", "ValueRank", "ArrayDimensions", "AccessLevel", "Value"],
    ua.NodeClass.Method: ["Executable"],
    ua.NodeClass.ObjectType: ["IsAbstract"],
    ua.NodeClass.DataType: ["IsAbstract", "DataTypeDefinition"],
}


async def _browse_all(client: Client) -> dict[ua.NodeId, list[ua.ReferenceDescription]]:
    """Every node reachable from the Root along hierarchical references and HasEncoding, with its forward refs."""
    seen: dict[ua.NodeId, list[ua.ReferenceDescription]] = {}
    frontier = [ua.NodeId(_O.RootFolder)]
    while frontier:
        batch, frontier = frontier[:500], frontier[500:]
        params = ua.BrowseParameters(NodesToBrowse=[ua.BrowseDescription(
            NodeId=n, BrowseDirection=ua.BrowseDirection.Forward, ReferenceTypeId=ua.NodeId(_O.References),
            IncludeSubtypes=True, NodeClassMask=0, ResultMask=ua.BrowseResultMask.All) for n in batch])
        for node, result in zip(batch, await client.uaclient.browse(params), strict=True):
            assert result.StatusCode.is_good() and not result.ContinuationPoint, (node, result.StatusCode)
            seen[node] = result.References
            for ref in result.References:
                target = ref.NodeId
                follow = ref.ReferenceTypeId in _HIERARCHICAL or ref.ReferenceTypeId == ua.NodeId(_O.HasEncoding)
                if follow and target.NamespaceIndex in (0, _gds_idx[0]) and target not in seen \
                        and target not in frontier and target not in batch:
                    frontier.append(target)
    return seen


_HIERARCHICAL: set[ua.NodeId] = set()
_gds_idx = [0]


async def _hierarchical(client: Client) -> set[ua.NodeId]:
    from asyncua.common.ua_utils import get_node_subtypes

    return {n.nodeid for n in await get_node_subtypes(client.get_node(ua.NodeId(_O.HierarchicalReferences)))}


async def _served(client: Client, idx: int) -> dict[ua.NodeId, ServedNode]:
    _HIERARCHICAL.clear()
    _HIERARCHICAL.update(await _hierarchical(client))
    _gds_idx[0] = idx
    reachable = [n for n in await _browse_all(client) if n.NamespaceIndex == idx]
    served: dict[ua.NodeId, ServedNode] = {}
    for node_id in reachable:
        node = client.get_node(node_id)
        base = await node.read_attributes([ua.AttributeIds.NodeClass, ua.AttributeIds.BrowseName,
                                           ua.AttributeIds.DisplayName])
        node_class = ua.NodeClass(base[0].Value.Value)
        names = _ATTRIBUTES.get(node_class, [])
        values = await node.read_attributes([getattr(ua.AttributeIds, n) for n in names]) if names else []
        attributes = {"NodeClass": node_class, "BrowseName": base[1].Value.Value, "DisplayName": base[2].Value.Value}
        for name, value in zip(names, values, strict=True):
            attributes[name] = value.Value.Value if value.Value is not None else None
        references = await node.get_references(refs=_O.References, direction=ua.BrowseDirection.Both,
                                               includesubtypes=True)
        served[node_id] = ServedNode(node_id, attributes, references)
    return served


@pytest.fixture
async def gds(tmp_path: Path) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path):  # every installer: the address space `otpki gds serve` has
        yield running


@pytest.fixture
async def session(gds: RunningGds) -> AsyncIterator[Client]:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "browser", "urn:test:browser")
    client = await connect(gds.url, me, mode=ua.MessageSecurityMode.Sign)  # anonymous: browsing needs no role
    try:
        yield client
    finally:
        await client.disconnect()


def _refs(node: ServedNode) -> set[Ref]:
    return {(int(r.ReferenceTypeId.Identifier), bool(r.IsForward), r.NodeId.to_nodeid()
             if isinstance(r.NodeId, ua.ExpandedNodeId) else r.NodeId) for r in node.references
            if r.ReferenceTypeId.NamespaceIndex == 0}


def _type_definition(nodeset: NodeSet, node_id: ua.NodeId) -> ua.NodeId | None:
    node = nodeset.nodes.get(node_id)
    if node is None:
        return None
    return next((t for r, f, t in node.references if r == _O.HasTypeDefinition and f), None)


def _arguments(value: Any) -> list[Argument]:
    return [(a.Name, a.DataType, a.ValueRank, tuple(a.ArrayDimensions or ())) for a in value or []]


def _expected_refs(nodeset: NodeSet, node: NodeSetNode, not_served: set[ua.NodeId]) -> set[Ref]:
    return {(r, f, t) for r, f, t in node.references
            if t not in not_served and not (not f and r in _IGNORED_INVERSE)}


def _compare(nodeset: NodeSet, expected: NodeSetNode, served: ServedNode, not_served: set[ua.NodeId],
             expected_refs: set[Ref]) -> Iterator[str]:
    """Every difference between a NodeSet node and what the server serves, as text."""
    a = served.attributes
    where = f"{served.node_id.to_string()} {expected.browse_name.to_string()}"
    if a["NodeClass"] != expected.node_class:
        yield f"{where}: NodeClass {a['NodeClass']!r}, NodeSet {expected.node_class!r}"
    if a["BrowseName"] != expected.browse_name:
        yield f"{where}: BrowseName {a['BrowseName'].to_string()}, NodeSet {expected.browse_name.to_string()}"
    if a["DisplayName"].Text != expected.display_name:
        yield f"{where}: DisplayName {a['DisplayName'].Text!r}, NodeSet {expected.display_name!r}"
    actual_refs = _refs(served)
    for ref in sorted(expected_refs - actual_refs, key=str):
        yield f"{where}: missing reference {ref}"
    for ref in sorted(actual_refs - expected_refs, key=str):
        yield f"{where}: reference not in the NodeSet {ref}"
    for ref in served.references:  # what a browsing client sees of each child's type
        if ref.IsForward and ref.ReferenceTypeId in _HIERARCHICAL and ref.NodeClass in (ua.NodeClass.Object,
                                                                                          ua.NodeClass.Variable):
            want = _type_definition(nodeset, ref.NodeId)
            if want is not None and ref.TypeDefinition != want:
                yield (f"{where}: browsed child {ref.BrowseName.to_string()} shows TypeDefinition "
                       f"{ref.TypeDefinition.to_string()}, NodeSet {want.to_string()}")
    attrs = expected.attributes
    if expected.node_class == ua.NodeClass.Variable:
        data_type = nodeset.node_id(attrs.get("DataType", "i=24"))
        if a["DataType"] != data_type:
            yield f"{where}: DataType {a['DataType'].to_string()}, NodeSet {data_type.to_string()}"
        value_rank = int(attrs.get("ValueRank", "-1"))
        if a["ValueRank"] != value_rank:
            yield f"{where}: ValueRank {a['ValueRank']}, NodeSet {value_rank}"
        dimensions = [int(d) for d in attrs["ArrayDimensions"].split(",")] if "ArrayDimensions" in attrs else []
        if list(a["ArrayDimensions"] or []) != dimensions:
            yield f"{where}: ArrayDimensions {a['ArrayDimensions']}, NodeSet {dimensions}"
        if a["AccessLevel"] != int(attrs.get("AccessLevel", "1")):
            yield f"{where}: AccessLevel {a['AccessLevel']}, NodeSet {attrs.get('AccessLevel', '1')}"
        if expected.arguments is not None and _arguments(a["Value"]) != expected.arguments:
            yield f"{where}: arguments {_arguments(a['Value'])}, NodeSet {expected.arguments}"
    elif expected.node_class in (ua.NodeClass.ObjectType, ua.NodeClass.DataType):
        if a["IsAbstract"] != (attrs.get("IsAbstract") == "true"):
            yield f"{where}: IsAbstract {a['IsAbstract']}, NodeSet {attrs.get('IsAbstract', 'false')}"
        if expected.fields is not None:
            fields = [(f.Name, f.DataType, f.ValueRank) for f in a["DataTypeDefinition"].Fields]
            if fields != expected.fields:
                yield f"{where}: DataTypeDefinition fields {fields}, NodeSet {expected.fields}"
    elif expected.node_class == ua.NodeClass.Object:
        if a["EventNotifier"] != int(attrs.get("EventNotifier", "0")):
            yield f"{where}: EventNotifier {a['EventNotifier']}, NodeSet {attrs.get('EventNotifier', '0')}"
    elif expected.node_class == ua.NodeClass.Method and a["Executable"] is not True:
        yield f"{where}: not Executable"


def _as_instance(nodeset: NodeSet, declaration: NodeSetNode, node_id: ua.NodeId) -> tuple[NodeSetNode, set[Ref]]:
    """What an instance of an optional InstanceDeclaration of CertificateDirectoryType looks like on the Directory."""
    back = {nodeset.gds(v): nodeset.gds(k) for k, v in OPTIONAL_INSTANCES.items()}
    back[nodeset.gds(CERTIFICATE_DIRECTORY_TYPE)] = nodeset.gds(DIRECTORY)
    refs = {(r, f, back.get(t, t)) for r, f, t in declaration.references if r != _O.HasModellingRule}
    instance = NodeSetNode(node_id, declaration.node_class, declaration.browse_name, declaration.display_name,
                           back.get(declaration.parent) if declaration.parent else None, declaration.attributes,
                           [], declaration.arguments, declaration.fields, refs)
    return instance, refs


async def test_served_gds_namespace_matches_the_nodeset_node_by_node(gds: RunningGds, session: Client) -> None:
    idx = await session.get_namespace_index(GDS_NAMESPACE_URI)
    nodeset = NodeSet(NODESET, idx)
    served = await _served(session, idx)
    not_served = nodeset.below(set(NOT_SERVED))
    optional = {nodeset.gds(i) for i in OPTIONAL_INSTANCES}

    # Everything the server has in the GDS namespace is reachable by browsing (nothing hidden from clients).
    aspace = gds.gds.server.iserver.aspace
    in_address_space = {n for n in aspace.keys() if n.NamespaceIndex == idx}  # noqa: SIM118 (no __iter__)
    assert in_address_space == set(served), sorted(n.to_string() for n in in_address_space ^ set(served))
    # Every NodeSet node is served unless listed with its reason; nothing else is served but the optional methods.
    missing = [nodeset.nodes[n].browse_name.to_string() + f" ({n.to_string()})"
               for n in nodeset.nodes if n not in served and n not in not_served]
    assert missing == []
    assert sorted(n.to_string() for n in set(served) & not_served) == []
    unknown = sorted(n.to_string() for n in served if n not in nodeset.nodes and n not in optional)
    assert unknown == []

    instances = {n: _as_instance(nodeset, nodeset.nodes[nodeset.gds(OPTIONAL_INSTANCES[int(n.Identifier)])], n)
                 for n in optional}
    implied: dict[ua.NodeId, set[Ref]] = {}  # the Directory's references to the optional methods
    for node_id, (_instance, refs) in instances.items():
        for r, f, t in refs:
            implied.setdefault(t, set()).add((r, not f, node_id))
    problems: list[str] = []
    for node_id, node in served.items():
        if node_id in optional:
            expected, refs = instances[node_id]
        else:
            expected = nodeset.nodes[node_id]
            refs = _expected_refs(nodeset, expected, not_served) | implied.get(node_id, set())
        problems.extend(_compare(nodeset, expected, node, not_served, refs))
    assert problems == []
    # The comparison covered the parts the issue names (a sanity check of the walk itself).
    assert {nodeset.gds(i) for i in (141, 614, 615, 616, 617, 622, 648, 649, 650, 683, 13, 63, 26, 91, 109, 1, 134)} \
        <= set(served)
