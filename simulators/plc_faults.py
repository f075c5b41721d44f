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
from opcua_gds.nodeids import MethodSpec, ServerConfigurationMethods, ua_status
from opcua_gds.push.target.server_swap import close_channels

log = logging.getLogger(__name__)


class PlcFaults(BaseModel):
    drop_after_update_certificate: int = Field(0, ge=0)  # the link dies after the certificate is staged
    drop_during_apply_changes: int = Field(0, ge=0)  # ApplyChanges takes effect, its response never arrives
    refuse_csr: int = Field(0, ge=0)  # CreateSigningRequest answers Bad_InternalError


def _abort_all_channels(server: Server) -> None:
    # abort, not close: close would still flush the method's response before the socket goes.
    close_channels(server, lambda _host, _peer: True, abort=True)


def _wrap(server: Server, method: MethodSpec,
          make: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]) -> None:
    original = method_callback(server, method.node_id())
    if original is None:
        raise ValueError(f"{method.name} has no callback to wrap: install push management first")
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
