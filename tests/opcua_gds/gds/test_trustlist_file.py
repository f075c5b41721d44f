"""The GDS TrustList file objects (Open/OpenWithMasks/Read/Close/...) over real asyncua sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua import uaerrors

from opcua_gds.gds import pull, trustlist_file
from opcua_gds.nodeids import GDS_NAMESPACE_URI, CertificateGroupIds, CertificateGroups
from opcua_gds.testing import AppIdentity, connect, issue_app_identity
from opcua_gds.trustlist_binary import decode_trustlist, encode_trustlist
from tests.opcua_gds.gds.gds_fixture import PASSWORDS, RunningGds, running_gds
from trustlists.models import TrustListMask
from trustlists.testing import foreign_engine

APP_GROUP = CertificateGroups.GdsDefaultApplicationGroup
USER_GROUP = CertificateGroups.GdsDefaultUserTokenGroup


# One GDS for the module (starting one is most of a test's time): its tests run on the module's event loop. They
# only read trust lists, each in sessions of its own; what counts every session's handles gets a GDS of its own.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gds(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path_factory.mktemp("gds"), installers=[pull.install, trustlist_file.install]):
        yield running


@pytest.fixture(scope="module")
def app(gds: RunningGds) -> AppIdentity:
    return issue_app_identity(gds.engine, gds.tmp / "certs", "scada-1", "urn:plant:scada-1")


@pytest_asyncio.fixture(loop_scope="module")
async def own_gds(tmp_path: Path) -> AsyncIterator[RunningGds]:
    """A GDS of the test's own: OpenCount counts the handles of every session, other tests' included."""
    async for running in running_gds(tmp_path, installers=[pull.install, trustlist_file.install]):
        yield running


class TrustListFile:
    def __init__(self, client: Client, idx: int, group: CertificateGroupIds = APP_GROUP) -> None:
        self.client = client
        self.idx = idx
        self.group = group
        self.node = client.get_node(group.trust_list_node_id(idx))

    async def call(self, name: str, *args: Any) -> Any:
        return await self.node.call_method(self.group.method(name).node_id(self.idx), *args)

    async def open_with_masks(self, masks: int) -> int:
        return int(await self.call("OpenWithMasks", ua.Variant(masks, ua.VariantType.UInt32)))

    async def open(self, mode: int) -> int:
        return int(await self.call("Open", ua.Variant(mode, ua.VariantType.Byte)))

    async def read(self, handle: int, length: int) -> bytes:
        return bytes(await self.call("Read", u32(handle), ua.Variant(length, ua.VariantType.Int32)) or b"")

    async def read_all(self, handle: int, chunk: int = 333) -> bytes:
        data = b""
        while part := await self.read(handle, chunk):
            data += part
        return data

    async def close(self, handle: int) -> None:
        await self.call("Close", u32(handle))


def u32(value: int) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.UInt32)


async def file_session(gds: RunningGds, app: AppIdentity, user: str | None = None,
                       mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
                       group: CertificateGroupIds = APP_GROUP) -> TrustListFile:
    client = await connect(gds.url, app, mode=mode, username=user,
                           password=PASSWORDS[user][0] if user else None)
    return TrustListFile(client, await client.get_namespace_index(GDS_NAMESPACE_URI), group)


async def test_read_whole_and_masked_trust_list(own_gds: RunningGds) -> None:
    gds = own_gds
    app = issue_app_identity(gds.engine, gds.tmp / "certs", "scada-1", "urn:plant:scada-1")
    f = await file_session(gds, app)  # SelfAdmin of an application of the group, anonymous
    try:
        expected = gds.engine.trustlists.get("opcua-application").content
        handle = await f.open_with_masks(TrustListMask.ALL)
        data = await f.read_all(handle)
        await f.close(handle)
        assert data == encode_trustlist(expected)
        assert decode_trustlist(data) == expected
        assert expected.trusted_certificates and expected.issuer_certificates and expected.trusted_crls
        # Masks select lists; SpecifiedLists says which.
        handle = await f.open_with_masks(TrustListMask.ISSUER_CERTIFICATES | TrustListMask.ISSUER_CRLS)
        masked = decode_trustlist(await f.read_all(handle, chunk=50))
        await f.close(handle)
        assert masked.specified_lists == TrustListMask.ISSUER_CERTIFICATES | TrustListMask.ISSUER_CRLS
        assert masked.issuer_certificates == expected.issuer_certificates
        assert masked.issuer_crls == expected.issuer_crls
        assert not masked.trusted_certificates and not masked.trusted_crls
        # Open(0x01) reads everything, like OpenWithMasks(All); Get/SetPosition move within the file.
        handle = await f.open(0x01)
        first = await f.read(handle, 10)
        assert await f.call("GetPosition", u32(handle)) == 10
        await f.call("SetPosition", u32(handle), ua.Variant(0, ua.VariantType.UInt64))
        assert await f.read_all(handle) == data and first == data[:10]
        await f.call("SetPosition", u32(handle), ua.Variant(10**9, ua.VariantType.UInt64))
        assert await f.read(handle, 10) == b""
        # FileType properties.
        assert await (await f.node.get_child("0:Writable")).read_value() is False
        assert await (await f.node.get_child("0:UserWritable")).read_value() is False
        assert await (await f.node.get_child("0:OpenCount")).read_value() == 1
        assert await (await f.node.get_child("0:Size")).read_value() == len(data)
        assert await (await f.node.get_child("0:LastUpdateTime")).read_value() is not None
        await f.close(handle)
        assert await (await f.node.get_child("0:OpenCount")).read_value() == 0
    finally:
        await f.client.disconnect()


async def test_user_token_group_trust_list(gds: RunningGds, app: AppIdentity) -> None:
    f = await file_session(gds, app, "ca-admin", group=USER_GROUP)
    try:
        handle = await f.open_with_masks(TrustListMask.ALL)
        content = decode_trustlist(await f.read_all(handle))
        await f.close(handle)
        assert content == gds.engine.trustlists.get("opcua-user").content
    finally:
        await f.client.disconnect()
    # An application of opcua-application is no SelfAdmin of the user-token group's trust list.
    f = await file_session(gds, app, group=USER_GROUP)
    try:
        with pytest.raises(uaerrors.BadUserAccessDenied):
            await f.open_with_masks(TrustListMask.ALL)
    finally:
        await f.client.disconnect()


async def test_writes_and_bad_modes_are_refused(gds: RunningGds, app: AppIdentity) -> None:
    f = await file_session(gds, app, "ca-admin")
    try:
        with pytest.raises(uaerrors.BadNotWritable):
            await f.open(0x06)
        for mode in (0x02, 0x03, 0x00, 0x04):
            with pytest.raises(uaerrors.BadNotSupported):
                await f.open(mode)
        with pytest.raises(uaerrors.BadInvalidArgument):
            await f.open_with_masks(16)
        with pytest.raises(uaerrors.BadNotWritable):
            await f.call("AddCertificate", b"x", True)
        with pytest.raises(uaerrors.BadNotWritable):
            await f.call("Write", u32(1), b"x")
        with pytest.raises(uaerrors.BadArgumentsMissing):  # wrong argument count (OPC 10000-4 Call) / type
            await f.call("OpenWithMasks")
        with pytest.raises(uaerrors.BadInvalidArgument):
            await f.call("OpenWithMasks", "all")
        with pytest.raises(uaerrors.BadInvalidArgument):  # unknown handle
            await f.read(12345, 10)
        handle = await f.open_with_masks(TrustListMask.ALL)
        with pytest.raises(uaerrors.BadInvalidArgument):  # negative length
            await f.read(handle, -1)
        await f.close(handle)
        with pytest.raises(uaerrors.BadInvalidArgument):  # closed handle
            await f.read(handle, 10)
        with pytest.raises(uaerrors.BadInvalidArgument):
            await f.close(handle)
        # A cap on open handles per session.
        handles = [await f.open_with_masks(TrustListMask.ALL) for _ in range(trustlist_file.MAX_HANDLES_PER_SESSION)]
        with pytest.raises(uaerrors.BadResourceUnavailable):
            await f.open_with_masks(TrustListMask.ALL)
        for h in handles:
            await f.close(h)
        assert await f.read_all(await f.open_with_masks(TrustListMask.ALL))  # still answers
    finally:
        await f.client.disconnect()


async def test_handles_belong_to_their_session(gds: RunningGds, app: AppIdentity) -> None:
    a = await file_session(gds, app)
    b = await file_session(gds, app)
    try:
        handle = await a.open_with_masks(TrustListMask.ALL)
        with pytest.raises(uaerrors.BadInvalidArgument):
            await b.read(handle, 100)
        with pytest.raises(uaerrors.BadInvalidArgument):
            await b.close(handle)
        # A handle of one TrustList is no handle of another.
        other = TrustListFile(a.client, a.idx, USER_GROUP)
        with pytest.raises(uaerrors.BadInvalidArgument):
            await other.read(handle, 100)
        assert await a.read_all(handle)
        await a.close(handle)
    finally:
        await a.client.disconnect()
        await b.client.disconnect()


async def test_access(gds: RunningGds, app: AppIdentity, tmp_path: Path) -> None:
    other = foreign_engine(tmp_path / "other")
    stranger = issue_app_identity(other, tmp_path / "other-certs", "stranger", "urn:plant:stranger")
    other.close()
    f = await file_session(gds, stranger, "no-role")  # no role, certificate not issued by this engine
    try:
        with pytest.raises(uaerrors.BadUserAccessDenied):
            await f.open_with_masks(TrustListMask.ALL)
        with pytest.raises(uaerrors.BadUserAccessDenied):
            await f.open(0x01)
    finally:
        await f.client.disconnect()
    f = await file_session(gds, stranger, "ca-admin")
    try:
        handle = await f.open_with_masks(TrustListMask.ALL)
        assert await f.read_all(handle)
    finally:
        await f.client.disconnect()
    # Sign is enough to read (the trust list is public); SelfAdmin over a Sign channel.
    f = await file_session(gds, app, mode=ua.MessageSecurityMode.Sign)
    try:
        handle = await f.open_with_masks(TrustListMask.TRUSTED_CERTIFICATES)
        assert decode_trustlist(await f.read_all(handle)).trusted_certificates
    finally:
        await f.client.disconnect()


async def test_method_nodes_have_standard_ids(gds: RunningGds, app: AppIdentity) -> None:
    f = await file_session(gds, app)
    try:
        for group in CertificateGroups.gds():  # DefaultHttpsGroup too: served although no engine group is mapped
            for spec in group.methods():
                if spec.name == "GetRejectedList":
                    continue
                node = f.client.get_node(spec.node_id(f.idx))
                # Declared on FileType/TrustListType: the BrowseName is in ns0 (0:Open), the NodeId in the GDS ns.
                assert await node.read_browse_name() == ua.QualifiedName(spec.name, 0)
    finally:
        await f.client.disconnect()


async def test_https_group_serves_the_application_trust_list_and_issues_nothing(gds: RunningGds,
                                                                               app: AppIdentity) -> None:
    https = CertificateGroups.GdsDefaultHttpsGroup
    f = await file_session(gds, app, "ca-admin", group=https)
    try:
        handle = await f.open_with_masks(TrustListMask.ALL)
        assert decode_trustlist(await f.read_all(handle)) == gds.engine.trustlists.get("opcua-application").content
        await f.close(handle)
        types = f.client.get_node(https.property_node_id("CertificateTypes", f.idx))
        assert await types.read_value() == []
        app_types = f.client.get_node(APP_GROUP.property_node_id("CertificateTypes", f.idx))
        assert await app_types.read_value() == [ua.NodeId(t) for t in (12560, 23538, 23539)]
    finally:
        await f.client.disconnect()
