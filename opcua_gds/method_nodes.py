"""Method nodes with the standard ids, and the argument checks asyncua leaves to the callback.

Shared by every GDS and push method module. The InputArguments/OutputArguments properties get string
NodeIds: asyncua would otherwise number them in the GDS namespace, counting on from the highest numeric id
present, and collide with standard ids other modules add later (the TrustList methods 690-714).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asyncua import Node, ua

from opcua_gds.access import MethodError
from opcua_gds.nodeids import MethodSpec, ns0_node_id, string_node_id

_S = ua.StatusCodes


def checked_args(spec: MethodSpec, args: Sequence[Any], *, allow_null: bool = True) -> list[Any]:
    """The values of `args`, checked against the method's input arguments (count, type, rank).

    allow_null: a Null variant (or a null value) stands for a null value of any type (a null NodeId, string,
    array) and comes back as None. Without it the VariantType must match, and a null array comes back as [].
    """
    if len(args) != len(spec.inputs):
        raise MethodError(_S.BadInvalidArgument, f"{spec.name} takes {len(spec.inputs)} arguments, got {len(args)}")
    values: list[Any] = []
    for arg, variant in zip(spec.inputs, args, strict=True):
        if not isinstance(variant, ua.Variant):
            raise MethodError(_S.BadInvalidArgument, f"{spec.name}.{arg.name}: not a Variant")
        if allow_null and (variant.VariantType == ua.VariantType.Null or variant.Value is None):
            values.append(None)
            continue
        if variant.VariantType != arg.variant_type:
            raise MethodError(_S.BadInvalidArgument,
                              f"{spec.name}.{arg.name} must be {arg.variant_type.name}, not {variant.VariantType.name}")
        value = variant.Value
        if arg.is_array and value is None:
            value = []
        if arg.is_array != isinstance(value, list):
            raise MethodError(_S.BadInvalidArgument,
                              f"{spec.name}.{arg.name} must be {'an array' if arg.is_array else 'a scalar'}")
        values.append(value)
    return values


async def add_standard_method(parent: Node, spec: MethodSpec, gds_idx: int,
                              callback: Callable[..., Awaitable[Any]], *, id_prefix: str) -> Node:
    """A Method node with its standard NodeId and BrowseName, InputArguments and OutputArguments.

    The argument properties get string NodeIds ("<id_prefix>.<method>.InputArguments"): asyncua would pick
    numeric ids in the GDS namespace that can collide with standard ids added later.
    """
    ns = spec.node_id(gds_idx).NamespaceIndex
    method = await parent.add_method(spec.node_id(gds_idx), spec.browse_name(gds_idx), callback, [], [])
    for bname, arguments in (("InputArguments", spec.input_arguments(gds_idx)),
                             ("OutputArguments", spec.output_arguments(gds_idx))):
        if not arguments:
            continue
        prop = await method.add_property(string_node_id(f"{id_prefix}.{spec.name}.{bname}", ns),
                                         ua.QualifiedName(bname, 0), arguments,
                                         varianttype=ua.VariantType.ExtensionObject,
                                         datatype=ns0_node_id(ua.ObjectIds.Argument))
        await prop.set_modelling_rule(True)
    return method
