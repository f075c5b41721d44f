"""The OPC UA binary TrustListDataType: byte-identical to asyncua's encoding both ways, hostile input refused."""

from __future__ import annotations

import random
import struct

import pytest

from opcua_gds.trustlist_binary import decode_trustlist, encode_trustlist
from tests.small_pki import Pki, build_pki, content_v1
from trustlists.errors import InvalidInput
from trustlists.models import TrustListContent, TrustListMask


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki()


# --- OPC UA binary encoding -------------------------------------------------------------------------

def _asyncua_struct(content: TrustListContent):
    from asyncua import ua

    return ua.TrustListDataType(
        SpecifiedLists=content.specified_lists,
        TrustedCertificates=list(content.trusted_certificates),
        TrustedCrls=list(content.trusted_crls),
        IssuerCertificates=list(content.issuer_certificates),
        IssuerCrls=list(content.issuer_crls),
    )


def test_binary_round_trip(pki: Pki) -> None:
    content = content_v1(pki)
    data = encode_trustlist(content)
    assert decode_trustlist(data) == content
    assert struct.unpack_from("<Ii", data) == (15, 2)  # mask, then the TrustedCertificates count


def test_binary_equals_asyncua_both_ways(pki: Pki) -> None:
    from asyncua import ua
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    content = content_v1(pki)
    theirs = struct_to_binary(_asyncua_struct(content))
    assert encode_trustlist(content) == theirs
    assert decode_trustlist(theirs) == content

    decoded = struct_from_binary(ua.TrustListDataType, Buffer(encode_trustlist(content)))
    assert decoded == _asyncua_struct(content)

    empty = TrustListContent(specified_lists=TrustListMask.NONE)
    assert encode_trustlist(empty) == struct_to_binary(ua.TrustListDataType())


def test_binary_only_specified_lists_count(pki: Pki) -> None:
    from asyncua.ua.ua_binary import struct_to_binary

    mask = TrustListMask.TRUSTED_CERTIFICATES | TrustListMask.TRUSTED_CRLS
    full = content_v1(pki, mask=mask)
    # A peer may send lists it did not name; they must not leak into what we decode.
    decoded = decode_trustlist(struct_to_binary(_asyncua_struct(full)))
    assert decoded.specified_lists == mask
    assert decoded.trusted_certificates == full.trusted_certificates
    assert decoded.issuer_certificates == [] and decoded.issuer_crls == []
    # And we do not send them: the encoding equals asyncua's with those lists empty.
    trimmed = full.model_copy(update={"issuer_certificates": [], "issuer_crls": []})
    assert encode_trustlist(full) == struct_to_binary(_asyncua_struct(trimmed))


def test_binary_null_arrays_decode_as_empty(pki: Pki) -> None:
    from asyncua import ua
    from asyncua.ua.ua_binary import struct_to_binary

    data = struct_to_binary(ua.TrustListDataType(SpecifiedLists=15, TrustedCertificates=None,
                                                 TrustedCrls=None, IssuerCertificates=[pki.issuing.der],
                                                 IssuerCrls=None))
    assert data[4:8] == b"\xff\xff\xff\xff"  # really a null array on the wire
    decoded = decode_trustlist(data)
    assert decoded.trusted_certificates == [] and decoded.issuer_certificates == [pki.issuing.der]


def test_binary_rejects_every_truncation(pki: Pki) -> None:
    data = encode_trustlist(content_v1(pki))
    for cut in range(len(data)):
        with pytest.raises(InvalidInput):
            decode_trustlist(data[:cut])


@pytest.mark.parametrize("blob", [
    struct.pack("<Ii", 15, 0x7FFFFFFF),  # absurd array count
    struct.pack("<Iii", 15, 1, 0x7FFFFFFF) + b"x" * 16,  # absurd ByteString length
    struct.pack("<Ii", 15, -2),  # negative count other than -1
    struct.pack("<Iii", 15, 1, -1) + struct.pack("<iii", 0, 0, 0),  # null certificate
    struct.pack("<Iii", 15, 1, 0) + struct.pack("<iii", 0, 0, 0),  # empty certificate
    struct.pack("<Iiiii", 16, 0, 0, 0, 0),  # mask bit outside TrustListMasks
    struct.pack("<Iiiii", 15, 0, 0, 0, 0) + b"\x00",  # trailing garbage
    b"",
    b"\x0f\x00",
])
def test_binary_rejects_malformed(blob: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_trustlist(blob)


def test_binary_rejects_random_garbage() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        blob = rng.randbytes(rng.randrange(0, 200))
        with pytest.raises(InvalidInput):
            decode_trustlist(blob)


