"""The audit of refused TLS client certificates (otpki/web/refused_handshakes.py): a flood is bounded per window, and
what it did not audit one by one is counted in one record when the window ends (a real timer) or at close."""

from __future__ import annotations

from pathlib import Path

from otpki.web._uvicorn_compat import RefusedHandshake
from otpki.web.refused_handshakes import ACTION, SUPPRESSED_ACTION, RefusedHandshakeAudit
from tests.http_fronts.conftest import ec_root_config
from trustlists.testing import eventually, initialized_engine


def refused(n: int) -> RefusedHandshake:
    return RefusedHandshake(peer=f"10.0.0.{n % 2}", port=40000 + n, reason="unable to get local issuer certificate",
                            verify_code=20, alert="unknown_ca")


async def test_a_flood_is_audited_up_to_the_budget_then_counted_per_peer(tmp_path: Path) -> None:
    engine = initialized_engine(tmp_path / "pki", config=ec_root_config(), actor="tester")
    now = [0.0]
    audit = RefusedHandshakeAudit(engine, "web", per_window=3, window_s=0.3, clock=lambda: now[0])
    try:
        for n in range(8):
            audit(refused(n))
        # The window's end is a timer on the loop: the count is audited without another refusal coming.
        # Each record is written by its own task off the loop: wait for all of them, in whatever order they land.
        await eventually(lambda: engine.audit_records(action=SUPPRESSED_ACTION)
                         and len(engine.audit_records(action=ACTION)) == 3, "the suppressed count audited")
        (summary,) = engine.audit_records(action=SUPPRESSED_ACTION)
        assert summary.details["count"] == 5 and summary.details["peers"] == {"10.0.0.1": 3, "10.0.0.0": 2}
        records = engine.audit_records(action=ACTION)
        assert sorted(r.details["port"] for r in records) == [40000, 40001, 40002]
        first = next(r for r in records if r.details["port"] == 40000)
        assert first.actor == "tls-client:10.0.0.0" and first.details["alert"] == "unknown_ca"

        now[0] = 1.0  # a new window: audited one by one again
        audit(refused(8))
        audit(refused(9))
        await audit.close()
        assert len(engine.audit_records(action=ACTION)) == 5
        assert len(engine.audit_records(action=SUPPRESSED_ACTION)) == 1  # nothing was suppressed since
        assert engine.verify_audit().ok
    finally:
        engine.close()
