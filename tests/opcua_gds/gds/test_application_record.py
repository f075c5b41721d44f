"""ApplicationRecordDataType over a real asyncua Server and Client, and on the wire byte by byte.

The "foreign client" runs in a subprocess that imports only asyncua: it has never seen otpki's class, so it
decodes the value either raw (ExtensionObject TypeId + body) or from the DataTypeDefinition the server
publishes, as a standard GDS client does.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from asyncua import Client, Server, ua

from opcua_gds.gds.application_record import (
    ApplicationRecord,
    ApplicationRecordDataType,
    LocalizedName,
    application_id_from_str,
    application_id_to_str,
    binary_encoding_id,
    data_type_id,
    decode_extension_object,
    install_application_record_type,
    register_application_record_class,
)
from opcua_gds.nodeids import GDS_NAMESPACE_URI
from trustlists.testing import free_port

TEST_NS = "urn:otpki:test:application-record"
APP_GUID = uuid.UUID("4f1c9d2a-7b3e-4c5d-9e8f-0a1b2c3d4e5f")

RECORD = ApplicationRecord(
    application_id=f"g={APP_GUID}",
    application_uri="urn:plant:line1:plc-7",
    application_type=ua.ApplicationType.ClientAndServer,
    application_names=[LocalizedName(text="PLC 7", locale="en"), LocalizedName(text="SPS 7", locale="de-DE"),
                       LocalizedName(text="no locale")],
    product_uri="urn:vendor:plc",
    discovery_urls=["opc.tcp://plc-7.plant:4840", "opc.tcp://10.0.0.7:4840"],
    server_capabilities=["DA", "AC"],
)
SECOND = ApplicationRecord(application_uri="urn:plant:scada", application_type=ua.ApplicationType.Client,
                           application_names=[LocalizedName(text="SCADA")])


@dataclass
class GdsTestServer:
    server: Server
    url: str
    gds_idx: int
    scalar: ua.NodeId
    array: ua.NodeId


@pytest.fixture
async def gds_server() -> AsyncIterator[GdsTestServer]:
    server = Server()
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/otpki/test"
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    # A namespace before the GDS one, so the GDS index is not the 2 every fresh asyncua server hands out.
    test_idx = await server.register_namespace(TEST_NS)
    gds_idx = await server.register_namespace(GDS_NAMESPACE_URI)
    await install_application_record_type(server, gds_idx)
    dtype = data_type_id(gds_idx)
    scalar = await server.nodes.objects.add_variable(
        ua.NodeId("record", test_idx), ua.QualifiedName("Record", test_idx),
        ua.Variant(RECORD.to_ua(gds_idx), ua.VariantType.ExtensionObject), datatype=dtype)
    array = await server.nodes.objects.add_variable(
        ua.NodeId("records", test_idx), ua.QualifiedName("Records", test_idx),
        ua.Variant([RECORD.to_ua(gds_idx), SECOND.to_ua(gds_idx)], ua.VariantType.ExtensionObject), datatype=dtype)
    await scalar.set_writable()
    await server.start()
    try:
        yield GdsTestServer(server, url, gds_idx, scalar.nodeid, array.nodeid)
    finally:
        await server.stop()


@pytest.fixture
async def client(gds_server: GdsTestServer) -> AsyncIterator[Client]:
    c = Client(gds_server.url, timeout=10, watchdog_intervall=10)
    await c.connect()
    try:
        yield c
    finally:
        await c.disconnect()


FOREIGN_CLIENT = r"""
import asyncio, json, sys
from asyncua import Client, ua

def fields(v):
    return {"class_module": type(v).__module__,
            "ApplicationId": v.ApplicationId.to_string(), "ApplicationUri": v.ApplicationUri,
            "ApplicationType": int(v.ApplicationType),
            "ApplicationNames": [[n.Locale, n.Text] for n in v.ApplicationNames],
            "ProductUri": v.ProductUri, "DiscoveryUrls": v.DiscoveryUrls,
            "ServerCapabilities": v.ServerCapabilities}

def raw(v):
    return {"type": type(v).__name__, "type_id": v.TypeId.to_string(), "body": v.Body.hex()}

async def main(url, scalar, array):
    async with Client(url, timeout=10, watchdog_intervall=10) as c:
        gds_idx = await c.get_namespace_index("http://opcfoundation.org/UA/GDS/")
        s, a = c.get_node(scalar), c.get_node(array)
        out = {"gds_idx": gds_idx, "raw_scalar": raw(await s.read_value()),
               "raw_array": [raw(v) for v in await a.read_value()]}
        await c.load_data_type_definitions()
        out["scalar"] = fields(await s.read_value())
        out["array"] = [fields(v) for v in await a.read_value()]
        print(json.dumps(out))

