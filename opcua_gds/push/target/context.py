"""What every push method shares: the server, the state, the open TrustList handles, the access rule."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from asyncua import Server, ua

from opcua_gds.access import GdsRole, MethodError, caller, has_any_role, require_mode
from opcua_gds.audit_events import AuditEvents
from opcua_gds.call_context import CallContext
from opcua_gds.push.target.state import PushState

_S = ua.StatusCodes
log = logging.getLogger(__name__)
READ = 0x01
WRITE_ERASE = 0x06
IDLE_TIMEOUT_S = 600.0
MAX_HANDLES = 16


@dataclass
class OpenTrustList:
    session_id: ua.NodeId | None
    writing: bool
    data: bytearray
    position: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class PushContext:
    server: Server
    state: PushState
    max_trust_list_size: int
    trust_on_first_push: bool
    can_generate_keys: bool = True
    # CertificateTypeIds of the DefaultApplicationGroup: RsaSha256 (the channels') and the ECC types managed.
    certificate_types: tuple[int, ...] = (12560,)
    handles: dict[int, OpenTrustList] = field(default_factory=dict)
    audit: AuditEvents | None = None  # CertificateUpdated / TrustListUpdated audit events, once installed

    def session_closed(self, session_id: ua.NodeId | None) -> None:
        """A transaction belongs to its session (OPC 10000-12 7.10.2): when the session goes, so do its changes."""
        for handle in [h for h, f in self.handles.items() if f.session_id == session_id]:
            del self.handles[handle]
        if self.state.transaction_session is not None and self.state.transaction_session == session_id:
            log.info("push target: session closed with staged changes; they are discarded")
            self.state.cancel()

    def authorize(self) -> CallContext:
        """Every push method: a SignAndEncrypt channel and a SecurityAdmin user."""
        call = caller()
        require_mode(call, ua.MessageSecurityMode.SignAndEncrypt)
        if not has_any_role(call, {GdsRole.SECURITY_ADMIN}):
            raise MethodError(_S.BadUserAccessDenied, "needs the SecurityAdmin role")
        return call

    def expire_handles(self) -> None:
        cutoff = time.monotonic() - IDLE_TIMEOUT_S
        for handle in [h for h, f in self.handles.items() if f.last_used < cutoff]:
            del self.handles[handle]

    def open_for_writing(self) -> bool:
        self.expire_handles()
        return any(f.writing for f in self.handles.values())
