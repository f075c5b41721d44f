"""Bootstrap identities in the engine: the typed allow-list, the pin set at first enrollment, re-enrollment that
replaces the device's certificates, rearm, and the race of two certificates for one device across processes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulators.manufacturer import BootstrapCredential, Manufacturer
from tests.mqtt_broker_auth.conftest import mqtt_config
from trustlists.engine import Engine
from trustlists.errors import BootstrapRefused, InvalidInput, InvalidState, NotFound
from trustlists.models import CertificateStatus, IssuedCertificate, Owner, RevocationReason
from trustlists.testing import Clock, initialized_engine, make_csr, make_engine, store_snapshot

ACTOR = "tester"
GROUP = "mqtt-device"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = initialized_engine(tmp_path / "pki", clock=Clock(), config=mqtt_config(), actor=ACTOR)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def maker() -> Manufacturer:
    return Manufacturer.create("ACME Devices")


def register(engine: Engine, name: str, *entries: dict[str, str], **attributes: object) -> Owner:
    return engine.registry.register(group=GROUP, name=name, site="north", actor=ACTOR,
                                    attributes={"bootstrap": list(entries), **attributes})


def enroll(engine: Engine, owner: Owner, credential: BootstrapCredential, *, keygen: bool = False) -> IssuedCertificate:
    return engine.bootstrap.enroll(owner_id=owner.id, credential=credential.certificate_pem.encode(), actor=ACTOR,
                                   csr=None if keygen else make_csr(owner.name))


def refused(reason: str, fn, *args, **kwargs) -> BootstrapRefused:  # type: ignore[no-untyped-def]
    with pytest.raises(BootstrapRefused) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


def active_serials(engine: Engine, owner: Owner) -> list[str]:
    return [c.serial for c in engine.inventory.query(owner_id=owner.id, status=CertificateStatus.ACTIVE)]


def actions(engine: Engine) -> list[str]:
    return [r.action for r in engine.audit_records()]


# -- the allow-list is typed and checked where it enters ------------------------------------------------------------

def test_allow_list_is_validated_at_registration_and_update(engine: Engine) -> None:
    fingerprint = "AB:" * 31 + "AB"
    owner = register(engine, "pump-1", {"subject_cn": "SN-1"}, {"sha256": fingerprint}, {"subject_cn": "SN-1"})
    assert owner.attributes["bootstrap"] == [{"subject_cn": "SN-1"}, {"sha256": "ab" * 32}]  # normalized, deduped
    bad: list[object] = [
        "SN-1",  # not a list
        [{"subject_cn": "SN-1", "sha256": "ab" * 32}],  # both kinds
        [{}],  # neither
        [{"subject_cn": "SN-1", "issuer": "x"}],  # unknown key
        [{"sha256": "abc"}],  # not a fingerprint
        [{"subject_cn": "SN\n1"}],  # control character
        [{"subject_cn": " SN-1"}],  # leading space
        [{"subject_cn": "S" * 65}],  # longer than RFC 5280 allows a CN
        ["SN-1"],  # not an entry
    ]
    for i, allow in enumerate(bad):
        with pytest.raises(InvalidInput) as info:
            engine.registry.register(group=GROUP, name=f"bad-{i}", actor=ACTOR, attributes={"bootstrap": allow})
        assert info.value.reason == "bad_bootstrap_entry", allow
        with pytest.raises(InvalidInput):
            engine.registry.update(owner.model_copy(update={"attributes": {"bootstrap": allow}}), actor=ACTOR)
    assert engine.registry.get(owner.id).attributes == owner.attributes
    # A service identity never gets a bootstrap allow-list: whoever enrolled with it would get the service's rights.
    with pytest.raises(InvalidInput) as role:
        register(engine, "svc", {"subject_cn": "SN-9"}, role="enrollment-service")
    assert role.value.reason == "bootstrap_role"


# -- the pin ----------------------------------------------------------------------------------------------------

def test_first_enrollment_pins_the_certificate_and_another_with_the_same_cn_is_refused(
        engine: Engine, maker: Manufacturer) -> None:
    genuine, forged = maker.issue_idevid("SN-1"), maker.issue_idevid("SN-1")  # same CN, same manufacturer CA
    owner = register(engine, "pump-1", genuine.allow_list_entry())
    issued = enroll(engine, owner, genuine)
    pin = engine.bootstrap.pin(owner.id)
    assert pin is not None and pin.fingerprint_sha256 == genuine.sha256 and pin.serial == issued.record.serial
    assert pin.issuer == "O=ACME Devices,CN=ACME Devices IDevID CA" and pin.subject == "O=ACME Devices,CN=SN-1"
    assert "bootstrap.pin" in actions(engine)

    before = store_snapshot(engine)
    refusal = refused("bootstrap_pinned", enroll, engine, owner, forged)
    assert "otpki owners rearm mqtt-device pump-1" in refusal.message
    refused("bootstrap_pinned", enroll, engine, owner, forged, keygen=True)
    assert store_snapshot(engine) == before  # nothing signed into the store, nothing audited
    assert active_serials(engine, owner) == [issued.record.serial]


def test_a_certificate_enrolls_one_device_only(engine: Engine, maker: Manufacturer) -> None:
    idevid = maker.issue_idevid("SN-2")
    first = register(engine, "pump-2", idevid.allow_list_entry())
    second = register(engine, "pump-3", idevid.allow_list_entry(by="sha256"))
    enroll(engine, first, idevid)
    refused("bootstrap_pinned", enroll, engine, second, idevid)


def test_only_an_allow_listed_certificate_enrolls(engine: Engine, maker: Manufacturer) -> None:
    owner = register(engine, "pump-4", {"subject_cn": "SN-4"})
    refused("bootstrap_not_allowed", enroll, engine, owner, maker.issue_idevid("SN-5"))
    # A self-signed certificate chooses its own CN: only a fingerprint entry admits it.
    refused("bootstrap_not_allowed", enroll, engine, owner, Manufacturer.factory_self_signed("SN-4"))
    service = engine.registry.register(group=GROUP, name="svc", site="north", actor=ACTOR,
                                       attributes={"role": "enrollment-service"})
    refused("bootstrap_role", enroll, engine, service, maker.issue_idevid("SN-6"))


def test_reenrollment_with_the_pinned_certificate_replaces_every_live_certificate(
        engine: Engine, maker: Manufacturer) -> None:
    idevid = maker.issue_idevid("SN-7")
    owner = register(engine, "pump-7", idevid.allow_list_entry())
    first = enroll(engine, owner, idevid).record.serial
    renewed = engine.authority.renew(first, actor=ACTOR, new_key=True).record.serial  # first: superseded, valid
    by_cli = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR).record.serial
    assert sorted(active_serials(engine, owner)) == sorted([renewed, by_cli])

    # Factory reset: the device comes back with its IDevID.
    latest = enroll(engine, owner, idevid, keygen=True).record.serial
    assert active_serials(engine, owner) == [latest]
    for serial in (first, renewed, by_cli):
        record = engine.inventory.get(serial)
        assert record.revocation_reason == RevocationReason.SUPERSEDED, record
        assert engine._ctx.index.reason(record.issuer_ca_id, int(serial, 16)) == RevocationReason.SUPERSEDED
    assert engine.inventory.get(renewed).superseded_by == latest
    assert engine.inventory.get(by_cli).superseded_by == latest
    reenroll = [r for r in engine.audit_records() if r.action == "bootstrap.reenroll"]
    assert len(reenroll) == 1 and sorted(reenroll[0].details["replaced"]) == sorted([first, renewed, by_cli])
    assert engine.verify_audit().ok


def test_pin_is_decided_in_the_issuance_transaction(engine: Engine, maker: Manufacturer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Two certificates that both passed the early check (two processes at the same moment): the transaction
    that records the second certificate sees the first one's pin and rolls back."""
    genuine, forged = maker.issue_idevid("SN-8"), maker.issue_idevid("SN-8")
    owner = register(engine, "pump-8", genuine.allow_list_entry())
    monkeypatch.setattr(engine.bootstrap, "check_pin", lambda owner, fingerprint: None)
    winner = enroll(engine, owner, genuine).record.serial
    before = store_snapshot(engine)
    refused("bootstrap_pinned", enroll, engine, owner, forged)
    assert store_snapshot(engine) == before
    assert active_serials(engine, owner) == [winner]
    assert engine.bootstrap.pin(owner.id).fingerprint_sha256 == genuine.sha256  # type: ignore[union-attr]


