"""Certificate requests with approval: submit, approve/reject, finish; keys generated at collection."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from trustlists.der import common_name
from trustlists.engine import Engine
from trustlists.errors import (
    CsrRejected,
    InvalidInput,
    InvalidState,
    NotFound,
    PolicyViolation,
    RequestExpired,
    RequestNotComplete,
    RequestNotFound,
    RequestRejected,
)
from trustlists.models import IssuanceKind, KeyType, Owner
from trustlists.requests import AUTO_APPROVER, RequestKind, RequestStatus
from trustlists.testing import Clock, make_csr, make_engine, new_key, store_snapshot

FP = "AB:" * 31 + "AB"  # a client-certificate SHA-256 fingerprint, as a front might pass it


@pytest.fixture
def user(engine: Engine) -> Owner:
    """An opcua-user owner: that group is auto_approve = false by default, CN must be the owner's name."""
    return engine.registry.register(group="opcua-user", name="alice", actor="tester")


def _request_count(engine: Engine) -> int:
    with engine._ctx.store.read() as tx:
        return int(tx.execute("SELECT COUNT(*) FROM cert_requests").fetchone()[0])


def _actions(engine: Engine, subject: str) -> list[str]:
    return [r.action for r in engine.audit_records() if r.subject == subject]


def test_auto_approve_issues_at_submit(engine: Engine, device: Owner) -> None:
    assert engine.config.group("mqtt-device").auto_approve
    req = engine.requests.submit_csr(device.id, make_csr("pump-7"), actor="gds", requester_fingerprint=FP)
    assert req.status is RequestStatus.ISSUED and req.serial and req.decided_by == AUTO_APPROVER
    stored = engine.requests.get(req.id)
    assert stored.status is RequestStatus.ISSUED and stored.serial == req.serial
    assert stored.requester_fingerprint == "ab" * 32 and stored.kind is RequestKind.CSR
    issued = engine.requests.finish(req.id, owner_id=device.id, requester_fingerprint=FP)
    assert issued.record.serial == req.serial and issued.private_key is None
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    assert common_name(cert.subject) == "pump-7"
    assert len(issued.chain_der) == 2  # issuing CA, root
    # Collecting again returns the same certificate (a client whose answer got lost asks again).
    assert engine.requests.finish(req.id, owner_id=device.id).certificate_der == issued.certificate_der
    assert _actions(engine, req.id) == ["request.submit", "request.approve", "request.issue"]
    issue_records = [r for r in engine.audit_records() if r.action == "certificate.issue"]
    assert issue_records[-1].subject == req.serial and issue_records[-1].details["request"] == req.id
    assert engine.verify_audit().ok


def test_manual_approve_then_finish(engine: Engine, user: Owner) -> None:
    req = engine.requests.submit_csr(user.id, make_csr("alice"), actor="gds", requester_fingerprint=FP)
    assert req.status is RequestStatus.PENDING and req.serial is None
    with pytest.raises(RequestNotComplete) as exc:
        engine.requests.finish(req.id, owner_id=user.id)
    assert exc.value.reason == "request_not_complete"
    assert engine.inventory.query(group="opcua-user") == []
    approved = engine.requests.approve(req.id, actor="alice-admin")
    assert approved.status is RequestStatus.ISSUED and approved.decided_by == "alice-admin"
    assert approved.serial is not None and approved.issued_at is not None
    issued = engine.requests.finish(req.id, owner_id=user.id, requester_fingerprint=FP)
    assert issued.record.serial == approved.serial and issued.record.issuance is IssuanceKind.CSR
    assert common_name(x509.load_der_x509_certificate(issued.certificate_der).subject) == "alice"
    assert [r.serial for r in engine.inventory.query(group="opcua-user")] == [approved.serial]
    with pytest.raises(InvalidState, match="not pending"):
        engine.requests.approve(req.id, actor="alice-admin")
    assert _actions(engine, req.id) == ["request.submit", "request.approve", "request.issue"]
    assert engine.verify_audit().ok


