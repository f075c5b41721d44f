"""The CertificateTypes property of each GDS CertificateGroup (OPC 10000-12 7.8.3.1): what the group issues.

A client asks the GDS for a certificate of one of these types (StartSigningRequest / StartNewKeyPairRequest
with a CertificateTypeId); the list comes from the policy of the engine group behind the CertificateGroup
(`opcua_gds.certificate_types.issued_types`), so a policy that allows ECC keys advertises the ECC types and
one that does not, does not. A CertificateGroup without an engine group issues nothing: an empty list.
"""

from __future__ import annotations

from asyncua import ua
from asyncua.ua import uaerrors

from opcua_gds.certificate_types import issued_types
from opcua_gds.gds.context import GdsContext
from opcua_gds.nodeids import GdsObjects, gds_node_id, ns0_node_id

PROPERTIES = {
    GdsObjects.DefaultApplicationGroup: GdsObjects.DefaultApplicationGroup_CertificateTypes,
    GdsObjects.DefaultHttpsGroup: GdsObjects.DefaultHttpsGroup_CertificateTypes,
    GdsObjects.DefaultUserTokenGroup: GdsObjects.DefaultUserTokenGroup_CertificateTypes,
}


def group_types(ctx: GdsContext, group: GdsObjects) -> list[ua.NodeId]:
    engine_group = ctx.groups.get(gds_node_id(group, ctx.gds_idx))
    if engine_group is None:
        return []
    return [ns0_node_id(t) for t in issued_types(ctx.engine.config.group(engine_group))]


async def install(ctx: GdsContext) -> None:
    """Give every CertificateGroup its CertificateTypes property (standard NodeId), valued from the policy."""
    for group, prop in PROPERTIES.items():
        value = ua.Variant(group_types(ctx, group), ua.VariantType.NodeId, is_array=True)
        node_id = gds_node_id(prop, ctx.gds_idx)
        node = ctx.server.get_node(node_id)
        try:
            await node.read_browse_name()
        except uaerrors.BadNodeIdUnknown:
            node = await ctx.server.get_node(gds_node_id(group, ctx.gds_idx)).add_property(
                node_id, ua.QualifiedName("CertificateTypes", 0), value, datatype=ns0_node_id(ua.ObjectIds.NodeId))
            await node.write_value_rank(ua.ValueRank.OneDimension)
            await node.write_attribute(ua.AttributeIds.ArrayDimensions,
                                       ua.DataValue(ua.Variant([0], ua.VariantType.UInt32, is_array=True)))
        else:  # the address-space module made the node: only the value is ours
            await node.write_value(value)
