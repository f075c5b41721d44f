"""The GDS server: an asyncua server with the GDS namespace, the Directory and its CertificateGroups.

It secures itself with a certificate the engine issues to it (renewed at start when due), offers only
Sign and SignAndEncrypt endpoints (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss), and
decides every method call with `opcua_gds.access` on the caller's context (`opcua_gds.call_context`).
The address space (the GDS NodeSet's types, the Directory and its CertificateGroups, with the standard NodeIds)
is built by `address_space`; the method sets live in their own modules (`directory`, `pull`, `trustlist_file`),
each with an `install(gds)` coroutine that binds its Method nodes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from asyncua import Server, ua

from opcua_gds import _asyncua_compat as asyncua_compat
from opcua_gds import call_context
from opcua_gds.access import GdsUserManager, SelfAdmin
from opcua_gds.audit_events import AuditEvents
from opcua_gds.certificate_chain import issuer_chain
from opcua_gds.certificate_types import issued_types
from opcua_gds.gds import address_space, directory, pull, trustlist_file
from opcua_gds.gds.application_record import install_application_record_type
from opcua_gds.gds.context import GdsContext, Installer
from opcua_gds.gds.settings import GdsSettings
from opcua_gds.nodeids import GDS_NAMESPACE_URI, CertificateGroupIds, CertificateGroups, ns0_node_id
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
        issuing = {ids: self.settings.certificate_groups.get(ids.name) for ids in CertificateGroups.gds()}
        types = {ids: [ns0_node_id(t) for t in issued_types(self.engine.config.group(engine_group))]
                 for ids, engine_group in issuing.items() if engine_group is not None}  # a bad mapping fails here
        directory = await address_space.build(server, gds_idx, types)
        audit = AuditEvents(server, self.settings.application_uri)
        await audit.install()
        ctx = GdsContext(engine=self.engine, server=server, gds_idx=gds_idx, directory=directory,
                         self_admin=SelfAdmin(self.engine), settings=self.settings, audit=audit)
        for ids, engine_group in issuing.items():
            if engine_group is not None:
                ctx.groups[ids.group_node_id(gds_idx)] = engine_group
            ctx.trust_sources[ids.group_node_id(gds_idx)] = engine_group or _unmapped_trust_source(ids, issuing)
        for install in self._installers:
            await install(ctx)
        self.context = ctx
        self.server = server
        await server.start()
        log.info("GDS listening on %s", self.settings.endpoint)

    def is_listening(self) -> bool:
        """Whether the GDS still accepts connections (False before start, after stop, or when its listener went
        away under it): what a supervisor watches."""
        return self.server is not None and asyncua_compat.is_listening(self.server)

    async def stop(self) -> None:
        if self.server is not None:
            await asyncua_compat.stop_server(self.server)
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

def _unmapped_trust_source(ids: CertificateGroupIds, issuing: dict[CertificateGroupIds, str | None]) -> str | None:
    """The trust list a CertificateGroup no engine group is mapped to serves.

    DefaultHttpsGroup: the DefaultApplicationGroup's (the plant CAs an OPC UA application's HTTPS endpoint is
    checked against are its application CAs); it issues nothing (CertificateTypes is empty). Any other group: none.
    """
    if ids is CertificateGroups.GdsDefaultHttpsGroup:
        return issuing.get(CertificateGroups.GdsDefaultApplicationGroup)
    return None


def default_installers() -> list[Installer]:
    """The method sets the GDS serves; each module binds its callbacks to the Method nodes address_space built."""
    return [directory.install, pull.install, trustlist_file.install]
