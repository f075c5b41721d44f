"""The ServerConfiguration methods (ns0 i=12637; OPC 10000-12 7.10): CSR, UpdateCertificate, Apply/Cancel.

CreateSigningRequest: RegeneratePrivateKey=true needs a Nonce of at least 32 bytes and generates a new RSA
key that is kept (not active) until a certificate for it is applied; false makes a CSR for the active key.
SubjectName (RFC 4514 text, e.g. "CN=plc1,O=plant") defaults to the active certificate's subject; the
SubjectAlternativeName is copied from the active certificate.

Certificate types: RsaSha256ApplicationCertificateType (also RsaMin and the abstract ApplicationCertificateType)
is the certificate of the SecureChannels. EccNistP256/EccNistP384ApplicationCertificateType, when the target
supports them (`PushContext.certificate_types`, reported in the group's CertificateTypes), get the same
CSR / UpdateCertificate / ApplyChanges handling with an EC key on the type's curve, one certificate per type,
stored in own/; no channel uses them, because asyncua has no ECC SecurityPolicies. A null CertificateTypeId in
UpdateCertificate means the type of the certificate's key; a type that does not fit the key is
Bad_CertificateInvalid.

UpdateCertificate stages a certificate. Without a PrivateKey it must belong to the pending new key or to
the active key; with one ("PEM": PKCS#8 PEM text or DER, "PFX": PKCS#12 without password) the key must
belong to it; a mismatch is Bad_SecurityChecksFailed. Every IssuerCertificate must already be in the
(staged or active) trust list and a CA-issued certificate must have its issuer there or among the
IssuerCertificates: else Bad_CertificateChainIncomplete.

ApplyChanges persists and activates everything staged, rebuilds the endpoints for new SecureChannels and,
after the response, closes the channels that use the old certificate (and, after a trust-list change, the
channels whose client certificate the new trust list refuses).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from opcua_gds.access import MethodError
from opcua_gds.audit_events import MethodCall
from opcua_gds.call_context import CallContext
from opcua_gds.certificate_types import ECC_TYPE_CURVES, ecc_type_of
from opcua_gds.method_nodes import checked_args
from opcua_gds.nodeids import (
    CertificateTypes,
    Ns0EventTypes,
    ServerConfigurationIds,
    ServerConfigurationMethods,
    ns0_node_id,
)
from opcua_gds.push.target import server_swap
from opcua_gds.push.target.certs import (
    AnyKey,
    CertError,
    EccKey,
    PrivateKey,
    build_csr,
    is_self_signed,
    issued_by,
    key_matches,
    load_pushed_key,
    new_ecc_key,
    new_key,
    parse_certificate,
    subject_alt_names,
)
from opcua_gds.push.target.client_validation import ClientCertificateCheck
from opcua_gds.push.target.context import PushContext
from opcua_gds.push.target.state import EccIdentity, Identity, PushState
from trustlists.blocking import run_blocking

log = logging.getLogger(__name__)
_S = ua.StatusCodes
_M = ServerConfigurationMethods
MIN_NONCE = 32
_GROUPS = {ns0_node_id(ServerConfigurationIds.DefaultApplicationGroup)}
# The types that name the RSA certificate of the SecureChannels (RsaMin and the abstract base included).
_RSA_TYPES = {CertificateTypes.RsaSha256ApplicationCertificateType, CertificateTypes.RsaMinApplicationCertificateType,
              CertificateTypes.ApplicationCertificateType}
RSA = CertificateTypes.RsaSha256ApplicationCertificateType  # the slot of the channels' certificate


def _certificate_type(cert: x509.Certificate) -> int:
    """The concrete CertificateTypeId of an application certificate (OPC 10000-12 7.8.4)."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": CertificateTypes.EccNistP256ApplicationCertificateType,
                "secp384r1": CertificateTypes.EccNistP384ApplicationCertificateType}.get(
            key.curve.name, CertificateTypes.EccApplicationCertificateType)
    return CertificateTypes.RsaSha256ApplicationCertificateType


def _slot(group: ua.NodeId | None, cert_type: ua.NodeId | None, supported: Sequence[int]) -> int | None:
    """The certificate slot (RSA, or an ECC CertificateTypeId) a call names; None for a null type."""
    if group is not None and not group.is_null() and group not in _GROUPS:
        raise MethodError(_S.BadInvalidArgument, f"CertificateGroupId {group} is not a group of this server")
    if cert_type is None or cert_type.is_null():
        return None
    identifier = cert_type.Identifier if cert_type.NamespaceIndex == 0 else None
    if identifier in _RSA_TYPES:
        return RSA
    if isinstance(identifier, int) and identifier in ECC_TYPE_CURVES and identifier in supported:
        return identifier
    raise MethodError(_S.BadInvalidArgument, f"CertificateTypeId {cert_type} is not supported")