asyncio.run(main(*sys.argv[1:]))
"""


async def run_foreign_client(srv: GdsTestServer) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FOREIGN_CLIENT, srv.url, srv.scalar.to_string(), srv.array.to_string(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, stderr.decode()[-3000:]
    return json.loads(stdout.decode().strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# (a) a client that knows nothing of otpki reads the value after load_data_type_definitions()
# ------------------------------------------------------------------------------------------------


def _expected_fields(record: ApplicationRecord, gds_idx: int) -> dict[str, Any]:
    v = record.to_ua(gds_idx)
    return {"ApplicationId": v.ApplicationId.to_string(), "ApplicationUri": v.ApplicationUri,
            "ApplicationType": int(v.ApplicationType),
            "ApplicationNames": [[n.Locale, n.Text] for n in v.ApplicationNames],
            "ProductUri": v.ProductUri, "DiscoveryUrls": v.DiscoveryUrls, "ServerCapabilities": v.ServerCapabilities}


async def test_foreign_client_decodes_from_published_definition(gds_server: GdsTestServer) -> None:
    out = await run_foreign_client(gds_server)
    assert out["gds_idx"] == gds_server.gds_idx == 3
    # The class came from asyncua's generator, fed by the DataTypeDefinition in the address space.
    assert out["scalar"].pop("class_module") == "asyncua.common.structures104"
    assert out["scalar"] == _expected_fields(RECORD, gds_server.gds_idx)
    assert out["scalar"]["ApplicationId"] == f"ns=3;g={APP_GUID}"
    assert [f | {"class_module": None} for f in out["array"]] == [
        _expected_fields(r, gds_server.gds_idx) | {"class_module": None} for r in (RECORD, SECOND)]


async def test_otpki_client_reads_and_writes_records(gds_server: GdsTestServer, client: Client) -> None:
    gds_idx = await client.get_namespace_index(GDS_NAMESPACE_URI)
    register_application_record_class(gds_idx)
    await client.load_data_type_definitions()  # must keep otpki's class, not replace it
    value = await client.get_node(gds_server.scalar).read_value()
    assert isinstance(value, ApplicationRecordDataType)
    assert ApplicationRecord.from_ua(value, gds_idx) == RECORD
    values = await client.get_node(gds_server.array).read_value()
    assert [ApplicationRecord.from_ua(v, gds_idx) for v in values] == [RECORD, SECOND]

    await client.get_node(gds_server.scalar).write_value(
        ua.Variant(SECOND.to_ua(gds_idx), ua.VariantType.ExtensionObject))
    on_server = await gds_server.server.get_node(gds_server.scalar).read_value()
    assert ApplicationRecord.from_ua(on_server, gds_server.gds_idx) == SECOND


async def test_address_space_publishes_type_definition_and_encoding(gds_server: GdsTestServer, client: Client) -> None:
    idx = gds_server.gds_idx
    dtype = client.get_node(data_type_id(idx))
    assert await dtype.read_browse_name() == ua.QualifiedName("ApplicationRecordDataType", idx)
    assert await dtype.read_node_class() == ua.NodeClass.DataType
    assert (await dtype.get_parent()).nodeid == ua.NodeId(ua.ObjectIds.Structure)
    sdef = await dtype.read_data_type_definition()
    assert sdef.DefaultEncodingId == ua.NodeId(134, idx)
    assert sdef.StructureType == ua.StructureType.Structure
    assert [(f.Name, f.DataType, f.ValueRank, f.IsOptional) for f in sdef.Fields] == [
        ("ApplicationId", ua.NodeId(17), -1, False),
        ("ApplicationUri", ua.NodeId(12), -1, False),
        ("ApplicationType", ua.NodeId(307), -1, False),
        ("ApplicationNames", ua.NodeId(21), 1, False),
        ("ProductUri", ua.NodeId(12), -1, False),
        ("DiscoveryUrls", ua.NodeId(12), 1, False),
        ("ServerCapabilities", ua.NodeId(12), 1, False),
    ]
    encodings = await dtype.get_referenced_nodes(ua.ObjectIds.HasEncoding, ua.BrowseDirection.Forward)
    assert [e.nodeid for e in encodings] == [binary_encoding_id(idx)]
    encoding = encodings[0]
    assert await encoding.read_browse_name() == ua.QualifiedName("Default Binary", 0)
    assert await encoding.read_type_definition() == ua.NodeId(ua.ObjectIds.DataTypeEncodingType)
    assert await client.get_node(gds_server.scalar).read_data_type() == data_type_id(idx)

    # A second install (or a server that loaded the GDS NodeSet first) leaves the nodes alone.
    assert await install_application_record_type(gds_server.server, idx) == data_type_id(idx)


# ------------------------------------------------------------------------------------------------
# (b) the bytes on the wire
# ------------------------------------------------------------------------------------------------


class Reader:
    """A hand-written OPC UA binary reader (Part 6 5.2), independent of asyncua's decoder."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        assert len(chunk) == n, "ran past the end of the body"
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def int32(self) -> int:
        return int(self.unpack("i"))

    def string(self) -> str | None:
        n = self.int32()
        return None if n == -1 else self.take(n).decode()

    def array(self, element: Any) -> list[Any] | None:
        n = self.int32()
        return None if n == -1 else [element() for _ in range(n)]

    def localized_text(self) -> tuple[str | None, str | None]:
        mask = self.unpack("B")
        locale = self.string() if mask & 0x01 else None
        text = self.string() if mask & 0x02 else None
        return locale, text

    def node_id(self) -> tuple[int, Any]:
        kind = self.unpack("B")
        if kind == 0x00:
            return 0, self.unpack("B")
        if kind == 0x01:
            return self.unpack("B"), self.unpack("H")
        if kind == 0x02:
            return self.unpack("H"), self.unpack("I")
        if kind == 0x03:
            return self.unpack("H"), self.string()
        if kind == 0x04:
            return self.unpack("H"), uuid.UUID(bytes_le=self.take(16))
        raise AssertionError(f"unexpected NodeId encoding byte {kind:#x}")


