"""The GDS audit events carry no secret: StartNewKeyPairRequest's PrivateKeyPassword is null in InputArguments.

(The events themselves, their fields and who receives them are tested from node-opcua in
tests/interop/test_node_opcua_gds.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from opcua_gds.nodeids import CertificateDirectoryMethods, GdsEventTypes, gds_node_id
from opcua_gds.testing import connect, issue_app_identity
from tests.opcua_gds.gds.gds_fixture import PASSWORDS, RunningGds, running_gds
from tests.opcua_gds.gds.test_directory import _open
from trustlists.testing import eventually

PASSWORD = "pfx-secret-4711"
WAIT_S = 20.0


@pytest.fixture
async def gds(tmp_path: Path) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path):
        yield running


class Received:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.events.append(event)


async def test_new_key_pair_request_event_reports_no_password(gds: RunningGds) -> None:
    viewer = issue_app_identity(gds.engine, gds.tmp / "certs", "event-view", "urn:test:event-view")
    watcher = await connect(gds.url, viewer, username="ca-admin", password=PASSWORDS["ca-admin"][0])
    admin = await _open(gds, issue_app_identity(gds.engine, gds.tmp / "certs", "tool", "urn:test:tool"), "registrar")
    try:
        idx = admin.idx
        received = Received()
        subscription = await watcher.create_subscription(50, received)
        requested = watcher.get_node(gds_node_id(GdsEventTypes.CertificateRequestedAuditEventType, idx))
        await subscription.subscribe_events(watcher.nodes.server, requested)

        app_id = await admin.register("urn:plant:keyless", "Keyless Station")
        spec = CertificateDirectoryMethods.StartNewKeyPairRequest
        await admin.node.call_method(spec.node_id(idx), app_id, ua.NodeId(), ua.NodeId(), "CN=Keyless Station",
                                     ua.Variant(["keyless-station.plant"], ua.VariantType.String), "PFX", PASSWORD)
        await eventually(lambda: received.events, "a CertificateRequestedAuditEventType", timeout=WAIT_S)
        (event,) = received.events
        arguments = [v.Value if isinstance(v, ua.Variant) else v for v in event.InputArguments]
        assert event.Status is True and event.MethodId == spec.node_id(idx)
        assert arguments[0] == app_id and arguments[5] == "PFX"
        assert arguments[6] is None  # the PrivateKeyPassword
        assert PASSWORD not in repr(event)
    finally:
        await admin.client.disconnect()
        await watcher.disconnect()
