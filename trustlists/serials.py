"""Certificate serial numbers: 159 bits, positive, always 20 bytes in DER, 116 of them random.

RFC 5280 allows at most 20 octets; the CA/Browser Forum Baseline Requirements (7.1) ask for a non-sequential
number with at least 64 bits from a CSPRNG. The top bit is set, which keeps the DER length constant (no
leading-zero trimming). Below it come the milliseconds since 1970 (42 bits: until 2109, then they wrap), then 116
random bits. So serials made later sort later, and the store's indexes on the serial (the certificates, the key
index, the audit log's subject index) take a batch's new serials side by side on a few pages instead of one random
page each: a durable commit of 100 certificates writes about 300 fewer pages, less to sync (bench/issuance.py).
Nothing is sequential: two serials of the same millisecond differ in 116 random bits, and the time is no secret
(a certificate states its notBefore). Uniqueness is enforced by the store's primary key; issuance retries on the
(astronomically rare) clash.
"""

from __future__ import annotations

import secrets
import time

SERIAL_BITS = 159
_CLOCK_BITS = 42
RANDOM_BITS = SERIAL_BITS - 1 - _CLOCK_BITS  # 116


def random_serial() -> int:
    clock = (time.time_ns() // 1_000_000) & ((1 << _CLOCK_BITS) - 1)
    return (1 << (SERIAL_BITS - 1)) | (clock << RANDOM_BITS) | secrets.randbits(RANDOM_BITS)


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def parse_serial(text: str) -> int:
    """Accept hex with or without 0x / colons, as operators copy it from openssl output."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise ValueError(f"{text!r} is not a hexadecimal serial number") from None
    if value <= 0:
        raise ValueError("serial numbers are positive")
    return value
