"""The client side of the GDS pull model: what a SCADA server or an engineering tool calls.

A thin typed layer over an asyncua `Client` session: it knows the standard NodeIds and argument lists,
encodes ApplicationRecordDataType, polls FinishRequest, and reads a TrustList through its file object.
Works against any OPC 10000-12 GDS, not only otpki's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua
from asyncua.common.methods import call_method_full

from opcua_gds.file_client import read_to_end
from opcua_gds.gds.application_record import ApplicationRecord, register_application_record_class
from opcua_gds.nodeids import (
    GDS_NAMESPACE_URI,
    CertificateDirectoryMethods,
    CertificateGroups,
    DirectoryMethods,
    GdsObjects,
    MethodSpec,
    gds_node_id,
)
from opcua_gds.trustlist_binary import decode_trustlist
from trustlists.models import TrustListContent

READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FinishedRequest:
    certificate: bytes
    private_key: bytes | None
    issuer_certificates: list[bytes]


class GdsClient:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._idx: int | None = None

    async def _gds_idx(self) -> int:
        if self._idx is None:
            self._idx = await self._client.get_namespace_index(GDS_NAMESPACE_URI)
            register_application_record_class(self._idx)
        return self._idx

    async def _call(self, spec: MethodSpec, *args: ua.Variant) -> list[Any]:
        idx = await self._gds_idx()
        directory = self._client.get_node(gds_node_id(GdsObjects.Directory, idx))
        # call_method_full: always the list of output arguments (call_method unwraps a single output,
        # which makes one array output indistinguishable from several outputs).
        result = await call_method_full(directory, spec.node_id(idx), *args)
        result.StatusCode.check()
        return list(result.OutputArguments)

    # -- Directory ----------------------------------------------------------------------------------
    async def register_application(self, record: ApplicationRecord) -> ua.NodeId:
        idx = await self._gds_idx()
        (app_id,) = await self._call(DirectoryMethods.RegisterApplication, ua.Variant(record.to_ua(idx)))
        return app_id

    async def find_applications(self, application_uri: str) -> list[ApplicationRecord]:
        idx = await self._gds_idx()
        (records,) = await self._call(DirectoryMethods.FindApplications,
                                      ua.Variant(application_uri, ua.VariantType.String))
        return [ApplicationRecord.from_ua(r, idx) for r in records or []]

    # -- CertificateDirectory -----------------------------------------------------------------------
    async def start_signing_request(self, application_id: ua.NodeId, csr_der: bytes, *,
                                    certificate_group_id: ua.NodeId | None = None,
                                    certificate_type_id: ua.NodeId | None = None) -> ua.NodeId:
        (request_id,) = await self._call(
            CertificateDirectoryMethods.StartSigningRequest, ua.Variant(application_id, ua.VariantType.NodeId),
            ua.Variant(certificate_group_id or ua.NodeId(), ua.VariantType.NodeId),
            ua.Variant(certificate_type_id or ua.NodeId(), ua.VariantType.NodeId),
            ua.Variant(csr_der, ua.VariantType.ByteString))
        return request_id

    async def start_new_key_pair_request(self, application_id: ua.NodeId, *, subject_name: str,
                                         domain_names: list[str], private_key_format: str = "PEM",
                                         password: str = "", certificate_group_id: ua.NodeId | None = None,
                                         certificate_type_id: ua.NodeId | None = None) -> ua.NodeId:
        (request_id,) = await self._call(
            CertificateDirectoryMethods.StartNewKeyPairRequest, ua.Variant(application_id, ua.VariantType.NodeId),
            ua.Variant(certificate_group_id or ua.NodeId(), ua.VariantType.NodeId),
            ua.Variant(certificate_type_id or ua.NodeId(), ua.VariantType.NodeId),
            ua.Variant(subject_name, ua.VariantType.String),
            ua.Variant(domain_names, ua.VariantType.String),
            ua.Variant(private_key_format, ua.VariantType.String),
            ua.Variant(password, ua.VariantType.String))
        return request_id

    async def finish_request(self, application_id: ua.NodeId, request_id: ua.NodeId) -> FinishedRequest:
        cert, key, issuers = await self._call(
            CertificateDirectoryMethods.FinishRequest, ua.Variant(application_id, ua.VariantType.NodeId),
            ua.Variant(request_id, ua.VariantType.NodeId))
        return FinishedRequest(certificate=cert, private_key=key or None, issuer_certificates=list(issuers or []))

    async def wait_for_certificate(self, application_id: ua.NodeId, request_id: ua.NodeId, *,
                                   poll_s: float = 1.0, timeout_s: float = 300.0) -> FinishedRequest:
        """Poll FinishRequest while the GDS answers Bad_RequestNotComplete (waiting for an approval)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                return await self.finish_request(application_id, request_id)
            except ua.UaStatusCodeError as exc:
                if exc.code != ua.StatusCodes.BadRequestNotComplete:
                    raise
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError("the certificate request was not approved in time") from None
                await asyncio.sleep(poll_s)

    async def get_certificate_status(self, application_id: ua.NodeId, *,
                                     certificate_group_id: ua.NodeId | None = None,
                                     certificate_type_id: ua.NodeId | None = None) -> bool:
        (update_required,) = await self._call(
            CertificateDirectoryMethods.GetCertificateStatus, ua.Variant(application_id, ua.VariantType.NodeId),
            ua.Variant(certificate_group_id or ua.NodeId(), ua.VariantType.NodeId),
            ua.Variant(certificate_type_id or ua.NodeId(), ua.VariantType.NodeId))
        return bool(update_required)

    async def get_trust_list(self, application_id: ua.NodeId, *, certificate_group_id: ua.NodeId | None = None,
                             masks: int = 15) -> TrustListContent:
        """GetTrustList, then OpenWithMasks / Read until done / Close on the returned TrustList object."""
        (trust_list_id,) = await self._call(
            CertificateDirectoryMethods.GetTrustList, ua.Variant(application_id, ua.VariantType.NodeId),
            ua.Variant(certificate_group_id or ua.NodeId(), ua.VariantType.NodeId))
        idx = await self._gds_idx()
        group = next(g for g in CertificateGroups.gds() if g.trust_list_node_id(idx) == trust_list_id)
        node = self._client.get_node(trust_list_id)
        handle = await node.call_method(group.method("OpenWithMasks").node_id(idx),
                                        ua.Variant(masks, ua.VariantType.UInt32))
        read = group.method("Read").node_id(idx)
        data = await read_to_end(
            lambda: node.call_method(read, ua.Variant(handle, ua.VariantType.UInt32),
                                     ua.Variant(READ_CHUNK, ua.VariantType.Int32)),
            lambda: node.call_method(group.method("Close").node_id(idx), ua.Variant(handle, ua.VariantType.UInt32)))
        return decode_trustlist(data)
