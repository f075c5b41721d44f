"""Push certificate management client (OPC 10000-12 ServerConfiguration, ns0) over an asyncua session.

``PushClient`` wraps one connected asyncua ``Client`` (SignAndEncrypt, a SecurityAdmin user) and calls the
ServerConfiguration methods and the DefaultApplicationGroup TrustList file methods. ``push_certificate``
drives a whole renewal against one server endpoint:

connect -> read capabilities and the current certificate -> write the trust list (optional) ->
CreateSigningRequest(regenerate key) -> ``issue(csr)`` -> UpdateCertificate -> ApplyChanges ->
disconnect -> reconnect (retrying while the server renegotiates its channels) -> check that the endpoint
presents the new certificate and that a written trust list reads back as written.

Every failure is a ``PushError`` naming the step and the OPC UA status code name. A trust list that the
server accepts but does not apply (some servers answer Good to Write/CloseAndUpdate and change nothing)
is not an error: it is reported as ``trust_list_applied=False`` in the ``PushResult``.

Every session takes a ``ServerCheck``: the server certificate the endpoint presents is checked before the
SecurityAdmin password (or anything else) goes out; a refusal is a ``PushError`` of step ``server_identity``.
The first connection of a push uses the caller's check (for a delivery target: ``server_identity``), the
reconnects after ApplyChanges accept exactly the certificate accepted then or the one just installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.common.methods import call_method_full
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from pydantic import BaseModel, Field

from opcua_gds.certificate_chain import first_certificate
from opcua_gds.client_session import ClientIdentity, ServerCheck, admin_client, secure
from opcua_gds.file_client import read_to_end
from opcua_gds.nodeids import (
    CertificateGroups,
    CertificateTypes,
    ServerConfigurationIds,
    ServerConfigurationMethods,
    ns0_node_id,
)
from opcua_gds.trustlist_binary import decode_trustlist, encode_trustlist
from trustlists.blocking import run_blocking
from trustlists.keys.algorithms import fits_pkcs12
from trustlists.models import TrustListContent

READ_CHUNK = 64 * 1024
WRITE_CHUNK = 32 * 1024
NONCE_BYTES = 32

OPEN_READ = 0x01
OPEN_WRITE_ERASE = 0x06  # Write | EraseExisting: the only write mode TrustList accepts

_GROUP = CertificateGroups.PushDefaultApplicationGroup
_RSA_SHA256 = CertificateTypes.RsaSha256ApplicationCertificateType

IssueFunction = Callable[[bytes], Awaitable[tuple[bytes, list[bytes]]]]  # CSR -> (certificate, issuers)
# For servers that cannot make keys: () -> (certificate, issuers, PKCS#8 PEM private key), made by the engine.
IssueWithKeyFunction = Callable[[], Awaitable[tuple[bytes, list[bytes], bytes]]]

# What a server answers when ServerConfiguration exists in its address space but nothing implements it
# (asyncua answers BadNothingToDo for unbound methods), or when it does not have the node at all.
_NOT_IMPLEMENTED = {ua.StatusCodes.BadNothingToDo, ua.StatusCodes.BadMethodInvalid, ua.StatusCodes.BadNodeIdUnknown,
                    ua.StatusCodes.BadNotImplemented, ua.StatusCodes.BadServiceUnsupported}


def status_name(code: int) -> str:
    name, doc = ua.status_codes.get_name_and_doc(code)
    if doc.startswith("Unknown StatusCode"):
        return f"0x{code:08X}"
    return str(name)


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER, lowercase hex (the engine inventory's fingerprint_sha256)."""
    return hashlib.sha256(der).hexdigest()


class PushError(Exception):
    """A push step failed; ``status`` is the OPC UA status code name (or a local reason)."""

    def __init__(self, step: str, status: str, detail: str = "", code: int | None = None) -> None:
        self.step = step
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(f"{step}: {status}" + (f" ({detail})" if detail else ""))