def test_reject(engine: Engine, user: Owner) -> None:
    req = engine.requests.submit_csr(user.id, make_csr("alice"), actor="gds", requester_fingerprint=None)
    with pytest.raises(InvalidInput):
        engine.requests.reject(req.id, actor="admin", reason="  ")
    rejected = engine.requests.reject(req.id, actor="admin", reason="alice left the company")
    assert rejected.status is RequestStatus.REJECTED and rejected.reason == "alice left the company"
    with pytest.raises(RequestRejected, match="alice left the company") as exc:
        engine.requests.finish(req.id, owner_id=user.id)
    assert exc.value.reason == "request_rejected"
    with pytest.raises(InvalidState):
        engine.requests.approve(req.id, actor="admin")
    with pytest.raises(InvalidState):
        engine.requests.reject(req.id, actor="admin", reason="again")
    assert engine.inventory.query(group="opcua-user") == []
    assert _actions(engine, req.id) == ["request.submit", "request.reject"]
    assert engine.verify_audit().ok


def test_finish_by_another_owner_looks_like_an_unknown_id(engine: Engine, user: Owner) -> None:
    bob = engine.registry.register(group="opcua-user", name="bob", actor="tester")
    req = engine.requests.submit_csr(user.id, make_csr("alice"), actor="gds", requester_fingerprint=FP)
    engine.requests.approve(req.id, actor="admin")
    with pytest.raises(RequestNotFound) as other:
        engine.requests.finish(req.id, owner_id=bob.id)
    assert isinstance(other.value, NotFound) and other.value.reason == "unknown_request"
    with pytest.raises(RequestNotFound) as unknown:
        engine.requests.finish("no-such-request", owner_id=bob.id)
    assert str(other.value).replace(req.id, "X") == str(unknown.value).replace("no-such-request", "X")
    # The same owner from another client certificate is refused as well.
    with pytest.raises(RequestNotFound) as wrong_client:
        engine.requests.finish(req.id, owner_id=user.id, requester_fingerprint="cd" * 32)
    assert wrong_client.value.reason == "requester_mismatch"
    with pytest.raises(RequestNotFound):
        engine.requests.approve("no-such-request", actor="admin")
    with pytest.raises(RequestNotFound):
        engine.requests.reject("no-such-request", actor="admin", reason="x")


def test_finish_while_pending_and_after_approval_of_new_key(engine: Engine, user: Owner) -> None:
    req = engine.requests.submit_new_key(user.id, actor="gds", key_format="pem", requester_fingerprint=FP)
    with pytest.raises(RequestNotComplete):
        engine.requests.finish(req.id, owner_id=user.id)
    approved = engine.requests.approve(req.id, actor="admin")
    # Approval records the decision; nothing is signed and no key exists until the owner collects it.
    assert approved.status is RequestStatus.APPROVED and approved.serial is None
    assert engine.inventory.query(group="opcua-user") == []
    issued = engine.requests.finish(req.id, owner_id=user.id)
    assert issued.private_key is not None and issued.private_key_format == "pem"
    key = serialization.load_pem_private_key(issued.private_key, password=None)
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    assert cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert issued.record.issuance is IssuanceKind.SERVER_KEYGEN
    assert engine.requests.get(req.id).status is RequestStatus.ISSUED
    with pytest.raises(InvalidState) as again:
        engine.requests.finish(req.id, owner_id=user.id)
    assert again.value.reason == "key_already_collected"
    assert _actions(engine, req.id) == ["request.submit", "request.approve", "request.issue"]
    assert engine.verify_audit().ok


