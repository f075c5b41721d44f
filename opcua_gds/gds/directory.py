"""The GDS Directory registration methods (OPC 10000-12 §6.5): Register/Update/Unregister/Find/Get/Query.

The directory *is* the engine registry: an application registered here is an engine Owner in the
engine group mapped to DefaultApplicationGroup, carrying every ApplicationRecordDataType field in
``Owner.attributes`` and the DiscoveryUrl hostnames as its dns_names / ip_addresses (so the certificates
the engine issues to it can carry them). The ApplicationId is the owner id as a GUID NodeId in the GDS
namespace. Unregistering revokes the application's live certificates and marks the owner unregistered, in one
engine transaction (`Engine.decommission`); the inventory keeps its history, and unregistered owners are
invisible to Find/Get/Query.

ApplicationType is what the application is: the type its ApplicationRecord gave, the one otpki gave its own
identities (the push client is a Client), and for a push target registered without a record (`otpki owners
add` + `otpki targets add`) a Server whose DiscoveryUrl is its push address. Register/Update/Unregister raise
ApplicationRegistrationChangedAuditEventType (`opcua_gds.audit_events`).

Access (decided per call, see ``opcua_gds.access``):

=====================  =================  ==================================================
Method                 Channel at least   Who
=====================  =================  ==================================================
RegisterApplication    SignAndEncrypt     DiscoveryAdmin
UpdateApplication      SignAndEncrypt     DiscoveryAdmin, or ApplicationSelfAdmin of that id
UnregisterApplication  SignAndEncrypt     DiscoveryAdmin, or ApplicationSelfAdmin of that id
FindApplications       Sign               authenticated user, or any ApplicationSelfAdmin
GetApplication         Sign               authenticated user, or ApplicationSelfAdmin of that id
QueryApplications      Sign               anyone (spec: "any Client is able to call")
QueryServers           Sign               anyone
=====================  =================  ==================================================

The ApplicationAdmin privilege (a configured set of applications another application may administer)
is not implemented.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from asyncua import ua

from opcua_gds.access import (
    GdsRole,
    MethodError,
    caller,
    has_any_role,
    is_authenticated,
    require_mode,
)
from opcua_gds.audit_events import MethodCall
from opcua_gds.call_context import CallContext
from opcua_gds.gds.application_record import (
    ApplicationRecord,
    decode_extension_object,
    register_application_record_class,
    ua_string,
)
from opcua_gds.gds.context import GdsContext
from opcua_gds.method_nodes import bind, checked_args
from opcua_gds.nodeids import DirectoryMethods, GdsEventTypes, GdsObjects, MethodSpec, gds_node_id
from trustlists.blocking import run_blocking
from trustlists.errors import NotFound
from trustlists.models import Owner, RevocationReason
from trustlists.names import UB_COMMON_NAME

log = logging.getLogger(__name__)

_SIGN = ua.MessageSecurityMode.Sign
_ENCRYPT = ua.MessageSecurityMode.SignAndEncrypt
_BAD_ARG = ua.StatusCodes.BadInvalidArgument
_SERVER_TYPES = (ua.ApplicationType.Server, ua.ApplicationType.ClientAndServer, ua.ApplicationType.DiscoveryServer)
_CLIENT_TYPES = (ua.ApplicationType.Client, ua.ApplicationType.ClientAndServer)
_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's minimum DateTime


# -- arguments ------------------------------------------------------------------------------------
def _record_arg(ctx: GdsContext, value: Any) -> tuple[ua.NodeId, ApplicationRecord]:
    """The ApplicationId NodeId and the parsed, validated record of an ApplicationRecordDataType argument."""
    try:
        record = ApplicationRecord.from_ua(value, ctx.gds_idx)
        if isinstance(value, ua.ExtensionObject):
            value = decode_extension_object(value, ctx.gds_idx)
        app_id = value.ApplicationId
    except (AttributeError, TypeError, ValueError) as exc:
        raise MethodError(_BAD_ARG, f"not an ApplicationRecordDataType: {exc}") from None
    _validate(record)
    return app_id, record


def _validate(record: ApplicationRecord) -> None:
    if not record.application_uri.strip():
        raise MethodError(_BAD_ARG, "ApplicationUri is empty")
    if len(record.application_uri) > 1000:
        raise MethodError(_BAD_ARG, "ApplicationUri is too long")
    if not record.application_names or not record.application_names[0].text.strip():
        raise MethodError(_BAD_ARG, "ApplicationNames is empty")
    if record.application_type not in tuple(ua.ApplicationType):
        raise MethodError(_BAD_ARG, f"ApplicationType {record.application_type} is not valid")
    if record.application_type != ua.ApplicationType.Client and not record.discovery_urls:
        raise MethodError(_BAD_ARG, "a Server needs at least one DiscoveryUrl")
    for url in record.discovery_urls:
        parsed = urlparse(url or "")
        if not parsed.scheme or not parsed.hostname:
            raise MethodError(_BAD_ARG, f"DiscoveryUrl {url!r} is not a URL with a host")


def _hosts(urls: list[str]) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses of the DiscoveryUrls, in order, without duplicates."""
    dns: list[str] = []
    ips: list[str] = []
    for url in urls:
        host = urlparse(url).hostname
        if not host:
            continue
        try:
            ip = str(ipaddress.ip_address(host))
            if ip not in ips:
                ips.append(ip)
        except ValueError:
            if host.lower() not in dns:
                dns.append(host.lower())
    return dns, ips


