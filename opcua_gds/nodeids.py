"""The ids and method signatures of the GDS (OPC 10000-12) and of push management (ServerConfiguration, ns0).

Everything here is data taken from the specification facts in ``/work/shared/reference/opcua-gds.md``
(OPC 10000-12 tables, the GDS and ns0 NodeSets, StatusCode.csv); nothing is generated from the OPC
Foundation's NodeSet files.

Where to look:

- GDS namespace (``GDS_NAMESPACE_URI``; its index is only known at runtime, see ``gds_node_id``):
  ``GdsObjectTypes``, ``GdsObjects``, ``GdsDataTypes``, ``GdsRoles``, ``GdsEventTypes``,
  ``DirectoryMethods`` (registration), ``CertificateDirectoryMethods`` (pull certificates).
- ns0: ``ServerConfigurationIds`` and ``ServerConfigurationMethods`` (push), ``Ns0ObjectTypes``,
  ``Ns0DataTypes``, ``CertificateTypes``, ``WellKnownRoles``, ``Ns0EventTypes``, ``StatusCodes``.
- TrustList file objects (both namespaces): ``TrustListMethodTypes`` (the signatures, declared once on
  FileType/TrustListType) and ``CertificateGroups`` (every default group: group, TrustList, and the
  instance ids of the TrustList methods and of GetRejectedList).

A ``MethodSpec`` carries a method's ids, its input and output ``Arg`` lists (name, VariantType, DataType,
ValueRank) and, for ns0 push methods, its AccessRestrictions, so a server can create or check Method
nodes with correct InputArguments/OutputArguments properties (``MethodSpec.input_arguments``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, StrEnum
from typing import Any, ClassVar

from asyncua import ua

GDS_NAMESPACE_URI = "http://opcfoundation.org/UA/GDS/"
NS0_NAMESPACE_URI = "http://opcfoundation.org/UA/"


class Namespace(StrEnum):
    """Which namespace an id lives in. ns0 is always index 0; the GDS index is assigned at runtime."""

    NS0 = NS0_NAMESPACE_URI
    GDS = GDS_NAMESPACE_URI


# asyncua annotates NodeId and StatusCode with its wire types (ua.Int32, ua.Int16, ua.String, ua.Guid, ua.UInt32:
# subclasses of int, str and UUID) while its own code passes plain values; these build them from plain values.


def numeric_node_id(identifier: int, namespace: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(identifier), ua.Int16(namespace))


def string_node_id(identifier: str, namespace: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(namespace))


def guid_node_id(identifier: uuid.UUID, namespace: int) -> ua.NodeId:
    return ua.NodeId(ua.Guid(int=identifier.int), ua.Int16(namespace), ua.NodeIdType.Guid)


def ua_status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def gds_node_id(identifier: int, gds_ns_idx: int) -> ua.NodeId:
    """The NodeId of a numeric GDS-namespace id, given the index the GDS namespace has on this server."""
    return numeric_node_id(identifier, gds_ns_idx)


def ns0_node_id(identifier: int) -> ua.NodeId:
    return numeric_node_id(identifier, 0)


def resolve(namespace: Namespace, identifier: int, gds_ns_idx: int | None = None) -> ua.NodeId:
    """NodeId of ``identifier`` in ``namespace``; GDS ids need the runtime index of the GDS namespace."""
    if namespace is Namespace.NS0:
        return ns0_node_id(identifier)
    if gds_ns_idx is None:
        raise ValueError(f"GDS id {int(identifier)} needs the GDS namespace index")
    return gds_node_id(identifier, gds_ns_idx)


async def gds_namespace_index(server_or_client: Any, *, register: bool = False) -> int:
    """Index of the GDS namespace on a Server or in a Client's session (``register=True``: server side, add it)."""
    if register:
        return int(await server_or_client.register_namespace(GDS_NAMESPACE_URI))
    return int(await server_or_client.get_namespace_index(GDS_NAMESPACE_URI))


# --------------------------------------------------------------------------------------------------
# GDS namespace
# --------------------------------------------------------------------------------------------------


class GdsObjectTypes(IntEnum):
    DirectoryType = 13
    CertificateDirectoryType = 63


class GdsTypeDeclarations(IntEnum):
    """The InstanceDeclarations of DirectoryType / CertificateDirectoryType other than methods (GDS NodeSet)."""

    DirectoryType_Applications = 14
    CertificateDirectoryType_CertificateGroups = 511
    CertificateDirectoryType_DefaultApplicationGroup = 512
    CertificateDirectoryType_DefaultApplicationGroup_TrustList = 513


