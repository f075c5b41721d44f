"""A cached OCSP answer is replaced when another instance on the same store revokes the certificate (SQLite and
PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from trustlists.engine import Engine
from trustlists.models import Owner, RevocationReason
from trustlists.testing import make_engine, ocsp_responder, wait_until

from .test_ocsp_engine import issue, request_for

STORE_BACKENDS = ("sqlite", "postgresql")


class Steps:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cached_answers_are_replaced_when_another_instance_revokes(engine: Engine, device: Owner, tmp_path: Path,
                                                                  store_url: str | None) -> None:
    """Another engine on the same store stands for another process: its revocation reaches this responder's
    cache through the revocation index, refreshed at most `index_max_age_s` after (SQLite) or when the store
    announces it (PostgreSQL: here the stepped clock never moves, so only the announcement can do it)."""
    engine.ocsp_signers.ensure(actor="tester")
    issued = issue(engine, device)
    steps = Steps()
    responder = ocsp_responder(engine, monotonic=steps, index_max_age_s=0.25, notified_max_age_s=3600.0)
    request = request_for(issued)
    try:
        assert responder.respond(request).cert_status == "good"
        cached = responder.cached(request)
        assert cached is not None and cached.cert_status == "good"  # served without I/O
        other = make_engine(tmp_path if store_url is None else tmp_path / "other", config=engine.config,
                            store_url=store_url)
        try:
            if store_url is not None:  # the other instance needs the CA keys to sign its CRL
                for key in (tmp_path / "keys").iterdir():
                    (tmp_path / "other" / "keys").mkdir(parents=True, exist_ok=True)
                    (tmp_path / "other" / "keys" / key.name).write_bytes(key.read_bytes())
            other.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="other")
        finally:
            other.close()
        if store_url is None:
            steps.now += 0.1
            assert responder.cached(request) == cached  # the index is younger than 0.25 s: the cache is trusted
            steps.now += 0.2
        else:
            wait_until(lambda: responder.cached(request) is None, "the revocation announced")
        assert responder.cached(request) is None
        answer = responder.respond(request)
        assert answer.cert_status == "revoked"
        assert responder.cached(request) == answer
    finally:
        responder.close()
