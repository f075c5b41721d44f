"""The asyncua internals push management needs: swap the server certificate live, drop old channels.

asyncua 2.1.0 has no public API for either (reference section 5):
- `Server.start()` bakes the certificate into `iserver.endpoints` (EndpointDescription.ServerCertificate,
  via `Server._set_endpoints`) and into the `SecurityPolicyFactory` objects of `Server._policies`
  (`Server._setup_server_nodes`, asyncua/server/server.py L423-445). `BinaryServer.set_policies` keeps a
  reference to that same list (server.py L539), and every new connection reads it
  (binary_server_asyncio.py L200-206, L66). So clearing both lists in place and re-running
  `_setup_server_nodes` makes every NEW SecureChannel use the new certificate.
- Channels already open keep the policy object they were created with (`SecureConnection.security_policy`,
  common/connection.py L338-344; renewals do not re-select). `BinaryServer.clients` lists the live
  `OPCUAProtocol`s (binary_server_asyncio.py L68/L192); closing a transport ends the channel and its
  session (`connection_lost` -> `UaProcessor.close`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from asyncua import Server
from asyncua.crypto import uacrypto

from opcua_gds.push.target.state import Identity

log = logging.getLogger(__name__)
CLOSE_DELAY_S = 0.5  # time for the ApplyChanges response to reach the client before its channel goes


async def use_identity(server: Server, identity: Identity) -> None:
    """Make `identity` the server's certificate for new SecureChannels (and for CreateSession signatures)."""
    server.iserver.certificate = identity.certificate
    server.iserver.private_key = identity.key
    if getattr(server, "bserver", None) is None:  # not started yet: start() builds endpoints and policies
        return
    server.iserver.endpoints.clear()
    server._policies.clear()  # the same list object BinaryServer hands to new connections
    await server._setup_server_nodes()


def _channel_policy(protocol: Any) -> Any:
    processor = getattr(protocol, "processor", None)
    connection = getattr(processor, "_connection", None)
    return getattr(connection, "security_policy", None)


def close_channels(server: Server, predicate: Callable[[bytes | None, bytes | None], bool]) -> int:
    """Close live channels for which predicate(host_certificate_der, peer_certificate_der) is true."""
    bserver = getattr(server, "bserver", None)
    if bserver is None:
        return 0
    closed = 0
    for protocol in list(bserver.clients):
        policy = _channel_policy(protocol)
        host = getattr(policy, "host_certificate", None)
        peer = getattr(policy, "peer_certificate", None)
        if protocol.transport is not None and predicate(host, peer):
            protocol.transport.close()
            closed += 1
    if closed:
        log.info("closed %d SecureChannel(s) after ApplyChanges", closed)
    return closed


def schedule_close(server: Server, predicate: Callable[[bytes | None, bytes | None], bool],
                   delay: float = CLOSE_DELAY_S) -> None:
    asyncio.get_running_loop().call_later(delay, close_channels, server, predicate)


def der_of(identity: Identity) -> bytes:
    return uacrypto.der_from_x509(identity.certificate)