class GdsObjects(IntEnum):
    """Object instances of the GDS namespace (the Directory and its CertificateGroups)."""

    Directory = 141
    Directory_Applications = 142
    Directory_CertificateGroups = 614
    DefaultApplicationGroup = 615  # also the CertificateGroupId UA-.NET GDS clients send
    DefaultApplicationGroup_TrustList = 616
    DefaultHttpsGroup = 649
    DefaultHttpsGroup_TrustList = 650
    DefaultUserTokenGroup = 683
    DefaultUserTokenGroup_TrustList = 684


class GdsDataTypes(IntEnum):
    ApplicationRecordDataType = 1
    ApplicationRecordDataType_Encoding_DefaultBinary = 134


class GdsRoles(IntEnum):
    """Well-known GDS roles. ApplicationSelfAdmin / ApplicationAdmin are privileges, not nodes."""

    DiscoveryAdmin = 1661
    CertificateAuthorityAdmin = 1680
    RegistrationAuthorityAdmin = 1699
    KeyCredentialAdmin = 1718
    AuthorizationServiceAdmin = 1737


class GdsEventTypes(IntEnum):
    ApplicationRegistrationChangedAuditEventType = 26
    CertificateRequestedAuditEventType = 91
    CertificateDeliveredAuditEventType = 109


class GdsEventTypeProperties(IntEnum):
    """The properties the GDS audit event types add to AuditUpdateMethodEventType (BrowseNames in the GDS ns)."""

    CertificateRequestedAuditEventType_CertificateGroup = 717
    CertificateRequestedAuditEventType_CertificateType = 718
    CertificateDeliveredAuditEventType_CertificateGroup = 719
    CertificateDeliveredAuditEventType_CertificateType = 720


# --------------------------------------------------------------------------------------------------
# ns0
# --------------------------------------------------------------------------------------------------


class ServerConfigurationIds(IntEnum):
    """The ServerConfiguration object (push management) and its children, ns0."""

    ServerConfiguration = 12637
    CertificateGroups = 14053
    DefaultApplicationGroup = 14156
    DefaultApplicationGroup_TrustList = 12642
    DefaultApplicationGroup_CertificateTypes = 14161
    DefaultHttpsGroup = 14088
    DefaultHttpsGroup_TrustList = 14089
    DefaultUserTokenGroup = 14122
    DefaultUserTokenGroup_TrustList = 14123
    SupportedPrivateKeyFormats = 12639
    MaxTrustListSize = 12640
    MulticastDnsEnabled = 12641
    ServerCapabilities = 12710
    HasSecureElement = 23597
    SupportsTransactions = 18663
    TransactionDiagnostics = 32336


class Ns0ObjectTypes(IntEnum):
    FileType = 11575
    TrustListType = 12522
    CertificateGroupType = 12555
    ServerConfigurationType = 12581
    CertificateGroupFolderType = 13813


class Ns0DataTypes(IntEnum):
    """ns0 data types that appear in GDS / push method signatures and in trust lists."""

    UtcTime = 294
    ApplicationType = 307
    ApplicationDescription = 308
    ServerOnNetwork = 12189
    TrustListMasks = 12552
    TrustListDataType = 12554
    TrustListDataType_Encoding_DefaultBinary = 12680
    TrustListValidationOptions = 23564


class CertificateTypes(IntEnum):
    """CertificateTypeIds (ns0). 12556/12557/12558 and EccApplicationCertificateType are abstract."""

    CertificateType = 12556
    ApplicationCertificateType = 12557
    HttpsCertificateType = 12558
    RsaMinApplicationCertificateType = 12559
    RsaSha256ApplicationCertificateType = 12560
    UserCredentialCertificateType = 15181  # 1.05.03; gone in 1.05.07
    UserCertificateType = 19323  # 1.05.07
    TlsCertificateType = 19324  # 1.05.07
    TlsServerCertificateType = 19325  # 1.05.07
    TlsClientCertificateType = 19326  # 1.05.07
    EccApplicationCertificateType = 23537
    EccNistP256ApplicationCertificateType = 23538
    EccNistP384ApplicationCertificateType = 23539
    EccBrainpoolP256r1ApplicationCertificateType = 23540
    EccBrainpoolP384r1ApplicationCertificateType = 23541
    EccCurve25519ApplicationCertificateType = 23542
    EccCurve448ApplicationCertificateType = 23543


