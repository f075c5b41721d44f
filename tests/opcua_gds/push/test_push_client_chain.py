"""otpki's push client sends its chain (issue 12 §2): a PLC whose trust list holds only the plant root accepts it.

`own_identity.chain_file` writes the push client's certificate followed by its issuing CA; the push client
loads it and sends both in its OpenSecureChannel (OPC 10000-6 6.2.3). The PLC simulator validates the chain
against a trust list of the root and the CRLs only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import Client
from cryptography import x509

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.certificate_chain import split_chain
from opcua_gds.own_identity import chain_file, ensure_identity
from opcua_gds.push.client import PushError, expect_certificate, fingerprint, push_certificate, push_trust_list
from opcua_gds.push.target.certs import is_self_signed
from simulators.plc import PlcSimulator
from trustlists.models import TrustListContent, TrustListMask
from trustlists.testing import free_port, make_engine

ACCESS = AccessConfig(users=[
    PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"), roles=[GdsRole.SECURITY_ADMIN])])
GROUP = "opcua-application"


async def test_the_push_client_with_its_chain_file_is_accepted_by_a_plc_that_trusts_only_the_root(
        tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "pki")
    engine.hierarchy.initialize(actor="test")
    cert, key = ensure_identity(engine, tmp_path / "push" / "own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    chained = chain_file(engine, cert)
    issuing_ca = engine.hierarchy.issuing_ca_for(GROUP, None).certificate_der
    assert split_chain(chained.read_bytes()) == [cert.read_bytes(), issuing_ca]  # the root is not sent
    assert chain_file(engine, cert) == chained  # unchanged: not rewritten

    content = engine.trustlists.get(GROUP).content
    root_only = TrustListContent(
        specified_lists=int(TrustListMask.ALL),
        trusted_certificates=[d for d in content.issuer_certificates
                              if is_self_signed(x509.load_der_x509_certificate(d))],
        trusted_crls=[*content.trusted_crls, *content.issuer_crls])
    plc = PlcSimulator("plc-root-only", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", ACCESS)
    await plc.start()
    try:
        assert plc.push is not None
        check = expect_certificate(fingerprint(plc.certificate_der))

        async def push(client_cert: Path) -> None:
            await push_trust_list(plc.endpoint, client_cert_path=client_cert, client_key_path=key,
                                  client_app_uri="urn:otpki:push", username="plc-admin", password="plc-admin-pw",
                                  trust_list=root_only, server_check=check)

        # The first push (trusted on first use) installs the root-only trust list; its read-back reconnects
        # under that trust list already.
        await push(chained)
        assert plc.push.trust_list.trusted_certificates == root_only.trusted_certificates
        with pytest.raises(PushError) as refused:  # the leaf alone: the PLC cannot build the path
            await push(cert)
        assert refused.value.status == "BadSecurityChecksFailed"
        await push(chained)  # with its issuing CA: accepted
    finally:
        await plc.stop()
        engine.close()


async def test_a_plc_keeps_presenting_the_issuers_it_was_given_when_its_trust_list_drops_them(
        tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "pki")
    engine.hierarchy.initialize(actor="test")
    cert, key = ensure_identity(engine, tmp_path / "push" / "own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    chained = chain_file(engine, cert)
    issuing_ca = engine.hierarchy.issuing_ca_for(GROUP, None).certificate_der
    plc = PlcSimulator("plc-keeps-chain", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc", ACCESS)
    owner = engine.registry.register(group=GROUP, name="plc-keeps-chain", application_uri=plc.application_uri,
                                     dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
    content = engine.trustlists.get(GROUP).content
    root_only = TrustListContent(
        specified_lists=int(TrustListMask.ALL),
        trusted_certificates=[d for d in content.issuer_certificates
                              if is_self_signed(x509.load_der_x509_certificate(d))],
        trusted_crls=[*content.trusted_crls, *content.issuer_crls])
    await plc.start()
    try:
        assert plc.push is not None

        async def issue(csr: bytes) -> tuple[bytes, list[bytes]]:
            issued = engine.authority.issue_from_csr(csr, owner_id=owner.id, actor="push", delivered=False)
            return issued.certificate_der, list(issued.chain_der[:-1])

        common = {"client_cert_path": chained, "client_key_path": key, "client_app_uri": "urn:otpki:push",
                  "username": "plc-admin", "password": "plc-admin-pw"}
        pushed = await push_certificate(plc.endpoint, **common, issue=issue, trust_list=content,
                                        server_check=expect_certificate(fingerprint(plc.certificate_der)))
        assert pushed.certificate_presented
        leaf = plc.certificate_der
        # A trust list of the root alone (UpdateCertificate needed the issuing CA in it; presenting does not).
        await push_trust_list(plc.endpoint, **common, trust_list=root_only,
                              server_check=expect_certificate(fingerprint(leaf)))
        assert issuing_ca not in (*plc.push.trust_list.trusted_certificates, *plc.push.trust_list.issuer_certificates)

        async def presented() -> list[bytes]:
            endpoints = await Client(plc.endpoint, timeout=5).connect_and_get_server_endpoints()
            return split_chain(bytes(endpoints[0].ServerCertificate))

        assert await presented() == [leaf, issuing_ca]
        await plc.stop()
        await plc.start()  # from the PKI folder: own/issuers.der
        assert await presented() == [leaf, issuing_ca]
    finally:
        await plc.stop()
        engine.close()
