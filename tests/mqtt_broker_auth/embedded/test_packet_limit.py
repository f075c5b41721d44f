"""PacketLimitReader on an asyncio StreamReader fed by hand (pure framing logic, no sockets)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.publish import PublishPacket

from mqtt_broker_auth.embedded.broker_limits import ThrottledWarning, UnauthenticatedSlots
from mqtt_broker_auth.embedded.packet_limit import MalformedPacket, PacketLimitReader, PacketRefused, PacketTooLarge


def publish(payload: bytes) -> bytes:
    return PublishPacket.build("a/b", payload, None, dup_flag=False, qos=0, retain=False).to_bytes()


def stream(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


async def test_packets_up_to_the_limit_reach_amqtt_whole() -> None:
    first, second = publish(b"x" * 100), publish(b"y" * 10)
    limit = len(first)  # exactly at the limit: accepted
    refused: list[PacketRefused] = []
    reader = PacketLimitReader(stream(first + second), limit, on_refused=refused.append)
    for expected in (b"x" * 100, b"y" * 10):
        header = await MQTTFixedHeader.from_stream(reader)
        assert header is not None
        packet = await PublishPacket.from_stream(reader, fixed_header=header)
        assert packet.payload is not None and packet.payload.data == expected
    assert await MQTTFixedHeader.from_stream(reader) is None  # clean EOF between packets, as amqtt expects
    assert refused == []


async def test_a_packet_above_the_limit_is_refused_on_its_header() -> None:
    big = publish(b"x" * 100)
    refused: list[PacketRefused] = []
    # Only the fixed header is available and no EOF: refusing must not wait for the body.
    reader = PacketLimitReader(stream(big[:2], eof=False), len(big) - 1, on_refused=refused.append)
    with pytest.raises(PacketTooLarge) as info:
        await asyncio.wait_for(reader.read(1), 5)
    assert info.value.size == len(big) and info.value.limit == len(big) - 1
    assert refused == [info.value]


async def test_a_five_byte_remaining_length_is_malformed() -> None:
    reader = PacketLimitReader(stream(b"\x30\xff\xff\xff\xff\x01", eof=False), 1 << 30)
    with pytest.raises(MalformedPacket):
        await asyncio.wait_for(reader.read(1), 5)


async def test_eof_inside_a_packet_is_amqtts_no_data() -> None:
    reader = PacketLimitReader(stream(publish(b"x" * 50)[:10]), 1024)
    with pytest.raises(asyncio.IncompleteReadError):
        await reader.read(1)


def test_slots_and_throttled_warnings(caplog: pytest.LogCaptureFixture) -> None:
    slots = UnauthenticatedSlots(2)
    a, b = slots.take(), slots.take()
    assert a is not None and b is not None and slots.take() is None
    a.release()
    a.release()  # idempotent: every exit path may release
    assert slots.in_use == 1 and slots.take() is not None

    log = logging.getLogger("test.throttled")
    warnings = ThrottledWarning(log, every_s=3600)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for i in range(5):
            warnings.warn("flood", "event %d", i)
        warnings.warn("other", "another kind")
    assert warnings.counts == {"flood": 5, "other": 1}
    assert [r.getMessage() for r in caplog.records] == ["event 0", "another kind"]