class WellKnownRoles(IntEnum):
    """ns0 WellKnownRole objects."""

    Anonymous = 15644
    AuthenticatedUser = 15656
    Observer = 15668
    Operator = 15680
    Supervisor = 15692
    SecurityAdmin = 15704
    ConfigureAdmin = 15716
    Engineer = 16036
    TrustedApplication = 18625  # 1.05.07
    SecurityKeyServerAdmin = 25565


class Ns0EventTypes(IntEnum):
    TrustListUpdatedAuditEventType = 12561
    CertificateUpdatedAuditEventType = 12620
    CertificateExpirationAlarmType = 13225
    TrustListOutOfDateAlarmType = 19297
    TrustListUpdateRequestedAuditEventType = 32260
    CertificateUpdateRequestedAuditEventType = 32306


class StatusCodes(IntEnum):
    """The status codes GDS and push methods answer with (StatusCode.csv), as plain ints."""

    BadCertificateInvalid = 0x80120000
    BadSecurityChecksFailed = 0x80130000
    BadCertificateTimeInvalid = 0x80140000
    BadCertificateIssuerTimeInvalid = 0x80150000
    BadCertificateHostNameInvalid = 0x80160000
    BadCertificateUriInvalid = 0x80170000
    BadCertificateUseNotAllowed = 0x80180000
    BadCertificateIssuerUseNotAllowed = 0x80190000
    BadCertificateUntrusted = 0x801A0000
    BadCertificateRevocationUnknown = 0x801B0000
    BadCertificateIssuerRevocationUnknown = 0x801C0000
    BadCertificateRevoked = 0x801D0000
    BadCertificateIssuerRevoked = 0x801E0000
    BadUserAccessDenied = 0x801F0000
    BadNothingToDo = 0x800F0000
    BadNodeIdUnknown = 0x80340000
    BadNotWritable = 0x803B0000
    BadNotSupported = 0x803D0000
    BadNotFound = 0x803E0000
    BadConfigurationError = 0x80890000
    BadInvalidArgument = 0x80AB0000
    BadInvalidState = 0x80AF0000
    BadRequestNotAllowed = 0x80E40000
    BadSecurityModeInsufficient = 0x80E60000
    BadTransactionPending = 0x80E80000
    BadCertificateChainIncomplete = 0x810D0000
    BadRequestNotComplete = 0x81130000
    BadCertificatePolicyCheckFailed = 0x81140000


class AccessRestrictions(IntFlag):
    """AccessRestrictionType bits, as the ns0 push methods carry them."""

    NONE = 0
    SigningRequired = 1
    EncryptionRequired = 2
    SessionRequired = 4


class RolePermissionBits(IntEnum):
    """The RolePermissions masks the ns0 NodeSet gives the push nodes."""

    # Browse|ReadRolePermissions|WriteAttribute|WriteRolePermissions|Call|AddReference|RemoveReference|DeleteNode
    SecurityAdminOnMethods = 61455
    AnonymousOnServerConfiguration = 1  # Browse
    ConfigureAdminOnServerConfiguration = 65423
    SecurityAdminOnServerConfiguration = 65423


# --------------------------------------------------------------------------------------------------
# Method signatures
# --------------------------------------------------------------------------------------------------

SCALAR = -1
ONE_DIMENSION = 1


@dataclass(frozen=True)
class Arg:
    """One input or output argument of a method: what goes into its ``ua.Argument``.

    ``data_type`` is the numeric DataType id; it is in ns0 unless ``gds_type`` (then in the GDS namespace).
    ``variant_type`` is the VariantType a caller puts on the wire (ExtensionObject for structures,
    DateTime for UtcTime).
    """

    name: str
    variant_type: ua.VariantType
    value_rank: int = SCALAR
    data_type: int | None = None  # None: the built-in type of variant_type
    gds_type: bool = False

    @property
    def is_array(self) -> bool:
        return self.value_rank == ONE_DIMENSION

    def data_type_id(self, gds_ns_idx: int | None = None) -> ua.NodeId:
        identifier = self.variant_type.value if self.data_type is None else self.data_type
        return resolve(Namespace.GDS if self.gds_type else Namespace.NS0, identifier, gds_ns_idx)

    def to_argument(self, gds_ns_idx: int | None = None) -> ua.Argument:
        return ua.Argument(
            Name=self.name,
            DataType=self.data_type_id(gds_ns_idx),
            ValueRank=self.value_rank,
            ArrayDimensions=[0] if self.is_array else [],
            Description=ua.LocalizedText(),
        )


