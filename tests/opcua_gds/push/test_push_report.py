"""What a rollout reports, against real PLC simulators: the status a PLC refuses otpki with, a trust list a PLC
accepted and did not apply, and a named target pushed during its backoff.

Each refusing PLC is provoked the way a plant meets it: its trust list holds another plant's CAs (untrusted issuer),
lacks the CRL of otpki's issuing CA (revocation unknown), or the PLC does not know the user. The wire status is the
PLC's choice (opcua_gds/push/target/client_validation.py: only the Part 4 pass-through codes, everything else
BadSecurityChecksFailed); the rollout must carry it to the outcome and the target's record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.own_identity import ensure_identity
from opcua_gds.push.rollout import KIND, Rollout, TargetOutcome
from otpki.doctor import examine
from simulators.plc import PlcSimulator
from simulators.plc_faults import PlcFaults
from trustlists.engine import Engine
from trustlists.models import RevocationReason, TrustListContent
from trustlists.targets import TargetState
from trustlists.testing import Clock, foreign_engine, free_port, initialized_engine, make_csr

ACCESS = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                          roles=[GdsRole.SECURITY_ADMIN])])
GROUP = "opcua-application"


@dataclass
class Plant:
    engine: Engine
    clock: Clock
    rollout: Rollout
    plcs: dict[str, PlcSimulator]
    targets: dict[str, str]  # PLC name -> target id

    def outcomes(self, outcomes: list[TargetOutcome]) -> dict[str, TargetOutcome]:
        names = {target_id: name for name, target_id in self.targets.items()}
        return {names[o.target_id]: o for o in outcomes}


PlantFactory = Callable[[dict[str, dict]], Awaitable[Plant]]


@pytest.fixture
async def start_plant(tmp_path: Path) -> AsyncIterator[PlantFactory]:
    """Starts PLCs (name -> PlcSimulator options) registered as push targets; credentials "wrong" for
    plc-wrong-user. Stops them and closes the engine at the end of the test."""
    clock = Clock()
    engine = initialized_engine(tmp_path / "pki", clock=clock)
    plcs: dict[str, PlcSimulator] = {}

    async def start(fleet: dict[str, dict]) -> Plant:
        cert, key = ensure_identity(engine, tmp_path / "push-own", name="otpki-push",
                                    application_uri="urn:otpki:push", host="localhost")
        rollout = Rollout(engine, client_cert_path=cert, client_key_path=key, client_app_uri="urn:otpki:push",
                          credentials=lambda ref: ("plc-admin", "plc-admin-pw" if ref == "plc" else "not-the-password"),
                          concurrency=len(fleet), reconnect_attempts=10, reconnect_delay_s=0.3, timeout_s=90)
        targets: dict[str, str] = {}
        for name, options in fleet.items():
            plc = PlcSimulator(name, f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / name, ACCESS, **options)
            owner = engine.registry.register(group=GROUP, name=name, application_uri=plc.application_uri,
                                             dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
            targets[name] = engine.targets.add(owner_id=owner.id, kind=KIND, address=plc.endpoint, actor="test",
                                               credentials_ref="wrong" if name == "plc-wrong-user" else "plc").id
            plcs[name] = plc
            await plc.start()
        return Plant(engine, clock, rollout, plcs, targets)

    try:
        yield start
    finally:
        for plc in plcs.values():
            await plc.stop()
        engine.close()


def revoke_one(engine: Engine) -> int:
    """Revoke a certificate of the group (a decommissioned HMI); returns the trust-list version that follows."""
    hmi = engine.registry.register(group=GROUP, name="hmi", application_uri="urn:hmi", actor="test")
    serial = engine.authority.issue_from_csr(make_csr("hmi", uris=["urn:hmi"]), owner_id=hmi.id,
                                             actor="test").record.serial
    engine.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
    return engine.trustlists.get(GROUP).version


def trusts(plc: PlcSimulator, content: TrustListContent) -> None:
    """The PLC's active trust list, as an integrator loads it into the PLC out of band."""
    assert plc.push is not None
    plc.push.state.active_trust = content
    plc.push.check.rebuild()


