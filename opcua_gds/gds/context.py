"""What every GDS method module gets from the server: the engine, the address space, the settings.

Its own module so that the method modules (directory, pull, trustlist_file) and the server that installs
them both depend on it, and not on each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from asyncua import Node, Server, ua

from opcua_gds.access import SelfAdmin
from opcua_gds.audit_events import AuditEvents
from opcua_gds.gds.settings import GdsSettings
from opcua_gds.nodeids import guid_node_id
from trustlists.engine import Engine


@dataclass
class GdsContext:
    """What every GDS method module needs."""

    engine: Engine
    server: Server
    gds_idx: int
    directory: Node
    self_admin: SelfAdmin
    settings: GdsSettings
    audit: AuditEvents
    groups: dict[ua.NodeId, str] = field(default_factory=dict)  # issuing CertificateGroupId -> engine group
    # every CertificateGroupId -> the engine group whose trust list its TrustList serves (None: an empty one)
    trust_sources: dict[ua.NodeId, str | None] = field(default_factory=dict)

    def application_id(self, owner_id: str) -> ua.NodeId:
        return guid_node_id(uuid.UUID(owner_id), self.gds_idx)

    def owner_id(self, application_id: object) -> str | None:
        """The engine owner id behind an ApplicationId NodeId, or None if it cannot be one of ours."""
        if not isinstance(application_id, ua.NodeId) or application_id.NamespaceIndex != self.gds_idx:
            return None
        if application_id.NodeIdType != ua.NodeIdType.Guid:
            return None
        return str(application_id.Identifier)


Installer = Callable[[GdsContext], Awaitable[None]]