@dataclass(frozen=True)
class MethodSpec:
    """A method: instance NodeId, the method declaration on its type, and its signature."""

    name: str
    namespace: Namespace
    instance_id: int  # the instance (e.g. Directory.RegisterApplication), which clients call
    type_id: int | None  # the declaration on the ObjectType
    inputs: tuple[Arg, ...] = ()
    outputs: tuple[Arg, ...] = ()
    mandatory: bool = True
    access_restrictions: AccessRestrictions = AccessRestrictions.NONE
    ns0_browse_name: bool = False  # a method declared on an ns0 type (the FileType/TrustListType methods)

    def node_id(self, gds_ns_idx: int | None = None) -> ua.NodeId:
        return resolve(self.namespace, self.instance_id, gds_ns_idx)

    def type_node_id(self, gds_ns_idx: int | None = None) -> ua.NodeId | None:
        return None if self.type_id is None else resolve(self.namespace, self.type_id, gds_ns_idx)

    def browse_name(self, gds_ns_idx: int | None = None) -> ua.QualifiedName:
        ns = 0 if self.namespace is Namespace.NS0 or self.ns0_browse_name else gds_ns_idx
        if ns is None:
            raise ValueError(f"{self.name} needs the GDS namespace index")
        return ua.QualifiedName(self.name, ns)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.outputs)

    def input_arguments(self, gds_ns_idx: int | None = None) -> list[ua.Argument]:
        return [a.to_argument(gds_ns_idx) for a in self.inputs]

    def output_arguments(self, gds_ns_idx: int | None = None) -> list[ua.Argument]:
        return [a.to_argument(gds_ns_idx) for a in self.outputs]


class MethodGroup:
    """Base for the classes below: each MethodSpec attribute is one method; ``all()`` lists them in order."""

    @classmethod
    def all(cls) -> tuple[MethodSpec, ...]:
        return tuple(v for v in vars(cls).values() if isinstance(v, MethodSpec))

    @classmethod
    def by_name(cls, name: str) -> MethodSpec:
        for spec in cls.all():
            if spec.name == name:
                return spec
        raise KeyError(name)


# Argument shorthands (ns0 built-in types).
def _arg(name: str, vtype: ua.VariantType, *, array: bool = False, data_type: int | None = None,
         gds_type: bool = False) -> Arg:
    return Arg(name, vtype, ONE_DIMENSION if array else SCALAR, data_type, gds_type)


_V = ua.VariantType


def _nodeid_arg(name: str) -> Arg:
    return _arg(name, _V.NodeId)


def _string(name: str, *, array: bool = False) -> Arg:
    return _arg(name, _V.String, array=array)


def _bytes(name: str, *, array: bool = False) -> Arg:
    return _arg(name, _V.ByteString, array=array)


def _uint32(name: str) -> Arg:
    return _arg(name, _V.UInt32)


def _boolean(name: str) -> Arg:
    return _arg(name, _V.Boolean)


def _utc_time(name: str) -> Arg:
    return _arg(name, _V.DateTime, data_type=Ns0DataTypes.UtcTime)


def _application_record(name: str, *, array: bool = False) -> Arg:
    return _arg(name, _V.ExtensionObject, array=array, data_type=GdsDataTypes.ApplicationRecordDataType,
                gds_type=True)


_APPLICATION_ID = _nodeid_arg("ApplicationId")
_CERTIFICATE_GROUP_ID = _nodeid_arg("CertificateGroupId")
_CERTIFICATE_TYPE_ID = _nodeid_arg("CertificateTypeId")
_STARTING_RECORD_ID = _uint32("StartingRecordId")
_MAX_RECORDS = _uint32("MaxRecordsToReturn")
_FILE_HANDLE = _uint32("FileHandle")


def _gds(name: str, type_id: int, instance_id: int, inputs: tuple[Arg, ...] = (), outputs: tuple[Arg, ...] = (),
         *, mandatory: bool = True) -> MethodSpec:
    return MethodSpec(name, Namespace.GDS, instance_id, type_id, inputs, outputs, mandatory)