@pytest.mark.parametrize("csr, error, reason", [
    (b"garbage", InvalidInput, "csr_malformed"),
    (None, CsrRejected, "subject_mismatch"),  # CN is not the registered name
    ("ca", PolicyViolation, "ca_requested"),
    ("rsa1024", PolicyViolation, "key_size_forbidden"),
    ("dns", PolicyViolation, "host_names_forbidden"),
])
def test_bad_csr_is_refused_at_submit_and_nothing_is_stored(engine: Engine, user: Owner, csr, error, reason
                                                            ) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import rsa

    data = {None: lambda: make_csr("mallory"), "ca": lambda: make_csr("alice", ca=True),
            "rsa1024": lambda: make_csr("alice", key=rsa.generate_private_key(65537, 1024)),
            "dns": lambda: make_csr("alice", dns=["alice.plant"])}.get(csr, lambda: csr)()
    before = store_snapshot(engine)
    with pytest.raises(error) as exc:
        engine.requests.submit_csr(user.id, data, actor="gds", requester_fingerprint=FP)
    assert exc.value.reason == reason
    assert store_snapshot(engine) == before and _request_count(engine) == 0


def test_submit_refusals_for_owner_and_new_key(engine: Engine, user: Owner) -> None:
    before = store_snapshot(engine)
    with pytest.raises(NotFound):
        engine.requests.submit_csr("no-such-owner", make_csr("alice"), actor="gds")
    with pytest.raises(InvalidInput, match="password"):
        engine.requests.submit_new_key(user.id, actor="gds", key_format="pkcs12", password=None)
    with pytest.raises(InvalidInput):
        engine.requests.submit_new_key(user.id, actor="gds", key_format="der")  # type: ignore[arg-type]
    with pytest.raises(PolicyViolation):
        engine.requests.submit_new_key(user.id, actor="gds", key_type=KeyType.ED25519)
    with pytest.raises(CsrRejected):
        engine.requests.submit_new_key(user.id, actor="gds", subject_name="mallory")
    assert store_snapshot(engine) == before and _request_count(engine) == 0


def test_new_key_pkcs12_with_password(engine: Engine, user: Owner, tmp_path: Path) -> None:
    secret = "pfx-password-4711"
    req = engine.requests.submit_new_key(user.id, actor="gds", key_type=KeyType.EC_P256, key_format="pkcs12",
                                         password=secret, requester_fingerprint=FP)
    assert req.status is RequestStatus.PENDING and req.has_password and req.key_type is KeyType.EC_P256
    engine.requests.approve(req.id, actor="admin")
    issued = engine.requests.finish(req.id, owner_id=user.id, requester_fingerprint=FP)
    assert issued.private_key_format == "pkcs12" and issued.private_key is not None
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(issued.private_key, b"wrong")
    key, cert, cas = pkcs12.load_key_and_certificates(issued.private_key, secret.encode())
    assert key is not None and cert is not None
    assert cert.public_bytes(serialization.Encoding.DER) == issued.certificate_der
    assert len(cas) == 2 and common_name(cert.subject) == "alice"
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    # Neither the key (in any form handed out) nor its password ever reached the store.
    engine._ctx.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("otpki.db*"))
    assert secret.encode() not in raw
    assert scalar not in raw and issued.private_key not in raw
    reopened = make_engine(tmp_path)
    try:
        assert reopened.verify_audit().ok
        actions = [r.action for r in reopened.audit_records() if r.subject in (req.id, issued.record.serial)]
        assert actions == ["request.submit", "request.approve", "certificate.issue", "request.issue"]
    finally:
        reopened.close()


