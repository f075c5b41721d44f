"""The GDS server: an asyncua server with the GDS namespace, the Directory and its CertificateGroups.

It secures itself with a certificate the engine issues to it (renewed at start when due), offers only
Sign and SignAndEncrypt endpoints (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss), and
decides every method call with `opcua_gds.access` on the caller's context (`opcua_gds.call_context`).
The method sets live in their own modules (`directory`, `pull`, `trustlist_file`); each has an
`install(gds)` coroutine that adds its Method nodes with the standard NodeIds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from asyncua import Node, Server, ua

from opcua_gds import _asyncua_compat as asyncua_compat
from opcua_gds import call_context
from opcua_gds.access import GdsUserManager, SelfAdmin
from opcua_gds.certificate_chain import issuer_chain
from opcua_gds.gds import directory, group_types, pull, trustlist_file
from opcua_gds.gds.application_record import install_application_record_type
from opcua_gds.gds.context import GdsContext, Installer
from opcua_gds.gds.settings import GdsSettings
from opcua_gds.nodeids import GDS_NAMESPACE_URI, GdsObjects, GdsObjectTypes, gds_node_id, ns0_node_id
from opcua_gds.own_identity import GROUP as OWN_GROUP
from opcua_gds.own_identity import ensure_identity
from trustlists.blocking import run_blocking
from trustlists.engine import Engine

log = logging.getLogger(__name__)

_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign, ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign, ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]
GDS_OWNER_NAME = "otpki-gds"


class GdsServer:
    def __init__(self, engine: Engine, settings: GdsSettings, state_dir: Path,
                 installers: list[Installer] | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.state_dir = state_dir
        self._installers = installers if installers is not None else default_installers()
        self.server: Server | None = None
        self.context: GdsContext | None = None

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    async def start(self) -> None:
        call_context.install()
        cert_path, key_path = await run_blocking(self._own_certificate)
        server = Server(user_manager=GdsUserManager(self.settings.access))
        await server.init()
        server.set_endpoint(self.settings.endpoint)
        server.set_server_name(self.settings.name)
        server.product_uri = self.settings.product_uri
        await server.set_application_uri(self.settings.application_uri)
        server.set_security_policy(_POLICIES)
        server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken, ua.X509IdentityToken])
        await server.load_certificate(str(cert_path))
        await server.load_private_key(str(key_path))
        # Presented with the CAs above it: a client that trusts only the plant root can build the path.
        await asyncua_compat.present_certificate_chain(server, await run_blocking(self._issuers, cert_path))
        gds_idx = await server.register_namespace(GDS_NAMESPACE_URI)
        await install_application_record_type(server, gds_idx)
        directory = await self._address_space(server, gds_idx)
        ctx = GdsContext(engine=self.engine, server=server, gds_idx=gds_idx, directory=directory,
                         self_admin=SelfAdmin(self.engine), settings=self.settings)
        for name, engine_group in self.settings.certificate_groups.items():
            self.engine.config.group(engine_group)  # fail at start on a misconfigured mapping
            ctx.groups[gds_node_id(GdsObjects[name], gds_idx)] = engine_group
        for install in self._installers:
            await install(ctx)
        self.context = ctx
        self.server = server
        await server.start()
        log.info("GDS listening on %s", self.settings.endpoint)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def __aenter__(self) -> GdsServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- own certificate ------------------------------------------------------------------------
    def _own_certificate(self) -> tuple[Path, Path]:
        """The GDS's application certificate, issued by the engine; a new one when missing or due."""
        return ensure_identity(self.engine, self.state_dir / "own", name=GDS_OWNER_NAME,
                               application_uri=self.settings.application_uri,
                               host=urlparse(self.settings.endpoint).hostname or "localhost",
                               application_type=ua.ApplicationType.DiscoveryServer)

    def _issuers(self, cert_path: Path) -> list[bytes]:
        content = self.engine.trustlists.get(OWN_GROUP).content
        return issuer_chain(cert_path.read_bytes(), (*content.trusted_certificates, *content.issuer_certificates))

    # -- address space --------------------------------------------------------------------------
    async def _address_space(self, server: Server, idx: int) -> Node:
        """Directory (i=141) with Applications and CertificateGroups, typed with the GDS object types."""
        base = server.get_node(ns0_node_id(ua.ObjectIds.FolderType))
        directory_type = await base.add_object_type(gds_node_id(GdsObjectTypes.DirectoryType, idx),
                                                    ua.QualifiedName("DirectoryType", idx))
        cert_dir_type = await directory_type.add_object_type(
            gds_node_id(GdsObjectTypes.CertificateDirectoryType, idx),
            ua.QualifiedName("CertificateDirectoryType", idx))
        directory = await server.nodes.objects.add_object(
            gds_node_id(GdsObjects.Directory, idx), ua.QualifiedName("Directory", idx), objecttype=cert_dir_type.nodeid)
        await directory.add_folder(gds_node_id(GdsObjects.Directory_Applications, idx),
                                   ua.QualifiedName("Applications", idx))
        # asyncua's instantiation would give the mandatory children numeric ids of its own choosing in
        # the GDS namespace, which collide with the standard ids the GDS must use (616, 622, ...). The
        # objects are therefore created bare, typed by reference, and their children added with the
        # standard ids by the method modules.
        groups = await _typed_object(directory, gds_node_id(GdsObjects.Directory_CertificateGroups, idx),
                                     "CertificateGroups", ua.ObjectIds.CertificateGroupFolderType)
        for group, trust_list in ((GdsObjects.DefaultApplicationGroup, GdsObjects.DefaultApplicationGroup_TrustList),
                                  (GdsObjects.DefaultHttpsGroup, GdsObjects.DefaultHttpsGroup_TrustList),
                                  (GdsObjects.DefaultUserTokenGroup, GdsObjects.DefaultUserTokenGroup_TrustList)):
            node = await _typed_object(groups, gds_node_id(group, idx), group.name, ua.ObjectIds.CertificateGroupType)
            await _typed_object(node, gds_node_id(trust_list, idx), "TrustList", ua.ObjectIds.TrustListType)
        return directory


async def _typed_object(parent: Node, node_id: ua.NodeId, name: str, type_id: int) -> Node:
    node = await parent.add_object(node_id, ua.QualifiedName(name, 0))
    await node.delete_reference(ns0_node_id(ua.ObjectIds.BaseObjectType), ua.ObjectIds.HasTypeDefinition)
    await node.add_reference(ns0_node_id(type_id), ua.ObjectIds.HasTypeDefinition)
    return node


def default_installers() -> list[Installer]:
    """The method sets the GDS serves; each module adds its own Method nodes with the standard ids."""
    return [directory.install, pull.install, trustlist_file.install, group_types.install]
