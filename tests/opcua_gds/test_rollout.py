"""Fleet rollout over real PLC simulators: concurrency, an unreachable PLC retried later, idempotence,
and a revocation that makes the whole group due again."""

from __future__ import annotations

from pathlib import Path

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.own_identity import ensure_identity
from opcua_gds.rollout import KIND, Rollout
from simulators.plc import PlcSimulator
from tests.helpers import make_csr, make_engine
from tests.opcua_gds.opcua_helpers import free_port
from trustlists.models import RevocationReason
from trustlists.targets import TargetState

ACCESS = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                          roles=[GdsRole.SECURITY_ADMIN])])


async def test_rollout_to_a_small_fleet(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "pki")
    engine.hierarchy.initialize(actor="test")
    cert, key = ensure_identity(engine, tmp_path / "push-own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    plcs = [PlcSimulator(f"plc-{i}", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / f"plc-{i}", ACCESS)
            for i in range(3)]
    for plc in plcs:
        owner = engine.registry.register(group="opcua-application", name=plc.name, application_uri=plc.application_uri,
                                         dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
        engine.targets.add(owner_id=owner.id, kind=KIND, address=plc.endpoint, credentials_ref="plc", actor="test")
        await plc.start()
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
        for plc in plcs:
            await plc.stop()
        engine.close()


def _sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()
