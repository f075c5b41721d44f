"""The few DER pieces the template encoders (leaf certificates, OCSP responses) write and split themselves.

Only definite lengths and single-byte tags: DER has no other lengths, and every element these encoders touch
has a low tag number.
"""

from __future__ import annotations

__all__ = ["children", "content", "header_size", "integer", "tlv"]


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def tlv(tag: int, value: bytes) -> bytes:
    """One element: tag, length, `value`."""
    n = len(value)
    # The lengths a certificate's parts have, without the general case's big-integer conversion (hot: a dozen
    # elements per certificate).
    if n < 0x80:
        return bytes((tag, n)) + value
    if n < 0x100:
        return bytes((tag, 0x81, n)) + value
    if n < 0x10000:
        return bytes((tag, 0x82, n >> 8, n & 0xFF)) + value
    return bytes((tag,)) + _length(n) + value


def integer(value: int) -> bytes:
    """A non-negative INTEGER in its shortest two's-complement form (a 0x00 first when the top bit is set)."""
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def header_size(element: bytes, at: int = 0) -> int:
    """How many bytes the tag and length of the element at `at` take."""
    first = element[at + 1]
    return 2 if first < 0x80 else 2 + (first & 0x7F)


def _span(element: bytes, at: int) -> tuple[int, int]:
    """(content start, content length) of the element at `at`."""
    first = element[at + 1]
    if first < 0x80:
        return at + 2, first
    count = first & 0x7F
    return at + 2 + count, int.from_bytes(element[at + 2:at + 2 + count], "big")


def content(element: bytes) -> bytes:
    """The content octets of one element."""
    start, length = _span(element, 0)
    return element[start:start + length]


def children(element: bytes) -> list[bytes]:
    """The encoded children of one constructed element."""
    start, length = _span(element, 0)
    end = start + length
    out: list[bytes] = []
    at = start
    while at < end:
        child_start, size = _span(element, at)
        out.append(element[at:child_start + size])
        at = child_start + size
    return out
