"""Engine.decommission: revoke what an owner still holds and end its registration, all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from trustlists.engine import Engine
from trustlists.errors import InvalidState, NotFound, OtpkiError
from trustlists.models import CertificateStatus, Owner, RevocationReason
from trustlists.testing import make_csr, make_engine, store_refuses, store_snapshot


def _issue(engine: Engine, owner: Owner) -> str:
    return engine.authority.issue_from_csr(make_csr(owner.name, uris=[owner.application_uri or ""]),
                                           owner_id=owner.id, actor="t").record.serial


def _state(engine: Engine, owner: Owner) -> tuple[object, ...]:
    """Everything decommissioning may change, as seen through the engine's public API."""
    records = engine.inventory.query(owner_id=owner.id)
    ca_ids = sorted({r.issuer_ca_id for r in records})
    return (
        engine.registry.get(owner.id).unregistered_at,
        sorted((r.serial, r.status_at(engine.now()), r.revocation_reason) for r in records),
        [engine.is_revoked(r.issuer_ca_id, int(r.serial, 16)) for r in sorted(records, key=lambda r: r.serial)],
        [(c.crl_number if (c := engine.latest_crl(ca_id)) else None) for ca_id in ca_ids],
        engine.trustlists.get(owner.group).version,
        len(engine.audit_records()),
    )


def test_decommission_revokes_what_is_live_and_unregisters(engine: Engine, scada: Owner, device: Owner) -> None:
    first, second, done_before = _issue(engine, scada), _issue(engine, scada), _issue(engine, scada)
    engine.authority.revoke(done_before, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    bystander = engine.authority.issue_with_new_key(owner_id=device.id, actor="t").record.serial
    ca = engine.hierarchy.issuing_ca_for("opcua-application", None)
    crl_before = engine.latest_crl(ca.id)
    version_before = engine.trustlists.get("opcua-application").version

    done = engine.decommission(scada.id, actor="ops")

    assert done.owner.unregistered and engine.registry.get(scada.id).unregistered
    assert sorted(r.serial for r in done.revoked) == sorted([first, second])
    assert all(r.revocation_reason is RevocationReason.CESSATION_OF_OPERATION for r in done.revoked)
    assert engine.inventory.get(done_before).revocation_reason is RevocationReason.KEY_COMPROMISE  # untouched
    assert engine.inventory.get(bystander).status_at(engine.now()) is CertificateStatus.ACTIVE
    assert all(engine.is_revoked(ca.id, int(s, 16)) for s in (first, second))
    # One new CRL for the issuer, carrying both; one new trust-list version.
    crl = engine.latest_crl(ca.id)
    assert crl is not None and crl_before is not None and crl.crl_number == crl_before.crl_number + 1
    parsed = x509.load_der_x509_crl(crl.der)
    assert all(parsed.get_revoked_certificate_by_serial_number(int(s, 16)) is not None
               for s in (first, second, done_before))
    assert engine.trustlists.get("opcua-application").version == version_before + 1
    actions = [(r.action, r.subject) for r in engine.audit_records() if r.actor == "ops"]
    assert sorted(a for a in actions if a[0] == "certificate.revoke") == sorted(
        [("certificate.revoke", first), ("certificate.revoke", second)])
    assert ("owner.unregister", scada.id) in actions
    assert engine.verify_audit().ok
    with pytest.raises(InvalidState):
        engine.decommission(scada.id, actor="ops")
    with pytest.raises(NotFound):
        engine.decommission("no-such-owner", actor="ops")


def test_a_failure_between_revoke_and_unregister_leaves_neither(engine: Engine, scada: Owner,
                                                                 tmp_path: Path) -> None:
    """The unregistration is the last write; the store refuses it, after every revocation, CRL and trust-list
    version of the same transaction was written. Nothing of it may stay, in the store or in the live index."""
    serials = [_issue(engine, scada), _issue(engine, scada)]
    before, counts = _state(engine, scada), store_snapshot(engine)

    with store_refuses(engine, table="owners", operation="UPDATE"), pytest.raises(OtpkiError):
        engine.decommission(scada.id, actor="ops")

    assert _state(engine, scada) == before
    assert store_snapshot(engine) == counts
    assert engine.verify_audit().ok
    # Another process opening the store sees the same: nothing revoked, still registered.
    other = make_engine(tmp_path, config=engine.config, clock=engine.now)
    try:
        assert not other.registry.get(scada.id).unregistered
        assert not any(other.is_revoked(r.issuer_ca_id, int(r.serial, 16))
                       for r in other.inventory.query(owner_id=scada.id))
    finally:
        other.close()
    # Once the store works again the same call goes through.
    done = engine.decommission(scada.id, actor="ops")
    assert sorted(r.serial for r in done.revoked) == sorted(serials) and done.owner.unregistered


def test_an_owner_without_certificates_is_just_unregistered(engine: Engine, device: Owner) -> None:
    version = engine.trustlists.get("mqtt-device").version
    done = engine.decommission(device.id, actor="ops")
    assert done.revoked == [] and done.owner.unregistered
    assert engine.trustlists.get("mqtt-device").version == version
