"""The Directory tells the truth (issue 12 §4), over real asyncua SignAndEncrypt sessions against a running GDS.

- QueryApplications / QueryServers / GetApplication give each application its real ApplicationType: a push target
  (registered with `otpki owners add` + `otpki targets add`, no ApplicationRecord) is a Server at its push address,
  otpki's push client is a Client (also when an earlier otpki registered it as a Server), the GDS a DiscoveryServer.
- After UnregisterApplication every method taking that ApplicationId answers BadNotFound.
- A wrong argument count answers BadArgumentsMissing / BadTooManyArguments (OPC 10000-4 Call), on every method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from cryptography.x509.oid import NameOID

from opcua_gds.gds.application_record import ApplicationRecord
from opcua_gds.nodeids import (
    CertificateDirectoryMethods,
    CertificateGroups,
    DirectoryMethods,
    GdsObjects,
    MethodSpec,
    gds_node_id,
)
from opcua_gds.own_identity import ensure_identity
from opcua_gds.testing import issue_app_identity
from tests.opcua_gds.gds.gds_fixture import RunningGds, running_gds
from tests.opcua_gds.gds.test_directory import Session, _code, _open
from trustlists.testing import make_subject_csr

S = ua.StatusCodes
V = ua.VariantType
M = CertificateDirectoryMethods
APP_GROUP = CertificateGroups.GdsDefaultApplicationGroup
PLC_ADDRESS = "opc.tcp://plc-7.plant:4840"


@pytest.fixture
async def gds(tmp_path: Path) -> AsyncIterator[RunningGds]:
    async for running in running_gds(tmp_path):
        yield running


async def _registrar(gds: RunningGds) -> Session:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "commissioning", "urn:test:commissioning")
    return await _open(gds, me, "registrar")  # DiscoveryAdmin + CertificateAuthorityAdmin


async def test_application_types_are_the_real_ones(gds: RunningGds) -> None:
    engine = gds.engine
    # A PLC as an operator registers a push target: `otpki owners add` then `otpki targets add`.
    plc = engine.registry.register(group="opcua-application", name="plc-7", application_uri="urn:plant:plc-7",
                                   dns_names=["plc-7.plant"], actor="test")
    engine.targets.add(owner_id=plc.id, kind="opcua-push", address=PLC_ADDRESS, credentials_ref="admin", actor="test")
    # otpki's push client, as an earlier otpki registered it (a Server), then started by this one.
    engine.registry.register(group="opcua-application", name="otpki-push", application_uri="urn:otpki:push",
                             dns_names=["localhost"], attributes={"application_type": int(ua.ApplicationType.Server)},
                             actor="test")
    ensure_identity(engine, gds.tmp / "push-own", name="otpki-push", application_uri="urn:otpki:push",
                    host="localhost")
    admin = await _registrar(gds)
    try:
        everything = {d.ApplicationUri: d for d in (await admin.query())[2]}
        assert everything["urn:plant:plc-7"].ApplicationType == ua.ApplicationType.Server
        assert everything["urn:plant:plc-7"].DiscoveryUrls == [PLC_ADDRESS]
        assert everything["urn:otpki:push"].ApplicationType == ua.ApplicationType.Client
        assert everything["urn:otpki:gds"].ApplicationType == ua.ApplicationType.DiscoveryServer
        servers = {d.ApplicationUri for d in (await admin.query(app_type=1))[2]}
        clients = {d.ApplicationUri for d in (await admin.query(app_type=2))[2]}
        assert "urn:plant:plc-7" in servers and "urn:plant:plc-7" not in clients
        assert "urn:otpki:push" in clients and "urn:otpki:push" not in servers
        on_network = (await admin.query_servers())[1]
        assert [(s.ServerName, s.DiscoveryUrl) for s in on_network] == [("plc-7", PLC_ADDRESS)]
        record = ApplicationRecord.from_ua(await admin.get(gds.gds.context.application_id(plc.id)), admin.idx)
        assert record.application_type == ua.ApplicationType.Server and record.discovery_urls == [PLC_ADDRESS]
        # The stored registration is corrected for the push client, untouched for the PLC.
        assert engine.registry.find("opcua-application", name="otpki-push").attributes["application_type"] \
            == int(ua.ApplicationType.Client)
        assert "application_type" not in engine.registry.get(plc.id).attributes
    finally:
        await admin.client.disconnect()


async def test_every_method_answers_bad_not_found_after_unregister(gds: RunningGds) -> None:
    admin = await _registrar(gds)
    try:
        app_id = await admin.register("urn:plant:station-9", "Station 9")
        csr = [make_subject_csr([(NameOID.COMMON_NAME, "Station 9")], uris=["urn:plant:station-9"], pem=False)
               for _ in range(3)]
        call = admin.node.call_method
        request = await call(M.StartSigningRequest.node_id(admin.idx), app_id, ua.NodeId(), ua.NodeId(), csr[0])
        certificate, _key, _issuers = await call(M.FinishRequest.node_id(admin.idx), app_id, request)
        pending = await call(M.StartSigningRequest.node_id(admin.idx), app_id, ua.NodeId(), ua.NodeId(), csr[1])
        await admin.unregister(app_id)

        group = APP_GROUP.group_node_id(admin.idx)
        app = ua.Variant(app_id, V.NodeId)
        calls: list[tuple[MethodSpec, list[Any]]] = [
            (DirectoryMethods.GetApplication, [app]),
            (DirectoryMethods.UnregisterApplication, [app]),
            (M.GetCertificateGroups, [app]),
            (M.GetTrustList, [app, group]),
            (M.GetCertificateStatus, [app, group, ua.NodeId()]),
            (M.GetCertificates, [app, group]),
            (M.StartSigningRequest, [app, ua.NodeId(), ua.NodeId(), csr[2]]),
            (M.StartNewKeyPairRequest, [app, ua.NodeId(), ua.NodeId(), "CN=Station 9", ua.Variant([], V.String),
                                        "PEM", ""]),
            (M.FinishRequest, [app, pending]),
            (M.RevokeCertificate, [app, certificate]),
        ]
        answers = {spec.name: await _code(call(spec.node_id(admin.idx), *args)) for spec, args in calls}
        answers["UpdateApplication"] = await _code(admin.update(app_id, "urn:plant:station-9", "Station 9"))
        assert answers == {name: S.BadNotFound for name in answers}
        assert len(answers) == len(calls) + 1
    finally:
        await admin.client.disconnect()


def _gds_methods() -> list[tuple[str, int, MethodSpec]]:
    """(where, object to call on, method) for every GDS method."""
    methods = [("Directory", int(GdsObjects.Directory), s) for s in (*DirectoryMethods.all(), *M.all())]
    for group in CertificateGroups.gds():
        methods.extend((f"{group.name}.TrustList", group.trust_list_id, s) for s in group.methods()
                       if s.name != "GetRejectedList")
    return methods


async def test_wrong_argument_counts_answer_arguments_missing_or_too_many(gds: RunningGds) -> None:
    admin = await _registrar(gds)
    try:
        answers: dict[str, tuple[int, int]] = {}
        for where, parent, spec in _gds_methods():
            on = admin.client.get_node(gds_node_id(parent, admin.idx))
            arguments = [ua.Variant() for _ in spec.inputs]
            fewer = await _code(on.call_method(spec.node_id(admin.idx), *arguments[:-1]))
            more = await _code(on.call_method(spec.node_id(admin.idx), *arguments, ua.Variant(0, V.UInt32)))
            answers[f"{where}.{spec.name}"] = (fewer, more)
        assert answers == {name: (S.BadArgumentsMissing, S.BadTooManyArguments) for name in answers}
        assert len(answers) == 7 + 9 + 3 * 10
    finally:
        await admin.client.disconnect()
