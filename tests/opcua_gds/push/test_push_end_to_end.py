"""otpki's push client against otpki's push server side (a PLC simulator): the full path, trust list first.

Unlike the node-opcua peer, this server really applies a written trust list, so the read-back must show it,
and afterwards the PLC refuses clients the new trust list does not trust.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua.ua.uaerrors import BadSecurityChecksFailed, BadUserAccessDenied

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.push.client import PushError, expect_certificate, fingerprint, push_certificate
from opcua_gds.testing import connect, issue_app_identity
from simulators.plc import PlcSimulator
from trustlists.testing import foreign_engine, free_port, initialized_engine

ACCESS = AccessConfig(users=[
    PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"), roles=[GdsRole.SECURITY_ADMIN]),
    PasswordUser(name="operator", password_hash=hash_password("operator-pw"), roles=[])])


async def test_push_certificate_and_trust_list_to_a_plc(tmp_path: Path) -> None:
    engine = initialized_engine(tmp_path / "pki")
    pusher = issue_app_identity(engine, tmp_path / "certs", "otpki-push", "urn:otpki:push")
    plc = PlcSimulator("plc-7", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-pki", ACCESS)
    plc_owner = engine.registry.register(group="opcua-application", name="plc-7", application_uri=plc.application_uri,
                                         dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
    await plc.start()
    try:
        factory = plc.push.certificate_der if plc.push else b""
        trust = engine.trustlists.get("opcua-application")

        async def issue(csr: bytes) -> tuple[bytes, list[bytes]]:
            issued = engine.authority.issue_from_csr(csr, owner_id=plc_owner.id, actor="push", delivered=False)
            return issued.certificate_der, issued.chain_der[:-1]  # the issuing CA; the root is in the trust list

        result = await push_certificate(
            plc.endpoint, client_cert_path=pusher.cert_path, client_key_path=pusher.key_path,
            client_app_uri=pusher.application_uri, username="plc-admin", password="plc-admin-pw", issue=issue,
            trust_list=trust.content, server_check=expect_certificate(fingerprint(factory)))
        assert result.certificate_presented and result.old_fingerprint == fingerprint(factory)
        assert result.trust_list_written and result.trust_list_applied is True
        record = engine.inventory.by_fingerprint(result.new_fingerprint)
        assert record is not None and record.owner_id == plc_owner.id

        # The PLC now trusts only the group's CA: a client with a certificate from another CA is refused.
        other = foreign_engine(tmp_path / "other-pki")
        stranger = issue_app_identity(other, tmp_path / "stranger", "stranger", "urn:stranger")
        other.close()
        with pytest.raises(BadSecurityChecksFailed):
            await connect(plc.endpoint, stranger, username="plc-admin", password="plc-admin-pw")

        # A user without SecurityAdmin cannot push.
        with pytest.raises(PushError) as err:
            await push_certificate(
                plc.endpoint, client_cert_path=pusher.cert_path, client_key_path=pusher.key_path,
                client_app_uri=pusher.application_uri, username="operator", password="operator-pw", issue=issue,
                server_check=expect_certificate(result.new_fingerprint))
        assert err.value.status == BadUserAccessDenied.__name__
    finally:
        await plc.stop()
        engine.close()
