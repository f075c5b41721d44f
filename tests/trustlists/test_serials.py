"""trustlists.serials: 20 DER octets, at least 64 random bits (CA/B BR 7.1), and later serials sort later."""

from __future__ import annotations

import time

from trustlists.serials import RANDOM_BITS, SERIAL_BITS, random_serial


def test_serials_are_positive_159_bits_and_20_der_octets() -> None:
    for _ in range(1000):
        serial = random_serial()
        assert serial.bit_length() == SERIAL_BITS  # top bit set: 159 bits, no leading zero octet in DER
        assert len(serial.to_bytes(serial.bit_length() // 8 + 1, "big")) == 20


def test_serials_of_one_moment_differ_in_well_over_64_random_bits() -> None:
    mask = (1 << RANDOM_BITS) - 1
    serials = [random_serial() for _ in range(2000)]
    assert RANDOM_BITS >= 64
    assert len({s & mask for s in serials}) == len(serials)
    # Every random bit takes both values across the sample (a stuck bit would be less entropy than stated).
    assert all(0 < sum((s >> bit) & 1 for s in serials) < len(serials) for bit in range(RANDOM_BITS))


def test_later_serials_sort_later() -> None:
    """What keeps a batch's serials on a few index pages: a serial made a millisecond later is greater, as a number
    and as the store's hex text."""
    earlier = [random_serial() for _ in range(50)]
    deadline = time.monotonic() + 1.0
    start_ms = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 <= start_ms + 1:  # past the next millisecond: the clock part has moved
        assert time.monotonic() < deadline
    later = [random_serial() for _ in range(50)]
    assert max(earlier) < min(later)
    assert max(format(s, "x") for s in earlier) < min(format(s, "x") for s in later)