class DirectoryMethods(MethodGroup):
    """Directory (GDS i=141) registration methods; all Mandatory."""

    FindApplications = _gds("FindApplications", 15, 143, (_string("ApplicationUri"),),
                            (_application_record("Applications", array=True),))
    RegisterApplication = _gds("RegisterApplication", 18, 146, (_application_record("Application"),),
                               (_APPLICATION_ID,))
    UpdateApplication = _gds("UpdateApplication", 188, 200, (_application_record("Application"),))
    UnregisterApplication = _gds("UnregisterApplication", 21, 149, (_APPLICATION_ID,))
    GetApplication = _gds("GetApplication", 210, 216, (_APPLICATION_ID,), (_application_record("Application"),))
    QueryApplications = _gds(
        "QueryApplications", 868, 992,
        (_STARTING_RECORD_ID, _MAX_RECORDS, _string("ApplicationName"), _string("ApplicationUri"),
         _uint32("ApplicationType"), _string("ProductUri"), _string("Capabilities", array=True)),
        (_utc_time("LastCounterResetTime"), _uint32("NextRecordId"),
         _arg("Applications", _V.ExtensionObject, array=True, data_type=Ns0DataTypes.ApplicationDescription)))
    QueryServers = _gds(
        "QueryServers", 23, 151,
        (_STARTING_RECORD_ID, _MAX_RECORDS, _string("ApplicationName"), _string("ApplicationUri"),
         _string("ProductUri"), _string("ServerCapabilities", array=True)),
        (_utc_time("LastCounterResetTime"),
         _arg("Servers", _V.ExtensionObject, array=True, data_type=Ns0DataTypes.ServerOnNetwork)))


class CertificateDirectoryMethods(MethodGroup):
    """CertificateDirectory methods on the Directory object (pull certificate management)."""

    StartSigningRequest = _gds(
        "StartSigningRequest", 79, 157,
        (_APPLICATION_ID, _CERTIFICATE_GROUP_ID, _CERTIFICATE_TYPE_ID, _bytes("CertificateRequest")),
        (_nodeid_arg("RequestId"),))
    StartNewKeyPairRequest = _gds(
        "StartNewKeyPairRequest", 76, 154,
        (_APPLICATION_ID, _CERTIFICATE_GROUP_ID, _CERTIFICATE_TYPE_ID, _string("SubjectName"),
         _string("DomainNames", array=True), _string("PrivateKeyFormat"), _string("PrivateKeyPassword")),
        (_nodeid_arg("RequestId"),))
    FinishRequest = _gds(
        "FinishRequest", 85, 163, (_APPLICATION_ID, _nodeid_arg("RequestId")),
        (_bytes("Certificate"), _bytes("PrivateKey"), _bytes("IssuerCertificates", array=True)))
    RevokeCertificate = _gds("RevokeCertificate", 15003, 15005, (_APPLICATION_ID, _bytes("Certificate")),
                             mandatory=False)
    GetCertificateGroups = _gds("GetCertificateGroups", 369, 508, (_APPLICATION_ID,),
                                (_arg("CertificateGroupIds", _V.NodeId, array=True),))
    GetCertificates = _gds(
        "GetCertificates", 89, 174, (_APPLICATION_ID, _CERTIFICATE_GROUP_ID),
        (_arg("CertificateTypeIds", _V.NodeId, array=True), _bytes("Certificates", array=True)),
        mandatory=False)
    GetTrustList = _gds("GetTrustList", 197, 204, (_APPLICATION_ID, _CERTIFICATE_GROUP_ID),
                        (_nodeid_arg("TrustListId"),))
    GetCertificateStatus = _gds("GetCertificateStatus", 222, 225,
                                (_APPLICATION_ID, _CERTIFICATE_GROUP_ID, _CERTIFICATE_TYPE_ID),
                                (_boolean("UpdateRequired"),))
    CheckRevocationStatus = _gds("CheckRevocationStatus", 126, 177, (_bytes("Certificate"),),
                                 (_arg("CertificateStatus", _V.StatusCode), _utc_time("ValidityTime")),
                                 mandatory=False)


_SIGN_ENCRYPT = AccessRestrictions.SigningRequired | AccessRestrictions.EncryptionRequired  # 3
_SIGN_SESSION = AccessRestrictions.SigningRequired | AccessRestrictions.SessionRequired  # 5


