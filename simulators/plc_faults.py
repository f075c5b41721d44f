"""Misbehaving PLCs on purpose: the faults a fleet rollout must survive, injected into a PlcSimulator.

Each count says how many times the fault happens before the PLC behaves again, so a test (or the demo) can
show a failed push followed by a successful retry. Faults wrap the push methods' callbacks in the server's
address space; the push-management code itself stays the production code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import Server, ua
from pydantic import BaseModel, Field

from opcua_gds._asyncua_compat import method_callback
from opcua_gds.nodeids import CertificateGroups, MethodSpec, ServerConfigurationMethods, ua_status
from opcua_gds.push.target.server_swap import close_channels

log = logging.getLogger(__name__)


class PlcFaults(BaseModel):
    drop_after_update_certificate: int = Field(0, ge=0)  # the link dies after the certificate is staged
    drop_during_apply_changes: int = Field(0, ge=0)  # ApplyChanges takes effect, its response never arrives
    refuse_csr: int = Field(0, ge=0)  # CreateSigningRequest answers Bad_InternalError
    # Trust lists after the first one: CloseAndUpdate answers Good and discards what was written (node-opcua 2.157
    # discards every one; the first goes through here, as UpdateCertificate needs its CAs in the trust list).
    drop_later_trust_lists: int = Field(0, ge=0)


def _abort_all_channels(server: Server) -> None:
    # abort, not close: close would still flush the method's response before the socket goes.
    close_channels(server, lambda _host, _peer: True, abort=True)


_TRUST_LIST = CertificateGroups.PushDefaultApplicationGroup


def _callback(server: Server, method_id: ua.NodeId, name: str) -> Callable[..., Awaitable[Any]]:
    callback = method_callback(server, method_id)
    if callback is None:
        raise ValueError(f"{name} has no callback to wrap: install push management first")
    return callback


def _wrap(server: Server, method: MethodSpec,
          make: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]) -> None:
    original = _callback(server, method.node_id(), method.name)
    server.link_method(server.get_node(method.node_id()), make(original))


def install_faults(server: Server, faults: PlcFaults) -> None:
    remaining = faults.model_copy()

    def after(field: str, label: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        def make(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def call(parent: ua.NodeId, *args: Any) -> Any:
                result = await original(parent, *args)
                if getattr(remaining, field) > 0 and not isinstance(result, ua.StatusCode):
                    setattr(remaining, field, getattr(remaining, field) - 1)
                    log.warning("fault injected: %s", label)
                    _abort_all_channels(server)
                return result
            return call
        return make

    def refuse(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(parent: ua.NodeId, *args: Any) -> Any:
            if remaining.refuse_csr > 0:
                remaining.refuse_csr -= 1
                log.warning("fault injected: CreateSigningRequest refused")
                return ua_status(ua.StatusCodes.BadInternalError)
            return await original(parent, *args)
        return call

    _wrap(server, ServerConfigurationMethods.UpdateCertificate,
          after("drop_after_update_certificate", "connection dropped after UpdateCertificate"))
    _wrap(server, ServerConfigurationMethods.ApplyChanges,
          after("drop_during_apply_changes", "connection dropped during ApplyChanges"))
    _wrap(server, ServerConfigurationMethods.CreateSigningRequest, refuse)

    close_and_update = _TRUST_LIST.method("CloseAndUpdate").node_id()
    update = _callback(server, close_and_update, "CloseAndUpdate")
    close = _callback(server, _TRUST_LIST.method("Close").node_id(), "Close")

    first_pending = True

    async def drop_later(parent: ua.NodeId, *args: Any) -> Any:
        nonlocal first_pending
        if first_pending or remaining.drop_later_trust_lists <= 0:
            result = await update(parent, *args)
            if not isinstance(result, ua.StatusCode):
                first_pending = False
            return result
        remaining.drop_later_trust_lists -= 1
        log.warning("fault injected: trust list accepted and discarded")
        result = await close(parent, *args)  # drops the written data, answers the caller's errors as Close does
        if isinstance(result, ua.StatusCode):
            return result
        return [ua.Variant(False, ua.VariantType.Boolean)]  # Good, and "no ApplyChanges needed"

    server.link_method(server.get_node(close_and_update), drop_later)
