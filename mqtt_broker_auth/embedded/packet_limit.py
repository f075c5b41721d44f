"""MQTT framing in front of amqtt's packet decoders, so that no packet above the listener's limit is read.

amqtt 0.12.1 reads a packet's fixed header and then whatever length it announces (up to 256 MB) into memory,
with no size limit. `PacketLimitReader` reads each packet off the wire itself: type byte, remaining length,
and only if the total fits the limit, the body; amqtt's decoders are then served from that one packet. A packet
announcing more is refused before a byte of its body is read: the connection is aborted and the reader raises
`PacketTooLarge`, which amqtt's reader loop treats as fatal for the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from amqtt.adapters import ReaderAdapter

__all__ = ["MalformedPacket", "PacketLimitReader", "PacketRefused", "PacketTooLarge"]


class PacketRefused(Exception):
    """The connection must end: deliberately not an amqtt error, which its reader loop would skip over."""


class PacketTooLarge(PacketRefused):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"an MQTT packet of {size} bytes is above the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class MalformedPacket(PacketRefused):
    pass


class PacketLimitReader(ReaderAdapter):
    """A ReaderAdapter over an asyncio StreamReader that hands amqtt whole packets of at most `limit` bytes.

    `on_refused(exc)` runs before the exception is raised: the listener aborts the transport and logs there.
    """

    def __init__(self, reader: asyncio.StreamReader, limit: int,
                 on_refused: Callable[[PacketRefused], None] | None = None) -> None:
        self._reader = reader
        self.limit = limit
        self._on_refused = on_refused
        self._packet = memoryview(b"")  # what amqtt has not consumed yet of the current packet

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("PacketLimitReader reads exact sizes only (amqtt's decoders never read to EOF)")
        out = bytearray()
        while len(out) < n:
            if not self._packet:
                # At EOF, readexactly raises IncompleteReadError, which amqtt's read_or_raise turns into its
                # NoDataError: a clean end of stream between packets looks exactly as before.
                self._packet = memoryview(await self._next_packet())
            take = self._packet[: n - len(out)]
            out += take
            self._packet = self._packet[len(take):]
        return bytes(out)

    def feed_eof(self) -> None:
        self._reader.feed_eof()

    async def _next_packet(self) -> bytes:
        header = bytearray(await self._reader.readexactly(1))
        remaining, multiplier = 0, 1
        for _ in range(4):  # MQTT 3.1.1 section 2.2.3: at most four length bytes
            byte = (await self._reader.readexactly(1))[0]
            header.append(byte)
            remaining += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                break
            multiplier *= 128
        else:
            self._refuse(MalformedPacket(f"malformed remaining length {bytes(header[1:]).hex()}"))
        size = len(header) + remaining
        if size > self.limit:
            self._refuse(PacketTooLarge(size, self.limit))
        body = await self._reader.readexactly(remaining) if remaining else b""
        return bytes(header) + body

    def _refuse(self, exc: PacketRefused) -> None:
        if self._on_refused is not None:
            self._on_refused(exc)
        raise exc