def _attributes(record: ApplicationRecord) -> dict[str, Any]:
    return {
        "application_type": int(record.application_type),
        "application_names": [n.model_dump() for n in record.application_names],
        "product_uri": record.product_uri,
        "discovery_urls": list(record.discovery_urls),
        "server_capabilities": list(record.server_capabilities),
    }


# -- owner <-> record -----------------------------------------------------------------------------
def _names(owner: Owner) -> list[ua.LocalizedText]:
    stored = owner.attributes.get("application_names") or [{"text": owner.name, "locale": ""}]
    return [ua.LocalizedText(n.get("text") or "", n.get("locale") or None) for n in stored]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _type(owner: Owner) -> ua.ApplicationType:
    try:
        return ua.ApplicationType(int(owner.attributes.get("application_type", ua.ApplicationType.Client)))
    except (TypeError, ValueError):
        return ua.ApplicationType.Client


def _to_record(ctx: GdsContext, owner: Owner) -> Any:
    cls = register_application_record_class(ctx.gds_idx)
    return cls(
        ApplicationId=ctx.application_id(owner.id),
        ApplicationUri=ua_string(owner.application_uri),
        ApplicationType=_type(owner),
        ApplicationNames=_names(owner),
        ProductUri=ua_string(_text(owner.attributes.get("product_uri"))),
        DiscoveryUrls=list(owner.attributes.get("discovery_urls") or []),
        ServerCapabilities=list(owner.attributes.get("server_capabilities") or []),
    )


def _has_guid_id(owner: Owner) -> bool:
    try:
        uuid.UUID(owner.id)
    except ValueError:
        return False
    return True


# -- who is calling -------------------------------------------------------------------------------
class _Caller:
    """The caller's roles and ApplicationSelfAdmin identity. Reads the engine: build it with run_blocking."""

    def __init__(self, ctx: GdsContext, call: CallContext) -> None:
        self.call = call
        self.discovery_admin = has_any_role(call, {GdsRole.DISCOVERY_ADMIN})
        self.authenticated = is_authenticated(call)
        self.self_owner_id = ctx.self_admin.owner_id(call)
        self._self_uri: str | None = None
        if self.self_owner_id is not None:
            try:
                owner = ctx.engine.registry.get(self.self_owner_id)
                self._self_uri = owner.application_uri or owner.name
            except NotFound:
                pass

    def actor(self, via_self_admin: bool) -> str:
        """The OPC UA user name, or "app:<ApplicationUri>" when acting through ApplicationSelfAdmin."""
        user = getattr(self.call.user, "name", None)
        if not via_self_admin and user:
            return str(user)
        return f"app:{self._self_uri or self.self_owner_id}"


def _deny(reason: str) -> MethodError:
    return MethodError(ua.StatusCodes.BadUserAccessDenied, reason)


