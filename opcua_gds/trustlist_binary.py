"""OPC UA binary encoding of TrustListDataType (i=12554, DefaultBinary i=12680).

Layout (OPC 10000-6 5.2, little-endian): UInt32 SpecifiedLists, then four arrays of ByteString
(TrustedCertificates, TrustedCrls, IssuerCertificates, IssuerCrls). An array is an Int32 count followed
by its elements, a ByteString an Int32 length followed by its bytes; -1 means null for both.

This is the content of the TrustList file that GDS clients Read and Write, so decode treats its input as
hostile: every length is checked against what is left before anything is sliced or allocated.
"""

from __future__ import annotations

import struct

from trustlists.errors import InvalidInput
from trustlists.models import TrustListContent, TrustListMask

_UINT32 = struct.Struct("<I")
_INT32 = struct.Struct("<i")
_ALL_BITS = int(TrustListMask.ALL)

# Field order of the structure and the mask bit that makes each list meaningful.
_LISTS: tuple[tuple[str, TrustListMask], ...] = (
    ("trusted_certificates", TrustListMask.TRUSTED_CERTIFICATES),
    ("trusted_crls", TrustListMask.TRUSTED_CRLS),
    ("issuer_certificates", TrustListMask.ISSUER_CERTIFICATES),
    ("issuer_crls", TrustListMask.ISSUER_CRLS),
)


def encode_trustlist(content: TrustListContent) -> bytes:
    """Encode `content`; lists not named by specified_lists are sent empty (a reader must ignore them)."""
    mask = _check_mask(content.specified_lists)
    out = bytearray(_UINT32.pack(mask))
    for field, bit in _LISTS:
        blobs: list[bytes] = getattr(content, field) if mask & bit else []
        out += _INT32.pack(len(blobs))
        for blob in blobs:
            if not blob:
                raise InvalidInput(f"{field} holds an empty entry")
            out += _INT32.pack(len(blob))
            out += blob
    return bytes(out)


def decode_trustlist(data: bytes) -> TrustListContent:
    """Decode a TrustListDataType; lists not named by SpecifiedLists come back empty."""
    reader = _Reader(bytes(data))
    mask = _check_mask(reader.uint32("SpecifiedLists"))
    lists: dict[str, list[bytes]] = {}
    for field, bit in _LISTS:
        blobs = reader.bytestring_array(field)
        lists[field] = blobs if mask & bit else []
    if reader.remaining:
        raise InvalidInput(f"{reader.remaining} unexpected bytes after the TrustListDataType")
    return TrustListContent(specified_lists=mask, **lists)


def _check_mask(mask: int) -> int:
    if not 0 <= mask <= _ALL_BITS:
        raise InvalidInput(f"SpecifiedLists {mask:#x} has bits outside TrustListMasks (0..15)")
    return mask


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise InvalidInput(f"TrustListDataType truncated in {what}: need {n} bytes, "
                               f"{self.remaining} left")
        chunk = self._data[self._pos:self._pos + n]
        self._pos += n
        return chunk

    def uint32(self, what: str) -> int:
        return _UINT32.unpack(self._take(4, what))[0]

    def int32(self, what: str) -> int:
        return _INT32.unpack(self._take(4, what))[0]

    def bytestring_array(self, field: str) -> list[bytes]:
        count = self.int32(f"{field} length")
        if count == -1:  # null array: same meaning as empty here
            return []
        # Each element needs at least its 4-byte length, so a count the rest cannot hold is a lie;
        # checking it up front keeps a forged count from driving a huge loop.
        if count < 0 or count > self.remaining // 4:
            raise InvalidInput(f"{field}: array length {count} is impossible with {self.remaining} "
                               "bytes left")
        blobs: list[bytes] = []
        for i in range(count):
            length = self.int32(f"{field}[{i}] length")
            if length <= 0:
                # A null or empty certificate/CRL carries nothing a trust list could use.
                raise InvalidInput(f"{field}[{i}] is null or empty")
            blobs.append(self._take(length, f"{field}[{i}]"))
        return blobs