def test_the_allow_list_is_read_again_in_the_issuance_transaction(engine: Engine, maker: Manufacturer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator re-arms the device for a new part while the old part's request is being signed."""
    old_part, new_part = maker.issue_idevid("SN-30"), maker.issue_idevid("SN-31")
    owner = register(engine, "pump-30", old_part.allow_list_entry())
    real_check = engine.bootstrap.check_pin

    def operator_acts_meanwhile(owner: Owner, fingerprint: str) -> None:
        real_check(owner, fingerprint)
        engine.registry.update(owner.model_copy(update={"attributes": {"bootstrap": [new_part.allow_list_entry()]}}),
                               actor="operator")

    monkeypatch.setattr(engine.bootstrap, "check_pin", operator_acts_meanwhile)
    before = store_snapshot(engine)[0]
    refused("bootstrap_not_allowed", enroll, engine, owner, old_part)
    assert store_snapshot(engine)[0] == before and engine.bootstrap.pin(owner.id) is None


def test_a_pin_left_by_an_unregistered_device_frees_its_certificate(engine: Engine, maker: Manufacturer) -> None:
    idevid = maker.issue_idevid("SN-32")
    gone = register(engine, "pump-32", idevid.allow_list_entry(by="sha256"))
    enroll(engine, gone, idevid)
    engine.registry.unregister(gone.id, actor=ACTOR)
    successor = register(engine, "pump-32b", idevid.allow_list_entry(by="sha256"))
    enroll(engine, successor, idevid)
    assert engine.bootstrap.pin(successor.id).fingerprint_sha256 == idevid.sha256  # type: ignore[union-attr]
    assert engine.bootstrap.pin(gone.id) is None


def test_rearm_releases_the_pin_and_can_replace_the_allow_list(engine: Engine, maker: Manufacturer) -> None:
    old_part, new_part = maker.issue_idevid("SN-10"), maker.issue_idevid("SN-11")
    owner = register(engine, "pump-10", old_part.allow_list_entry())
    with pytest.raises(InvalidState) as nothing:
        engine.bootstrap.rearm(owner.id, actor=ACTOR)
    assert nothing.value.reason == "not_pinned"
    old_serial = enroll(engine, owner, old_part).record.serial
    refused("bootstrap_not_allowed", enroll, engine, owner, new_part)

    released = engine.bootstrap.rearm(owner.id, actor="operator", allow=[new_part.allow_list_entry()])
    assert released is not None and released.fingerprint_sha256 == old_part.sha256
    assert engine.bootstrap.pin(owner.id) is None
    assert engine.registry.get(owner.id).attributes["bootstrap"] == [{"subject_cn": "SN-11"}]
    record = engine.audit_records()[-1]
    assert (record.action, record.actor, record.details["released_sha256"]) == \
        ("bootstrap.rearm", "operator", old_part.sha256)

    new_serial = enroll(engine, owner, new_part).record.serial
    assert active_serials(engine, owner) == [new_serial]
    assert engine.inventory.get(old_serial).revocation_reason == RevocationReason.SUPERSEDED
    refused("bootstrap_not_allowed", enroll, engine, owner, old_part)
    with pytest.raises(NotFound):
        engine.bootstrap.rearm("no-such-owner", actor=ACTOR)
    with pytest.raises(InvalidInput):
        engine.bootstrap.rearm(owner.id, actor=ACTOR, allow=[{"sha256": "nope"}])


def test_pins_reach_another_process_through_refresh(engine: Engine, maker: Manufacturer, tmp_path: Path) -> None:
    genuine, forged = maker.issue_idevid("SN-12"), maker.issue_idevid("SN-12")
    owner = register(engine, "pump-12", genuine.allow_list_entry())
    other = make_engine(tmp_path / "pki", config=mqtt_config())  # e.g. the broker's process, same store
    try:
        assert other.bootstrap.admits_live(owner.id, forged.sha256)
        enroll(engine, owner, genuine)
        assert not engine.bootstrap.admits_live(owner.id, forged.sha256)  # this process: at once
        other.refresh_revocations()
        assert not other.bootstrap.admits_live(owner.id, forged.sha256)
        assert other.bootstrap.admits_live(owner.id, genuine.sha256)
        engine.bootstrap.rearm(owner.id, actor=ACTOR)
        other.refresh_revocations()
        assert other.bootstrap.admits_live(owner.id, forged.sha256)
    finally:
        other.close()


async def test_concurrent_first_enrollment_from_processes_pins_exactly_one(
        engine: Engine, maker: Manufacturer, tmp_path: Path) -> None:
    """Three processes, three certificates with the same allow-listed CN, one go signal: one certificate wins."""
    credentials = [maker.issue_idevid("SN-20") for _ in range(3)]
    owner = register(engine, "pump-20", credentials[0].allow_list_entry())
    go = tmp_path / "go"
    procs = []
    for i, credential in enumerate(credentials):
        pem = tmp_path / f"idevid-{i}.pem"
        pem.write_text(credential.certificate_pem)
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.trustlists.bootstrap_race_worker", str(tmp_path / "pki"), owner.id,
            str(pem), str(go), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE))
    try:
        for proc in procs:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
            assert line.strip() == b"ready", line + await proc.stderr.read()  # type: ignore[union-attr]
        go.touch()
        results = []
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    winners = [r["serial"] for r in results if "serial" in r]
    assert len(winners) == 1, results
    assert sorted(r.get("reason") for r in results if "reason" in r) == ["bootstrap_pinned"] * 2, results
    winner = credentials[next(i for i, r in enumerate(results) if "serial" in r)]
    engine.refresh_revocations()
    assert engine.bootstrap.pin(owner.id).fingerprint_sha256 == winner.sha256  # type: ignore[union-attr]
    assert [c.serial for c in engine.inventory.query(owner_id=owner.id)] == winners
    assert engine.inventory.get(winners[0]).status_at(datetime.now(UTC)) == CertificateStatus.ACTIVE
    assert actions(engine).count("bootstrap.pin") == 1 and engine.verify_audit().ok