async def test_a_refused_push_names_the_status_the_plc_answered(start_plant: PlantFactory, tmp_path: Path) -> None:
    plant = await start_plant({"plc-other-plant": {}, "plc-no-crl": {}, "plc-wrong-user": {}})
    other = foreign_engine(tmp_path / "other-plant")
    trusts(plant.plcs["plc-other-plant"], other.trustlists.get(GROUP).content)
    other.close()
    ours = plant.engine.trustlists.get(GROUP).content
    trusts(plant.plcs["plc-no-crl"], ours.model_copy(update={"trusted_crls": [], "issuer_crls": []}))

    report = await plant.rollout.run()
    assert (report.attempted, report.delivered, report.not_applied, report.failed) == (3, 0, 0, 3)
    outcomes = plant.outcomes(report.outcomes)
    expected = {"plc-other-plant": "BadSecurityChecksFailed", "plc-no-crl": "BadCertificateRevocationUnknown",
                "plc-wrong-user": "BadUserAccessDenied"}
    assert {name: (o.result, o.step, o.status) for name, o in outcomes.items()} == {
        name: ("failed", "connect", status) for name, status in expected.items()}
    for name, status in expected.items():
        target = plant.engine.targets.get(plant.targets[name])
        assert target.state is TargetState.RETRYING
        assert target.last_error is not None and target.last_error.startswith(f"connect: {status}")
        assert "connection lost" not in target.last_error


async def test_a_trust_list_the_plc_did_not_apply_is_reported_and_stays_due(start_plant: PlantFactory) -> None:
    plant = await start_plant({"plc-drops-trust-list": {"faults": PlcFaults(drop_later_trust_lists=2)}})
    plc = plant.plcs["plc-drops-trust-list"]
    target_id = plant.targets["plc-drops-trust-list"]
    first = await plant.rollout.run()
    assert [o.result for o in first.outcomes] == ["delivered"]
    serial = first.outcomes[0].serial
    applied = plant.engine.trustlists.get(GROUP).version
    # A revocation in the group: a new trust list, which the PLC accepts and drops.
    version = revoke_one(plant.engine)

    report = await plant.rollout.run()
    [outcome] = report.outcomes
    assert (report.delivered, report.not_applied, report.failed) == (0, 1, 0), outcome
    assert (outcome.ok, outcome.result, outcome.trust_list_applied) == (False, "not_applied", False)
    assert outcome.error is not None and outcome.error.startswith(f"trust list v{version} written but not applied")
    assert "the server answered Good but reads back other trusted CRLs than were written" in outcome.error
    assert plc.push is not None and plc.push.trust_list != plant.engine.trustlists.get(GROUP).content
    target = plant.engine.targets.get(target_id)
    assert (target.state, target.delivered_serial, target.delivered_trust_version) == (
        TargetState.NOT_APPLIED, serial, applied)
    assert target.last_error == outcome.error
    [finding] = [f for f in examine(plant.engine).findings if f.check == "push-target"]
    assert finding.level == "warn" and plc.endpoint in finding.subject
    assert finding.detail.startswith(f"plc-drops-trust-list: trust list v{version} written but not applied")

    # A run over the fleet leaves it to its backoff, and says so.
    waiting = await plant.rollout.run()
    assert waiting.attempted == 0
    [skipped] = waiting.skipped
    assert (skipped.target_id, skipped.until) == (target_id, target.next_attempt_at)
    assert skipped.reason == f"trust list v{version} not applied by the target"

    # Named, it is pushed at once: only the trust list, which the PLC drops once more.
    again = await plant.rollout.run(address=plc.endpoint)
    [outcome] = again.outcomes
    assert outcome.result == "not_applied" and outcome.reason == skipped.reason
    assert outcome.serial == serial  # no new certificate for a trust list
    assert plant.engine.targets.get(target_id).attempts == 2

    # The PLC behaves again: the next named push delivers, and the target is up to date.
    done = await plant.rollout.run(address=plc.endpoint)
    assert [o.result for o in done.outcomes] == ["delivered"]
    assert plc.push.trust_list == plant.engine.trustlists.get(GROUP).content
    target = plant.engine.targets.get(target_id)
    assert (target.state, target.delivered_trust_version, target.attempts) == (TargetState.DELIVERED, version, 0)
    current = await plant.rollout.run(address=plc.endpoint)
    assert current.attempted == 0 and [(s.target_id, s.reason) for s in current.skipped] == [(target_id, None)]
    assert plant.engine.verify_audit().ok
