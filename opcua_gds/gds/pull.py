"""Pull certificate management: the CertificateDirectory methods of the GDS Directory (OPC 10000-12 7.9).

    StartSigningRequest(ApplicationId, CertificateGroupId, CertificateTypeId, CertificateRequest) -> RequestId
    StartNewKeyPairRequest(ApplicationId, CertificateGroupId, CertificateTypeId, SubjectName, DomainNames,
                           PrivateKeyFormat, PrivateKeyPassword) -> RequestId
    FinishRequest(ApplicationId, RequestId) -> Certificate, PrivateKey, IssuerCertificates
    GetCertificateGroups(ApplicationId) -> CertificateGroupIds
    GetCertificates(ApplicationId, CertificateGroupId) -> CertificateTypeIds, Certificates
    GetTrustList(ApplicationId, CertificateGroupId) -> TrustListId
    GetCertificateStatus(ApplicationId, CertificateGroupId, CertificateTypeId) -> UpdateRequired
    RevokeCertificate(ApplicationId, Certificate)
    CheckRevocationStatus(Certificate) -> CertificateStatus, ValidityTime

Requests go to `engine.requests` (approval per group policy), recorded with the SHA-256 of the SecureChannel's
client certificate; FinishRequest must come over a channel with the same certificate. A RequestId is a GUID
NodeId in the GDS namespace whose GUID is the engine's request id.

Who may call (reference 1.3, UA-.NETStandard `ApplicationsNodeManager`):
- Start*/FinishRequest: SignAndEncrypt channel; CertificateAuthorityAdmin, or ApplicationSelfAdmin for its
  own ApplicationId.
- GetCertificateGroups/GetCertificates/GetTrustList/GetCertificateStatus: Sign at least; CertificateAuthorityAdmin
  or SelfAdmin (own ApplicationId).
- RevokeCertificate: Sign at least; CertificateAuthorityAdmin only.
- CheckRevocationStatus: any caller on an authenticated (Sign or SignAndEncrypt) channel.

Every engine call runs through `run_blocking`; refusals are answered with the status codes of the spec
(`MethodError`), never raised into asyncua. An unregistered application's ApplicationId is BadNotFound for every
method. Start*Request raises CertificateRequestedAuditEventType (accepted or refused), a FinishRequest that hands
out a certificate CertificateDeliveredAuditEventType (`opcua_gds.audit_events`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from asyncua import ua
from cryptography import x509

from opcua_gds.access import (
    GdsRole,
    MethodError,
    caller,
    has_any_role,
    require_mode,
    status_of,
)
from opcua_gds.audit_events import MethodCall
from opcua_gds.call_context import CallContext, current
from opcua_gds.certificate_types import APPLICATION_TYPES, USER_TYPES, certificate_type_of, key_type_of
from opcua_gds.gds.context import GdsContext
from opcua_gds.method_nodes import bind, checked_args
from opcua_gds.nodeids import (
    CertificateDirectoryMethods,
    CertificateGroups,
    GdsEventTypes,
    GdsObjects,
    MethodSpec,
    gds_node_id,
    guid_node_id,
    ns0_node_id,
    ua_status,
)
from opcua_gds.validation_status import status_code
from trustlists.authority import KeyFormat
from trustlists.blocking import run_blocking
from trustlists.der import load_csr
from trustlists.errors import (
    InvalidState,
    NotFound,
    OtpkiError,
    RequestExpired,
    RequestNotFound,
    RequestRejected,
)
from trustlists.models import CertificateRecord, KeyType, Owner, RevocationReason
from trustlists.policy import GroupPolicy

log = logging.getLogger(__name__)

_S = ua.StatusCodes
_CA_ADMIN = {GdsRole.CERTIFICATE_AUTHORITY_ADMIN}

_PRIVATE_KEY_FORMATS: dict[str, KeyFormat] = {"PEM": "pem", "PFX": "pkcs12"}


def _fingerprint(call: CallContext) -> str | None:
    return hashlib.sha256(call.client_certificate).hexdigest() if call.client_certificate else None


def _actor(call: CallContext, self_owner: str | None) -> str:
    name = getattr(call.user, "name", None)
    if name:
        return f"opcua-gds:{name}"
    return f"opcua-gds:app:{self_owner}" if self_owner else "opcua-gds"


class PullMethods:
    def __init__(self, ctx: GdsContext) -> None:
        self.ctx = ctx
        self.engine = ctx.engine
        self.default_group = gds_node_id(GdsObjects.DefaultApplicationGroup, ctx.gds_idx)
        self.trust_lists = {g.group_node_id(ctx.gds_idx): g.trust_list_node_id(ctx.gds_idx)
                            for g in CertificateGroups.gds()}

    # -- shared checks ------------------------------------------------------------------------------
    async def authorize(self, application_id: object, *, mode: ua.MessageSecurityMode,
                        self_admin: bool = True) -> tuple[CallContext, str | None]:
        """Security mode, then role or SelfAdmin for this ApplicationId; returns the caller and its own app."""
        call = caller()
        require_mode(call, mode)
        return call, await run_blocking(self.authorized_owner, call, application_id, self_admin=self_admin)

    def authorized_owner(self, call: CallContext, application_id: object, *, self_admin: bool = True) -> str | None:
        """The role/SelfAdmin decision (blocking: the SelfAdmin lookup reads the inventory). The hot pull
        methods run it inside their one blocking step instead of a thread hop of its own."""
        own = self.ctx.self_admin.owner_id(call)
        if has_any_role(call, _CA_ADMIN):
            return own
        if self_admin and own is not None and own == self.ctx.owner_id(application_id):
            return own
        raise MethodError(_S.BadUserAccessDenied, "needs CertificateAuthorityAdmin"
                          + (" or the application's own channel (SelfAdmin)" if self_admin else ""))

    def application(self, application_id: object) -> Owner:
        """The registered GDS application behind an ApplicationId (blocking); BadNotFound otherwise."""
        owner_id = self.ctx.owner_id(application_id)
        if owner_id is None:
            raise MethodError(_S.BadNotFound, "not an ApplicationId of this GDS")
        try:
            owner = self.engine.registry.get(owner_id)
        except NotFound:
            raise MethodError(_S.BadNotFound, f"no application {owner_id}") from None
        if owner.group not in self.ctx.groups.values():
            raise MethodError(_S.BadNotFound, f"{owner_id} is not an OPC UA application of this GDS")
        if owner.unregistered:  # UnregisterApplication ends the ApplicationId for every method taking one
            raise MethodError(_S.BadNotFound, f"application {owner_id} is unregistered")
        return owner

    def group(self, group_id: object, owner: Owner) -> tuple[ua.NodeId, str]:
        """The CertificateGroup (NodeId, engine group); null = DefaultApplicationGroup; must be the app's."""
        if group_id is None or (isinstance(group_id, ua.NodeId) and group_id.is_null()):
            group_id = self.default_group
        if not isinstance(group_id, ua.NodeId) or group_id not in self.ctx.groups:
            raise MethodError(_S.BadInvalidArgument, f"unknown CertificateGroupId {group_id}")
        engine_group = self.ctx.groups[group_id]
        if engine_group != owner.group:
            raise MethodError(_S.BadInvalidArgument,
                              f"application {owner.name} does not belong to CertificateGroup {group_id}")
        return group_id, engine_group

    def allowed_key_types(self, type_id: object, policy: GroupPolicy) -> frozenset[KeyType]:
        """Key types the CertificateTypeId allows in the group; null = any the group allows."""
        allowed = frozenset(policy.allowed_key_types)
        if type_id is None or (isinstance(type_id, ua.NodeId) and type_id.is_null()):
            return allowed
        table = USER_TYPES if policy.owner_kind == "user" else APPLICATION_TYPES
        if not isinstance(type_id, ua.NodeId) or type_id.NamespaceIndex != 0 or type_id.Identifier not in table:
            raise MethodError(_S.BadInvalidArgument, f"CertificateTypeId {type_id} is not a type of this group")
        fits = table[int(type_id.Identifier)] & allowed
        if not fits:
            raise MethodError(_S.BadInvalidArgument, f"the group issues no certificates of type {type_id}")
        return fits

    def request_node_id(self, request_id: str) -> ua.NodeId:
        return guid_node_id(uuid.UUID(request_id), self.ctx.gds_idx)

    def request_id(self, node_id: object) -> str:
        if (not isinstance(node_id, ua.NodeId) or node_id.NamespaceIndex != self.ctx.gds_idx
                or node_id.NodeIdType != ua.NodeIdType.Guid):
            raise MethodError(_S.BadInvalidArgument, f"{node_id} is not a RequestId of this GDS")
        return str(node_id.Identifier)

    # -- requests -----------------------------------------------------------------------------------
    async def start_signing_request(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        return await self._audited_request(CertificateDirectoryMethods.StartSigningRequest, args,
                                           self._start_signing_request)

    async def start_new_key_pair_request(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        return await self._audited_request(CertificateDirectoryMethods.StartNewKeyPairRequest, args,
                                           self._start_new_key_pair_request)

    async def _audited_request(self, spec: MethodSpec, args: tuple[ua.Variant, ...],
                               start: Callable[[tuple[ua.Variant, ...]], Awaitable[tuple[str, int]]]
                               ) -> list[ua.Variant]:
        """Run a Start*Request and raise CertificateRequestedAuditEventType, whether it was accepted or refused."""
        try:
            request_id, certificate_type = await start(args)
        except Exception as exc:
            await self._audit_requested(spec, args, status_of(exc), _node_arg(args, 2))
            raise
        await self._audit_requested(spec, args, ua.StatusCodes.Good, ns0_node_id(certificate_type))
        return [ua.Variant(self.request_node_id(request_id), ua.VariantType.NodeId)]

    async def _audit_requested(self, spec: MethodSpec, args: tuple[ua.Variant, ...], status: int,
                               certificate_type: ua.NodeId | None) -> None:
        group = _node_arg(args, 1) or self.default_group
        secret = frozenset({6}) if spec.name == "StartNewKeyPairRequest" else frozenset()  # PrivateKeyPassword
        outcome = "accepted" if ua_status(status).is_good() else f"refused ({ua_status(status).name})"
        await self.ctx.audit.raise_event(
            gds_node_id(GdsEventTypes.CertificateRequestedAuditEventType, self.ctx.gds_idx),
            MethodCall(self.ctx.directory.nodeid, spec.node_id(self.ctx.gds_idx), args, secret), current(),
            message=f"{spec.name} {outcome}", status=status,
            fields=_certificate_fields(group, certificate_type))

    async def _start_signing_request(self, args: tuple[ua.Variant, ...]) -> tuple[str, int]:
        app_id, group_id, type_id, csr = checked_args(CertificateDirectoryMethods.StartSigningRequest, args)
        call = caller()
        require_mode(call, ua.MessageSecurityMode.SignAndEncrypt)

        def start() -> tuple[str, int]:
            own = self.authorized_owner(call, app_id)
            owner = self.application(app_id)
            _gid, engine_group = self.group(group_id, owner)
            allowed = self.allowed_key_types(type_id, self.engine.config.group(engine_group))
            if not csr:
                raise MethodError(_S.BadInvalidArgument, "empty CertificateRequest")
            key_type = key_type_of(load_csr(csr).public_key())  # InvalidInput -> BadInvalidArgument
            if key_type not in allowed:
                raise MethodError(_S.BadInvalidArgument,
                                  f"the request's key ({key_type or 'unsupported'}) does not fit CertificateTypeId "
                                  f"{type_id}")
            req = self.engine.requests.submit_csr(owner.id, csr, actor=_actor(call, own),
                                                  requester_fingerprint=_fingerprint(call))
            return req.id, certificate_type_of(key_type, owner.kind)

        return await run_blocking(start)

    async def _start_new_key_pair_request(self, args: tuple[ua.Variant, ...]) -> tuple[str, int]:
        app_id, group_id, type_id, subject, domains, key_format, password = checked_args(
            CertificateDirectoryMethods.StartNewKeyPairRequest, args)
        call, own = await self.authorize(app_id, mode=ua.MessageSecurityMode.SignAndEncrypt)
        fmt = _PRIVATE_KEY_FORMATS.get((key_format or "").upper())
        if fmt is None:
            raise MethodError(_S.BadInvalidArgument, f"PrivateKeyFormat must be PEM or PFX, not {key_format!r}")
        dns, ips = _split_domain_names(domains or [])

        def start() -> tuple[str, int]:
            owner = self.application(app_id)
            _gid, engine_group = self.group(group_id, owner)
            policy = self.engine.config.group(engine_group)
            allowed = self.allowed_key_types(type_id, policy)
            key_type = policy.default_keygen_type if policy.default_keygen_type in allowed else next(
                k for k in policy.allowed_key_types if k in allowed)
            req = self.engine.requests.submit_new_key(
                owner.id, actor=_actor(call, own), key_type=key_type, key_format=fmt,
                password=password or None, subject_name=_common_name(subject),
                dns_names=dns or None, ip_addresses=ips or None,
                requester_fingerprint=_fingerprint(call))
            return req.id, certificate_type_of(key_type, owner.kind)

        return await run_blocking(start)

    async def finish_request(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        app_id, request_node = checked_args(CertificateDirectoryMethods.FinishRequest, args)
        call = caller()
        require_mode(call, ua.MessageSecurityMode.SignAndEncrypt)

        def finish() -> tuple[bytes, bytes | None, list[bytes], ua.NodeId, int]:
            own = self.authorized_owner(call, app_id)
            request_id = self.request_id(request_node)
            owner = self.application(app_id)
            try:
                issued = self.engine.requests.finish(request_id, owner_id=owner.id,
                                                     requester_fingerprint=_fingerprint(call),
                                                     actor=_actor(call, own))
            except RequestNotFound as exc:
                if exc.reason == "requester_mismatch":  # Finish must come from the same client certificate
                    raise MethodError(_S.BadUserAccessDenied, exc.message) from None
                raise MethodError(_S.BadInvalidArgument, exc.message) from None
            except (RequestRejected, RequestExpired) as exc:
                raise MethodError(_S.BadRequestNotAllowed, exc.message) from None
            except InvalidState as exc:  # a new key is handed out once
                raise MethodError(_S.BadInvalidArgument, exc.message) from None
            group = next((gid for gid, g in self.ctx.groups.items() if g == owner.group), self.default_group)
            return (issued.certificate_der, issued.private_key, list(issued.chain_der), group,
                    certificate_type_of(issued.record.key_type, owner.kind))

        cert, key, chain, group, certificate_type = await run_blocking(finish)
        spec = CertificateDirectoryMethods.FinishRequest
        await self.ctx.audit.raise_event(
            gds_node_id(GdsEventTypes.CertificateDeliveredAuditEventType, self.ctx.gds_idx),
            MethodCall(self.ctx.directory.nodeid, spec.node_id(self.ctx.gds_idx), args), call,
            message="FinishRequest delivered a certificate" + (" and its private key" if key else ""),
            fields=_certificate_fields(group, ns0_node_id(certificate_type)))
        return [ua.Variant(cert, ua.VariantType.ByteString), ua.Variant(key, ua.VariantType.ByteString),
                ua.Variant(chain, ua.VariantType.ByteString, is_array=True)]

    # -- queries ------------------------------------------------------------------------------------
    async def get_certificate_groups(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (app_id,) = checked_args(CertificateDirectoryMethods.GetCertificateGroups, args)
        await self.authorize(app_id, mode=ua.MessageSecurityMode.Sign)
        owner = await run_blocking(self.application, app_id)
        ids = [gid for gid, group in self.ctx.groups.items() if group == owner.group]
        return [ua.Variant(ids, ua.VariantType.NodeId, is_array=True)]

    def current_certificates(self, owner: Owner, engine_group: str) -> list[CertificateRecord]:
        """The application's live certificates in the group (not revoked, superseded or expired), newest first."""
        from trustlists.models import CertificateStatus

        records = self.engine.inventory.query(owner_id=owner.id, group=engine_group, status=CertificateStatus.ACTIVE)
        return sorted(records, key=lambda r: r.issued_at, reverse=True)

    async def get_certificates(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        app_id, group_id = checked_args(CertificateDirectoryMethods.GetCertificates, args)
        await self.authorize(app_id, mode=ua.MessageSecurityMode.Sign)

        def query() -> tuple[list[ua.NodeId], list[bytes]]:
            owner = self.application(app_id)
            _gid, engine_group = self.group(group_id, owner)
            types, certs = [], []
            for record in self.current_certificates(owner, engine_group):
                der = self.engine.inventory.get(record.serial).der
                if der is None:
                    continue
                types.append(ns0_node_id(certificate_type_of(record.key_type, owner.kind)))
                certs.append(der)
            return types, certs

        types, certs = await run_blocking(query)
        return [ua.Variant(types, ua.VariantType.NodeId, is_array=True),
                ua.Variant(certs, ua.VariantType.ByteString, is_array=True)]

    async def get_trust_list(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        app_id, group_id = checked_args(CertificateDirectoryMethods.GetTrustList, args)
        await self.authorize(app_id, mode=ua.MessageSecurityMode.Sign)
        owner = await run_blocking(self.application, app_id)
        gid, _engine_group = self.group(group_id, owner)
        trust_list = self.trust_lists.get(gid)
        if trust_list is None:
            raise MethodError(_S.BadInvalidArgument, f"CertificateGroup {gid} has no TrustList")
        return [ua.Variant(trust_list, ua.VariantType.NodeId)]

    async def get_certificate_status(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        app_id, group_id, type_id = checked_args(CertificateDirectoryMethods.GetCertificateStatus, args)
        await self.authorize(app_id, mode=ua.MessageSecurityMode.Sign)

        def status() -> bool:
            owner = self.application(app_id)
            _gid, engine_group = self.group(group_id, owner)
            policy = self.engine.config.group(engine_group)
            allowed = self.allowed_key_types(type_id, policy)
            records = [r for r in self.engine.inventory.query(owner_id=owner.id, group=engine_group)
                       if r.key_type in allowed and r.superseded_by is None]
            if not records:
                return True  # nothing to renew: the application needs one
            # The current certificate is the newest one (issue times have second resolution: of several
            # issued in the same second, any one needing an update counts).
            newest = max(r.issued_at for r in records)
            now = self.engine.now()
            try:
                issuer_id: str | None = self.engine.hierarchy.issuing_ca_for(engine_group, owner.site).id
            except OtpkiError:
                issuer_id = None  # the group cannot issue right now; no certificate's CA is current either
            return any(r.revoked_at is not None or (r.not_after - now).days <= policy.renewal_window_days
                       or r.issuer_ca_id != issuer_id for r in records if r.issued_at == newest)

        update = await run_blocking(status)
        return [ua.Variant(update, ua.VariantType.Boolean)]

    # -- revocation ---------------------------------------------------------------------------------
    async def revoke_certificate(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        app_id, cert = checked_args(CertificateDirectoryMethods.RevokeCertificate, args)
        call, own = await self.authorize(app_id, mode=ua.MessageSecurityMode.Sign, self_admin=False)

        def revoke() -> None:
            owner = self.application(app_id)
            if not cert:
                raise MethodError(_S.BadInvalidArgument, "empty Certificate")
            record = self.engine.inventory.by_fingerprint(hashlib.sha256(cert).hexdigest())
            if record is None or record.owner_id != owner.id:
                raise MethodError(_S.BadInvalidArgument, f"the certificate is not one of {owner.name}'s")
            self.engine.authority.revoke(record.serial, reason=RevocationReason.UNSPECIFIED,
                                         actor=_actor(call, own))

        await run_blocking(revoke)
        return []

    async def check_revocation_status(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        (cert_der,) = checked_args(CertificateDirectoryMethods.CheckRevocationStatus, args)
        require_mode(caller(), ua.MessageSecurityMode.Sign)
        try:
            cert = x509.load_der_x509_certificate(cert_der or b"")
        except ValueError:
            raise MethodError(_S.BadInvalidArgument, "Certificate is not a DER X.509 certificate") from None

        def check() -> tuple[int, datetime]:
            record = self.engine.inventory.by_fingerprint(hashlib.sha256(cert_der).hexdigest())
            groups = list(dict.fromkeys(self.ctx.groups.values()))
            group = record.group if record is not None and record.group in groups else (
                self.ctx.groups.get(self.default_group) or groups[0])
            validator = self.engine.validator(group)
            result = validator.validate([cert_der])
            validity = cert.not_valid_after_utc
            for crl_der in (*self.engine.trustlists.get(group).content.trusted_crls,
                            *self.engine.trustlists.get(group).content.issuer_crls):
                crl = x509.load_der_x509_crl(crl_der)
                if crl.issuer == cert.issuer and crl.next_update_utc is not None:
                    validity = min(validity, crl.next_update_utc)
            return status_code(result), validity

        code, validity = await run_blocking(check)
        return [ua.Variant(ua_status(code), ua.VariantType.StatusCode),
                ua.Variant(validity, ua.VariantType.DateTime)]


def _node_arg(args: tuple[ua.Variant, ...], position: int) -> ua.NodeId | None:
    """A non-null NodeId argument as sent, or None (for an audit event of a call that may have been refused)."""
    value = args[position].Value if position < len(args) and isinstance(args[position], ua.Variant) else None
    return value if isinstance(value, ua.NodeId) and not value.is_null() else None


def _certificate_fields(group: ua.NodeId, certificate_type: ua.NodeId | None
                        ) -> dict[str, tuple[object, ua.VariantType]]:
    """The CertificateGroup and CertificateType fields of the GDS certificate audit events."""
    return {"CertificateGroup": (group, ua.VariantType.NodeId),
            "CertificateType": (certificate_type or ua.NodeId(), ua.VariantType.NodeId)}


def _common_name(subject: str | None) -> str | None:
    """The CN of a SubjectName ("CN=x/O=y", "CN=x,O=y" or a bare name); None for empty."""
    if not subject or not subject.strip():
        return None
    text = subject.strip()
    if "=" not in text:
        return text
    for part in text.replace("/", ",").split(","):
        key, _, value = part.partition("=")
        if key.strip().upper() == "CN" and value.strip():
            return value.strip()
    raise MethodError(_S.BadInvalidArgument, f"SubjectName {subject!r} has no CN")


def _split_domain_names(names: list[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise MethodError(_S.BadInvalidArgument, "DomainNames holds an empty entry")
        try:
            ips.append(str(ipaddress.ip_address(name.strip())))
        except ValueError:
            dns.append(name.strip())
    return dns, ips


async def install(ctx: GdsContext) -> None:
    """Bind the CertificateDirectory methods of the Directory object."""
    pull = PullMethods(ctx)
    bindings = {
        "StartSigningRequest": pull.start_signing_request,
        "StartNewKeyPairRequest": pull.start_new_key_pair_request,
        "FinishRequest": pull.finish_request,
        "RevokeCertificate": pull.revoke_certificate,
        "GetCertificateGroups": pull.get_certificate_groups,
        "GetCertificates": pull.get_certificates,
        "GetTrustList": pull.get_trust_list,
        "GetCertificateStatus": pull.get_certificate_status,
        "CheckRevocationStatus": pull.check_revocation_status,
    }
    for spec in CertificateDirectoryMethods.all():
        bind(ctx.server, spec, ctx.gds_idx, bindings[spec.name])
