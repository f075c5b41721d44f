"""The TrustList file objects of the GDS CertificateGroups (TrustListType ⊂ FileType; reference 1.5).

A pull client calls GetTrustList, then OpenWithMasks(Masks) (or Open(0x01)) on the returned object, Reads the
OPC UA binary TrustListDataType (`encode_trustlist` of the engine's current trust list of the group, lists
outside the masks empty, SpecifiedLists = masks) and Closes. The content is taken at Open: one handle reads
one consistent snapshot.

The pull GDS does not accept trust-list writes: Writable/UserWritable are false, Open(0x06) answers
Bad_NotWritable, any other mode Bad_NotSupported; Write/CloseAndUpdate/AddCertificate/RemoveCertificate answer
Bad_NotWritable.

Handles belong to the session that opened them (another session's handle, an unknown or closed one:
Bad_InvalidArgument); at most `MAX_HANDLES_PER_SESSION` per session and `MAX_HANDLES` in all
(Bad_ResourceUnavailable); a handle unused for `IDLE_TIMEOUT_S` is closed (the spec's ActivityTimeout).

Access: Sign at least; CertificateAuthorityAdmin, or SelfAdmin of an application that belongs to the group.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import Node, ua

from opcua_gds.access import GdsRole, MethodError, caller, has_any_role, require_mode
from opcua_gds.call_context import CallContext
from opcua_gds.gds.context import GdsContext
from opcua_gds.method_nodes import bind, checked_args
from opcua_gds.nodeids import CertificateGroupIds, CertificateGroups, MethodSpec
from opcua_gds.trustlist_binary import encode_trustlist
from trustlists.blocking import run_blocking
from trustlists.errors import NotFound
from trustlists.models import TrustListContent, TrustListMask

_S = ua.StatusCodes
MAX_HANDLES_PER_SESSION = 8
MAX_HANDLES = 256
IDLE_TIMEOUT_S = 600.0
_READ = 0x01
_WRITE_ERASE = 0x06
_NEVER = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's null DateTime: a trust list that never had content


@dataclass
class _OpenFile:
    session_id: ua.NodeId | None
    trust_list: ua.NodeId
    data: bytes
    position: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class _TrustListObject:
    ids: CertificateGroupIds
    engine_group: str | None  # whose trust list it serves; None: an empty one (no engine group behind the group)
    node: Node
    size: Node
    open_count: Node
    last_update: Node


class TrustListFiles:
    def __init__(self, ctx: GdsContext) -> None:
        self.ctx = ctx
        self.engine = ctx.engine
        self.handles: dict[int, _OpenFile] = {}
        self.objects: dict[ua.NodeId, _TrustListObject] = {}

    # -- checks ---------------------------------------------------------------------------------------
    def _object(self, parent: ua.NodeId) -> _TrustListObject:
        obj = self.objects.get(parent)
        if obj is None:  # not reachable through the address space; refuse rather than guess
            raise MethodError(_S.BadInvalidArgument, f"{parent} is not a TrustList of this GDS")
        return obj

    async def _authorize(self, obj: _TrustListObject) -> CallContext:
        call = caller()
        require_mode(call, ua.MessageSecurityMode.Sign)
        if has_any_role(call, {GdsRole.CERTIFICATE_AUTHORITY_ADMIN}):
            return call

        def own_group() -> str | None:
            owner_id = self.ctx.self_admin.owner_id(call)
            if owner_id is None:
                return None
            try:
                return self.engine.registry.get(owner_id).group
            except NotFound:
                return None

        if obj.engine_group is not None and await run_blocking(own_group) == obj.engine_group:
            return call
        raise MethodError(_S.BadUserAccessDenied, "needs CertificateAuthorityAdmin or an application of the group")

    def _handle(self, parent: ua.NodeId, handle: Any) -> _OpenFile:
        call = caller()
        require_mode(call, ua.MessageSecurityMode.Sign)
        self._expire()
        opened = self.handles.get(handle) if isinstance(handle, int) else None
        if opened is None or opened.session_id != call.session_id or opened.trust_list != parent:
            raise MethodError(_S.BadInvalidArgument, f"unknown FileHandle {handle}")
        opened.last_used = time.monotonic()
        return opened

    def _expire(self) -> None:
        cutoff = time.monotonic() - IDLE_TIMEOUT_S
        for handle in [h for h, f in self.handles.items() if f.last_used < cutoff]:
            del self.handles[handle]

    async def _refresh_open_count(self, obj: _TrustListObject) -> None:
        count = sum(1 for f in self.handles.values() if f.trust_list == obj.node.nodeid)
        await obj.open_count.write_value(ua.Variant(min(count, 0xFFFF), ua.VariantType.UInt16))

    # -- methods --------------------------------------------------------------------------------------
    async def _open(self, parent: ua.NodeId, masks: int) -> list[ua.Variant]:
        obj = self._object(parent)
        call = await self._authorize(obj)
        if not 0 <= masks <= int(TrustListMask.ALL):
            raise MethodError(_S.BadInvalidArgument, f"Masks {masks} is not a TrustListMasks value")
        self._expire()
        mine = sum(1 for f in self.handles.values() if f.session_id == call.session_id)
        if mine >= MAX_HANDLES_PER_SESSION or len(self.handles) >= MAX_HANDLES:
            raise MethodError(_S.BadResourceUnavailable, "too many open TrustList handles")
        if obj.engine_group is None:
            content, updated = TrustListContent(), _NEVER
        else:
            trust = await run_blocking(self.engine.trustlists.get, obj.engine_group)
            content, updated = trust.content, trust.created_at
        data = encode_trustlist(content.model_copy(update={"specified_lists": masks}))
        handle = 0
        while handle == 0 or handle in self.handles:
            handle = secrets.randbelow(0xFFFFFFFF) + 1
        self.handles[handle] = _OpenFile(session_id=call.session_id, trust_list=parent, data=data)
        await obj.size.write_value(ua.Variant(len(data), ua.VariantType.UInt64))
        await obj.last_update.write_value(ua.Variant(_utc(updated), ua.VariantType.DateTime))
        await self._refresh_open_count(obj)
        return [ua.Variant(handle, ua.VariantType.UInt32)]

    async def open(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (mode,) = checked_args(self._spec(parent, "Open"), args)
        if mode == _WRITE_ERASE:
            require_mode(caller(), ua.MessageSecurityMode.Sign)
            raise MethodError(_S.BadNotWritable, "the pull GDS does not accept trust-list writes")
        if mode != _READ:
            raise MethodError(_S.BadNotSupported, f"Open mode {mode!r}: only 0x01 (Read) is supported")
        return await self._open(parent, int(TrustListMask.ALL))

    async def open_with_masks(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (masks,) = checked_args(self._spec(parent, "OpenWithMasks"), args)
        if masks is None:
            raise MethodError(_S.BadInvalidArgument, "Masks is null")
        return await self._open(parent, int(masks))

    async def read(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        handle, length = checked_args(self._spec(parent, "Read"), args)
        opened = self._handle(parent, handle)
        if length is None or length < 0:
            raise MethodError(_S.BadInvalidArgument, f"Length {length} is negative")
        chunk = opened.data[opened.position:opened.position + length]
        opened.position += len(chunk)
        return [ua.Variant(chunk, ua.VariantType.ByteString)]

    async def close(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (handle,) = checked_args(self._spec(parent, "Close"), args)
        self._handle(parent, handle)
        del self.handles[handle]
        await self._refresh_open_count(self._object(parent))
        return []

    async def get_position(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (handle,) = checked_args(self._spec(parent, "GetPosition"), args)
        opened = self._handle(parent, handle)
        return [ua.Variant(opened.position, ua.VariantType.UInt64)]

    async def set_position(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        handle, position = checked_args(self._spec(parent, "SetPosition"), args)
        opened = self._handle(parent, handle)
        opened.position = min(int(position or 0), len(opened.data))  # beyond the end: at the end
        return []

    def not_writable(self, name: str) -> Callable[..., Awaitable[list[ua.Variant]]]:
        """A write method (Write, CloseAndUpdate, AddCertificate, RemoveCertificate): its arguments are checked
        like any method's, then the answer is Bad_NotWritable."""

        async def refuse(parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
            checked_args(self._spec(parent, name), args)
            require_mode(caller(), ua.MessageSecurityMode.Sign)
            raise MethodError(_S.BadNotWritable, "the pull GDS does not accept trust-list writes")

        refuse.__name__ = name
        return refuse

    def _spec(self, parent: ua.NodeId, name: str) -> MethodSpec:
        return self._object(parent).ids.method(name)

    # -- binding ------------------------------------------------------------------------------------
    async def install(self) -> None:
        idx = self.ctx.gds_idx
        bindings = {"Open": self.open, "Close": self.close, "Read": self.read, "Write": self.not_writable("Write"),
                    "GetPosition": self.get_position, "SetPosition": self.set_position,
                    "OpenWithMasks": self.open_with_masks, "CloseAndUpdate": self.not_writable("CloseAndUpdate"),
                    "AddCertificate": self.not_writable("AddCertificate"),
                    "RemoveCertificate": self.not_writable("RemoveCertificate")}
        for ids in CertificateGroups.gds():
            source = self.ctx.trust_sources.get(ids.group_node_id(idx))
            node = self.ctx.server.get_node(ids.trust_list_node_id(idx))
            props = {name: self.ctx.server.get_node(ids.property_node_id(name, idx))
                     for name in ("Size", "OpenCount", "LastUpdateTime")}
            updated = _NEVER if source is None else (await run_blocking(self.engine.trustlists.get, source)).created_at
            await props["LastUpdateTime"].write_value(ua.Variant(_utc(updated), ua.VariantType.DateTime))
            self.objects[node.nodeid] = _TrustListObject(ids=ids, engine_group=source, node=node, size=props["Size"],
                                                         open_count=props["OpenCount"],
                                                         last_update=props["LastUpdateTime"])
            for name, callback in bindings.items():
                bind(self.ctx.server, ids.method(name), idx, callback)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def install(ctx: GdsContext) -> None:
    """Bind the TrustList file methods of every CertificateGroup and keep its FileType properties current."""
    await TrustListFiles(ctx).install()
