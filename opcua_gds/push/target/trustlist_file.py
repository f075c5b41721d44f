"""The writable TrustList file object of the push DefaultApplicationGroup (ns0 i=12642; reference 1.5).

Open(0x01) / OpenWithMasks read a snapshot of the trust list as it will be after ApplyChanges (staged if
any, else active). Open(0x06) (write + erase) starts an empty buffer that Write appends to; the total may
not exceed MaxTrustListSize (Bad_EncodingLimitsExceeded). Close discards a write; CloseAndUpdate decodes the
TrustListDataType, replaces the lists named by SpecifiedLists, keeps the others, and STAGES the result:
ApplyChangesRequired is always true (transactional server). AddCertificate / RemoveCertificate stage too.
Only one writer at a time (Bad_InvalidState). Handles belong to the session that opened them.
"""

from __future__ import annotations

import secrets
from typing import Any

from asyncua import ua

from opcua_gds.access import MethodError
from opcua_gds.method_nodes import checked_args
from opcua_gds.nodeids import CertificateGroups
from opcua_gds.push.target.certs import is_ca, is_self_signed, issued_by, parse_certificate, parse_crl, thumbprint
from opcua_gds.push.target.context import MAX_HANDLES, READ, WRITE_ERASE, OpenTrustList, PushContext
from opcua_gds.trustlist_binary import decode_trustlist, encode_trustlist
from trustlists.errors import InvalidInput
from trustlists.models import TrustListContent, TrustListMask

_S = ua.StatusCodes
GROUP = CertificateGroups.PushDefaultApplicationGroup
_LISTS = (("trusted_certificates", TrustListMask.TRUSTED_CERTIFICATES),
          ("trusted_crls", TrustListMask.TRUSTED_CRLS),
          ("issuer_certificates", TrustListMask.ISSUER_CERTIFICATES),
          ("issuer_crls", TrustListMask.ISSUER_CRLS))


def merge(base: TrustListContent, update: TrustListContent) -> TrustListContent:
    """`base` with the lists named by update.specified_lists replaced by update's."""
    fields: dict[str, Any] = {"specified_lists": int(TrustListMask.ALL)}
    for name, bit in _LISTS:
        fields[name] = list(getattr(update if update.specified_lists & bit else base, name))
    return TrustListContent(**fields)


def check_content(content: TrustListContent) -> None:
    """Every certificate and CRL must parse (Part 4 step 1); else Bad_CertificateInvalid."""
    for der in (*content.trusted_certificates, *content.issuer_certificates):
        if parse_certificate(der) is None:
            raise MethodError(_S.BadCertificateInvalid, "a certificate in the trust list is not valid DER")
    for der in (*content.trusted_crls, *content.issuer_crls):
        if parse_crl(der) is None:
            raise MethodError(_S.BadCertificateInvalid, "a CRL in the trust list is not valid DER")