class PushCapabilities(BaseModel):
    supported_private_key_formats: list[str] = Field(default_factory=list)
    max_trust_list_size: int | None = None
    server_capabilities: list[str] = Field(default_factory=list)
    application_uri: str | None = None
    server_certificate_der: bytes = b""
    # The DefaultApplicationGroup's CertificateTypes (ns0 CertificateTypeIds): the types the server takes.
    certificate_types: list[int] = Field(default_factory=list)

    @property
    def server_certificate_fingerprint(self) -> str:
        return fingerprint(self.server_certificate_der)


class StepOutcome(BaseModel):
    step: str
    status: str = "Good"
    detail: str = ""


# Told each step of a push as it completes (and "connecting" before the first connection), for live progress; the
# steps are the same StepOutcome the PushResult lists. It runs on the event loop: it must not block.
StepSink = Callable[[StepOutcome], None]


class _Steps(list[StepOutcome]):
    """The push's step list, telling `sink` of each step as it is appended."""

    def __init__(self, sink: StepSink | None) -> None:
        super().__init__()
        self._sink = sink

    def append(self, step: StepOutcome) -> None:
        super().append(step)
        self.tell(step)

    def tell(self, step: StepOutcome) -> None:
        """Report a stage that is not a step of the result (connecting): the sink hears it, the list keeps none."""
        if self._sink is not None:
            self._sink(step)


class PushResult(BaseModel):
    endpoint: str
    application_uri: str | None
    old_fingerprint: str
    new_fingerprint: str  # what the endpoint presents after the reconnect
    issued_fingerprint: str  # what issue() returned and UpdateCertificate installed
    certificate_presented: bool  # new_fingerprint == issued_fingerprint
    trust_list_written: bool
    trust_list_applied: bool | None = None  # None: no trust list given; False: the server did not apply it
    steps: list[StepOutcome] = Field(default_factory=list)

    @property
    def not_applied_detail(self) -> str:
        """What the read-back of a trust list the server did not apply showed ("" when it was applied)."""
        return next((s.detail for s in self.steps if s.step == "verify_trust_list" and s.status == "NotApplied"), "")


SERVER_IDENTITY = "server_identity"  # the step of a refused server certificate


def expect_certificate(*fingerprints: str) -> ServerCheck:
    """A check that accepts exactly these certificates (SHA-256 of the DER, hex): a pin, or a reconnect that
    must find the server it just talked to."""
    wanted = frozenset(f.lower() for f in fingerprints if f)

    async def check(chain: list[bytes]) -> None:
        presented = fingerprint(chain[0]) if chain else ""
        if presented not in wanted:
            raise PushError(SERVER_IDENTITY, "BadCertificateUntrusted",
                            f"the endpoint presents certificate SHA-256 {presented or '(none)'}, "
                            f"expected {' or '.join(sorted(wanted)) or 'none'}")

    return check