def _ns0(name: str, type_id: int, instance_id: int, inputs: tuple[Arg, ...] = (), outputs: tuple[Arg, ...] = (),
         *, mandatory: bool = True, ar: AccessRestrictions = AccessRestrictions.NONE) -> MethodSpec:
    return MethodSpec(name, Namespace.NS0, instance_id, type_id, inputs, outputs, mandatory, ar)


class ServerConfigurationMethods(MethodGroup):
    """Push management methods on ServerConfiguration (ns0 i=12637)."""

    UpdateCertificate = _ns0(
        "UpdateCertificate", 12616, 13737,
        (_CERTIFICATE_GROUP_ID, _CERTIFICATE_TYPE_ID, _bytes("Certificate"), _bytes("IssuerCertificates", array=True),
         _string("PrivateKeyFormat"), _bytes("PrivateKey")),
        (_boolean("ApplyChangesRequired"),), ar=_SIGN_ENCRYPT)
    CreateSigningRequest = _ns0(
        "CreateSigningRequest", 12731, 12737,
        (_CERTIFICATE_GROUP_ID, _CERTIFICATE_TYPE_ID, _string("SubjectName"), _boolean("RegeneratePrivateKey"),
         _bytes("Nonce")),
        (_bytes("CertificateRequest"),), ar=_SIGN_ENCRYPT)
    ApplyChanges = _ns0("ApplyChanges", 12734, 12740, ar=_SIGN_SESSION)
    CancelChanges = _ns0("CancelChanges", 25698, 25708, mandatory=False, ar=_SIGN_SESSION)
    GetRejectedList = _ns0("GetRejectedList", 12775, 12777, outputs=(_bytes("Certificates", array=True),),
                           ar=AccessRestrictions.SigningRequired)
    ResetToServerDefaults = _ns0("ResetToServerDefaults", 25699, 25709, mandatory=False,
                                 ar=AccessRestrictions.SigningRequired)
    GetCertificates = _ns0(
        "GetCertificates", 32296, 32333, (_CERTIFICATE_GROUP_ID,),
        (_arg("CertificateTypeIds", _V.NodeId, array=True), _bytes("Certificates", array=True)), mandatory=False)
    CreateSelfSignedCertificate = _ns0(  # 1.05.07
        "CreateSelfSignedCertificate", 19337, 19342,
        (_CERTIFICATE_GROUP_ID, _CERTIFICATE_TYPE_ID, _string("SubjectName"), _string("DnsNames", array=True),
         _string("IpAddresses", array=True), _arg("LifetimeInDays", _V.UInt16), _arg("KeySizeInBits", _V.UInt16)),
        (_bytes("Certificate"),), mandatory=False)
    DeleteCertificate = _ns0("DeleteCertificate", 19340, 19345, (_CERTIFICATE_GROUP_ID, _CERTIFICATE_TYPE_ID),
                             mandatory=False)


@dataclass(frozen=True)
class MethodSignature:
    """A method declared once on a type (FileType, TrustListType, CertificateGroupType), ns0."""

    name: str
    type_id: int
    inputs: tuple[Arg, ...] = ()
    outputs: tuple[Arg, ...] = ()


class TrustListMethodTypes:
    """The TrustList file methods as declared on FileType / TrustListType (ns0), plus GetRejectedList."""

    Open = MethodSignature("Open", 11580, (_arg("Mode", _V.Byte),), (_FILE_HANDLE,))
    Close = MethodSignature("Close", 11583, (_FILE_HANDLE,))
    Read = MethodSignature("Read", 11585, (_FILE_HANDLE, _arg("Length", _V.Int32)), (_bytes("Data"),))
    Write = MethodSignature("Write", 11588, (_FILE_HANDLE, _bytes("Data")))
    GetPosition = MethodSignature("GetPosition", 11590, (_FILE_HANDLE,), (_arg("Position", _V.UInt64),))
    SetPosition = MethodSignature("SetPosition", 11593, (_FILE_HANDLE, _arg("Position", _V.UInt64)))
    OpenWithMasks = MethodSignature("OpenWithMasks", 12543, (_uint32("Masks"),), (_FILE_HANDLE,))
    CloseAndUpdate = MethodSignature("CloseAndUpdate", 12546, (_FILE_HANDLE,), (_boolean("ApplyChangesRequired"),))
    AddCertificate = MethodSignature("AddCertificate", 12548,
                                     (_bytes("Certificate"), _boolean("IsTrustedCertificate")))
    RemoveCertificate = MethodSignature("RemoveCertificate", 12550,
                                        (_string("Thumbprint"), _boolean("IsTrustedCertificate")))
    # CertificateGroupType.GetRejectedList (a method of the group, not of its TrustList)
    GetRejectedList = MethodSignature("GetRejectedList", 23526, (), (_bytes("Certificates", array=True),))

    TRUST_LIST_ORDER: ClassVar[tuple[str, ...]] = (
        "Open", "Close", "Read", "Write", "GetPosition", "SetPosition", "OpenWithMasks", "CloseAndUpdate",
        "AddCertificate", "RemoveCertificate")

    @classmethod
    def get(cls, name: str) -> MethodSignature:
        sig = getattr(cls, name, None)
        if not isinstance(sig, MethodSignature):
            raise KeyError(name)
        return sig


