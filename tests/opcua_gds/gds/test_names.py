"""Bad and reserved names over real asyncua SignAndEncrypt sessions: BadInvalidArgument, and nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from cryptography.x509.oid import NameOID

from opcua_gds.gds import directory, pull
from opcua_gds.nodeids import CertificateDirectoryMethods
from opcua_gds.testing import issue_app_identity
from tests.opcua_gds.gds.gds_fixture import RunningGds, running_gds
from tests.opcua_gds.gds.test_directory import _code, _open
from trustlists.models import KeyType, OwnerRole
from trustlists.policy import ReservedName, load_default_config
from trustlists.testing import make_subject_csr, store_snapshot

M = CertificateDirectoryMethods
S = ua.StatusCodes
V = ua.VariantType
NULL = ua.NodeId()


@pytest.fixture
async def gds(tmp_path: Path) -> AsyncIterator[RunningGds]:
    base = load_default_config()
    config = base.model_copy(update={
        "root": base.root.model_copy(update={"key_type": KeyType.RSA2048}),
        "reserved_names": [ReservedName(name="otpki-admin"),
                           ReservedName(name="otpki-enrollment", group="mqtt-device",
                                        role=OwnerRole.ENROLLMENT_SERVICE)]})
    async for running in running_gds(tmp_path, installers=[directory.install, pull.install], config=config):
        yield running


async def test_register_and_update_refuse_bad_names_with_bad_invalid_argument(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "admin-tool", "urn:test:admin-tool")
    admin = await _open(gds, me, "registrar")
    try:
        station = await admin.register("urn:plant:station-a", "Station A")
        before = store_snapshot(gds.engine)
        url = ["opc.tcp://station-b.plant:4840"]
        cases: list[tuple[str, str, list[str]]] = [
            ("urn:plant:b", "S" * 65, url),  # longer than a CN may be (RFC 5280 ub-common-name)
            ("urn:plant:b", "Station\u202eB", url),  # bidirectional override
            ("urn:plant:b", "Station\u2066B", url),  # bidirectional isolate
            ("urn:plant:b", "Station\x07B", url),  # control character
            ("urn:plant:b", " Station B", url),  # leading space
            ("urn:plant:b", "otpki-admin", url),  # a reserved name
            ("urn:plant:otpki-admin", "Station B", url),  # an ApplicationUri ending in one
            ("urn:plant:station b", "Station B", url),  # not an RFC 3986 URI
            ("urn:plant:süd", "Station B", url),  # an IRI, not a URI
            ("urn:plant:b", "Station B", ["opc.tcp://station_b.plant:4840"]),  # not an RFC 1123 host name
        ]
        for uri, name, urls in cases:
            assert await _code(admin.register(uri, name, urls=urls)) == S.BadInvalidArgument, (uri, name, urls)
            if uri == "urn:plant:b":  # the same names through UpdateApplication (its ApplicationUri cannot change)
                assert await _code(admin.update(station, "urn:plant:station-a", name, urls=urls)) \
                    == S.BadInvalidArgument, (name, urls)
        assert store_snapshot(gds.engine) == before
    finally:
        await admin.client.disconnect()


async def test_pull_requests_refuse_bad_names_with_bad_invalid_argument(gds: RunningGds) -> None:
    me = issue_app_identity(gds.engine, gds.tmp / "certs", "scada-1", "urn:plant:scada-1")
    admin = await _open(gds, me, "registrar")
    try:
        app_id = await admin.register("urn:plant:plc-1", "PLC 1")
        uri = ["urn:plant:plc-1"]
        csrs = [
            make_subject_csr([(NameOID.COMMON_NAME, "P" * 65)], uris=uri, pem=False),
            make_subject_csr([(NameOID.COMMON_NAME, "PLC 1"), (NameOID.ORGANIZATION_NAME, "O" * 65)], uris=uri,
                             pem=False),
            make_subject_csr([(NameOID.COMMON_NAME, "PLC\u202e1")], uris=uri, pem=False),
            make_subject_csr([(NameOID.COMMON_NAME, "otpki-admin")], uris=uri, pem=False),
            make_subject_csr([(NameOID.COMMON_NAME, "PLC 1"), (NameOID.COMMON_NAME, "otpki-admin")], uris=uri,
                             pem=False),
            make_subject_csr([(NameOID.COMMON_NAME, "PLC 1")], uris=uri, dns=["plc_1.plant"], pem=False),
        ]
        new_key_requests: list[tuple[str, list[str]]] = [
            ("CN=" + "P" * 65, []),
            ("CN=PLC\u20661", []),
            ("CN=otpki-admin", []),
            ("CN=otpki-enrollment/O=plant", []),
            ("", ["plc_1.plant"]),
            ("", ["-plc.plant"]),
        ]
        before = store_snapshot(gds.engine)

        async def call(spec: Any, *args: Any) -> Any:
            return await admin.node.call_method(spec.node_id(admin.idx), *args)

        for csr in csrs:
            assert await _code(call(M.StartSigningRequest, app_id, NULL, NULL, csr)) == S.BadInvalidArgument
        for subject, domains in new_key_requests:
            assert await _code(call(M.StartNewKeyPairRequest, app_id, NULL, NULL, subject,
                                    ua.Variant(domains, V.String, is_array=True), "PEM", "")) \
                == S.BadInvalidArgument, (subject, domains)
        assert store_snapshot(gds.engine) == before
        assert gds.engine.requests.list() == []
    finally:
        await admin.client.disconnect()
