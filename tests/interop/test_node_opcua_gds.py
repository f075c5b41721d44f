"""otpki's GDS against node-opcua 2.157.0 clients (an independent stack that knows only OPC 10000-12).

- gds_pull_client.js finds the Directory, the DefaultApplicationGroup, its TrustList and every method by browsing
  BrowseNames from the Objects folder, and pulls through them: RegisterApplication, StartSigningRequest,
  FinishRequest, GetTrustList, Open/Read/Close.
- event_watch.js subscribes to the Server object's events and sees the GDS audit events of a registration, a pull,
  a refused request, an update and an unregistration; an anonymous subscriber sees none.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opcua_gds.gds.application_record import ApplicationRecord, LocalizedName, application_id_to_str
from opcua_gds.gds.client import GdsClient
from opcua_gds.nodeids import DirectoryMethods, GdsObjects, gds_node_id
from opcua_gds.testing import connect, issue_app_identity
from tests.interop.node_clients import event_watcher, node_client_identity, run_script
from tests.opcua_gds.gds.gds_fixture import PASSWORDS, RunningGds, running_gds
from trustlists.models import TrustListContent

GDS_URI = "http://opcfoundation.org/UA/GDS/"
PULLED_URI = "urn:otpki:interop:node-pulled-plc"


@pytest.fixture
async def gds(tmp_path: Path) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path):
        yield running


def _csr(uri: str, name: str, host: str) -> bytes:
    """A P-256 key's signing request for an application registered with that ApplicationUri and host name."""
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName(host)])
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).add_extension(san, False)
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def _b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(i) for i in items]


async def test_node_opcua_pulls_through_nodes_it_found_by_browse_name(gds: RunningGds, tmp_path: Path) -> None:
    engine = gds.engine
    trust = engine.trustlists.get("opcua-application").content
    me = node_client_identity(engine, tmp_path / "node-client", "node-pull-client", "urn:otpki:interop:node-pull",
                              trust=trust)
    csr = tmp_path / "request.der"
    csr.write_bytes(_csr(PULLED_URI, "node-pulled-plc", "node-pulled-plc.plant"))
    out = await run_script("gds_pull_client.js", [
        *me.args(gds.url), "--user", "registrar", "--password", PASSWORDS["registrar"][0],
        "--register-uri", PULLED_URI, "--register-name", "node-pulled-plc",
        "--discovery-url", "opc.tcp://node-pulled-plc.plant:4840", "--csr", str(csr)], tmp_path / "pull.log")

    idx = gds.gds.context.gds_idx
    gds_id = f"ns={idx};i="
    found = out["found"]
    # What the client found by name is the standard node, and browsing showed it with its standard type.
    assert (found["directory"]["nodeId"], found["directory"]["typeDefinition"]) == (gds_id + "141", gds_id + "63")
    assert (found["certificateGroups"]["nodeId"], found["certificateGroups"]["typeDefinition"]) == \
        (gds_id + "614", "ns=0;i=13813")
    assert (found["defaultApplicationGroup"]["nodeId"], found["defaultApplicationGroup"]["typeDefinition"]) == \
        (gds_id + "615", "ns=0;i=12555")
    assert (found["trustList"]["nodeId"], found["trustList"]["typeDefinition"]) == (gds_id + "616", "ns=0;i=12522")
    assert {name: m["nodeId"] for name, m in out["methods"].items()} == {
        "RegisterApplication": gds_id + "146", "StartSigningRequest": gds_id + "157", "FinishRequest": gds_id + "163",
        "GetTrustList": gds_id + "204", "Open": gds_id + "622", "Read": gds_id + "627", "Close": gds_id + "625"}

    # The pull worked: registered, signed, delivered with its chain, and the trust list is the engine's.
    owner = engine.registry.find("opcua-application", application_uri=PULLED_URI)
    assert owner is not None and owner.attributes["application_type"] == int(ua.ApplicationType.Server)
    assert out["applicationId"].lower() == gds.gds.context.application_id(owner.id).to_string().lower()
    certificate = base64.b64decode(out["certificate"])
    record = engine.inventory.by_fingerprint(hashes_sha256(certificate))
    assert record is not None and record.owner_id == owner.id and record.san_uri == PULLED_URI
    assert out["privateKey"] is None  # a signing request: the key never left the client
    assert _b64(out["issuers"]) and all(der in trust.issuer_certificates + trust.trusted_certificates
                                        for der in _b64(out["issuers"]))
    assert out["trustListId"] == found["trustList"]["nodeId"]
    pulled = TrustListContent(specified_lists=out["trustList"]["specifiedLists"],
                              trusted_certificates=_b64(out["trustList"]["trustedCertificates"]),
                              trusted_crls=_b64(out["trustList"]["trustedCrls"]),
                              issuer_certificates=_b64(out["trustList"]["issuerCertificates"]),
                              issuer_crls=_b64(out["trustList"]["issuerCrls"]))
    assert pulled == engine.trustlists.get("opcua-application").content