class TrustListFile:
    def __init__(self, ctx: PushContext) -> None:
        self.ctx = ctx

    def _handle(self, handle: Any) -> OpenTrustList:
        call = self.ctx.authorize()
        self.ctx.expire_handles()
        opened = self.ctx.handles.get(handle) if isinstance(handle, int) else None
        if opened is None or opened.session_id != call.session_id:
            raise MethodError(_S.BadInvalidArgument, f"unknown FileHandle {handle}")
        return opened

    def _new_handle(self, opened: OpenTrustList) -> list[ua.Variant]:
        if len(self.ctx.handles) >= MAX_HANDLES:
            raise MethodError(_S.BadResourceUnavailable, "too many open TrustList handles")
        handle = 0
        while handle == 0 or handle in self.ctx.handles:
            handle = secrets.randbelow(0xFFFFFFFF) + 1
        self.ctx.handles[handle] = opened
        return [ua.Variant(handle, ua.VariantType.UInt32)]

    def _open_read(self, session_id: ua.NodeId | None, masks: int) -> list[ua.Variant]:
        if not 0 <= masks <= int(TrustListMask.ALL):
            raise MethodError(_S.BadInvalidArgument, f"Masks {masks} is not a TrustListMasks value")
        content = self.ctx.state.effective_trust().model_copy(update={"specified_lists": masks})
        return self._new_handle(OpenTrustList(session_id, False, bytearray(encode_trustlist(content))))

    async def open(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (mode,) = checked_args(GROUP.method("Open"), args)
        call = self.ctx.authorize()
        self.ctx.expire_handles()
        if mode == READ:
            return self._open_read(call.session_id, int(TrustListMask.ALL))
        if mode != WRITE_ERASE:
            raise MethodError(_S.BadNotSupported, f"Open mode {mode!r}: only 0x01 and 0x06")
        if self.ctx.open_for_writing():
            raise MethodError(_S.BadInvalidState, "the TrustList is already open for writing")
        self.ctx.state.begin(call.session_id)
        return self._new_handle(OpenTrustList(call.session_id, True, bytearray()))

    async def open_with_masks(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (masks,) = checked_args(GROUP.method("OpenWithMasks"), args)
        call = self.ctx.authorize()
        if masks is None:
            raise MethodError(_S.BadInvalidArgument, "Masks is null")
        return self._open_read(call.session_id, int(masks))

    async def read(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        handle, length = checked_args(GROUP.method("Read"), args)
        opened = self._handle(handle)
        if opened.writing:
            raise MethodError(_S.BadInvalidState, "the handle is open for writing")
        if length is None or length < 0:
            raise MethodError(_S.BadInvalidArgument, f"Length {length} is negative")
        chunk = bytes(opened.data[opened.position:opened.position + length])
        opened.position += len(chunk)
        return [ua.Variant(chunk, ua.VariantType.ByteString)]

    async def write(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        handle, data = checked_args(GROUP.method("Write"), args)
        opened = self._handle(handle)
        if not opened.writing:
            raise MethodError(_S.BadInvalidState, "the handle is open for reading")
        data = data or b""
        if len(opened.data) + len(data) > self.ctx.max_trust_list_size:
            raise MethodError(_S.BadEncodingLimitsExceeded,
                              f"the trust list would exceed MaxTrustListSize {self.ctx.max_trust_list_size}")
        opened.data += data
        opened.position += len(data)
        return []

    async def get_position(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (handle,) = checked_args(GROUP.method("GetPosition"), args)
        return [ua.Variant(self._handle(handle).position, ua.VariantType.UInt64)]

    async def set_position(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        handle, position = checked_args(GROUP.method("SetPosition"), args)
        opened = self._handle(handle)
        if opened.writing:
            raise MethodError(_S.BadNotSupported, "SetPosition on a write handle")
        opened.position = min(int(position or 0), len(opened.data))
        return []

    async def close(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (handle,) = checked_args(GROUP.method("Close"), args)
        self._handle(handle)
        del self.ctx.handles[handle]  # a write handle's data is discarded
        return []

    async def close_and_update(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (handle,) = checked_args(GROUP.method("CloseAndUpdate"), args)
        opened = self._handle(handle)
        if not opened.writing:
            raise MethodError(_S.BadInvalidState, "the handle is not open for writing")
        del self.ctx.handles[handle]
        try:
            update = decode_trustlist(bytes(opened.data))
        except InvalidInput as exc:
            raise MethodError(_S.BadInvalidArgument, f"not a TrustListDataType: {exc}") from exc
        check_content(update)
        state = self.ctx.state
        state.begin(opened.session_id)
        state.staged_trust = merge(state.effective_trust(), update)
        return [ua.Variant(True, ua.VariantType.Boolean)]

    async def add_certificate(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        der, is_trusted = checked_args(GROUP.method("AddCertificate"), args)
        call = self.ctx.authorize()
        if not is_trusted:
            raise MethodError(_S.BadCertificateInvalid, "IsTrustedCertificate must be true")
        cert = parse_certificate(der or b"")
        if cert is None:
            raise MethodError(_S.BadCertificateInvalid, "not a DER certificate")
        if is_ca(cert):
            raise MethodError(_S.BadCertificateInvalid, "CA certificates are added with Write, not AddCertificate")
        if self.ctx.open_for_writing():
            raise MethodError(_S.BadInvalidState, "the TrustList is open for writing")
        state = self.ctx.state
        if not is_self_signed(cert) and not any(
                (ca := parse_certificate(c)) is not None and issued_by(cert, ca)
                for c in state.known_ca_certificates()):
            raise MethodError(_S.BadCertificateChainIncomplete, "the issuer is not in the trust list")
        state.begin(call.session_id)
        base = state.effective_trust()
        if der not in base.trusted_certificates:
            state.staged_trust = base.model_copy(update={"trusted_certificates": [*base.trusted_certificates, der],
                                                         "specified_lists": int(TrustListMask.ALL)})
        return []

    async def remove_certificate(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        thumb, is_trusted = checked_args(GROUP.method("RemoveCertificate"), args)
        call = self.ctx.authorize()
        if self.ctx.open_for_writing():
            raise MethodError(_S.BadInvalidState, "the TrustList is open for writing")
        wanted = (thumb or "").replace(":", "").replace(" ", "").upper()
        state = self.ctx.state
        base = state.effective_trust()
        certs_field, crls_field = (("trusted_certificates", "trusted_crls") if is_trusted
                                   else ("issuer_certificates", "issuer_crls"))
        certs: list[bytes] = list(getattr(base, certs_field))
        match = next((der for der in certs if thumbprint(der) == wanted), None)
        if match is None:
            raise MethodError(_S.BadInvalidArgument, f"no certificate with thumbprint {thumb!r}")
        certs.remove(match)
        crls: list[bytes] = list(getattr(base, crls_field))
        cert = parse_certificate(match)
        if cert is not None and is_ca(cert):  # removing a CA removes its CRLs
            crls = [c for c in crls if (crl := parse_crl(c)) is None or crl.issuer != cert.subject]
        state.begin(call.session_id)
        state.staged_trust = base.model_copy(update={certs_field: certs, crls_field: crls,
                                                     "specified_lists": int(TrustListMask.ALL)})
        return []