def _code_of(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return int(code) if isinstance(code, int) else None


def _wrap(step: str, exc: BaseException) -> PushError:
    if isinstance(exc, PushError):
        return exc
    code = _code_of(exc)
    if code is not None:
        # The notes carry what the server said besides the code (its reason for refusing a SecureChannel).
        return PushError(step, status_name(code), " ".join([str(exc), *getattr(exc, "__notes__", [])]), code)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return PushError(step, "Timeout", str(exc))
    return PushError(step, type(exc).__name__, str(exc))


class PushClient:
    """Push management calls over one connected asyncua session."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _config(self) -> Node:
        return self._client.get_node(ns0_node_id(ServerConfigurationIds.ServerConfiguration))

    @property
    def _trust_list(self) -> Node:
        return self._client.get_node(_GROUP.trust_list_node_id())

    async def _call(self, step: str, obj: Any, method_id: ua.NodeId, *args: ua.Variant) -> list[Any]:
        try:
            result = await call_method_full(obj, method_id, *args)
            result.StatusCode.check()
        except Exception as exc:
            error = _wrap(step, exc)
            if error.code in _NOT_IMPLEMENTED and step != "apply_changes":
                error.detail = "the server does not implement push certificate management (OPC 10000-12 7.10)"
                error.args = (f"{error.step}: {error.status} ({error.detail})",)
            raise error from exc
        return list(result.OutputArguments or [])

    async def _read(self, identifier: int) -> Any:
        try:
            return await self._client.get_node(ns0_node_id(identifier)).read_value()
        except ua.UaStatusCodeError as exc:
            if exc.code in (ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadAttributeIdInvalid):
                return None
            raise _wrap("read_capabilities", exc) from exc

    # -- capabilities ---------------------------------------------------------------------------
    async def server_certificate(self) -> tuple[bytes, str | None]:
        """The certificate the endpoint of this session presents, and the server's ApplicationUri."""
        try:
            endpoints = await self._client.get_endpoints()
        except Exception as exc:
            raise _wrap("get_endpoints", exc) from exc
        url = self._client.server_url.geturl()
        policy = SecurityPolicyBasic256Sha256.URI
        chosen = next((e for e in endpoints if e.SecurityPolicyUri == policy and e.EndpointUrl == url), None) \
            or next((e for e in endpoints if e.SecurityPolicyUri == policy), None) or endpoints[0]
        return first_certificate(chosen.ServerCertificate or b""), chosen.Server.ApplicationUri

    async def read_capabilities(self) -> PushCapabilities:
        formats = await self._read(ServerConfigurationIds.SupportedPrivateKeyFormats)
        max_size = await self._read(ServerConfigurationIds.MaxTrustListSize)
        caps = await self._read(ServerConfigurationIds.ServerCapabilities)
        types = await self._read(ServerConfigurationIds.DefaultApplicationGroup_CertificateTypes)
        cert, uri = await self.server_certificate()
        return PushCapabilities(supported_private_key_formats=list(formats or []),
                                max_trust_list_size=None if max_size is None else int(max_size),
                                server_capabilities=list(caps or []), application_uri=uri,
                                server_certificate_der=cert,
                                certificate_types=[int(t.Identifier) for t in types or []
                                                   if isinstance(t, ua.NodeId) and t.NamespaceIndex == 0
                                                   and isinstance(t.Identifier, int)])

    # -- trust list -------------------------------------------------------------------------------
    async def read_trust_list(self) -> TrustListContent:
        node = self._trust_list
        (handle,) = await self._call("trust_list_open", node, _GROUP.method("Open").node_id(),
                                     ua.Variant(OPEN_READ, ua.VariantType.Byte))

        async def read() -> bytes:
            (chunk,) = await self._call("trust_list_read", node, _GROUP.method("Read").node_id(),
                                        ua.Variant(handle, ua.VariantType.UInt32),
                                        ua.Variant(READ_CHUNK, ua.VariantType.Int32))
            return chunk

        data = await read_to_end(read, lambda: self._call("trust_list_close", node, _GROUP.method("Close").node_id(),
                                                          ua.Variant(handle, ua.VariantType.UInt32)))
        try:
            return decode_trustlist(data)
        except Exception as exc:
            raise PushError("trust_list_read", "BadDecodingError", str(exc)) from exc

    async def write_trust_list(self, content: TrustListContent, max_size: int | None = None) -> bool:
        """Open(Write|EraseExisting), Write in chunks, CloseAndUpdate; returns ApplyChangesRequired.

        A trust list larger than the server's MaxTrustListSize is refused here, before anything is opened,
        so the server never holds half of it.
        """
        data = encode_trustlist(content)
        if max_size and len(data) > max_size:
            raise PushError("write_trust_list", "BadEncodingLimitsExceeded",
                            f"the trust list is {len(data)} bytes; the server accepts at most {max_size}")
        node = self._trust_list
        (handle,) = await self._call("trust_list_open", node, _GROUP.method("Open").node_id(),
                                     ua.Variant(OPEN_WRITE_ERASE, ua.VariantType.Byte))
        try:
            for start in range(0, len(data), WRITE_CHUNK):
                await self._call("trust_list_write", node, _GROUP.method("Write").node_id(),
                                 ua.Variant(handle, ua.VariantType.UInt32),
                                 ua.Variant(data[start: start + WRITE_CHUNK], ua.VariantType.ByteString))
        except PushError:
            # Close discards the written data (spec 7.8.2.1); the original failure is what matters.
            with contextlib.suppress(PushError):
                await self._call("trust_list_close", node, _GROUP.method("Close").node_id(),
                                 ua.Variant(handle, ua.VariantType.UInt32))
            raise
        outputs = await self._call("trust_list_close_and_update", node, _GROUP.method("CloseAndUpdate").node_id(),
                                   ua.Variant(handle, ua.VariantType.UInt32))
        return bool(outputs[0]) if outputs else False

    # -- certificate ------------------------------------------------------------------------------
    async def create_signing_request(self, regenerate_key: bool, *, subject_name: str = "",
                                     certificate_type: CertificateTypes = _RSA_SHA256) -> bytes:
        nonce = os.urandom(NONCE_BYTES) if regenerate_key else b""
        (csr,) = await self._call(
            "create_signing_request", self._config, ServerConfigurationMethods.CreateSigningRequest.node_id(),
            ua.Variant(_GROUP.group_node_id(), ua.VariantType.NodeId),
            ua.Variant(ns0_node_id(certificate_type), ua.VariantType.NodeId),
            ua.Variant(subject_name, ua.VariantType.String),
            ua.Variant(regenerate_key, ua.VariantType.Boolean),
            ua.Variant(nonce, ua.VariantType.ByteString))
        return bytes(csr)

    async def update_certificate(self, cert_der: bytes, issuer_ders: list[bytes], private_key_format: str | None = None,
                                 private_key: bytes | None = None, *,
                                 certificate_type: CertificateTypes = _RSA_SHA256) -> bool:
        """UpdateCertificate on the DefaultApplicationGroup; returns ApplyChangesRequired."""
        outputs = await self._call(
            "update_certificate", self._config, ServerConfigurationMethods.UpdateCertificate.node_id(),
            ua.Variant(_GROUP.group_node_id(), ua.VariantType.NodeId),
            ua.Variant(ns0_node_id(certificate_type), ua.VariantType.NodeId),
            ua.Variant(cert_der, ua.VariantType.ByteString),
            ua.Variant(list(issuer_ders), ua.VariantType.ByteString),
            ua.Variant(private_key_format or "", ua.VariantType.String),
            ua.Variant(private_key, ua.VariantType.ByteString))
        return bool(outputs[0]) if outputs else False

    async def apply_changes(self) -> None:
        await self._call("apply_changes", self._config, ServerConfigurationMethods.ApplyChanges.node_id())

    async def get_rejected_list(self) -> list[bytes]:
        outputs = await self._call("get_rejected_list", self._config,
                                   ServerConfigurationMethods.GetRejectedList.node_id())
        return [bytes(c) for c in (outputs[0] or [])] if outputs else []


# -- sessions -----------------------------------------------------------------------------------------
async def connect_push_session(endpoint: str, *, client_cert_path: str | Path, client_key_path: str | Path,
                               client_app_uri: str, username: str | None, password: str | None,
                               server_check: ServerCheck,
                               mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
                               timeout_s: float = 10.0) -> Client:
    """A connected asyncua Client: Basic256Sha256, the given mode, the client's own certificate and user.

    `server_check` sees the server's certificate before the secure channel is opened; when it refuses, the
    client disconnects and nothing (no user name, no password) has been sent.
    """
    client = admin_client(endpoint, timeout_s=timeout_s)
    client.application_uri = client_app_uri
    try:
        # Parsing is cached, but the first parse of an RSA key costs ~30 ms: not on the event loop.
        identity = await run_blocking(ClientIdentity.load, Path(client_cert_path), Path(client_key_path))
        await secure(client, identity, mode=mode, check=server_check)
        if username is not None:
            client.set_user(username)
            client.set_password(password or "")
        await client.connect()
    except Exception as exc:
        await _quiet_disconnect(client)
        raise _wrap("connect", exc) from exc
    return client


async def _quiet_disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 5)