def parse_application_record(body: bytes) -> dict[str, Any]:
    r = Reader(body)
    parsed = {
        "ApplicationId": r.node_id(),
        "ApplicationUri": r.string(),
        "ApplicationType": r.int32(),
        "ApplicationNames": r.array(r.localized_text),
        "ProductUri": r.string(),
        "DiscoveryUrls": r.array(r.string),
        "ServerCapabilities": r.array(r.string),
    }
    assert r.pos == len(body), f"{len(body) - r.pos} trailing bytes"
    return parsed


async def test_wire_encoding_id_and_byte_layout(gds_server: GdsTestServer) -> None:
    out = await run_foreign_client(gds_server)
    idx = gds_server.gds_idx
    raw = out["raw_scalar"]
    assert raw["type"] == "ExtensionObject"
    assert raw["type_id"] == f"ns={idx};i=134"  # ApplicationRecordDataType_Encoding_DefaultBinary
    assert parse_application_record(bytes.fromhex(raw["body"])) == {
        "ApplicationId": (idx, APP_GUID),
        "ApplicationUri": "urn:plant:line1:plc-7",
        "ApplicationType": 2,
        "ApplicationNames": [("en", "PLC 7"), ("de-DE", "SPS 7"), (None, "no locale")],
        "ProductUri": "urn:vendor:plc",
        "DiscoveryUrls": ["opc.tcp://plc-7.plant:4840", "opc.tcp://10.0.0.7:4840"],
        "ServerCapabilities": ["DA", "AC"],
    }
    assert [a["type_id"] for a in out["raw_array"]] == [f"ns={idx};i=134"] * 2
    second = parse_application_record(bytes.fromhex(out["raw_array"][1]["body"]))
    assert second == {"ApplicationId": (0, 0), "ApplicationUri": "urn:plant:scada", "ApplicationType": 1,
                      "ApplicationNames": [(None, "SCADA")], "ProductUri": None, "DiscoveryUrls": [],
                      "ServerCapabilities": []}

    # The same body, handed over as an undecoded ExtensionObject, converts back.
    eo = ua.ExtensionObject(TypeId=binary_encoding_id(idx), Body=bytes.fromhex(raw["body"]))
    assert ApplicationRecord.from_ua(eo, idx) == RECORD
    with pytest.raises(ValueError, match="TypeId"):
        decode_extension_object(ua.ExtensionObject(TypeId=ua.NodeId(134, idx + 1), Body=b""), idx)


# ------------------------------------------------------------------------------------------------
# Conversions without a server
# ------------------------------------------------------------------------------------------------


def test_application_id_text_form_is_namespace_independent() -> None:
    guid = uuid.uuid4()
    for gds_idx in (2, 5):
        for node_id, text in [
            (ua.NodeId(guid, gds_idx, ua.NodeIdType.Guid), f"g={guid}"),
            (ua.NodeId(42, gds_idx), "i=42"),
            (ua.NodeId("app-1", gds_idx), "s=app-1"),
            (ua.NodeId(42, 0), "ns=0;i=42"),
            (ua.NodeId("x", 7), "ns=7;s=x"),
        ]:
            assert application_id_to_str(node_id, gds_idx) == text
            assert application_id_from_str(text, gds_idx) == node_id
    assert application_id_to_str(ua.NodeId(), 2) is None
    assert application_id_from_str(None, 2).is_null()


def test_one_class_per_namespace_index() -> None:
    a, b = register_application_record_class(11), register_application_record_class(12)
    assert ua.ApplicationRecordDataType is b  # the index registered last owns the ua.<name> binding
    assert a is register_application_record_class(11) and a is not b
    assert ua.ApplicationRecordDataType is a
    assert issubclass(a, ApplicationRecordDataType) and issubclass(b, ApplicationRecordDataType)
    assert ua.typeid_by_extension_objects[a] == ua.NodeId(134, 11)
    assert ua.typeid_by_extension_objects[b] == ua.NodeId(134, 12)
    assert ua.extension_objects_by_typeid[ua.NodeId(134, 12)] is b
    assert type(RECORD.to_ua(12)) is b
    assert ApplicationRecord.from_ua(RECORD.to_ua(12), 12) == RECORD
