"""`install_push_management`: make an asyncua server a push target (OPC 10000-12 7.10), in one call.

Call it after `server.init()` and before `server.start()`:

    server = Server(); await server.init(); server.set_endpoint(...)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await server.load_certificate(...); await server.load_private_key(...)   # factory identity
    push = await install_push_management(server, pki_dir=Path("pki"), access=access)
    await server.start()

When `pki_dir` already holds an own certificate and key (a restart), they replace the loaded identity, and
the trust list is read back from its folders. Otherwise the server's loaded identity is written there.

`certificate_types`: what the DefaultApplicationGroup's CertificateTypes reports and UpdateCertificate /
CreateSigningRequest accept: RsaSha256ApplicationCertificateType (the SecureChannels' certificate, always) and by
default the ECC application types too, which are managed and stored but used by no channel (asyncua has no
ECC SecurityPolicies).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto import uacrypto

from opcua_gds import _asyncua_compat as asyncua_compat
from opcua_gds import call_context
from opcua_gds.access import AccessConfig, GdsUserManager, opcua_method
from opcua_gds.audit_events import AuditEvents
from opcua_gds.nodeids import (
    CertificateGroups,
    CertificateTypes,
    ServerConfigurationIds,
    ServerConfigurationMethods,
    ns0_node_id,
)
from opcua_gds.push.target import server_swap
from opcua_gds.push.target.client_validation import ClientCertificateCheck
from opcua_gds.push.target.context import PushContext
from opcua_gds.push.target.methods import ServerConfigurationMethodsImpl
from opcua_gds.push.target.state import Identity, PushState
from opcua_gds.push.target.trustlist_file import TrustListFile
from trustlists.blocking import run_blocking
from trustlists.models import TrustListContent

log = logging.getLogger(__name__)
DEFAULT_CERTIFICATE_TYPES = (CertificateTypes.RsaSha256ApplicationCertificateType,
                             CertificateTypes.EccNistP256ApplicationCertificateType,
                             CertificateTypes.EccNistP384ApplicationCertificateType)
_TL = "ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_"


@dataclass
class PushManagement:
    """Handle on an installed push target (for the host application and tests)."""

    server: Server
    context: PushContext
    check: ClientCertificateCheck

    @property
    def state(self) -> PushState:
        return self.context.state

    @property
    def certificate_der(self) -> bytes:
        return self.state.active_identity.cert_der

    @property
    def trust_list(self) -> TrustListContent:
        return self.state.active_trust

    @property
    def rejected(self) -> list[bytes]:
        return list(self.state.rejected)

    @property
    def ecc_certificates(self) -> dict[int, bytes]:
        """The active ECC certificates (CertificateTypeId -> DER): managed, not used on channels."""
        return {type_id: e.cert_der for type_id, e in self.state.active_ecc.items()}


async def install_push_management(server: Server, *, pki_dir: Path, access: AccessConfig | None = None,
                                  max_trust_list_size: int = 65536, trust_on_first_push: bool = True,
                                  server_capabilities: Sequence[str] = ("NA",),
                                  can_generate_keys: bool = True,
                                  certificate_types: Sequence[int] = DEFAULT_CERTIFICATE_TYPES) -> PushManagement:
    pki_dir = Path(pki_dir)
    types = tuple(dict.fromkeys(int(t) for t in certificate_types))
    if not types or types[0] != CertificateTypes.RsaSha256ApplicationCertificateType or not set(types) <= set(
            DEFAULT_CERTIFICATE_TYPES):
        raise ValueError("certificate_types starts with RsaSha256ApplicationCertificateType (the channels' "
                         f"certificate) and may add EccNistP256/EccNistP384, not {list(certificate_types)}")
    call_context.install()
    if access is not None:
        asyncua_compat.set_user_manager(server, GdsUserManager(access))

    state = await run_blocking(PushState.load, pki_dir)
    if state is None:
        cert, key = asyncua_compat.server_identity(server)
        if cert is None or key is None:
            raise ValueError(f"{pki_dir} holds no own certificate and the server has none loaded")
        state = PushState(pki_dir=pki_dir, active_identity=Identity(uacrypto.der_from_x509(cert), key))
        await run_blocking(state.save)
    else:
        log.info("push target: identity and trust list reloaded from %s", pki_dir)
    # The certificate with the CAs above it, so a client that trusts only the root can build the path.
    await server_swap.use_identity(server, state.active_identity, await run_blocking(state.presented_issuers))

    audit = AuditEvents(server, server.get_application_uri())
    await audit.install()
    ctx = PushContext(server=server, state=state, max_trust_list_size=max_trust_list_size,
                      trust_on_first_push=trust_on_first_push, can_generate_keys=can_generate_keys,
                      certificate_types=types, audit=audit)
    asyncua_compat.on_session_closed(server, ctx.session_closed)
    check = ClientCertificateCheck(state, trust_on_first_push=trust_on_first_push)
    server.set_certificate_validator(check)

    config = ServerConfigurationMethodsImpl(ctx, check)
    bindings = {
        ServerConfigurationMethods.CreateSigningRequest: config.create_signing_request,
        ServerConfigurationMethods.UpdateCertificate: config.update_certificate,
        ServerConfigurationMethods.ApplyChanges: config.apply_changes,
        ServerConfigurationMethods.CancelChanges: config.cancel_changes,
        ServerConfigurationMethods.GetRejectedList: config.get_rejected_list,
    }
    group = CertificateGroups.PushDefaultApplicationGroup
    files = TrustListFile(ctx)
    for name, callback in (("Open", files.open), ("Close", files.close), ("Read", files.read),
                           ("Write", files.write), ("GetPosition", files.get_position),
                           ("SetPosition", files.set_position), ("OpenWithMasks", files.open_with_masks),
                           ("CloseAndUpdate", files.close_and_update), ("AddCertificate", files.add_certificate),
                           ("RemoveCertificate", files.remove_certificate),
                           ("GetRejectedList", config.get_rejected_list)):
        bindings[group.method(name)] = callback
    for spec, callback in bindings.items():
        try:
            server.link_method(server.get_node(spec.node_id()), opcua_method(callback))
        except KeyError:  # e.g. CertificateGroupType.GetRejectedList (i=23550): not in asyncua's ns0
            log.info("push target: %s (%s) is not in the address space, not bound", spec.name, spec.node_id())

    await _write_properties(server, max_trust_list_size, list(server_capabilities), types)
    return PushManagement(server=server, context=ctx, check=check)


async def _write_properties(server: Server, max_size: int, capabilities: list[str], types: Sequence[int]) -> None:
    ids = ua.ObjectIds
    values: list[tuple[int, ua.Variant]] = [
        (ServerConfigurationIds.SupportedPrivateKeyFormats, ua.Variant(["PEM", "PFX"], ua.VariantType.String)),
        (ServerConfigurationIds.MaxTrustListSize, ua.Variant(max_size, ua.VariantType.UInt32)),
        (ServerConfigurationIds.ServerCapabilities, ua.Variant(capabilities, ua.VariantType.String)),
        (ServerConfigurationIds.DefaultApplicationGroup_CertificateTypes,
         ua.Variant([ns0_node_id(t) for t in types], ua.VariantType.NodeId)),
        (getattr(ids, _TL + "Writable"), ua.Variant(True, ua.VariantType.Boolean)),
        (getattr(ids, _TL + "UserWritable"), ua.Variant(True, ua.VariantType.Boolean)),
    ]
    for identifier, variant in values:
        await server.get_node(ns0_node_id(identifier)).write_value(variant)