def test_an_in_transaction_hook_that_refuses_undoes_certificate_and_pin(engine: Engine, maker: Manufacturer) -> None:
    credential = maker.issue_idevid("SN-hook")
    owner = register(engine, "hook-1", credential.allow_list_entry())
    issued_before = engine.inventory.count()

    def refuse(_tx: object, _record: object) -> None:
        raise RuntimeError("the front's own bookkeeping said no")

    with pytest.raises(RuntimeError):
        engine.bootstrap.enroll(owner_id=owner.id, credential=credential.certificate_pem.encode(), actor=ACTOR,
                                csr=make_csr(owner.name), in_transaction=refuse)
    assert engine.inventory.count() == issued_before and engine.bootstrap.pin(owner.id) is None
    seen: list[str] = []
    enrolled = engine.bootstrap.enroll(owner_id=owner.id, credential=credential.certificate_pem.encode(),
                                       actor=ACTOR, csr=make_csr(owner.name),
                                       in_transaction=lambda _tx, record: seen.append(record.serial))
    assert seen == [enrolled.record.serial] and engine.bootstrap.pin(owner.id) is not None


def test_the_request_guards_hook_refuses_a_second_issuance_for_one_request(engine: Engine,
                                                                           maker: Manufacturer) -> None:
    from datetime import timedelta

    from trustlists.errors import RequestNotAdmitted
    from trustlists.request_guard import RateLimit

    credential = maker.issue_idevid("SN-once")
    owner = register(engine, "once-1", credential.allow_list_entry())
    limit = RateLimit(burst=5, refill_per_s=1)

    def hook():  # type: ignore[no-untyped-def]
        return engine.request_guard.admitting("est:test", owner.id, "csr-digest", limit=limit,
                                              expires_at=engine.now() + timedelta(days=1))

    engine.bootstrap.enroll(owner_id=owner.id, credential=credential.certificate_pem.encode(), actor=ACTOR,
                            csr=make_csr(owner.name), in_transaction=hook())
    issued = engine.inventory.count()
    with pytest.raises(RequestNotAdmitted) as info:
        engine.bootstrap.enroll(owner_id=owner.id, credential=credential.certificate_pem.encode(), actor=ACTOR,
                                csr=make_csr(owner.name), in_transaction=hook())
    assert info.value.reason == "replay" and engine.inventory.count() == issued
    assert len(active_serials(engine, owner)) == 1  # the first certificate was not replaced either
