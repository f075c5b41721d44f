"""opcua_gds.push.client against node-opcua 2.157.0's push management (an independent implementation).

node-opcua deviations from OPC 10000-12 met here (and how the client copes):
- TrustList Write + CloseAndUpdate answer Good but change nothing: push_certificate reads the trust list
  back after the reconnect and reports trust_list_applied=False (step verify_trust_list "NotApplied"); a
  rollout records the target as not applied, due again.
- A refused OpenSecureChannel comes as an ERR message laid out as an OPN chunk holding a ServiceFault: the
  client reads its status (opcua_gds/_asyncua_compat.py, read_channel_refusals).
- UpdateCertificate does not check that the issuer certificates are in the TrustList, and only the leaf
  is installed (the endpoint presents no chain).
- CreateSigningRequest ignores CertificateTypeId; with an empty SubjectName it reuses the current subject.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from asyncua import ua
from cryptography import x509

from opcua_gds.client_session import ServerCheck
from opcua_gds.push.client import (
    PushClient,
    PushError,
    connect_push_session,
    expect_certificate,
    fingerprint,
    push_certificate,
)
from opcua_gds.push.rollout import KIND, Rollout
from opcua_gds.push.server_identity import TargetServerIdentity
from opcua_gds.testing import issue_app_identity
from otpki.doctor import examine
from tests.interop.conftest import ADMIN, OPERATOR, PEER_APP_URI, NodePeer
from trustlists.models import TrustListContent
from trustlists.targets import TargetState


def _session(peer: NodePeer, user: tuple[str, str], mode: ua.MessageSecurityMode
             = ua.MessageSecurityMode.SignAndEncrypt, check: ServerCheck | None = None):  # type: ignore[no-untyped-def]
    # Pinned to the peer's own certificate, as an operator pins a PLC's factory certificate.
    return connect_push_session(peer.endpoint, client_cert_path=peer.client.cert_path,
                                client_key_path=peer.client.key_path, client_app_uri=peer.client.application_uri,
                                username=user[0], password=user[1], mode=mode,
                                server_check=check or expect_certificate(peer.server_sha256))


async def test_read_capabilities_and_trust_list(node_peer: NodePeer) -> None:
    client = await _session(node_peer, ADMIN)
    try:
        push = PushClient(client)
        caps = await push.read_capabilities()
        assert caps.application_uri == "urn:otpki:interop:node-opcua-push-server"
        cert = x509.load_der_x509_certificate(caps.server_certificate_der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert caps.application_uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        assert "PEM" in caps.supported_private_key_formats

        content = await push.read_trust_list()
        # The seeded client certificate is trusted, the engine CAs are issuers.
        assert node_peer.client.cert_der in content.trusted_certificates
        assert content.issuer_certificates
        assert await push.get_rejected_list() == []
    finally:
        await client.disconnect()


async def test_push_certificate_issued_by_engine(node_peer: NodePeer) -> None:
    engine = node_peer.engine
    # Learn the peer's ApplicationUri from its endpoint, register it in the engine under that URI.
    client = await _session(node_peer, ADMIN)
    try:
        caps = await PushClient(client).read_capabilities()
    finally:
        await client.disconnect()
    assert caps.application_uri
    owner = engine.registry.register(group="opcua-application", name="node-opcua-peer",
                                     application_uri=caps.application_uri, dns_names=["localhost"],
                                     ip_addresses=["127.0.0.1"], actor="test")
    # The rollout's own server check: the pinned factory certificate first, the owner's engine certificate after.
    target = engine.targets.add(owner_id=owner.id, kind="opcua-push", address=node_peer.endpoint,
                                credentials_ref="admin", actor="test", pin_sha256=node_peer.server_sha256)
    csrs: list[bytes] = []

    async def issue(csr: bytes) -> tuple[bytes, list[bytes]]:
        csrs.append(csr)
        issued = engine.authority.issue_from_csr(csr, owner_id=owner.id, actor="test")
        return issued.certificate_der, issued.chain_der

    # A trust list the peer should hold after the push: the engine's CAs and the client's certificate.
    engine_tl = engine.trustlists.get("opcua-application").content
    trust_list = TrustListContent(trusted_certificates=[*engine_tl.trusted_certificates, node_peer.client.cert_der],
                                  trusted_crls=engine_tl.trusted_crls,
                                  issuer_certificates=engine_tl.issuer_certificates,
                                  issuer_crls=engine_tl.issuer_crls)
    result = await push_certificate(node_peer.endpoint, client_cert_path=node_peer.client.cert_path,
                                    client_key_path=node_peer.client.key_path,
                                    client_app_uri=node_peer.client.application_uri, username=ADMIN[0],
                                    password=ADMIN[1], issue=issue, trust_list=trust_list,
                                    server_check=TargetServerIdentity(engine, target.id, actor="test"))

    assert len(csrs) == 1
    assert result.certificate_presented
    assert result.new_fingerprint == result.issued_fingerprint != result.old_fingerprint
    assert result.old_fingerprint == caps.server_certificate_fingerprint
    record = engine.inventory.by_fingerprint(result.new_fingerprint)
    assert record is not None and record.owner_id == owner.id and record.san_uri == caps.application_uri
    assert [s.step for s in result.steps][:3] == ["connect", "read_capabilities", "write_trust_list"]
    assert result.trust_list_written
    # node-opcua deviation: Write/CloseAndUpdate answer Good but do nothing. The client must notice.
    assert result.trust_list_applied is False
    assert result.steps[-1].step == "verify_trust_list" and result.steps[-1].status == "NotApplied"

    # A fresh session sees the engine-issued certificate on the endpoint: the old pin no longer matches, the
    # owner's engine certificate (validated against the group's trust list) is what lets the session in.
    identity = TargetServerIdentity(engine, target.id, actor="test")
    client = await _session(node_peer, ADMIN, check=identity)
    try:
        presented, _ = await PushClient(client).server_certificate()
    finally:
        await client.disconnect()
    assert fingerprint(presented) == record.fingerprint_sha256
    assert identity.accepted is not None and identity.accepted.how == f"engine certificate {record.serial}"
    assert hashlib.sha256(presented).hexdigest() == result.issued_fingerprint


async def test_user_without_security_admin_is_denied(node_peer: NodePeer) -> None:
    client = await _session(node_peer, OPERATOR)
    try:
        push = PushClient(client)
        for call in (lambda: push.create_signing_request(regenerate_key=True), push.read_trust_list,
                     push.apply_changes):
            try:
                await call()
            except PushError as exc:
                assert exc.status == "BadUserAccessDenied", exc
            else:
                raise AssertionError("operator was allowed a push management call")
    finally:
        await client.disconnect()


async def test_sign_only_channel_is_refused(node_peer: NodePeer) -> None:
    # The peer offers Basic256Sha256 Sign endpoints, so this is checked, not skipped.
    client = await _session(node_peer, ADMIN, ua.MessageSecurityMode.Sign)
    try:
        push = PushClient(client)
        try:
            await push.create_signing_request(regenerate_key=True)
        except PushError as exc:
            assert exc.status == "BadSecurityModeInsufficient", exc
            assert exc.step == "create_signing_request"
        else:
            raise AssertionError("CreateSigningRequest succeeded over a Sign-only channel")
    finally:
        await client.disconnect()


async def test_unseeded_client_is_rejected_and_listed(node_peer: NodePeer, tmp_path: Path) -> None:
    # automaticallyAcceptUnknownCertificate is false: only the pre-seeded client certificate is trusted.
    stranger = issue_app_identity(node_peer.engine, tmp_path / "stranger", "stranger", "urn:otpki:interop:stranger")
    try:
        await connect_push_session(node_peer.endpoint, client_cert_path=stranger.cert_path,
                                   client_key_path=stranger.key_path, client_app_uri=stranger.application_uri,
                                   username=ADMIN[0], password=ADMIN[1],
                                   server_check=expect_certificate(node_peer.server_sha256))
    except PushError as exc:
        # node-opcua refuses OpenSecureChannel with an ERR message in its own layout: the status and its reason
        # must come through, not "connection lost".
        assert (exc.step, exc.status, exc.code) == ("connect", "BadSecurityChecksFailed",
                                                    ua.StatusCodes.BadSecurityChecksFailed), exc
        assert "The server's reason: certificate invalid" in exc.detail
    else:
        raise AssertionError("an unknown client certificate was accepted")
    client = await _session(node_peer, ADMIN)
    try:
        assert stranger.cert_der in await PushClient(client).get_rejected_list()
    finally:
        await client.disconnect()


async def test_a_rollout_reports_the_trust_list_node_opcua_did_not_apply(node_peer: NodePeer) -> None:
    """node-opcua answers Good to the trust list and keeps its own: the rollout says so, the target stays due,
    `otpki doctor` warns, and naming the target pushes it again during its backoff."""
    engine = node_peer.engine
    owner = engine.registry.register(group="opcua-application", name="node-opcua-peer", application_uri=PEER_APP_URI,
                                     dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
    target = engine.targets.add(owner_id=owner.id, kind=KIND, address=node_peer.endpoint, credentials_ref="admin",
                                actor="test", pin_sha256=node_peer.server_sha256)
    rollout = Rollout(engine, client_cert_path=node_peer.client.cert_path, client_key_path=node_peer.client.key_path,
                      client_app_uri=node_peer.client.application_uri, credentials=lambda _ref: ADMIN,
                      reconnect_attempts=20, reconnect_delay_s=0.5, timeout_s=90)
    version = engine.trustlists.get("opcua-application").version

    report = await rollout.run()
    [outcome] = report.outcomes
    assert (report.delivered, report.not_applied, report.failed) == (0, 1, 0), outcome
    assert (outcome.result, outcome.trust_list_applied) == ("not_applied", False)
    assert outcome.error is not None and outcome.error.startswith(f"trust list v{version} written but not applied: "
                                                                  "the server answered Good but reads back")
    listed = engine.targets.get(target.id)
    assert (listed.state, listed.delivered_serial, listed.delivered_trust_version) == (
        TargetState.NOT_APPLIED, outcome.serial, None)  # its certificate is ours; no trust list of ours is
    [finding] = [f for f in examine(engine).findings if f.check == "push-target"]
    assert finding.level == "warn" and node_peer.endpoint in finding.subject
    assert finding.detail.startswith(f"node-opcua-peer: trust list v{version} written but not applied")

    assert (await rollout.run()).attempted == 0  # backing off
    again = await rollout.run(address=node_peer.endpoint)  # named: pushed now, the trust list only
    assert [(o.result, o.serial) for o in again.outcomes] == [("not_applied", outcome.serial)]
    assert engine.targets.get(target.id).attempts == 2