def _key_slot(cert: x509.Certificate) -> int | None:
    """The slot a certificate's own key belongs to: RSA, an ECC type, or None (a key no slot takes)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return RSA
    return ecc_type_of(key)


class ServerConfigurationMethodsImpl:
    def __init__(self, ctx: PushContext, check: ClientCertificateCheck) -> None:
        self.ctx = ctx
        self.check = check

    async def create_signing_request(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        group, cert_type, subject_text, regenerate, nonce = checked_args(_M.CreateSigningRequest, args)
        self.ctx.authorize()
        slot = _slot(group, cert_type, self.ctx.certificate_types) or RSA
        state = self.ctx.state
        current = state.active_identity.certificate  # subject and SAN of the application, whatever the type
        try:
            subject = x509.Name.from_rfc4514_string(subject_text) if subject_text else current.subject
        except ValueError as exc:
            raise MethodError(_S.BadInvalidArgument, f"SubjectName {subject_text!r}: {exc}") from exc
        key: AnyKey
        if regenerate:
            if not self.ctx.can_generate_keys:
                # A device without a key generator: the client must send a key with UpdateCertificate instead.
                raise MethodError(_S.BadNotSupported, "this server cannot generate private keys")
            if nonce is None or len(nonce) < MIN_NONCE:
                raise MethodError(_S.BadInvalidArgument, f"RegeneratePrivateKey needs a Nonce of {MIN_NONCE}+ bytes")
            if slot == RSA:
                bits = getattr(state.active_identity.key, "key_size", 2048)
                state.pending_key = key = await run_blocking(new_key, max(2048, bits))
            else:
                state.pending_ecc_keys[slot] = key = await run_blocking(new_ecc_key, ECC_TYPE_CURVES[slot])
        elif slot == RSA:
            key = state.active_identity.key
        else:
            active = state.active_ecc.get(slot)
            if active is None:
                raise MethodError(_S.BadInvalidArgument,
                                  f"no certificate of type {cert_type} yet: RegeneratePrivateKey must be true")
            key = active.key
        csr = await run_blocking(build_csr, key, subject, subject_alt_names(current))
        return [ua.Variant(csr, ua.VariantType.ByteString)]

    async def update_certificate(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        group, cert_type, cert_der, issuers, key_format, key_data = checked_args(_M.UpdateCertificate, args)
        call = self.ctx.authorize()
        named = _slot(group, cert_type, self.ctx.certificate_types)
        cert = parse_certificate(cert_der or b"")
        if cert is None:
            raise MethodError(_S.BadCertificateInvalid, "Certificate is not a DER certificate")
        slot = _key_slot(cert)
        if slot is None or (slot != RSA and slot not in self.ctx.certificate_types):
            raise MethodError(_S.BadCertificateInvalid, "the certificate's key fits no certificate type of this server")
        if named is not None and named != slot:
            raise MethodError(_S.BadCertificateInvalid,
                              f"the certificate's key does not fit CertificateTypeId {cert_type}")
        state = self.ctx.state
        key: AnyKey | None
        if key_data:
            try:
                key = await run_blocking(load_pushed_key, key_format or "", key_data)
            except CertError as exc:
                raise MethodError(exc.code, str(exc)) from exc
            if not key_matches(cert, key):
                raise MethodError(_S.BadSecurityChecksFailed, "the private key does not belong to the certificate")
        else:
            key = next((k for k in _held_keys(state, slot) if key_matches(cert, k)), None)
            if key is None:
                raise MethodError(_S.BadSecurityChecksFailed,
                                  "the certificate is neither for the new key nor for the current key")
        _check_issuers(state, cert, issuers or [])
        state.begin(call.session_id)
        if isinstance(key, PrivateKey):
            state.staged_identity = Identity(bytes(cert_der), key, tuple(bytes(d) for d in issuers or []))
        elif isinstance(key, EccKey):
            state.staged_ecc[slot] = EccIdentity(slot, bytes(cert_der), key)
        return [ua.Variant(True, ua.VariantType.Boolean)]

    async def apply_changes(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        checked_args(_M.ApplyChanges, args)
        call = self.ctx.authorize()
        state = self.ctx.state
        if self.ctx.open_for_writing():
            raise MethodError(_S.BadInvalidState, "a TrustList is open for writing")
        if not state.has_staged():
            raise MethodError(_S.BadNothingToDo, "nothing is staged")
        if state.transaction_session is not None and state.transaction_session != call.session_id:
            raise MethodError(_S.BadTransactionPending, "another session owns the staged changes")
        await run_blocking(state.save, *state.next_active())  # disk first: a failed write changes nothing
        applied = state.commit()
        server = self.ctx.server
        if applied.trust_changed:
            self.check.rebuild()
        if applied.identity_changed or applied.trust_changed:  # a new trust list can complete the chain, too
            await server_swap.use_identity(server, state.active_identity,
                                           await run_blocking(state.presented_issuers))
        old_der = applied.old_identity.cert_der
        new_der = state.active_identity.cert_der
        identity_changed = applied.identity_changed and old_der != new_der
        trust_changed = applied.trust_changed

        def refused(peer: Sequence[bytes]) -> bool:
            return trust_changed and bool(peer) and not self.check.accepts(peer)

        def affected(host: bytes | None, peer: Sequence[bytes]) -> bool:
            return (identity_changed and host == old_der) or refused(peer)

        def old_certificate_only(host: bytes | None, peer: Sequence[bytes]) -> bool:
            # An event client on a channel of the old certificate first gets the audit events raised below; a
            # client the new trust list refuses does not wait for anything.
            return identity_changed and host == old_der and not refused(peer)

        if identity_changed or trust_changed or applied.ecc_changed:
            await self._audit_applied(call, identity_changed, trust_changed, args, ecc_types=applied.ecc_changed)
        if identity_changed or trust_changed:
            server_swap.schedule_close(server, affected, flush=old_certificate_only)
        # ECC certificates are stored and reported; no channel uses them (asyncua has no ECC policies).
        log.info("ApplyChanges: certificate %s, trust list %s, ECC certificates %s",
                 "changed" if identity_changed else "kept", "changed" if trust_changed else "kept",
                 "changed" if applied.ecc_changed else "kept")
        return []

    async def _audit_applied(self, call: CallContext, certificate: bool, trust_list: bool,
                             args: tuple[ua.Variant, ...], *, ecc_types: Sequence[int] = ()) -> None:
        """CertificateUpdatedAuditEventType (one per certificate type that changed) / TrustListUpdatedAuditEventType:
        what ApplyChanges just changed."""
        audit = self.ctx.audit
        if audit is None:
            return
        applied = MethodCall(ns0_node_id(ServerConfigurationIds.ServerConfiguration), _M.ApplyChanges.node_id(), args)
        state = self.ctx.state
        updated = ([state.active_identity.certificate] if certificate else []) + [
            state.active_ecc[t].certificate for t in ecc_types if t in state.active_ecc]
        for cert in updated:
            await audit.raise_event(
                ns0_node_id(Ns0EventTypes.CertificateUpdatedAuditEventType), applied, call,
                message=f"ApplyChanges: new application certificate {cert.subject.rfc4514_string()}",
                fields={"CertificateGroup": (ns0_node_id(ServerConfigurationIds.DefaultApplicationGroup),
                                             ua.VariantType.NodeId),
                        "CertificateType": (ns0_node_id(_certificate_type(cert)), ua.VariantType.NodeId)})
        if trust_list:
            await audit.raise_event(
                ns0_node_id(Ns0EventTypes.TrustListUpdatedAuditEventType), applied, call,
                message="ApplyChanges: new trust list of DefaultApplicationGroup",
                fields={"TrustListId": (ns0_node_id(ServerConfigurationIds.DefaultApplicationGroup_TrustList),
                                        ua.VariantType.NodeId)})

    async def cancel_changes(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        checked_args(_M.CancelChanges, args)
        self.ctx.authorize()
        self.ctx.state.cancel()
        for handle in [h for h, f in self.ctx.handles.items() if f.writing]:
            del self.ctx.handles[handle]
        return []

    async def get_rejected_list(self, parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        checked_args(_M.GetRejectedList, args)
        self.ctx.authorize()
        return [ua.Variant(list(self.ctx.state.rejected), ua.VariantType.ByteString)]


def _held_keys(state: PushState, slot: int) -> list[AnyKey]:
    """The keys a certificate of `slot` may be for without a pushed key: the CSR's new key, then the active one."""
    if slot == RSA:
        return [k for k in (state.pending_key, state.active_identity.key) if k is not None]
    active = state.active_ecc.get(slot)
    return [k for k in (state.pending_ecc_keys.get(slot), active.key if active else None) if k is not None]


def _check_issuers(state: PushState, cert: x509.Certificate, issuers: Sequence[bytes]) -> None:
    """Every IssuerCertificate must already be in the trust list, and the certificate's issuer must be known."""
    known = state.known_ca_certificates()
    issuer_certs = []
    for der in issuers:
        if der not in known:
            raise MethodError(_S.BadCertificateChainIncomplete, "an issuer certificate is not in the trust list")
        parsed = parse_certificate(der)
        if parsed is None:
            raise MethodError(_S.BadCertificateInvalid, "an issuer certificate is not DER")
        issuer_certs.append(parsed)
    if not is_self_signed(cert):
        pool = issuer_certs + [c for der in known if (c := parse_certificate(der)) is not None]
        if not any(issued_by(cert, ca) for ca in pool):
            raise MethodError(_S.BadCertificateChainIncomplete, "the issuer of the certificate is not known")