def _same_lists(written: TrustListContent, read: TrustListContent) -> bool:
    for field, bit in (("trusted_certificates", 1), ("trusted_crls", 2), ("issuer_certificates", 4),
                       ("issuer_crls", 8)):
        if written.specified_lists & bit and sorted(getattr(written, field)) != sorted(getattr(read, field)):
            return False
    return True


@dataclass
class _Session:
    endpoint: str
    client_cert_path: Path
    client_key_path: Path
    client_app_uri: str
    username: str
    password: str
    server_check: ServerCheck
    on_step: StepSink | None = None
    accepted: str = ""  # fingerprint of the server certificate the first connection accepted

    async def open(self) -> tuple[Client, _Steps]:
        """The first connection of a push (the caller's server check), and the step list that records it."""
        presented: list[str] = []
        steps = _Steps(self.on_step)
        steps.tell(StepOutcome(step="connecting", status="Pending", detail=self.endpoint))

        async def check(chain: list[bytes]) -> None:
            await self.server_check(chain)
            presented.append(fingerprint(chain[0]))

        client = await self.connect(check)
        self.accepted = presented[-1]
        steps.append(StepOutcome(step="connect", detail=f"server certificate {self.accepted}"))
        return client, steps

    async def connect(self, check: ServerCheck) -> Client:
        return await connect_push_session(self.endpoint, client_cert_path=self.client_cert_path,
                                          client_key_path=self.client_key_path, client_app_uri=self.client_app_uri,
                                          username=self.username, password=self.password, server_check=check)