@dataclass(frozen=True)
class CertificateGroupIds:
    """One default CertificateGroup: its object, its TrustList and the instance ids of their methods."""

    name: str
    namespace: Namespace
    group_id: int
    trust_list_id: int
    trust_list_methods: tuple[tuple[str, int], ...]  # (method name, instance id) in TRUST_LIST_ORDER
    get_rejected_list: int | None = None
    access_restrictions: AccessRestrictions = field(default=AccessRestrictions.NONE)
    # (property name, id) of the TrustList's FileType properties and of the group's CertificateTypes
    properties: tuple[tuple[str, int], ...] = ()

    def property_node_id(self, name: str, gds_ns_idx: int | None = None) -> ua.NodeId:
        return resolve(self.namespace, dict(self.properties)[name], gds_ns_idx)

    def group_node_id(self, gds_ns_idx: int | None = None) -> ua.NodeId:
        return resolve(self.namespace, self.group_id, gds_ns_idx)

    def trust_list_node_id(self, gds_ns_idx: int | None = None) -> ua.NodeId:
        return resolve(self.namespace, self.trust_list_id, gds_ns_idx)

    def method(self, name: str) -> MethodSpec:
        """The MethodSpec of one TrustList method instance (or GetRejectedList) of this group."""
        if name == "GetRejectedList":
            if self.get_rejected_list is None:
                raise KeyError(name)
            instance = self.get_rejected_list
        else:
            instance = dict(self.trust_list_methods)[name]
        sig = TrustListMethodTypes.get(name)
        return MethodSpec(sig.name, self.namespace, instance, sig.type_id, sig.inputs, sig.outputs,
                          mandatory=True, access_restrictions=self.access_restrictions, ns0_browse_name=True)

    def methods(self) -> Iterator[MethodSpec]:
        for name, _ in self.trust_list_methods:
            yield self.method(name)
        if self.get_rejected_list is not None:
            yield self.method("GetRejectedList")


GROUP_PROPERTY_ORDER = ("Size", "Writable", "UserWritable", "OpenCount", "LastUpdateTime", "CertificateTypes")


def _group(name: str, namespace: Namespace, group_id: int, trust_list_id: int, method_ids: tuple[int, ...],
           get_rejected_list: int | None, ar: AccessRestrictions = AccessRestrictions.NONE,
           property_ids: tuple[int, ...] = ()) -> CertificateGroupIds:
    if len(method_ids) != len(TrustListMethodTypes.TRUST_LIST_ORDER):
        raise ValueError(f"{name}: one id per TrustList method")
    if property_ids and len(property_ids) != len(GROUP_PROPERTY_ORDER):
        raise ValueError(f"{name}: one id per property of GROUP_PROPERTY_ORDER")
    return CertificateGroupIds(name, namespace, group_id, trust_list_id,
                               tuple(zip(TrustListMethodTypes.TRUST_LIST_ORDER, method_ids, strict=True)),
                               get_rejected_list, ar,
                               tuple(zip(GROUP_PROPERTY_ORDER, property_ids, strict=bool(property_ids))))