def test_restart_loses_the_password_so_the_request_expires(engine: Engine, user: Owner, tmp_path: Path,
                                                           clock: Clock) -> None:
    with_password = engine.requests.submit_new_key(user.id, actor="gds", key_format="pkcs12", password="pw-1")
    plain = engine.requests.submit_new_key(user.id, actor="gds", key_format="pem")
    engine.requests.approve(with_password.id, actor="admin")
    restarted = make_engine(tmp_path, config=engine.config, clock=clock)  # another process: empty memory
    try:
        with pytest.raises(RequestExpired, match="submit a new request") as exc:
            restarted.requests.finish(with_password.id, owner_id=user.id)
        assert exc.value.reason == "request_expired"
        assert restarted.requests.get(with_password.id).status is RequestStatus.EXPIRED
        with pytest.raises(RequestExpired):
            restarted.requests.finish(with_password.id, owner_id=user.id)
        assert restarted.inventory.query(group="opcua-user") == []  # nothing orphaned
        # A request without a secret survives the restart: approved elsewhere, collected here.
        restarted.requests.approve(plain.id, actor="admin")
        assert restarted.requests.finish(plain.id, owner_id=user.id).private_key is not None
        assert "request.expire" in _actions(restarted, with_password.id)
        assert restarted.verify_audit().ok
    finally:
        restarted.close()


def test_auto_approved_new_key_is_made_when_collected(engine: Engine, device: Owner) -> None:
    req = engine.requests.submit_new_key(device.id, actor="gds", key_format="pkcs12", password="pw")
    assert req.status is RequestStatus.APPROVED and req.decided_by == AUTO_APPROVER
    assert engine.inventory.query(group="mqtt-device") == []
    issued = engine.requests.finish(req.id, owner_id=device.id)
    key, cert, _ = pkcs12.load_key_and_certificates(issued.private_key or b"", b"pw")
    assert key is not None and cert is not None and common_name(cert.subject) == "pump-7"
    assert engine.requests.get(req.id).serial == issued.record.serial


def test_reject_forgets_the_password_and_approved_can_be_rejected(engine: Engine, user: Owner) -> None:
    req = engine.requests.submit_new_key(user.id, actor="gds", key_format="pkcs12", password="pw")
    engine.requests.approve(req.id, actor="admin")
    engine.requests.reject(req.id, actor="admin", reason="wrong department")
    assert req.id not in engine.requests._passwords
    with pytest.raises(RequestRejected, match="wrong department"):
        engine.requests.finish(req.id, owner_id=user.id)


def test_concurrent_finish_hands_the_key_out_once(engine: Engine, device: Owner) -> None:
    req = engine.requests.submit_new_key(device.id, actor="gds", key_format="pem")
    results: list[object] = []
    barrier = threading.Barrier(4, timeout=30)

    def collect() -> None:
        barrier.wait()
        try:
            results.append(engine.requests.finish(req.id, owner_id=device.id))
        except InvalidState as exc:
            results.append(exc)

    threads = [threading.Thread(target=collect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a finish() call did not return"
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidState) and r.reason == "key_already_collected"
               for r in results if isinstance(r, Exception))
    assert len(engine.inventory.query(group="mqtt-device")) == 1  # the losers' certificates rolled back
    assert engine.verify_audit().ok


def test_list_filters(engine: Engine, user: Owner, device: Owner) -> None:
    a = engine.requests.submit_csr(user.id, make_csr("alice", key=new_key("ec-p384")), actor="gds")
    b = engine.requests.submit_csr(user.id, make_csr("alice"), actor="gds")
    c = engine.requests.submit_csr(device.id, make_csr("pump-7"), actor="gds")
    engine.requests.reject(b.id, actor="admin", reason="duplicate")
    assert {r.id for r in engine.requests.list()} == {a.id, b.id, c.id}
    assert [r.id for r in engine.requests.list(status="pending")] == [a.id]
    assert [r.id for r in engine.requests.list(status=RequestStatus.ISSUED)] == [c.id]
    assert {r.id for r in engine.requests.list(group="opcua-user")} == {a.id, b.id}
    assert [r.id for r in engine.requests.list(status="rejected", group="opcua-user")] == [b.id]
    with pytest.raises(InvalidInput):
        engine.requests.list(status="bogus")
    with pytest.raises(NotFound):
        engine.requests.list(group="nope")

