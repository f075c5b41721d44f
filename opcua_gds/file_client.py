"""The client side of an OPC UA FileType object (a TrustList): read it to its end, and always close it.

The GDS client (pull) and the push client each open a TrustList in their own way (GetTrustList + OpenWithMasks
on a GDS, Open on a PLC's ServerConfiguration); reading and closing is the same for both (OPC 10000-5 C.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable


async def read_to_end(read: Callable[[], Awaitable[bytes | None]], close: Callable[[], Awaitable[object]]) -> bytes:
    """Call `read` until it returns nothing, then `close` (also when a read fails: a handle is a server resource)."""
    data = bytearray()
    try:
        while chunk := await read():
            data += chunk
    finally:
        await close()
    return bytes(data)
