"""Fleet rollout over real PLC simulators: concurrency, an unreachable PLC retried later, idempotence,
and a revocation that makes the whole group due again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.own_identity import ensure_identity
from opcua_gds.push.rollout import KIND, Rollout, RolloutReport
from simulators.plc import PlcSimulator
from trustlists.models import RevocationReason
from trustlists.targets import DeliveryTarget, TargetState
from trustlists.testing import eventually, free_port, initialized_engine, make_csr

ACCESS = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                          roles=[GdsRole.SECURITY_ADMIN])])


async def test_rollout_to_a_small_fleet(tmp_path: Path) -> None:
    engine = initialized_engine(tmp_path / "pki")
    cert, key = ensure_identity(engine, tmp_path / "push-own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    plcs = [PlcSimulator(f"plc-{i}", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / f"plc-{i}", ACCESS)
            for i in range(3)]
    for plc in plcs:
        owner = engine.registry.register(group="opcua-application", name=plc.name, application_uri=plc.application_uri,
                                         dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
        engine.targets.add(owner_id=owner.id, kind=KIND, address=plc.endpoint, credentials_ref="plc", actor="test")
    await asyncio.gather(*(plc.start() for plc in plcs))
    dead = engine.registry.register(group="opcua-application", name="plc-dead", application_uri="urn:plc:dead",
                                    actor="test")
    dead_target = engine.targets.add(owner_id=dead.id, kind=KIND, credentials_ref="plc", actor="test",
                                     address=f"opc.tcp://127.0.0.1:{free_port()}/nothing-listens")
    rollout = Rollout(engine, client_cert_path=cert, client_key_path=key, client_app_uri="urn:otpki:push",
                      credentials=lambda _ref: ("plc-admin", "plc-admin-pw"), concurrency=4,
                      reconnect_attempts=10, reconnect_delay_s=0.5, timeout_s=60)
    try:
        report = await rollout.run()
        assert (report.attempted, report.delivered, report.failed) == (4, 3, 1)
        for plc in plcs:
            record = engine.inventory.by_fingerprint(_sha256(plc.push.certificate_der if plc.push else b""))
            assert record is not None and record.delivered  # the PLC presents an engine-issued certificate
        failed = engine.targets.get(dead_target.id)
        assert failed.state is TargetState.RETRYING and failed.last_error
        # Idempotent: the reachable PLCs are up to date, the dead one waits for its backoff.
        assert (await rollout.run()).attempted == 0

        # A revocation in the group bumps its trust list: every delivered PLC is due again.
        extra = engine.registry.register(group="opcua-application", name="hmi", application_uri="urn:hmi",
                                         actor="test")
        serial = engine.authority.issue_from_csr(make_csr("hmi", uris=["urn:hmi"]), owner_id=extra.id,
                                                 actor="test").record.serial
        engine.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
        again = await rollout.run()
        assert again.delivered == 3 and all("trust list" in o.reason for o in again.outcomes)
        assert all(o.trust_list_applied for o in again.outcomes)
        assert engine.verify_audit().ok
    finally:
        await asyncio.gather(*(plc.stop() for plc in plcs))
        engine.close()


def _sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()


async def test_scheduler_renews_before_expiry_and_pushes_new_trust_lists(tmp_path: Path) -> None:
    from datetime import timedelta

    from trustlists.policy import load_default_config
    from trustlists.testing import Clock

    config = load_default_config()
    # Two-day certificates renewed on their last day, so the test can step the clock into the window.
    group = config.groups["opcua-application"].model_copy(update={"leaf_lifetime_days": 2, "renewal_window_days": 1})
    config = config.model_copy(update={"groups": {**config.groups, "opcua-application": group}})
    clock = Clock()
    engine = initialized_engine(tmp_path / "pki", config=config, clock=clock)
    cert, key = ensure_identity(engine, tmp_path / "push-own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    plc = PlcSimulator("plc-s", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-s", ACCESS)
    owner = engine.registry.register(group="opcua-application", name=plc.name, application_uri=plc.application_uri,
                                     dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
    target = engine.targets.add(owner_id=owner.id, kind=KIND, address=plc.endpoint, credentials_ref="plc",
                                actor="test")
    rollout = Rollout(engine, client_cert_path=cert, client_key_path=key, client_app_uri="urn:otpki:push",
                      credentials=lambda _ref: ("plc-admin", "plc-admin-pw"), reconnect_attempts=10,
                      reconnect_delay_s=0.3, timeout_s=60)
    stop = asyncio.Event()
    rounds: list[RolloutReport] = []
    await plc.start()
    service = asyncio.create_task(rollout.serve(interval_s=0.2, stop=stop, on_report=rounds.append))

    async def delivered(predicate) -> DeliveryTarget:  # type: ignore[no-untyped-def]
        try:
            await eventually(lambda: predicate(engine.targets.get(target.id)), "a delivery", timeout=30, interval=0.1)
        except AssertionError:
            raise AssertionError(f"the scheduler did not deliver: {engine.targets.get(target.id)} {rounds}") from None
        return engine.targets.get(target.id)

    try:
        first = await delivered(lambda t: t.state is TargetState.DELIVERED)
        # A revocation in the group: only the trust list goes out, the PLC keeps its certificate.
        other = engine.registry.register(group="opcua-application", name="hmi", application_uri="urn:hmi", actor="t")
        serial = engine.authority.issue_from_csr(make_csr("hmi", uris=["urn:hmi"]), owner_id=other.id,
                                                 actor="test").record.serial
        engine.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
        version = engine.trustlists.get("opcua-application").version
        second = await delivered(lambda t: t.delivered_trust_version == version and t.state is TargetState.DELIVERED)
        assert second.delivered_serial == first.delivered_serial
        assert plc.push is not None and plc.push.trust_list == engine.trustlists.get("opcua-application").content

        # A day later the certificate is inside its renewal window: the scheduler renews it unasked.
        clock.now += timedelta(days=1, minutes=5)
        third = await delivered(lambda t: t.delivered_serial != first.delivered_serial
                                and t.state is TargetState.DELIVERED)
        presented = engine.inventory.by_fingerprint(_sha256(plc.certificate_der))
        assert presented is not None and presented.serial == third.delivered_serial
        assert engine.inventory.get(first.delivered_serial).superseded_by == third.delivered_serial
        assert all(not o.error for r in rounds for o in r.outcomes)
    finally:
        stop.set()
        await service
        await plc.stop()
        engine.close()


async def test_a_target_whose_lease_cannot_be_taken_waits_for_the_next_round(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A busy store while taking one target's lease skips that target (reported), it does not end the run."""
    from trustlists.errors import StoreBusy

    engine = initialized_engine(tmp_path / "pki")
    owner = engine.registry.register(group="opcua-application", name="plc-1", application_uri="urn:plc:1",
                                     actor="test")
    target = engine.targets.add(owner_id=owner.id, kind=KIND, credentials_ref="plc", actor="test",
                                address=f"opc.tcp://127.0.0.1:{free_port()}/plc")

    def busy(*_args: object, **_kwargs: object) -> None:
        raise StoreBusy("the database is locked by another otpki transaction for longer than the busy timeout")

    monkeypatch.setattr(engine.leases, "acquire", busy)
    rollout = Rollout(engine, client_cert_path=tmp_path / "none.pem", client_key_path=tmp_path / "none.key",
                      client_app_uri="urn:otpki:push", credentials=lambda _ref: ("plc-admin", "pw"))
    report = await rollout.run()
    assert report.attempted == 0
    assert [(s.target_id, (s.reason or "").split(":")[0]) for s in report.skipped] == [(target.id, "lease not taken")]
    assert engine.targets.get(target.id).state is TargetState.PENDING  # untouched: due in the next round
    engine.close()


