"""OPC 10000-12 audit events on the Server object, for OPC UA event clients (a SCADA's alarm and event view).

The GDS raises ApplicationRegistrationChangedAuditEventType (Register/Update/UnregisterApplication that changed a
registration), CertificateRequestedAuditEventType (StartSigningRequest / StartNewKeyPairRequest, accepted or
refused) and CertificateDeliveredAuditEventType (a FinishRequest that hands out a certificate). Push targets raise
CertificateUpdatedAuditEventType and TrustListUpdatedAuditEventType when ApplyChanges changes the certificate or the
trust list (a push target is transactional: UpdateCertificate and the TrustList methods only stage changes).

Every event is an AuditUpdateMethodEventType (OPC 10000-5 6.4.27): SourceNode the Object the method was called on,
SourceName "Attribute/Call", MethodId, InputArguments (a PrivateKey or PrivateKeyPassword set to null, as
OPC 10000-12 7.10.26 asks), StatusCodeId and Status, ActionTimeStamp, ServerId (the server's ApplicationUri) and
ClientUserId (the session's user name, "anonymous" without one); emitted from the Server object (i=2253).

Who receives them: audit events say who did what, so they go only to the subscriptions of sessions whose user
authenticated (a user name or X.509 user token the server knows); an anonymous session's subscription gets none.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import AuditUpdateMethodEvent
from asyncua.crypto.permission_rules import UserRole

from opcua_gds import _asyncua_compat as asyncua_compat
from opcua_gds.access import GdsUser
from opcua_gds.call_context import CallContext
from opcua_gds.nodeids import ns0_node_id, ua_status

log = logging.getLogger(__name__)
SOURCE_NAME = "Attribute/Call"
SEVERITY_DONE = 100
SEVERITY_REFUSED = 500  # a refused request is worth a look in an event view


@dataclass(frozen=True)
class MethodCall:
    """The call an audit event reports."""

    source: ua.NodeId  # the Object the method was called on
    method: ua.NodeId
    inputs: Sequence[ua.Variant] = ()
    secret_inputs: frozenset[int] = field(default_factory=frozenset)  # positions reported as null


def may_receive(user: Any) -> bool:
    """Authenticated users get audit events; anonymous sessions and sessions that are gone do not."""
    if isinstance(user, GdsUser):
        return user.authenticated
    return getattr(user, "role", None) is UserRole.Admin  # a server with asyncua's own user manager: its admins


def client_user_id(call: CallContext | None) -> str:
    name = getattr(call.user, "name", None) if call is not None else None
    return str(name) if name else "anonymous"


class AuditEvents:
    """Raises audit events on one server's Server object."""

    def __init__(self, server: Server, server_uri: str) -> None:
        self.server = server
        self.server_uri = server_uri

    async def install(self) -> None:
        """Let clients subscribe to events on the Server object (where every audit event is emitted)."""
        await self.server.nodes.server.set_event_notifier([ua.EventNotifier.SubscribeToEvents])

    async def raise_event(self, event_type: ua.NodeId, call: MethodCall, caller: CallContext | None, *, message: str,
                          status: int = ua.StatusCodes.Good,
                          fields: Mapping[str, tuple[Any, ua.VariantType]] | None = None) -> None:
        """Build the event and hand it to every subscription allowed to see it; never raises."""
        try:
            receivers = [sid for sid, user in asyncua_compat.subscribers(self.server) if may_receive(user)]
            if not receivers:  # nobody may listen: build nothing (every pull raises two of these)
                return
            event = self._event(event_type, call, caller, message, status, fields or {})
            for subscription_id in receivers:
                await asyncua_compat.deliver_event(self.server, event, subscription_id)
        except Exception:  # an event that cannot be delivered must not turn a done change into an error
            log.exception("could not raise %s for %s", event_type.to_string(), call.method.to_string())

    def _event(self, event_type: ua.NodeId, call: MethodCall, caller: CallContext | None, message: str, status: int,
               fields: Mapping[str, tuple[Any, ua.VariantType]]) -> AuditUpdateMethodEvent:
        code = ua_status(status)
        event = AuditUpdateMethodEvent(sourcenode=call.source, message=message,
                                       severity=SEVERITY_DONE if code.is_good() else SEVERITY_REFUSED)
        event.EventType = event_type
        event.data_types["ActionTimeStamp"] = ua.VariantType.DateTime  # asyncua declares it with a NodeId
        event.emitting_node = ns0_node_id(ua.ObjectIds.Server)
        now = datetime.now(UTC)
        _set_fields(event, EventId=uuid.uuid4().bytes, Time=now, ReceiveTime=now, ActionTimeStamp=now,
                    LocalTime=ua.TimeZoneDataType(Offset=ua.Int16(time.localtime().tm_gmtoff // 60),
                                                  DaylightSavingInOffset=time.localtime().tm_isdst > 0),
                    SourceName=SOURCE_NAME, Status=code.is_good(), StatusCodeId=code, ServerId=self.server_uri,
                    ClientUserId=client_user_id(caller), MethodId=call.method,
                    InputArguments=[ua.Variant() if i in call.secret_inputs else v for i, v in enumerate(call.inputs)])
        for name, (value, variant_type) in fields.items():
            event.add_property(name, value, variant_type)
        return event


def _set_fields(event: AuditUpdateMethodEvent, **values: Any) -> None:
    """Set fields asyncua's event class declares at run time (add_property), so none is invented by a typo."""
    for name, value in values.items():
        if name not in event.data_types:
            raise AttributeError(f"{type(event).__name__} has no event field {name}")
        setattr(event, name, value)
