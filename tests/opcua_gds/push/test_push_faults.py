"""Faults during a fleet rollout, against real PLC simulators over SignAndEncrypt sessions.

Every fault gets a clear error on its own target while the rest of the fleet is served; a PLC whose link
drops in the middle of a push is found (by reconnecting) with either its old or its new certificate, never
half, and the target is retried until it holds the new one.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.own_identity import ensure_identity
from opcua_gds.push.rollout import KIND, Rollout, TargetOutcome
from simulators.plc import PlcSimulator
from simulators.plc_faults import PlcFaults
from trustlists.models import IssuanceKind
from trustlists.targets import TargetState
from trustlists.testing import Clock, free_port, initialized_engine

ACCESS = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                          roles=[GdsRole.SECURITY_ADMIN])])

# name -> PlcSimulator options
FLEET: dict[str, dict] = {
    "plc-ok": {},
    "plc-drop-update": {"faults": PlcFaults(drop_after_update_certificate=1)},
    "plc-drop-apply": {"faults": PlcFaults(drop_during_apply_changes=1)},
    "plc-no-keygen": {"can_generate_keys": False},
    "plc-refuses-csr": {"faults": PlcFaults(refuse_csr=1)},
    "plc-no-push": {"push_management": False},
    "plc-small": {"max_trust_list_size": 200},
    "plc-wrong-password": {},
    "plc-wrong-uri": {},
}


def sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@pytest.fixture
async def fleet(tmp_path: Path):  # type: ignore[no-untyped-def]
    clock = Clock()
    engine = initialized_engine(tmp_path / "pki", clock=clock)
    plcs: dict[str, PlcSimulator] = {}
    targets: dict[str, str] = {}
    for name, options in FLEET.items():
        plc = PlcSimulator(name, f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / name, ACCESS, **options)
        # The engine checks a CSR against the registration: this PLC's registration names another URI.
        uri = "urn:registered:elsewhere" if name == "plc-wrong-uri" else plc.application_uri
        owner = engine.registry.register(group="opcua-application", name=name, application_uri=uri,
                                         dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
        ref = "bad" if name == "plc-wrong-password" else "plc"
        targets[name] = engine.targets.add(owner_id=owner.id, kind=KIND, address=plc.endpoint,
                                           credentials_ref=ref, actor="test").id
        plcs[name] = plc
    cert, key = ensure_identity(engine, tmp_path / "push-own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    rollout = Rollout(engine, client_cert_path=cert, client_key_path=key, client_app_uri="urn:otpki:push",
                      credentials=lambda ref: ("plc-admin", "plc-admin-pw" if ref == "plc" else "not-the-password"),
                      concurrency=len(FLEET), reconnect_attempts=8, reconnect_delay_s=0.5, timeout_s=90)
    try:
        # Concurrently: each stop waits out asyncua's one-second clock tick, nine of them in a row add up.
        await asyncio.gather(*(plc.start() for plc in plcs.values()))
        yield engine, clock, plcs, targets, rollout
    finally:
        await asyncio.gather(*(plc.stop() for plc in plcs.values()))
        engine.close()


def by_name(outcomes: list[TargetOutcome], targets: dict[str, str]) -> dict[str, TargetOutcome]:
    names = {target_id: name for name, target_id in targets.items()}
    return {names[o.target_id]: o for o in outcomes}


def presented(plc: PlcSimulator) -> bytes:
    assert plc.server is not None
    return plc.server.iserver.certificate.public_bytes(Encoding.DER)


async def test_faults_are_isolated_reported_and_retried(fleet) -> None:  # type: ignore[no-untyped-def]
    engine, clock, plcs, targets, rollout = fleet
    factory = {name: presented(plc) for name, plc in plcs.items()}

    first = by_name((await rollout.run()).outcomes, targets)
    assert set(first) == set(FLEET)

    # Healthy, and the two that recover within the same push.
    assert first["plc-ok"].ok
    # ApplyChanges took effect but its response was lost: the reconnect shows the new certificate.
    assert first["plc-drop-apply"].ok
    assert sha256(presented(plcs["plc-drop-apply"])) != sha256(factory["plc-drop-apply"])
    # No key generator on the PLC: the engine made the key pair and sent it with UpdateCertificate.
    assert first["plc-no-keygen"].ok
    record = engine.inventory.by_fingerprint(sha256(presented(plcs["plc-no-keygen"])))
    assert record is not None and record.issuance is IssuanceKind.SERVER_KEYGEN and record.delivered

    # Each failure says what went wrong, in the spec's words.
    errors = {name: o.error or "" for name, o in first.items() if not o.ok}
    assert set(errors) == {"plc-drop-update", "plc-refuses-csr", "plc-no-push", "plc-small", "plc-wrong-password",
                           "plc-wrong-uri"}
    assert errors["plc-drop-update"].startswith("update_certificate:")
    assert "presents its previous certificate" in errors["plc-drop-update"]
    assert errors["plc-refuses-csr"].startswith("create_signing_request: BadInternalError")
    assert "does not implement push certificate management" in errors["plc-no-push"]
    assert errors["plc-small"].startswith("write_trust_list: BadEncodingLimitsExceeded")
    assert errors["plc-wrong-password"].startswith("connect:") and "UserAccessDenied" in errors["plc-wrong-password"]
    assert errors["plc-wrong-uri"].startswith("issue:") and "urn:registered:elsewhere" in errors["plc-wrong-uri"]

    # Never half: the dropped PLC kept its old certificate and discarded what its dead session staged.
    dropped = plcs["plc-drop-update"]
    assert presented(dropped) == factory["plc-drop-update"]
    assert dropped.push is not None and not dropped.push.state.has_staged()
    assert dropped.push.state.transaction_session is None
    # The PLC with a small MaxTrustListSize was never sent a partial trust list.
    small = plcs["plc-small"]
    assert small.push is not None and not small.push.trust_list.trusted_certificates
    for name in errors:
        target = engine.targets.get(targets[name])
        assert target.state is TargetState.RETRYING and target.last_error

    # Nothing is due before the backoff has passed; afterwards the transient faults heal on retry.
    assert (await rollout.run()).attempted == 0
    clock.now += timedelta(hours=2)
    second = by_name((await rollout.run()).outcomes, targets)
    assert set(second) == set(errors)
    assert second["plc-drop-update"].ok and second["plc-refuses-csr"].ok
    record = engine.inventory.by_fingerprint(sha256(presented(dropped)))
    assert record is not None and record.delivered
    assert not any(second[n].ok for n in ("plc-no-push", "plc-small", "plc-wrong-password", "plc-wrong-uri"))
    assert engine.verify_audit().ok
