"""The GDS Directory registration methods over real asyncua sessions against a running GDS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from opcua_gds.gds import directory
from opcua_gds.gds.application_record import ApplicationRecord, LocalizedName, register_application_record_class
from opcua_gds.nodeids import GDS_NAMESPACE_URI, DirectoryMethods, GdsObjects, gds_node_id
from opcua_gds.testing import AppIdentity, connect, issue_app_identity
from tests.opcua_gds.gds.gds_fixture import PASSWORDS, RunningGds, running_gds
from trustlists.models import CertificateStatus, RevocationReason
from trustlists.testing import foreign_engine, store_refuses

S = ua.StatusCodes
V = ua.VariantType


@pytest.fixture
async def gds(tmp_path: Path) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path, installers=[directory.install]):
        yield running


class Session:
    """One client session and the Directory calls, with arguments as a standard client sends them."""

    def __init__(self, client: Client, idx: int) -> None:
        self.client, self.idx = client, idx
        self.node = client.get_node(gds_node_id(GdsObjects.Directory, idx))
        register_application_record_class(idx)

    async def raw(self, name: str, *args: ua.Variant) -> Any:
        return await self.node.call_method(DirectoryMethods.by_name(name).node_id(self.idx), *args)

    def record(self, uri: str, name: str, *, app_type: ua.ApplicationType = ua.ApplicationType.Server,
               urls: list[str] | None = None, caps: list[str] | None = None, product: str = "urn:vendor:plc",
               app_id: ua.NodeId | None = None) -> ua.Variant:
        if urls is None:
            host = name.lower().replace(" ", "-")  # a host name has no spaces
            urls = [] if app_type == ua.ApplicationType.Client else [f"opc.tcp://{host}.plant:4840"]
        value = ApplicationRecord(application_uri=uri, application_type=app_type,
                                  application_names=[LocalizedName(text=name, locale="en")], product_uri=product,
                                  discovery_urls=urls, server_capabilities=caps or []).to_ua(self.idx)
        if app_id is not None:
            value.ApplicationId = app_id
        return ua.Variant(value, V.ExtensionObject)

    async def register(self, uri: str, name: str, **kw: Any) -> ua.NodeId:
        return await self.raw("RegisterApplication", self.record(uri, name, **kw))

    async def update(self, app_id: ua.NodeId, uri: str, name: str, **kw: Any) -> None:
        await self.raw("UpdateApplication", self.record(uri, name, app_id=app_id, **kw))

    async def unregister(self, app_id: ua.NodeId) -> None:
        await self.raw("UnregisterApplication", ua.Variant(app_id, V.NodeId))

    async def find(self, uri: str) -> list[Any]:
        return await self.raw("FindApplications", ua.Variant(uri, V.String))

    async def get(self, app_id: ua.NodeId) -> Any:
        return await self.raw("GetApplication", ua.Variant(app_id, V.NodeId))

    async def query(self, start: int = 0, max_records: int = 0, name: str = "", uri: str = "", app_type: int = 0,
                    product: str = "", caps: list[str] | None = None) -> list[Any]:
        return await self.raw("QueryApplications", ua.Variant(start, V.UInt32), ua.Variant(max_records, V.UInt32),
                              ua.Variant(name, V.String), ua.Variant(uri, V.String),
                              ua.Variant(app_type, V.UInt32), ua.Variant(product, V.String),
                              ua.Variant(caps or [], V.String))

    async def query_servers(self, start: int = 0, max_records: int = 0, name: str = "", uri: str = "",
                            product: str = "", caps: list[str] | None = None) -> list[Any]:
        return await self.raw("QueryServers", ua.Variant(start, V.UInt32), ua.Variant(max_records, V.UInt32),
                              ua.Variant(name, V.String), ua.Variant(uri, V.String), ua.Variant(product, V.String),
                              ua.Variant(caps or [], V.String))


async def _open(gds: RunningGds, app: AppIdentity, user: str | None = None,
                mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt) -> Session:
    password = PASSWORDS[user][0] if user else None
    client = await connect(gds.url, app, mode=mode, username=user, password=password)
    return Session(client, await client.get_namespace_index(GDS_NAMESPACE_URI))


async def _code(coro: Any) -> int:
    with pytest.raises(ua.UaStatusCodeError) as info:
        await coro
    return info.value.code


def _stranger(tmp: Path) -> AppIdentity:
    """A client certificate another engine issued: the GDS grants it no ApplicationSelfAdmin."""
    other = foreign_engine(tmp / "other")
    try:
        return issue_app_identity(other, tmp / "other-certs", "stranger", "urn:test:stranger")
    finally:
        other.close()


def _owner_id(app_id: ua.NodeId) -> str:
    return str(app_id.Identifier)


async def test_register_find_get_query_round_trip(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "discovery-admin")
    try:
        plc = await admin.register("urn:plant:plc-1", "PLC 1", caps=["DA", "HD"],
                                   urls=["opc.tcp://plc-1.plant:4840", "opc.tcp://10.0.0.7:4840"])
        hmi = await admin.register("urn:plant:hmi-1", "HMI 1", app_type=ua.ApplicationType.Client)
        assert plc.NamespaceIndex == admin.idx and plc.NodeIdType == ua.NodeIdType.Guid and plc != hmi

        (found,) = await admin.find("urn:plant:plc-1")
        record = ApplicationRecord.from_ua(found, admin.idx)
        assert found.ApplicationId == plc
        assert record.application_uri == "urn:plant:plc-1"
        assert record.application_type == ua.ApplicationType.Server
        assert record.application_names == [LocalizedName(text="PLC 1", locale="en")]
        assert record.product_uri == "urn:vendor:plc"
        assert record.discovery_urls == ["opc.tcp://plc-1.plant:4840", "opc.tcp://10.0.0.7:4840"]
        assert record.server_capabilities == ["DA", "HD"]
        assert await admin.find("urn:plant:nothing") == []
        got = await admin.get(plc)
        assert ApplicationRecord.from_ua(got, admin.idx) == record

        # The engine owner carries the record and the DiscoveryUrl hosts for its certificates.
        owner = gds.engine.registry.get(_owner_id(plc))
        assert (owner.group, owner.name, owner.application_uri) == ("opcua-application", "PLC 1", "urn:plant:plc-1")
        assert owner.dns_names == ["plc-1.plant"] and owner.ip_addresses == ["10.0.0.7"]
        assert owner.attributes["server_capabilities"] == ["DA", "HD"]
        assert owner.attributes["application_names"] == [{"text": "PLC 1", "locale": "en"}]
        assert [r.actor for r in gds.engine.audit_records()
                if r.action == "owner.register" and r.subject == owner.id] == ["discovery-admin"]

        # QueryApplications: filters are ANDed, names are Like patterns, paging by RecordId.
        reset, next_id, apps = await admin.query()
        uris = [a.ApplicationUri for a in apps]
        assert {"urn:plant:plc-1", "urn:plant:hmi-1", "urn:otpki:gds", "urn:test:admin-tool"} <= set(uris)
        assert next_id == 0 and reset.year > 2000
        _r, _n, apps = await admin.query(name="plc%")
        assert [(a.ApplicationUri, a.ApplicationName.Text, a.ApplicationType, a.ProductUri, a.DiscoveryUrls)
                for a in apps] == [("urn:plant:plc-1", "PLC 1", ua.ApplicationType.Server, "urn:vendor:plc",
                                    ["opc.tcp://plc-1.plant:4840", "opc.tcp://10.0.0.7:4840"])]
        _r, _n, apps = await admin.query(app_type=2)
        assert "urn:plant:hmi-1" in [a.ApplicationUri for a in apps]
        assert "urn:plant:plc-1" not in [a.ApplicationUri for a in apps]
        _r, _n, apps = await admin.query(caps=["HD"], product="urn:vendor:%")
        assert [a.ApplicationUri for a in apps] == ["urn:plant:plc-1"]
        paged: list[str] = []
        start = 0
        while True:
            _r, start, page = await admin.query(start=start, max_records=1)
            assert len(page) <= 1
            paged += [a.ApplicationUri for a in page]
            if start == 0:
                break
        assert paged == uris

        # QueryServers: servers only, one entry per DiscoveryUrl.
        _reset, servers = await admin.query_servers(uri="urn:plant:%")
        assert [(s.ServerName, s.DiscoveryUrl, s.ServerCapabilities) for s in servers] == [
            ("PLC 1", "opc.tcp://plc-1.plant:4840", ["DA", "HD"]),
            ("PLC 1", "opc.tcp://10.0.0.7:4840", ["DA", "HD"])]
        assert servers[0].RecordId < servers[1].RecordId
        _reset, later = await admin.query_servers(start=servers[0].RecordId, uri="urn:plant:%")
        assert [s.DiscoveryUrl for s in later] == ["opc.tcp://10.0.0.7:4840"]
        _reset, none = await admin.query_servers(caps=["XYZ"])
        assert none == []
    finally:
        await admin.client.disconnect()


async def test_update_by_discovery_admin_and_by_the_application_itself(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "discovery-admin")
    try:
        a = await admin.register("urn:plant:a", "Station A")
        b = await admin.register("urn:plant:b", "Station B")
        await admin.update(b, "urn:plant:b", "Station B2", urls=["opc.tcp://b2.plant:4841"])
        owner_b = gds.engine.registry.get(_owner_id(b))
        assert owner_b.name == "Station B2" and owner_b.dns_names == ["b2.plant"]
        assert ApplicationRecord.from_ua(await admin.get(b), admin.idx).discovery_urls == ["opc.tcp://b2.plant:4841"]
        # The ApplicationUri is the identity certificates are issued for: it cannot change.
        assert await _code(admin.update(b, "urn:plant:other", "Station B2")) == S.BadInvalidArgument
    finally:
        await admin.client.disconnect()

    # Station A, on a channel secured with its engine-issued certificate and no user: ApplicationSelfAdmin.
    station_a = issue_app_identity(gds.engine, gds.tmp / "certs", "Station A", "urn:plant:a")
    assert station_a.owner_id == _owner_id(a)
    own = await _open(gds, station_a)
    try:
        await own.update(a, "urn:plant:a", "Station A", urls=["opc.tcp://a.plant:4840", "opc.tcp://10.1.1.1:4840"],
                         caps=["DA"])
        assert gds.engine.registry.get(_owner_id(a)).ip_addresses == ["10.1.1.1"]
        assert (await own.get(a)).ServerCapabilities == ["DA"]
        assert await own.find("urn:plant:b")  # FindApplications: any SelfAdmin
        # Another application's registration is not its business.
        assert await _code(own.update(b, "urn:plant:b", "Hijacked")) == S.BadUserAccessDenied
        assert await _code(own.unregister(b)) == S.BadUserAccessDenied
        assert await _code(own.get(b)) == S.BadUserAccessDenied
        assert await _code(own.register("urn:plant:c", "C")) == S.BadUserAccessDenied
    finally:
        await own.client.disconnect()
    assert gds.engine.registry.get(_owner_id(b)).name == "Station B2"
    updates = [r.actor for r in gds.engine.audit_records() if r.action == "owner.update"]
    assert updates == ["discovery-admin", "app:urn:plant:a"]


async def test_unregister_revokes_certificates_and_hides_the_application(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "discovery-admin")
    try:
        c = await admin.register("urn:plant:c", "Station C")
        d = await admin.register("urn:plant:d", "Station D")
        first = issue_app_identity(gds.engine, gds.tmp / "certs", "Station C", "urn:plant:c")
        second = issue_app_identity(gds.engine, gds.tmp / "certs2", "Station C", "urn:plant:c")
        assert first.owner_id == second.owner_id == _owner_id(c)

        await admin.unregister(c)
        records = gds.engine.inventory.query(owner_id=_owner_id(c))
        assert len(records) == 2
        now = gds.engine.now()
        assert all(r.status_at(now) == CertificateStatus.REVOKED for r in records)
        assert {r.revocation_reason for r in records} == {RevocationReason.CESSATION_OF_OPERATION}
        assert await admin.find("urn:plant:c") == []
        assert await _code(admin.get(c)) == S.BadNotFound
        assert await _code(admin.unregister(c)) == S.BadNotFound
        assert await _code(admin.update(c, "urn:plant:c", "Station C")) == S.BadNotFound
        _r, _n, apps = await admin.query()
        assert "urn:plant:c" not in [x.ApplicationUri for x in apps]
        actions = [(r.action, r.actor) for r in gds.engine.audit_records()
                   if r.subject == _owner_id(c) or r.action == "certificate.revoke"]
        assert actions.count(("certificate.revoke", "discovery-admin")) == 2
        assert ("owner.unregister", "discovery-admin") in actions
        # The owner and its history stay; registering the URI again reuses the registration.
        assert await admin.register("urn:plant:c", "Station C") == c
        assert len(await admin.find("urn:plant:c")) == 1
    finally:
        await admin.client.disconnect()

    # An application may unregister itself (ApplicationSelfAdmin).
    station_d = issue_app_identity(gds.engine, gds.tmp / "certs", "Station D", "urn:plant:d")
    own = await _open(gds, station_d)
    try:
        await own.unregister(d)
    finally:
        await own.client.disconnect()
    assert gds.engine.inventory.query(owner_id=_owner_id(d), status=CertificateStatus.REVOKED)
    assert [r.actor for r in gds.engine.audit_records()
            if r.action == "owner.unregister" and r.subject == _owner_id(d)] == ["app:urn:plant:d"]


async def test_unregister_that_fails_halfway_changes_nothing(gds: RunningGds) -> None:
    """The store refuses the unregistration (the last write of UnregisterApplication): the certificates the
    application holds must stay valid and the application registered, not revoked and still listed."""
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "discovery-admin")
    try:
        app = await admin.register("urn:plant:f", "Station F")
        issue_app_identity(gds.engine, gds.tmp / "certs-f", "Station F", "urn:plant:f")
        records = gds.engine.inventory.query(owner_id=_owner_id(app))
        audit_before = len(gds.engine.audit_records())
        with store_refuses(gds.engine, table="owners", operation="UPDATE"):
            assert await _code(admin.unregister(app)) != S.Good
        after = gds.engine.inventory.query(owner_id=_owner_id(app))
        assert [r.status_at(gds.engine.now()) for r in after] == [CertificateStatus.ACTIVE] * len(records)
        assert not any(gds.engine.is_revoked(r.issuer_ca_id, int(r.serial, 16)) for r in after)
        assert len(gds.engine.audit_records()) == audit_before
        assert len(await admin.find("urn:plant:f")) == 1
        await admin.unregister(app)  # the store works again
        assert await admin.find("urn:plant:f") == []
    finally:
        await admin.client.disconnect()


async def test_role_matrix(gds: RunningGds) -> None:
    stranger = _stranger(gds.tmp)  # no ApplicationSelfAdmin for anyone below
    sessions = {who: await _open(gds, stranger, who or None)
                for who in ("discovery-admin", "ca-admin", "no-role", "")}
    admin = sessions["discovery-admin"]
    try:
        target = await admin.register("urn:plant:target", "Target")
        doomed = await admin.register("urn:plant:doomed", "Doomed")
        for who, s in sessions.items():
            denied_write = who != "discovery-admin"
            authenticated = who != ""
            if denied_write:
                assert await _code(s.register(f"urn:plant:{who}x", "X")) == S.BadUserAccessDenied, who
                assert await _code(s.update(target, "urn:plant:target", "T2")) == S.BadUserAccessDenied, who
                assert await _code(s.unregister(target)) == S.BadUserAccessDenied, who
            if authenticated:
                assert len(await s.find("urn:plant:target")) == 1, who
                assert (await s.get(target)).ApplicationUri == "urn:plant:target", who
            else:
                assert await _code(s.find("urn:plant:target")) == S.BadUserAccessDenied
                assert await _code(s.get(target)) == S.BadUserAccessDenied
            # Query methods: anyone.
            _r, _n, apps = await s.query(uri="urn:plant:target")
            assert len(apps) == 1, who
            _r, servers = await s.query_servers(uri="urn:plant:target")
            assert len(servers) == 1, who
        await admin.update(target, "urn:plant:target", "Target 2")
        await admin.unregister(doomed)
        assert (await admin.get(target)).ApplicationNames[0].Text == "Target 2"
    finally:
        for s in sessions.values():
            await s.client.disconnect()


async def test_writes_need_an_encrypted_channel(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "discovery-admin")
    try:
        app = await admin.register("urn:plant:e", "Station E")
    finally:
        await admin.client.disconnect()
    signed = await _open(gds, me, "discovery-admin", mode=ua.MessageSecurityMode.Sign)
    try:
        assert await _code(signed.register("urn:plant:f", "F")) == S.BadSecurityModeInsufficient
        assert await _code(signed.update(app, "urn:plant:e", "E2")) == S.BadSecurityModeInsufficient
        assert await _code(signed.unregister(app)) == S.BadSecurityModeInsufficient
        # Reads are fine on a signed channel.
        assert len(await signed.find("urn:plant:e")) == 1
        assert (await signed.get(app)).ApplicationUri == "urn:plant:e"
        assert len((await signed.query(uri="urn:plant:e"))[2]) == 1
        assert len((await signed.query_servers(uri="urn:plant:e"))[1]) == 1
    finally:
        await signed.client.disconnect()
    assert gds.engine.registry.find("opcua-application", application_uri="urn:plant:f") is None


async def test_bad_input_is_refused_and_writes_nothing(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "discovery-admin")
    try:
        existing = await admin.register("urn:plant:g", "Station G")
        owners_before = len(gds.engine.registry.list())
        audit_before = len(gds.engine.audit_records())
        bad = S.BadInvalidArgument
        good = admin.record("urn:plant:h", "Station H")
        unknown = ua.NodeId(existing.Identifier.__class__("00000000-0000-4000-8000-000000000000"), admin.idx,
                            ua.NodeIdType.Guid)
        cases: list[tuple[str, tuple[ua.Variant, ...], int]] = [
            ("RegisterApplication", (), S.BadArgumentsMissing),  # too few arguments (OPC 10000-4 Call)
            ("RegisterApplication", (good, good), S.BadTooManyArguments),  # too many
            ("RegisterApplication", (ua.Variant("urn:plant:h", V.String),), bad),  # wrong type
            ("RegisterApplication", (ua.Variant([good.Value], V.ExtensionObject),), bad),  # array, not scalar
            ("RegisterApplication", (ua.Variant(ua.Argument(Name="x"), V.ExtensionObject),), bad),  # other struct
            ("RegisterApplication", (admin.record("", "Nameless URI"),), bad),  # empty ApplicationUri
            ("RegisterApplication", (admin.record("urn:plant:h", ""),), bad),  # empty ApplicationNames
            ("RegisterApplication", (admin.record("urn:plant:h", "H", urls=["not a url"]),), bad),
            ("RegisterApplication", (admin.record("urn:plant:h", "H", urls=[]),), bad),  # server without URL
            ("RegisterApplication", (admin.record("urn:plant:g", "Duplicate"),), bad),  # ApplicationUri taken
            ("UpdateApplication", (admin.record("urn:plant:h", "H", app_id=unknown),), S.BadNotFound),
            ("UpdateApplication", (admin.record("", "G", app_id=existing),), bad),
            ("UnregisterApplication", (ua.Variant(unknown, V.NodeId),), S.BadNotFound),
            ("UnregisterApplication", (ua.Variant(ua.NodeId(42, admin.idx), V.NodeId),), S.BadNotFound),
            ("UnregisterApplication", (ua.Variant(str(existing.Identifier), V.String),), bad),
            ("GetApplication", (ua.Variant(unknown, V.NodeId),), S.BadNotFound),
            ("GetApplication", (ua.Variant(ua.NodeId(existing.Identifier, 0, ua.NodeIdType.Guid), V.NodeId),),
             S.BadNotFound),  # right GUID, wrong namespace
            ("GetApplication", (ua.Variant(ua.NodeId("x", admin.idx), V.NodeId),), S.BadNotFound),
            ("GetApplication", (), S.BadArgumentsMissing),
            ("FindApplications", (ua.Variant(42, V.Int32),), bad),
            ("QueryApplications", (ua.Variant(0, V.Int32),) * 7, bad),
            ("QueryApplications", (ua.Variant(0, V.UInt32), ua.Variant(0, V.UInt32), ua.Variant("", V.String),
                                   ua.Variant("", V.String), ua.Variant(7, V.UInt32), ua.Variant("", V.String),
                                   ua.Variant([], V.String)), bad),  # ApplicationType filter out of range
            ("QueryServers", (ua.Variant(0, V.UInt32),), S.BadArgumentsMissing),
        ]
        for name, args, expected in cases:
            assert await _code(admin.raw(name, *args)) == expected, (name, args)
        # An ApplicationType outside the enumeration never reaches the method: asyncua's decoder raises
        # while decoding the CallRequest and answers the whole request with a BadInternalError fault.
        invalid_type = admin.record("urn:plant:h", "H")
        invalid_type.Value.ApplicationType = 7
        assert await _code(admin.raw("RegisterApplication", invalid_type)) == S.BadInternalError
        assert len(gds.engine.registry.list()) == owners_before
        assert len(gds.engine.audit_records()) == audit_before
        # The GDS is still serving, on the same session.
        assert await admin.register("urn:plant:h", "Station H")
    finally:
        await admin.client.disconnect()


async def test_names_are_made_unique(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "discovery-admin")
    try:
        one = await admin.register("urn:plant:twin-1", "Twin")
        two = await admin.register("urn:plant:twin-2", "Twin")
    finally:
        await admin.client.disconnect()
    assert gds.engine.registry.get(_owner_id(one)).name == "Twin"
    assert gds.engine.registry.get(_owner_id(two)).name == "Twin (2)"