class _Observed(BaseModel):
    certificate_der: bytes = b""
    trust_list: TrustListContent | None = None


async def _observe(session: _Session, *, want_certificate: str | None, trust_list: TrustListContent | None,
                   attempts: int, delay_s: float, installed: str | None = None) -> tuple[_Observed, PushError | None]:
    """Reconnect (the server renegotiates its channels after ApplyChanges) and read what it now has.

    Only the certificate accepted at the first connection or the one just installed (`installed`) is
    accepted; any other server is refused before the password goes out, and not retried. Retries until the
    endpoint presents `want_certificate` (when given) or the attempts run out; returns what was seen last and
    the last error.
    """
    seen = _Observed()
    last_error: PushError | None = None
    check = expect_certificate(session.accepted, *([installed] if installed else []))
    for _ in range(attempts):
        await asyncio.sleep(delay_s)
        try:
            client = await session.connect(check)
        except PushError as exc:
            if exc.step == SERVER_IDENTITY:
                return seen, exc
            last_error = exc
            continue
        try:
            push = PushClient(client)
            presented, _uri = await push.server_certificate()
            seen = _Observed(certificate_der=presented)
            if want_certificate is not None and fingerprint(presented) != want_certificate:
                last_error = PushError("verify_certificate", "BadCertificateInvalid",
                                       f"endpoint still presents {fingerprint(presented)}")
                continue
            if trust_list is not None:
                seen.trust_list = await push.read_trust_list()
            return seen, None
        except PushError as exc:
            last_error = exc
        finally:
            await _quiet_disconnect(client)
    return seen, last_error or PushError("reconnect", "BadTimeout", "no attempt made")


def _key_for_formats(key_pem: bytes, formats: list[str]) -> tuple[str, bytes]:
    """The PrivateKey argument of UpdateCertificate in a format the server accepts ("PEM" preferred)."""
    if not formats or "PEM" in formats:
        return "PEM", key_pem
    if "PFX" in formats:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs12

        key = serialization.load_pem_private_key(key_pem, None)
        if not fits_pkcs12(key):
            raise PushError("update_certificate", "BadNotSupported",
                            f"the server takes keys only as PFX, which cannot carry a {type(key).__name__}")
        # The SignAndEncrypt channel is what protects it; UpdateCertificate has no password argument.
        return "PFX", pkcs12.serialize_key_and_certificates(None, key, None, None, serialization.NoEncryption())
    raise PushError("update_certificate", "BadNotSupported",
                    f"the server cannot make keys and accepts no key format otpki can send ({formats})")


