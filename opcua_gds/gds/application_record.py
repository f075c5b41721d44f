"""The GDS ApplicationRecordDataType (ns=GDS;i=1, DefaultBinary ns=GDS;i=134) for asyncua, and its pydantic twin.

asyncua ships no GDS types, so this module defines the structure itself:

- ``ApplicationRecordDataType``: an asyncua-style dataclass whose field order is the binary layout
  (NodeId, String, ApplicationType as Int32, LocalizedText[], String, String[], String[]).
- ``register_application_record_class(gds_ns_idx)``: makes asyncua encode/decode it as an
  ExtensionObject with TypeId ns=<gds_ns_idx>;i=134 and DataType ns=<gds_ns_idx>;i=1. asyncua keys its
  codec registry by NodeId, i.e. by namespace *index*, so one subclass is bound per index (a process that
  talks to two servers with different GDS indices encodes each correctly).
- ``install_application_record_type(server, gds_ns_idx)``: adds the DataType node under Structure with
  its DataTypeDefinition and the "Default Binary" encoding object, then registers the class, so any client
  (asyncua ``load_data_type_definitions()``, UA-.NET, UaExpert) can build the type from the address space.
- ``ApplicationRecord``: the pydantic model the rest of otpki uses, with ``to_ua`` / ``from_ua``.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from asyncua import ua
from asyncua.common.manage_nodes import create_data_type, create_encoding
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary
from pydantic import BaseModel, ConfigDict, Field

from opcua_gds._asyncua_compat import register_structure
from opcua_gds.nodeids import GdsDataTypes, Ns0DataTypes, gds_node_id, guid_node_id, ns0_node_id

ApplicationType = ua.ApplicationType  # ns0 i=307: Server 0, Client 1, ClientAndServer 2, DiscoveryServer 3

TYPE_NAME = "ApplicationRecordDataType"


def data_type_id(gds_ns_idx: int) -> ua.NodeId:
    return gds_node_id(GdsDataTypes.ApplicationRecordDataType, gds_ns_idx)


def binary_encoding_id(gds_ns_idx: int) -> ua.NodeId:
    return gds_node_id(GdsDataTypes.ApplicationRecordDataType_Encoding_DefaultBinary, gds_ns_idx)


@dataclass(slots=True)
class ApplicationRecordDataType:
    """GDS ApplicationRecordDataType. Not registered itself: use ``register_application_record_class``.

    Annotations follow asyncua's generated structures: a ``typing.Optional`` annotation would turn a field
    into an *optional field* (encoding mask) on the wire, so null strings are plain ``ua.String`` = None.
    """

    # asyncua's codec reads these annotations, so a null string is None in a field annotated ua.String.
    ApplicationId: ua.NodeId = field(default_factory=ua.NodeId)
    ApplicationUri: ua.String = None  # type: ignore[assignment]
    ApplicationType: ua.ApplicationType = ua.ApplicationType.Server
    ApplicationNames: list[ua.LocalizedText] = field(default_factory=list)
    ProductUri: ua.String = None  # type: ignore[assignment]
    DiscoveryUrls: list[ua.String] = field(default_factory=list)
    ServerCapabilities: list[ua.String] = field(default_factory=list)


def ua_string(value: str | None) -> ua.String:
    """A text field of the structure; None is the null string (see the annotations above)."""
    return cast(ua.String, None) if value is None else ua.String(value)


_FIELDS: tuple[tuple[str, int, bool], ...] = (  # (name, ns0 DataType id, array)
    ("ApplicationId", ua.ObjectIds.NodeId, False),
    ("ApplicationUri", ua.ObjectIds.String, False),
    ("ApplicationType", Ns0DataTypes.ApplicationType, False),
    ("ApplicationNames", ua.ObjectIds.LocalizedText, True),
    ("ProductUri", ua.ObjectIds.String, False),
    ("DiscoveryUrls", ua.ObjectIds.String, True),
    ("ServerCapabilities", ua.ObjectIds.String, True),
)

_BOUND: dict[int, type[ApplicationRecordDataType]] = {}


def application_record_definition(gds_ns_idx: int) -> ua.StructureDefinition:
    """The DataTypeDefinition attribute of the DataType node (Part 3 StructureDefinition)."""
    return ua.StructureDefinition(
        DefaultEncodingId=binary_encoding_id(gds_ns_idx),
        BaseDataType=ns0_node_id(ua.ObjectIds.Structure),
        StructureType=ua.StructureType.Structure,
        Fields=[
            ua.StructureField(
                Name=name,
                Description=ua.LocalizedText(),
                DataType=ns0_node_id(type_id),
                ValueRank=ua.ValueRank.OneDimension if array else ua.ValueRank.Scalar,
                ArrayDimensions=[0] if array else [],  # [0]: one dimension of unknown length
                MaxStringLength=0,
                IsOptional=False,
            )
            for name, type_id, array in _FIELDS
        ],
    )


def register_application_record_class(gds_ns_idx: int) -> type[ApplicationRecordDataType]:
    """Register the structure with asyncua's codec for a session/server whose GDS namespace has this index.

    Returns the class to instantiate for values sent to that peer. Idempotent. The class of the index
    registered last is published as ``ua.ApplicationRecordDataType``: asyncua's
    ``load_data_type_definitions()`` skips a type whose ``ua.<name>`` already has the server's DataType
    NodeId, so register before loading and the session keeps decoding into this class. (Were it to
    generate its own, ``ApplicationRecord.from_ua`` still accepts that class.)
    """
    cls = _BOUND.get(gds_ns_idx)
    if cls is None:
        cls = type(TYPE_NAME, (ApplicationRecordDataType,), {
            "__slots__": (),
            "__module__": __name__,
            "__qualname__": f"{TYPE_NAME}[ns={gds_ns_idx}]",
            "data_type": data_type_id(gds_ns_idx),
        })
        _BOUND[gds_ns_idx] = cls
    register_structure(TYPE_NAME, cls, binary_encoding_id(gds_ns_idx), data_type_id(gds_ns_idx))
    return cls


async def install_application_record_type(server: Any, gds_ns_idx: int) -> ua.NodeId:
    """Add ApplicationRecordDataType (ns=GDS;i=1) and its Default Binary encoding (ns=GDS;i=134) to a Server.

    The DataType hangs under Structure (HasSubtype), carries its DataTypeDefinition, and has a HasEncoding
    reference to an Object of type DataTypeEncodingType named "Default Binary". Skips nodes that already
    exist (a server that loaded the GDS NodeSet, or a second call). Returns the DataType NodeId.
    """
    dt_id, enc_id = data_type_id(gds_ns_idx), binary_encoding_id(gds_ns_idx)
    if not await _exists(server, dt_id):
        dtype = await create_data_type(server.nodes.base_structure_type, dt_id, ua.QualifiedName(TYPE_NAME, gds_ns_idx))
        await dtype.write_data_type_definition(application_record_definition(gds_ns_idx))
    if not await _exists(server, enc_id):
        enc = await create_encoding(server.get_node(dt_id), enc_id, ua.QualifiedName("Default Binary", 0))
        # asyncua's create_encoding leaves the encoding object without a type definition.
        await enc.add_reference(ns0_node_id(ua.ObjectIds.DataTypeEncodingType), ua.ObjectIds.HasTypeDefinition,
                                forward=True, bidirectional=False)
    register_application_record_class(gds_ns_idx)
    return dt_id


async def _exists(server: Any, node_id: ua.NodeId) -> bool:
    try:
        await server.get_node(node_id).read_node_class()
    except ua.UaStatusCodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# The pydantic model and the conversions
# --------------------------------------------------------------------------------------------------


def application_id_to_str(node_id: ua.NodeId | None, gds_ns_idx: int) -> str | None:
    """ApplicationId NodeId -> text that does not depend on the GDS namespace index.

    Null NodeId -> None. A NodeId in the GDS namespace -> its identifier part ("g=…", "i=…", "s=…",
    "b=…"). Any other namespace keeps an explicit "ns=<index>;" prefix (including ns=0).
    """
    if node_id is None or node_id.is_null():
        return None
    body = ua.NodeId(node_id.Identifier, ua.Int16(0), _plain_type(node_id.NodeIdType)).to_string()
    if node_id.NamespaceIndex == gds_ns_idx:
        return body
    return f"ns={node_id.NamespaceIndex};{body}"


def application_id_from_str(text: str | None, gds_ns_idx: int) -> ua.NodeId:
    """Inverse of ``application_id_to_str``: None/"" -> null NodeId, bare identifiers -> GDS namespace."""
    if not text:
        return ua.NodeId()
    if text.startswith("ns="):
        return ua.NodeId.from_string(text)
    parsed = ua.NodeId.from_string(text)
    return ua.NodeId(parsed.Identifier, ua.Int16(gds_ns_idx), _plain_type(parsed.NodeIdType))


def _plain_type(kind: ua.NodeIdType) -> ua.NodeIdType:
    if kind in (ua.NodeIdType.TwoByte, ua.NodeIdType.FourByte):
        return ua.NodeIdType.Numeric  # let asyncua pick the compact encoding for the new namespace
    return kind


class LocalizedName(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    locale: str = ""


class ApplicationRecord(BaseModel):
    """An application as the GDS Directory stores it (ApplicationRecordDataType in python types).

    ``application_id`` is None until the GDS assigns one; see ``application_id_to_str`` for its format.
    """

    model_config = ConfigDict(frozen=True)

    application_id: str | None = None
    application_uri: str = ""
    application_type: ApplicationType = ApplicationType.Server
    application_names: list[LocalizedName] = Field(default_factory=list)
    product_uri: str | None = None
    discovery_urls: list[str] = Field(default_factory=list)
    server_capabilities: list[str] = Field(default_factory=list)

    def to_ua(self, gds_ns_idx: int) -> ApplicationRecordDataType:
        """The structure to send to / serve on a peer whose GDS namespace has index ``gds_ns_idx``."""
        cls = register_application_record_class(gds_ns_idx)
        return cls(
            ApplicationId=application_id_from_str(self.application_id, gds_ns_idx),
            ApplicationUri=ua_string(self.application_uri),
            ApplicationType=ua.ApplicationType(self.application_type),
            ApplicationNames=[ua.LocalizedText(n.text, n.locale or None) for n in self.application_names],
            ProductUri=ua_string(self.product_uri),
            DiscoveryUrls=[ua.String(u) for u in self.discovery_urls],
            ServerCapabilities=[ua.String(c) for c in self.server_capabilities],
        )

    @classmethod
    def from_ua(cls, value: Any, gds_ns_idx: int) -> "ApplicationRecord":
        """From our class, a class asyncua generated with ``load_data_type_definitions()``, or an undecoded
        ``ua.ExtensionObject`` (TypeId ns=GDS;i=134) of the structure."""
        if isinstance(value, ua.ExtensionObject):
            value = decode_extension_object(value, gds_ns_idx)
        return cls(
            application_id=application_id_to_str(value.ApplicationId, gds_ns_idx),
            application_uri=value.ApplicationUri or "",
            application_type=ApplicationType(int(value.ApplicationType)),
            application_names=[LocalizedName(text=n.Text or "", locale=n.Locale or "")
                               for n in value.ApplicationNames or []],
            product_uri=value.ProductUri,
            discovery_urls=list(value.DiscoveryUrls or []),
            server_capabilities=list(value.ServerCapabilities or []),
        )


def decode_extension_object(value: ua.ExtensionObject, gds_ns_idx: int) -> ApplicationRecordDataType:
    """Decode the body of an ExtensionObject that asyncua left undecoded (no class registered yet)."""
    if value.TypeId != binary_encoding_id(gds_ns_idx):
        raise ValueError(f"not an ApplicationRecordDataType binary body: TypeId {value.TypeId}")
    cls = register_application_record_class(gds_ns_idx)
    return struct_from_binary(cls, Buffer(value.Body or b""))


def new_application_id(gds_ns_idx: int) -> ua.NodeId:
    """A fresh GUID ApplicationId in the GDS namespace (the form UA-.NET's GDS hands out)."""
    return guid_node_id(uuid.uuid4(), gds_ns_idx)