class CertificateGroups:
    """The default CertificateGroups of the GDS (pull, GDS namespace) and of ServerConfiguration (push, ns0).

    TrustList method ids are in the order Open, Close, Read, Write, GetPosition, SetPosition,
    OpenWithMasks, CloseAndUpdate, AddCertificate, RemoveCertificate; the GDS groups' property ids in
    GROUP_PROPERTY_ORDER (the TrustList's Size, Writable, UserWritable, OpenCount, LastUpdateTime, then the
    group's CertificateTypes). GDS ids are the GDS NodeSet's (GetRejectedList, absent from it, is
    UA-.NETStandard's Opc.Ua.Gds ObjectId); the ns0 ids are the ns0 NodeSet's (asyncua's ua.ObjectIds has the
    same numbers).
    """

    GdsDefaultApplicationGroup = _group(
        "DefaultApplicationGroup", Namespace.GDS, GdsObjects.DefaultApplicationGroup,
        GdsObjects.DefaultApplicationGroup_TrustList,
        (622, 625, 627, 630, 632, 635, 638, 641, 644, 646), 166, property_ids=(617, 618, 619, 620, 637, 648))
    GdsDefaultHttpsGroup = _group(
        "DefaultHttpsGroup", Namespace.GDS, GdsObjects.DefaultHttpsGroup, GdsObjects.DefaultHttpsGroup_TrustList,
        (656, 659, 661, 664, 666, 669, 672, 675, 678, 680), 169, property_ids=(651, 652, 653, 654, 671, 682))
    GdsDefaultUserTokenGroup = _group(
        "DefaultUserTokenGroup", Namespace.GDS, GdsObjects.DefaultUserTokenGroup,
        GdsObjects.DefaultUserTokenGroup_TrustList,
        (690, 693, 695, 698, 700, 703, 706, 709, 712, 714), 172, property_ids=(685, 686, 687, 688, 705, 716))
    # Push: every TrustList method carries AccessRestrictions SigningRequired (RolePermissions SecurityAdmin).
    PushDefaultApplicationGroup = _group(
        "DefaultApplicationGroup", Namespace.NS0, ServerConfigurationIds.DefaultApplicationGroup,
        ServerConfigurationIds.DefaultApplicationGroup_TrustList,
        (12647, 12650, 12652, 12655, 12657, 12660, 12663, 12666, 12668, 12670), 23550,
        AccessRestrictions.SigningRequired)
    PushDefaultHttpsGroup = _group(
        "DefaultHttpsGroup", Namespace.NS0, ServerConfigurationIds.DefaultHttpsGroup,
        ServerConfigurationIds.DefaultHttpsGroup_TrustList,
        (14095, 14098, 14100, 14103, 14105, 14108, 14111, 14114, 14117, 14119), 23552,
        AccessRestrictions.SigningRequired)
    PushDefaultUserTokenGroup = _group(
        "DefaultUserTokenGroup", Namespace.NS0, ServerConfigurationIds.DefaultUserTokenGroup,
        ServerConfigurationIds.DefaultUserTokenGroup_TrustList,
        (14129, 14132, 14134, 14137, 14139, 14142, 14145, 14148, 14151, 14153), 23554,
        AccessRestrictions.SigningRequired)

    @classmethod
    def all(cls) -> tuple[CertificateGroupIds, ...]:
        return tuple(v for v in vars(cls).values() if isinstance(v, CertificateGroupIds))

    @classmethod
    def gds(cls) -> tuple[CertificateGroupIds, ...]:
        return tuple(g for g in cls.all() if g.namespace is Namespace.GDS)

    @classmethod
    def push(cls) -> tuple[CertificateGroupIds, ...]:
        return tuple(g for g in cls.all() if g.namespace is Namespace.NS0)


# CertificateDirectoryType's InstanceDeclaration of its DefaultApplicationGroup (BrowseName in ns0, unlike the
# Directory's instance): the shape every GDS CertificateGroup instance repeats.
CERTIFICATE_DIRECTORY_TYPE_GROUP = _group(
    "DefaultApplicationGroup", Namespace.GDS, GdsTypeDeclarations.CertificateDirectoryType_DefaultApplicationGroup,
    GdsTypeDeclarations.CertificateDirectoryType_DefaultApplicationGroup_TrustList,
    (519, 522, 524, 527, 529, 532, 535, 538, 541, 543), None, property_ids=(514, 515, 516, 517, 534, 545))


def all_method_specs() -> Iterator[MethodSpec]:
    """Every method instance defined here: Directory, CertificateDirectory, ServerConfiguration, TrustLists."""
    yield from DirectoryMethods.all()
    yield from CertificateDirectoryMethods.all()
    yield from ServerConfigurationMethods.all()
    for group in CertificateGroups.all():
        yield from group.methods()
