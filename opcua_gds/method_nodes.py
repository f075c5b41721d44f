"""Binding callbacks to the standard Method nodes, and the argument checks asyncua leaves to the callback.

Shared by every GDS and push method module. The Method nodes themselves come from the address space: ns0's
for push (asyncua's), `opcua_gds.gds.address_space` for the GDS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asyncua import Server, ua

from opcua_gds.access import MethodError, opcua_method
from opcua_gds.nodeids import MethodSpec

_S = ua.StatusCodes


def checked_args(spec: MethodSpec, args: Sequence[Any], *, allow_null: bool = True) -> list[Any]:
    """The values of `args`, checked against the method's input arguments (count, type, rank).

    Too few arguments: BadArgumentsMissing; too many: BadTooManyArguments; a wrong type: BadInvalidArgument.

    allow_null: a Null variant (or a null value) stands for a null value of any type (a null NodeId, string,
    array) and comes back as None. Without it the VariantType must match, and a null array comes back as [].
    """
    if len(args) < len(spec.inputs):  # OPC 10000-4 5.11.2 (Call): a count mismatch has its own codes
        raise MethodError(_S.BadArgumentsMissing, f"{spec.name} takes {len(spec.inputs)} arguments, got {len(args)}")
    if len(args) > len(spec.inputs):
        raise MethodError(_S.BadTooManyArguments, f"{spec.name} takes {len(spec.inputs)} arguments, got {len(args)}")
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


def bind(server: Server, spec: MethodSpec, gds_idx: int | None, callback: Callable[..., Awaitable[Any]]) -> None:
    """Bind an otpki coroutine to an existing standard Method node (see `opcua_method` for the contract)."""
    server.link_method(server.get_node(spec.node_id(gds_idx)), opcua_method(callback))
