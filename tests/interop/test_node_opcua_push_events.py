"""A push target (opcua_gds.push.target, here the PLC simulator) raises CertificateUpdatedAuditEventType and
TrustListUpdatedAuditEventType when ApplyChanges changes its certificate and trust list, and a node-opcua event
client subscribed to its Server object sees them (a SCADA's event view on the PLC), although ApplyChanges closes
that client's channel (it uses the old server certificate): the channel stays until the events are published."""

from __future__ import annotations

import hashlib
from pathlib import Path

from opcua_gds.push.client import push_certificate
from opcua_gds.push.server_identity import TargetServerIdentity
from opcua_gds.testing import issue_app_identity
from simulators.plc import PlcSimulator
from tests.interop.node_clients import event_watcher, node_client_identity
from tests.opcua_gds.push.target.pki import USERS, access_config
from trustlists.testing import free_port, initialized_engine

FIELDS = ["EventType", "SourceNode", "SourceName", "Status", "StatusCodeId", "ServerId", "ClientUserId", "MethodId",
          "CertificateGroup", "CertificateType", "TrustListId"]
ADMIN = ("secadmin", USERS["secadmin"][0])
PUBLISHING_INTERVAL_MS = 6000


async def test_push_target_audit_events_reach_a_node_opcua_subscriber(tmp_path: Path) -> None:
    engine = initialized_engine(tmp_path / "engine")
    plc = PlcSimulator("plc-9", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", access_config())
    await plc.start()
    try:
        factory = plc.certificate_der
        trust = engine.trustlists.get("opcua-application").content
        # The event view trusts the plant CAs and (until the push) the PLC's factory certificate; its own
        # engine-issued certificate is in the trust list pushed to the PLC, so its channel survives the push.
        view = node_client_identity(engine, tmp_path / "view", "plc-event-view", "urn:otpki:interop:plc-event-view",
                                    trust=trust, extra_trusted=[factory])
        pusher = issue_app_identity(engine, tmp_path / "push", "otpki-push", "urn:otpki:push")
        owner = engine.registry.register(group="opcua-application", name="plc-9", application_uri=plc.application_uri,
                                         dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
        target = engine.targets.add(owner_id=owner.id, kind="opcua-push", address=plc.endpoint,
                                    credentials_ref="plc", actor="test",
                                    pin_sha256=hashlib.sha256(factory).hexdigest())

        async def issue(csr: bytes) -> tuple[bytes, list[bytes]]:
            issued = engine.authority.issue_from_csr(csr, owner_id=owner.id, actor="test")
            return issued.certificate_der, issued.chain_der

        # A SCADA-like publishing interval, longer than the push takes: the event view's channel (of the factory
        # certificate) must stay until its subscription has published what ApplyChanges raised.
        async with event_watcher(view, plc.endpoint, FIELDS, tmp_path / "watch.log", user=ADMIN,
                                 publishing_interval_ms=PUBLISHING_INTERVAL_MS) as watcher:
            result = await push_certificate(
                plc.endpoint, client_cert_path=pusher.cert_path, client_key_path=pusher.key_path,
                client_app_uri=pusher.application_uri, username=ADMIN[0], password=ADMIN[1], issue=issue,
                trust_list=trust, server_check=TargetServerIdentity(engine, target.id, actor="test"))
            assert result.certificate_presented and result.trust_list_applied
            events = await watcher.wait_for(
                lambda ev: {e["EventType"] for e in ev} >= {"ns=0;i=12620", "ns=0;i=12561"},
                "CertificateUpdatedAuditEventType and TrustListUpdatedAuditEventType")
        by_type = {e["EventType"]: e for e in events}
        certificate, trust_list = by_type["ns=0;i=12620"], by_type["ns=0;i=12561"]
        for event in (certificate, trust_list):
            # Raised by ApplyChanges on ServerConfiguration, for the user who pushed.
            assert (event["SourceNode"], event["MethodId"]) == ("ns=0;i=12637", "ns=0;i=12740")
            assert (event["Status"], event["StatusCodeId"], event["ClientUserId"]) == (True, "Good", "secadmin")
            assert event["ServerId"] == plc.application_uri and event["SourceName"] == "Attribute/Call"
        assert certificate["CertificateGroup"] == "ns=0;i=14156"  # DefaultApplicationGroup
        assert certificate["CertificateType"] == "ns=0;i=12560"  # RsaSha256ApplicationCertificateType
        assert trust_list["TrustListId"] == "ns=0;i=12642"
    finally:
        await plc.stop()
        engine.close()
