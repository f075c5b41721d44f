"""Requests a device collects itself (EST in a group that requires approval): approval records the decision, the
device's own next request issues the certificate once, with its bootstrap pin or its renewal; a new request
supersedes the open one. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from simulators.manufacturer import BootstrapCredential, Manufacturer
from trustlists.engine import Engine
from trustlists.errors import InvalidState, RequestNotComplete, RequestNotFound
from trustlists.models import IssuanceKind, Owner, RevocationReason
from trustlists.requests import RequestKind, RequestStatus
from trustlists.testing import make_csr

STORE_BACKENDS = ("sqlite", "postgresql")


def _actions(engine: Engine, subject: str) -> list[str]:
    return [r.action for r in engine.audit_records() if r.subject == subject]


def _bootstrapped(engine: Engine, name: str) -> tuple[Owner, BootstrapCredential]:
    idevid = Manufacturer.create("ACME Devices").issue_idevid(f"SN-{name}")
    owner = engine.registry.register(group="mqtt-device", name=name, actor="tester",
                                     attributes={"bootstrap": [idevid.allow_list_entry()]})
    return owner, idevid


def test_device_request_is_issued_once_when_the_device_collects_it(engine: Engine) -> None:
    owner, idevid = _bootstrapped(engine, "cam-1")
    der = x509.load_pem_x509_certificate(idevid.certificate_pem.encode()).public_bytes(serialization.Encoding.DER)
    csr = make_csr("cam-1", pem=False)
    req = engine.requests.submit_for_device(owner.id, actor="est:cam-1", requester_fingerprint=idevid.sha256,
                                            csr_bytes=csr)
    assert req.kind is RequestKind.DEVICE_CSR and req.status is RequestStatus.PENDING
    found = engine.requests.for_device(owner.id, requester_fingerprint=idevid.sha256, csr_bytes=csr)
    assert found is not None and found.id == req.id

    def collect(fingerprint: str = idevid.sha256) -> str:
        return engine.requests.collect_for_device(req.id, owner_id=owner.id, requester_fingerprint=fingerprint,
                                                  actor="est:cam-1", bootstrap_credential=der).record.serial

    with pytest.raises(RequestNotComplete):
        collect()
    issued_before = len(engine.audit_records(action="certificate.issue"))
    assert engine.requests.approve(req.id, actor="alice").status is RequestStatus.APPROVED  # not issued yet
    assert len(engine.audit_records(action="certificate.issue")) == issued_before
    with pytest.raises(InvalidState) as by_finish:  # only the device, with its certificate, collects it
        engine.requests.finish(req.id, owner_id=owner.id)
    assert by_finish.value.reason == "collected_by_device"
    with pytest.raises(RequestNotFound):
        collect("cd" * 32)
    serial = collect()
    assert collect() == serial  # the same certificate again, not another one
    assert len(engine.audit_records(action="certificate.issue")) == issued_before + 1
    pin = engine.bootstrap.pin(owner.id)
    assert pin is not None and pin.fingerprint_sha256 == idevid.sha256 and pin.serial == serial
    assert engine.requests.get(req.id).serial == serial


def test_a_new_device_request_supersedes_the_open_one(engine: Engine) -> None:
    owner, idevid = _bootstrapped(engine, "cam-2")
    old = engine.requests.submit_for_device(owner.id, actor="est:cam-2", requester_fingerprint=idevid.sha256,
                                            csr_bytes=make_csr("cam-2"))
    engine.requests.approve(old.id, actor="alice")
    new = engine.requests.submit_for_device(owner.id, actor="est:cam-2", requester_fingerprint=idevid.sha256,
                                            csr_bytes=make_csr("cam-2"))
    expired = engine.requests.get(old.id)
    assert expired.status is RequestStatus.EXPIRED and new.id in (expired.reason or "")
    assert engine.requests.get(new.id).status is RequestStatus.PENDING
    assert "request.expire" in _actions(engine, old.id)


def test_device_renewal_supersedes_the_certificate_it_was_asked_with(engine: Engine, device: Owner) -> None:
    current = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="tester")
    fp = current.record.fingerprint_sha256
    req = engine.requests.submit_for_device(device.id, actor="est:pump-7", requester_fingerprint=fp,
                                            csr_bytes=make_csr("pump-7"))
    engine.requests.approve(req.id, actor="alice")
    renewed = engine.requests.collect_for_device(req.id, owner_id=device.id, requester_fingerprint=fp,
                                                 actor="est:pump-7", renews=current.record.serial)
    assert renewed.record.issuance is IssuanceKind.RENEWAL
    assert engine.inventory.get(current.record.serial).superseded_by == renewed.record.serial

    # Revoked between approval and collection: nothing is issued, and the request stays approved.
    other = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="tester")
    fp = other.record.fingerprint_sha256
    req = engine.requests.submit_for_device(device.id, actor="est:pump-7", requester_fingerprint=fp,
                                            csr_bytes=make_csr("pump-7"))
    engine.requests.approve(req.id, actor="alice")
    engine.authority.revoke(other.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="tester")
    with pytest.raises(InvalidState) as refused:
        engine.requests.collect_for_device(req.id, owner_id=device.id, requester_fingerprint=fp, actor="est:pump-7",
                                           renews=other.record.serial)
    assert refused.value.reason == "not_renewable"
    assert engine.requests.get(req.id).status is RequestStatus.APPROVED