async def test_a_renewal_that_meets_a_busy_store_once_does_not_abandon_the_push(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """One lease renewal refused by a busy store, while the lease still holds: the push goes on to the end (before,
    it was cancelled half-way as if another instance had taken the target)."""
    from trustlists.errors import StoreBusy

    engine = initialized_engine(tmp_path / "pki")
    cert, key = ensure_identity(engine, tmp_path / "push-own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    plc = PlcSimulator("plc-0", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-0", ACCESS)
    owner = engine.registry.register(group="opcua-application", name=plc.name, application_uri=plc.application_uri,
                                     dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
    engine.targets.add(owner_id=owner.id, kind=KIND, address=plc.endpoint, credentials_ref="plc", actor="test")
    await plc.start()
    acquire = engine.leases.acquire
    calls: list[int] = []

    def busy_once(*args: object, **kwargs: object) -> object:
        calls.append(len(calls))
        if len(calls) == 2:  # the first renewal
            raise StoreBusy("the database is locked by another otpki transaction for longer than the busy timeout")
        return acquire(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.leases, "acquire", busy_once)
    rollout = Rollout(engine, client_cert_path=cert, client_key_path=key, client_app_uri="urn:otpki:push",
                      credentials=lambda _ref: ("plc-admin", "plc-admin-pw"), reconnect_attempts=10,
                      reconnect_delay_s=0.5, timeout_s=60, lease_s=0.3)
    try:
        report = await rollout.run()
        assert len(calls) >= 3, calls  # the push outlasted the refused renewal and a renewal after it
        assert report.delivered == 1, report.outcomes
        assert engine.verify_audit().ok
    finally:
        await plc.stop()
        engine.close()