def hashes_sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()


FIELDS = ["EventType", "SourceNode", "SourceName", "Message", "Status", "StatusCodeId", "ServerId", "ClientUserId",
          "MethodId", "InputArguments", f"{GDS_URI}|CertificateGroup", f"{GDS_URI}|CertificateType"]


async def test_gds_audit_events_reach_a_node_opcua_subscriber(gds: RunningGds, tmp_path: Path) -> None:
    engine = gds.engine
    trust = engine.trustlists.get("opcua-application").content
    watcher_id = node_client_identity(engine, tmp_path / "watcher", "event-view", "urn:otpki:interop:event-view",
                                      trust=trust)
    anonymous_id = node_client_identity(engine, tmp_path / "anonymous", "anonymous-view",
                                        "urn:otpki:interop:anonymous-view", trust=trust)
    idx = gds.gds.context.gds_idx
    gds_id = f"ns={idx};i="
    app = issue_app_identity(engine, tmp_path / "certs", "commissioning", "urn:test:commissioning")
    async with event_watcher(watcher_id, gds.url, FIELDS, tmp_path / "watch.log",
                             user=("ca-admin", PASSWORDS["ca-admin"][0])) as watcher, \
            event_watcher(anonymous_id, gds.url, FIELDS, tmp_path / "anonymous.log") as anonymous:
        client = await connect(gds.url, app, username="registrar", password=PASSWORDS["registrar"][0])
        try:
            pull = GdsClient(client)
            app_id = await _register(pull, "urn:plant:audited", "Audited Station")
            request = await pull.start_signing_request(app_id, _csr("urn:plant:audited", "Audited Station",
                                                                    "audited-station.plant"))
            await pull.finish_request(app_id, request)
            with pytest.raises(ua.UaStatusCodeError):  # refused: the CSR names another application
                await pull.start_signing_request(app_id, _csr("urn:plant:someone-else", "Audited Station",
                                                              "audited-station.plant"))
            directory = client.get_node(gds_node_id(GdsObjects.Directory, idx))
            renamed = _record("urn:plant:audited", "Audited Station 2").model_copy(
                update={"application_id": application_id_to_str(app_id, idx)})
            await directory.call_method(DirectoryMethods.UpdateApplication.node_id(idx),
                                        ua.Variant(renamed.to_ua(idx)))
            await directory.call_method(DirectoryMethods.UnregisterApplication.node_id(idx), app_id)
        finally:
            await client.disconnect()

        def of_type(events: list[dict[str, Any]], type_id: int) -> list[dict[str, Any]]:
            return [e for e in events if e["EventType"] == gds_id + str(type_id)]

        events = await watcher.wait_for(lambda ev: len(of_type(ev, 26)) >= 3 and len(of_type(ev, 91)) >= 2
                                  and len(of_type(ev, 109)) >= 1,
                                  "registration, two requests, a delivery, an update and an unregistration")
        changed = of_type(events, 26)
        # RegisterApplication, UpdateApplication, UnregisterApplication, in that order, on the Directory.
        assert [e["MethodId"] for e in changed] == [gds_id + "146", gds_id + "200", gds_id + "149"]
        for registration in changed:
            assert registration["SourceNode"] == gds_id + "141"
            assert registration["Status"] is True and registration["ClientUserId"] == "registrar"
            assert registration["ServerId"] == "urn:otpki:gds" and registration["SourceName"] == "Attribute/Call"
        accepted, refused = of_type(events, 91)
        assert (accepted["Status"], accepted["StatusCodeId"], accepted["MethodId"]) == (True, "Good", gds_id + "157")
        assert accepted["CertificateGroup"] == gds_id + "615"
        assert accepted["CertificateType"] == "ns=0;i=23538"  # EccNistP256ApplicationCertificateType: a P-256 key
        assert refused["Status"] is False and refused["StatusCodeId"] != "Good"
        (delivered,) = of_type(events, 109)
        assert delivered["MethodId"] == gds_id + "163" and delivered["CertificateGroup"] == gds_id + "615"
        assert delivered["CertificateType"] == "ns=0;i=23538"
        # Audit events say who did what: the anonymous subscriber gets none (after publish cycles with nothing).
        await anonymous.wait_for_keepalives(2)
        assert anonymous.events == []


def _record(uri: str, name: str) -> ApplicationRecord:
    return ApplicationRecord(application_uri=uri, application_type=ua.ApplicationType.Server,
                             application_names=[LocalizedName(text=name)],
                             discovery_urls=["opc.tcp://audited-station.plant:4840"])


async def _register(pull: GdsClient, uri: str, name: str) -> ua.NodeId:
    return await pull.register_application(_record(uri, name))