# -- the directory --------------------------------------------------------------------------------
class Directory:
    """The method implementations; blocking engine work goes through run_blocking."""

    def __init__(self, ctx: GdsContext) -> None:
        self.ctx = ctx
        self.group = ctx.groups[gds_node_id(GdsObjects.DefaultApplicationGroup, ctx.gds_idx)]
        self.engine = ctx.engine

    # ---- helpers (blocking) ----
    def _owners(self) -> list[Owner]:
        """Every owner of the group ever registered, in RecordId order (RecordId = position + 1)."""
        owners = [o for o in self.engine.registry.list(self.group) if _has_guid_id(o)]
        return sorted(owners, key=lambda o: (o.created_at, o.id))

    def _active_owner(self, owner_id: str | None) -> Owner:
        if owner_id is None:
            raise MethodError(ua.StatusCodes.BadNotFound, "not an ApplicationId of this GDS")
        try:
            uuid.UUID(owner_id)
            owner = self.engine.registry.get(owner_id)
        except (ValueError, NotFound):  # malformed or unknown ids are all "not found"
            raise MethodError(ua.StatusCodes.BadNotFound, f"no application {owner_id}") from None
        if owner.group != self.group or owner.unregistered:
            raise MethodError(ua.StatusCodes.BadNotFound, f"no application {owner_id}")
        return owner

    def _unique_name(self, base: str, owner_id: str | None = None) -> str:
        """The ApplicationName as the owner's name, " (2)", " (3)", ... added when another application has it.

        Not trimmed or shortened: the registry judges the name as given (length, control characters, surrounding
        space) and a refusal is BadInvalidArgument; only the suffix makes room for itself.
        """
        name, n = base, 1
        while True:
            found = self.engine.registry.find(self.group, name=name)
            if found is None or found.id == owner_id:
                return name
            n += 1
            suffix = f" ({n})"
            name = base[:UB_COMMON_NAME - len(suffix)].rstrip() + suffix

    def _register(self, record: ApplicationRecord, actor: str) -> str:
        dns, ips = _hosts(record.discovery_urls)
        attributes = _attributes(record)
        existing = self.engine.registry.find(self.group, application_uri=record.application_uri)
        if existing is not None:
            if not existing.unregistered:
                # The spec lets RegisterApplication create duplicate records for one ApplicationUri; the
                # engine binds a certificate's URI to exactly one owner, so a second record is refused.
                raise MethodError(_BAD_ARG, f"ApplicationUri {record.application_uri} is already registered")
            # Re-registration of an unregistered application: the same owner (history, ApplicationId).
            owner = existing.model_copy(update={
                "name": self._unique_name(record.application_names[0].text, existing.id),
                "dns_names": dns, "ip_addresses": ips, "attributes": {**existing.attributes, **attributes}})
            return self.engine.registry.reregister(owner, actor=actor).id
        owner = self.engine.registry.register(
            group=self.group, name=self._unique_name(record.application_names[0].text),
            application_uri=record.application_uri, dns_names=dns, ip_addresses=ips,
            attributes=attributes, actor=actor)
        return owner.id

    def _update(self, owner: Owner, record: ApplicationRecord, actor: str) -> None:
        if record.application_uri != owner.application_uri:
            # The URI is the identity certificates are issued for; a new URI is a new application.
            raise MethodError(_BAD_ARG, "the ApplicationUri of a registered application cannot change")
        dns, ips = _hosts(record.discovery_urls)
        attributes = {**owner.attributes, **_attributes(record)}
        updated = owner.model_copy(update={
            "name": self._unique_name(record.application_names[0].text, owner.id),
            "dns_names": dns, "ip_addresses": ips, "attributes": attributes})
        self.engine.registry.update(updated, actor=actor)

    def _unregister(self, owner: Owner, actor: str) -> list[str]:
        """Revoke the application's certificates and end its registration: one engine transaction, so a
        failure leaves both as they were."""
        done = self.engine.decommission(owner.id, actor=actor, reason=RevocationReason.CESSATION_OF_OPERATION)
        return [record.serial for record in done.revoked]

    def _listed(self, owners: list[Owner]) -> list[Owner]:
        """The owners as the Directory reports them: a push target registered without an ApplicationRecord (by
        `otpki owners add` / `targets add`) is a Server at its push address; its stored registration is unchanged."""
        pushed: dict[str, list[str]] = {}
        for target in self.engine.targets.list(group=self.group):
            pushed.setdefault(target.owner_id, []).append(target.address)
        listed = []
        for owner in owners:
            addresses = pushed.get(owner.id)
            if addresses:
                attributes = {"application_type": int(ua.ApplicationType.Server), **owner.attributes}
                attributes["discovery_urls"] = attributes.get("discovery_urls") or addresses
                owner = owner.model_copy(update={"attributes": attributes})
            listed.append(owner)
        return listed

    def _all_listed(self) -> list[Owner]:
        return self._listed(self._owners())

    def _get_listed(self, owner_id: str | None) -> Owner:
        return self._listed([self._active_owner(owner_id)])[0]

    def _find(self, uri: str) -> list[Owner]:
        return self._listed([o for o in self._owners() if o.application_uri == uri and not o.unregistered])

    def _reset_time(self, owners: list[Owner]) -> datetime:
        # RecordIds are positions in creation order of a registry that never deletes: they never reset.
        return min((o.created_at for o in owners), default=_EPOCH)

    async def _who(self) -> _Caller:
        call = caller()  # read the ContextVar here, in the request's task, not in the worker thread
        return await run_blocking(_Caller, self.ctx, call)

    # ---- methods ----
    async def register_application(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        who = await self._who()
        require_mode(who.call, _ENCRYPT)
        if not who.discovery_admin:
            raise _deny("RegisterApplication needs the DiscoveryAdmin role")
        (value,) = checked_args(DirectoryMethods.RegisterApplication, args, allow_null=False)
        _app_id, record = _record_arg(self.ctx, value)
        owner_id = await run_blocking(self._register, record, who.actor(False))
        await self._changed(DirectoryMethods.RegisterApplication, args, who,
                            f"{who.actor(False)} registered {record.application_uri}")
        return [ua.Variant(self.ctx.application_id(owner_id), ua.VariantType.NodeId)]

    async def _changed(self, spec: MethodSpec, args: tuple[ua.Variant, ...], who: _Caller, message: str) -> None:
        """ApplicationRegistrationChangedAuditEventType, after a registration changed."""
        await self.ctx.audit.raise_event(
            gds_node_id(GdsEventTypes.ApplicationRegistrationChangedAuditEventType, self.ctx.gds_idx),
            MethodCall(self.ctx.directory.nodeid, spec.node_id(self.ctx.gds_idx), args), who.call, message=message)

    async def _target(self, who: _Caller, app_id: Any) -> tuple[Owner, bool]:
        """The owner a write targets and whether the caller acts through SelfAdmin (else DiscoveryAdmin)."""
        owner_id = self.ctx.owner_id(app_id)
        if not who.discovery_admin:
            if owner_id is None or owner_id != who.self_owner_id:
                raise _deny("only DiscoveryAdmin or the application itself (SelfAdmin)")
            return await run_blocking(self._active_owner, owner_id), True
        return await run_blocking(self._active_owner, owner_id), False

    async def update_application(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        who = await self._who()
        require_mode(who.call, _ENCRYPT)
        if not who.discovery_admin and who.self_owner_id is None:
            raise _deny("UpdateApplication needs DiscoveryAdmin or ApplicationSelfAdmin")
        (value,) = checked_args(DirectoryMethods.UpdateApplication, args, allow_null=False)
        app_id, record = _record_arg(self.ctx, value)
        owner, via_self = await self._target(who, app_id)
        await run_blocking(self._update, owner, record, who.actor(via_self))
        await self._changed(DirectoryMethods.UpdateApplication, args, who,
                            f"{who.actor(via_self)} updated {owner.application_uri}")
        return []

    async def unregister_application(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        who = await self._who()
        require_mode(who.call, _ENCRYPT)
        if not who.discovery_admin and who.self_owner_id is None:
            raise _deny("UnregisterApplication needs DiscoveryAdmin or ApplicationSelfAdmin")
        (app_id,) = checked_args(DirectoryMethods.UnregisterApplication, args, allow_null=False)
        owner, via_self = await self._target(who, app_id)
        actor = who.actor(via_self)
        revoked = await run_blocking(self._unregister, owner, actor)
        log.info("%s unregistered %s (%s); revoked %s", actor, owner.id, owner.application_uri, revoked or "nothing")
        await self._changed(DirectoryMethods.UnregisterApplication, args, who,
                            f"{actor} unregistered {owner.application_uri}; {len(revoked)} certificate(s) revoked")
        return []

    async def find_applications(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        who = await self._who()
        require_mode(who.call, _SIGN)
        if not who.authenticated and who.self_owner_id is None:
            raise _deny("FindApplications needs an authenticated user or ApplicationSelfAdmin")
        (uri,) = checked_args(DirectoryMethods.FindApplications, args, allow_null=False)
        owners = await run_blocking(self._find, uri or "") if uri else []
        return [ua.Variant([_to_record(self.ctx, o) for o in owners], ua.VariantType.ExtensionObject)]

    async def get_application(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        who = await self._who()
        require_mode(who.call, _SIGN)
        if not who.authenticated and who.self_owner_id is None:
            raise _deny("GetApplication needs an authenticated user or ApplicationSelfAdmin")
        (app_id,) = checked_args(DirectoryMethods.GetApplication, args, allow_null=False)
        owner_id = self.ctx.owner_id(app_id)
        if not who.authenticated and owner_id != who.self_owner_id:
            raise _deny("ApplicationSelfAdmin covers the application's own record only")
        owner = await run_blocking(self._get_listed, owner_id)
        return [ua.Variant(_to_record(self.ctx, owner), ua.VariantType.ExtensionObject)]

    async def query_applications(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        require_mode(caller(), _SIGN)
        start, max_records, name, uri, app_type, product, caps = checked_args(
            DirectoryMethods.QueryApplications, args, allow_null=False)
        if app_type not in (0, 1, 2):
            raise MethodError(_BAD_ARG, f"ApplicationType filter {app_type}: 0 any, 1 servers, 2 clients")
        allowed = {0: tuple(ua.ApplicationType), 1: _SERVER_TYPES, 2: _CLIENT_TYPES}[app_type]
        all_owners = await run_blocking(self._all_listed)
        matches = [(rid, o) for rid, o in self._visible(all_owners)
                   if rid > start and _type(o) in allowed and _matches(o, name, uri, product, caps)]
        page, next_id = _page(matches, max_records)
        descriptions = [_description(o) for _rid, o in page]
        return [ua.Variant(self._reset_time(all_owners), ua.VariantType.DateTime),
                ua.Variant(next_id, ua.VariantType.UInt32),
                ua.Variant(descriptions, ua.VariantType.ExtensionObject)]

    async def query_servers(self, _parent: ua.NodeId, *args: ua.Variant) -> list[ua.Variant]:
        require_mode(caller(), _SIGN)
        start, max_records, name, uri, product, caps = checked_args(DirectoryMethods.QueryServers, args,
                                                                    allow_null=False)
        all_owners = await run_blocking(self._all_listed)
        entries: list[tuple[int, ua.ServerOnNetwork]] = []
        record_id = 0
        for _rid, owner in self._visible(all_owners):
            if _type(owner) not in _SERVER_TYPES:
                continue
            for url in owner.attributes.get("discovery_urls") or []:
                record_id += 1  # one record per DiscoveryUrl, numbered in owner (registration) order
                if record_id > start and _matches(owner, name, uri, product, caps):
                    entries.append((record_id, ua.ServerOnNetwork(
                        RecordId=record_id, ServerName=_names(owner)[0].Text, DiscoveryUrl=url,
                        ServerCapabilities=list(owner.attributes.get("server_capabilities") or []))))
        page, _next = _page(entries, max_records)
        return [ua.Variant(self._reset_time(all_owners), ua.VariantType.DateTime),
                ua.Variant([e for _rid, e in page], ua.VariantType.ExtensionObject)]

    @staticmethod
    def _visible(owners: list[Owner]) -> list[tuple[int, Owner]]:
        return [(i + 1, o) for i, o in enumerate(owners) if not o.unregistered]


def _page(items: list[tuple[int, Any]], max_records: int) -> tuple[list[tuple[int, Any]], int]:
    """At most max_records (0: all) items and the NextRecordId: the RecordId of the last one returned when
    more remain (pass it back as StartingRecordId: records with a greater id follow), else 0."""
    if max_records and len(items) > max_records:
        page = items[:max_records]
        return page, page[-1][0]
    return items, 0


def _like(pattern: str) -> re.Pattern[str]:
    """An OPC UA Like pattern (Part 4 Table 124: % _ [] [^] with \\ escapes) as a regex, case-insensitive."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                negate = body.startswith(("^", "!"))
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _matches(owner: Owner, name: str | None, uri: str | None, product: str | None, caps: list[str]) -> bool:
    if name and not any(_like(name).fullmatch(n.Text or "") for n in _names(owner)):
        return False
    if uri and not _like(uri).fullmatch(owner.application_uri or ""):
        return False
    if product and not _like(product).fullmatch(owner.attributes.get("product_uri") or ""):
        return False
    have = set(owner.attributes.get("server_capabilities") or [])
    return all(c in have for c in caps if c)


def _description(owner: Owner) -> ua.ApplicationDescription:
    return ua.ApplicationDescription(
        ApplicationUri=owner.application_uri, ProductUri=owner.attributes.get("product_uri"),
        ApplicationName=_names(owner)[0], ApplicationType=_type(owner),
        DiscoveryUrls=list(owner.attributes.get("discovery_urls") or []))


async def install(ctx: GdsContext) -> None:
    """Bind the seven Directory methods."""
    directory = Directory(ctx)
    callbacks: dict[str, Callable[..., Awaitable[Any]]] = {
        "FindApplications": directory.find_applications,
        "RegisterApplication": directory.register_application,
        "UpdateApplication": directory.update_application,
        "UnregisterApplication": directory.unregister_application,
        "GetApplication": directory.get_application,
        "QueryApplications": directory.query_applications,
        "QueryServers": directory.query_servers,
    }
    for spec in DirectoryMethods.all():
        bind(ctx.server, spec, ctx.gds_idx, callbacks[spec.name])