async def push_certificate(endpoint: str, *, client_cert_path: str | Path, client_key_path: str | Path,
                           client_app_uri: str, username: str, password: str, server_check: ServerCheck,
                           issue: IssueFunction, issue_with_key: IssueWithKeyFunction | None = None,
                           trust_list: TrustListContent | None = None, reconnect_attempts: int = 15,
                           reconnect_delay_s: float = 1.0, on_step: StepSink | None = None) -> PushResult:
    """Renew one server's application certificate by push; see the module docstring for the steps.

    A server that cannot make keys (CreateSigningRequest answers Bad_NotSupported) gets a key pair made by
    the engine (`issue_with_key`) in UpdateCertificate. When the connection breaks after the certificate
    was sent, a reconnect decides: the server either presents the new certificate (the push succeeded) or
    still the old one (it discarded the staged change with the session), and the error says which.
    """
    session = _Session(endpoint=endpoint, client_cert_path=Path(client_cert_path),
                       client_key_path=Path(client_key_path), client_app_uri=client_app_uri, username=username,
                       password=password, server_check=server_check, on_step=on_step)
    client, steps = await session.open()
    trust_list_written = False
    cert_der = b""
    try:
        push = PushClient(client)
        caps = await push.read_capabilities()
        steps.append(StepOutcome(step="read_capabilities",
                                 detail=f"key formats {caps.supported_private_key_formats}, "
                                        f"max trust list {caps.max_trust_list_size}"))
        if trust_list is not None:
            apply_required = await push.write_trust_list(trust_list, caps.max_trust_list_size)
            trust_list_written = True
            steps.append(StepOutcome(step="write_trust_list", detail=f"ApplyChangesRequired={apply_required}"))
        key_argument: tuple[str, bytes] | None = None
        try:
            csr = await push.create_signing_request(regenerate_key=True)
        except PushError as exc:
            if exc.code != ua.StatusCodes.BadNotSupported or issue_with_key is None:
                raise
            steps.append(StepOutcome(step="create_signing_request", status=exc.status,
                                     detail="the server cannot make keys: the engine makes the key pair"))
            try:
                cert_der, issuer_ders, key_pem = await issue_with_key()
            except Exception as err:
                raise PushError("issue", type(err).__name__, str(err)) from err
            key_argument = _key_for_formats(key_pem, caps.supported_private_key_formats)
        else:
            steps.append(StepOutcome(step="create_signing_request", detail=f"{len(csr)} bytes"))
            try:
                cert_der, issuer_ders = await issue(csr)
            except Exception as err:
                raise PushError("issue", type(err).__name__, str(err)) from err
        steps.append(StepOutcome(step="issue", detail=fingerprint(cert_der)))
        apply_required = await push.update_certificate(cert_der, issuer_ders, *(key_argument or (None, None)))
        steps.append(StepOutcome(step="update_certificate", detail=f"ApplyChangesRequired={apply_required}"))
        # ApplyChanges also commits a trust list written above, so call it whenever anything was sent.
        await push.apply_changes()
        steps.append(StepOutcome(step="apply_changes"))
    except PushError as exc:
        if not cert_der or exc.step not in ("update_certificate", "apply_changes"):
            raise
        # The certificate went out and the conversation broke: find out which state the server kept.
        seen, observe_error = await _observe(session, want_certificate=None, trust_list=None,
                                             attempts=reconnect_attempts, delay_s=reconnect_delay_s,
                                             installed=fingerprint(cert_der))
        if observe_error is not None and observe_error.step == SERVER_IDENTITY:
            raise PushError(exc.step, exc.status, f"{exc.detail}; after reconnecting, another server answers at "
                            f"the endpoint ({observe_error.detail})", exc.code) from exc
        if fingerprint(seen.certificate_der) != fingerprint(cert_der):
            kept = "its previous certificate" if seen.certificate_der else "an unknown state (unreachable)"
            raise PushError(exc.step, exc.status, f"{exc.detail}; after reconnecting, the server presents {kept}",
                            exc.code) from exc
        steps.append(StepOutcome(step=exc.step, status=exc.status,
                                 detail="the connection broke, but the server applied the change"))
    finally:
        await _quiet_disconnect(client)

    issued_fp = fingerprint(cert_der)
    seen, error = await _observe(session, want_certificate=issued_fp, trust_list=trust_list,
                                 attempts=reconnect_attempts, delay_s=reconnect_delay_s, installed=issued_fp)
    if error is not None:
        raise error
    trust_list_applied = None if trust_list is None or seen.trust_list is None else _same_lists(trust_list,
                                                                                                 seen.trust_list)
    steps.append(StepOutcome(step="reconnect"))
    steps.append(StepOutcome(step="verify_certificate", detail=issued_fp))
    _note_trust_list(steps, trust_list, trust_list_applied, seen.trust_list)
    return PushResult(endpoint=endpoint, application_uri=caps.application_uri, old_fingerprint=session.accepted,
                      new_fingerprint=fingerprint(seen.certificate_der), issued_fingerprint=issued_fp,
                      certificate_presented=fingerprint(seen.certificate_der) == issued_fp,
                      trust_list_written=trust_list_written, trust_list_applied=trust_list_applied, steps=steps)


