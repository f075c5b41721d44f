"""After ApplyChanges: the server's new certificate for new SecureChannels, and the old channels closed.

asyncua has no public API for either; both go through `opcua_gds._asyncua_compat` (`replace_server_identity`,
`live_channels`), which says what of asyncua they rely on. New SecureChannels use the new certificate at once;
channels already open keep the certificates they were opened with, so the ones ApplyChanges affects (the old
server certificate, a client the new trust list no longer accepts) are closed, which ends their sessions too
(OPC 10000-12 7.10.9 asks servers to force affected channels to renegotiate).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from asyncua import Server
from asyncua.crypto import uacrypto

from opcua_gds import _asyncua_compat as asyncua_compat
from opcua_gds.push.target.state import Identity

log = logging.getLogger(__name__)
CLOSE_DELAY_S = 0.5  # time for the ApplyChanges response to reach the client before its channel goes
# A channel of the old certificate whose subscriptions still hold events (an event view's CertificateUpdated) stays
# until they are published, at most this long: the client's publishing interval decides, SCADA views use 1-5 s.
FLUSH_LIMIT_S = 10.0
FLUSH_POLL_S = 0.05

# (host certificate DER, the client's chain: leaf first, then the CAs it sent; () for a channel without one)
ChannelPredicate = Callable[[bytes | None, Sequence[bytes]], bool]


async def use_identity(server: Server, identity: Identity, issuers: Sequence[bytes] = ()) -> None:
    """Make `identity` the server's certificate for new SecureChannels (and for CreateSession signatures),
    presented with `issuers` (the CAs above it, towards the root) after it."""
    await asyncua_compat.replace_server_identity(server, identity.certificate, identity.key, issuers)


def close_channels(server: Server, predicate: ChannelPredicate, *, abort: bool = False) -> int:
    """Close live channels for which predicate(host_certificate_der, peer_chain) is true.

    abort=True drops them at once, without flushing a response still buffered. Raises (never closes nothing
    silently) when asyncua's channel list is not what otpki was written for.
    """
    closed = 0
    for channel in asyncua_compat.live_channels(server):
        if predicate(channel.host_certificate, _peer_chain(channel)):
            if abort:
                channel.abort()
            else:
                channel.close()
            closed += 1
    if closed:
        log.info("%s %d SecureChannel(s)", "aborted" if abort else "closed", closed)
    return closed


def schedule_close(server: Server, predicate: ChannelPredicate, delay: float = CLOSE_DELAY_S, *,
                   flush: ChannelPredicate | None = None) -> None:
    """close_channels after `delay`, once the ApplyChanges response is on its way.

    flush: of the channels to close, those that first get the events their subscriptions still hold (the audit
    events ApplyChanges raised, for an event client on a channel of the old certificate), for at most FLUSH_LIMIT_S.
    """
    asyncua_compat.live_channels(server)  # fails here, in the caller's method, if the channel list cannot be read
    loop = asyncio.get_running_loop()
    loop.call_later(delay, _close_later, server, predicate, flush, loop.time() + delay + FLUSH_LIMIT_S)


def _close_later(server: Server, predicate: ChannelPredicate, flush: ChannelPredicate | None,
                 deadline: float) -> None:
    try:
        loop = asyncio.get_running_loop()
        closed = held = 0
        for channel in asyncua_compat.live_channels(server):
            host, peer = channel.host_certificate, _peer_chain(channel)
            if not predicate(host, peer):
                continue
            if flush is not None and loop.time() < deadline and flush(host, peer) and channel.has_unsent_events():
                held += 1
                continue
            channel.close()
            closed += 1
        if closed:
            log.info("closed %d SecureChannel(s)", closed)
        if held:
            loop.call_later(FLUSH_POLL_S, _close_later, server, predicate, flush, deadline)
    except Exception:
        # Nobody awaits a call_later callback: say loudly that channels of the old trust stay open.
        log.critical("ApplyChanges: could not close the affected SecureChannels; they keep the old certificate "
                     "and trust until they end", exc_info=True)


def _peer_chain(channel: asyncua_compat.LiveChannel) -> tuple[bytes, ...]:
    """What the client sent: its chain, or its certificate alone; () for a channel without one."""
    return channel.peer_chain or ((channel.peer_certificate,) if channel.peer_certificate else ())


def der_of(identity: Identity) -> bytes:
    return uacrypto.der_from_x509(identity.certificate)
