"""The hash-chained audit log notices edits, deletions in the middle and deletions at the end."""

from __future__ import annotations

from trustlists import audit
from trustlists.engine import Engine
from trustlists.models import Owner
from trustlists.policy import load_default_config
from trustlists.testing import make_csr

# Every test here runs on SQLite and on PostgreSQL (tests/trustlists/conftest.py).
STORE_BACKENDS = ("sqlite", "postgresql")


def _fill(engine: Engine, device: Owner) -> None:
    for _ in range(3):
        engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="alice")


def test_intact_log_verifies_and_records_key_ceremonies(engine: Engine, device: Owner) -> None:
    _fill(engine, device)
    result = engine.verify_audit()
    assert result.ok and result.records > 5
    ceremonies = [r for r in engine.audit_records() if r.action == "ca.create"]
    assert {r.subject for r in ceremonies} == {"root", *load_default_config().groups}
    for rec in ceremonies:
        assert rec.actor == "tester"
        assert len(rec.details["key_id_sha256"]) == 64 and len(rec.details["certificate_sha256"]) == 64
        assert rec.details["key_ref"] and rec.details["key_backend"] == "file"


def test_edited_record_is_detected(engine: Engine, device: Owner) -> None:
    _fill(engine, device)
    with engine._ctx.store.transaction() as tx:
        tx.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")
    result = engine.verify_audit()
    assert not result.ok and result.first_bad_seq == 5 and "modified" in (result.problem or "")


def test_deleted_record_is_detected(engine: Engine, device: Owner) -> None:
    _fill(engine, device)
    with engine._ctx.store.transaction() as tx:
        tx.execute("DELETE FROM audit_log WHERE seq = 4")
    result = engine.verify_audit()
    assert not result.ok and result.first_bad_seq == 4


def test_deleted_tail_is_detected(engine: Engine, device: Owner) -> None:
    _fill(engine, device)
    with engine._ctx.store.transaction() as tx:
        last = tx.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]
        tx.execute("DELETE FROM audit_log WHERE seq >= ?", (last - 1,))
    result = engine.verify_audit()
    assert not result.ok and "deleted from the end" in (result.problem or "")


def test_a_batch_hashes_the_same_canonical_text_as_a_single_record() -> None:
    """append_many encodes what does not depend on the chain before it takes the append lock, and joins the rest
    under it: the hash must be `_record_hash`'s, which `verify` recomputes, for any text a record can hold."""
    texts = ["", "tester", 'quote " and \\\\ backslash', "ünïcødé ✓ 机器", "line\nbreak\ttab\x00nul\x1f", "</script>"]
    for n, text in enumerate(texts):
        details_json = audit._details_json({"subject": text, "n": n, "nested": {"b": [1, None, text]}})
        for seq, prev_hash in ((1, audit.GENESIS), (123_456_789_012, "ab" * 32), (7, text)):
            at_us = 1_780_000_000_123_456 + n
            unlinked = audit._unlinked(at_us, text, "certificate.issue", text, details_json)
            assert audit._linked_hash(prev_hash, seq, unlinked) == audit._record_hash(
                prev_hash, seq, at_us, text, "certificate.issue", text, details_json)