def _note_trust_list(steps: _Steps, trust_list: TrustListContent | None, applied: bool | None,
                     read: TrustListContent | None) -> None:
    if trust_list is not None:
        steps.append(StepOutcome(step="verify_trust_list", status="Good" if applied else "NotApplied",
                                 detail="" if applied else not_applied_detail(trust_list, read)))


def not_applied_detail(written: TrustListContent, read: TrustListContent | None) -> str:
    """What a server that accepted a trust list and did not apply it reads back, list by list."""
    if read is None:
        return "the server accepted the trust list, but it could not be read back"
    differences = []
    for field, bit, label in (("trusted_certificates", 1, "trusted certificates"), ("trusted_crls", 2, "trusted CRLs"),
                              ("issuer_certificates", 4, "issuer certificates"), ("issuer_crls", 8, "issuer CRLs")):
        sent, got = getattr(written, field), getattr(read, field)
        if written.specified_lists & bit and sorted(sent) != sorted(got):
            differences.append(f"{len(got)} {label} where {len(sent)} were written" if len(got) != len(sent)
                               else f"other {label} than were written")
    return "the server answered Good but reads back " + ", ".join(differences)


async def push_trust_list(endpoint: str, *, client_cert_path: str | Path, client_key_path: str | Path,
                          client_app_uri: str, username: str, password: str, server_check: ServerCheck,
                          trust_list: TrustListContent, reconnect_attempts: int = 15,
                          reconnect_delay_s: float = 1.0, on_step: StepSink | None = None) -> PushResult:
    """Only the trust list (after a revocation or a CA change): write, ApplyChanges (when the server asks for it),
    read it back."""
    session = _Session(endpoint=endpoint, client_cert_path=Path(client_cert_path),
                       client_key_path=Path(client_key_path), client_app_uri=client_app_uri, username=username,
                       password=password, server_check=server_check, on_step=on_step)
    client, steps = await session.open()
    try:
        push = PushClient(client)
        caps = await push.read_capabilities()
        steps.append(StepOutcome(step="read_capabilities"))
        apply_required = await push.write_trust_list(trust_list, caps.max_trust_list_size)
        steps.append(StepOutcome(step="write_trust_list", detail=f"ApplyChangesRequired={apply_required}"))
        # ApplyChangesRequired False (TrustListType CloseAndUpdate, OPC 10000-12): the server uses the new trust list
        # without ApplyChanges, and one with nothing staged may refuse it (Bad_NothingToDo).
        if apply_required:
            await push.apply_changes()
            steps.append(StepOutcome(step="apply_changes"))
    finally:
        await _quiet_disconnect(client)
    current = session.accepted
    seen, error = await _observe(session, want_certificate=None, trust_list=trust_list,
                                 attempts=reconnect_attempts, delay_s=reconnect_delay_s)
    if error is not None:
        raise error
    applied = None if seen.trust_list is None else _same_lists(trust_list, seen.trust_list)
    steps.append(StepOutcome(step="reconnect"))
    _note_trust_list(steps, trust_list, applied, seen.trust_list)
    return PushResult(endpoint=endpoint, application_uri=caps.application_uri, old_fingerprint=current,
                      new_fingerprint=fingerprint(seen.certificate_der), issued_fingerprint=current,
                      certificate_presented=fingerprint(seen.certificate_der) == current, trust_list_written=True,
                      trust_list_applied=applied, steps=steps)
