"""Certificate serial numbers: random, 159 bits, positive, always 20 bytes in DER.

RFC 5280 allows at most 20 octets; CA/B rules ask for at least 64 random bits. Setting the top bit of a
159-bit random number keeps the DER length constant (no leading-zero trimming) while leaving 158 random bits.
Uniqueness is enforced by the store's primary key; issuance retries on the (astronomically rare) clash.
"""

from __future__ import annotations

import secrets

SERIAL_BITS = 159


def random_serial() -> int:
    return secrets.randbits(SERIAL_BITS) | (1 << (SERIAL_BITS - 1))


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
