"""Batch signing of a directory of CSRs for a factory line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from trustlists import batch, key_index
from trustlists.batch import BatchReport, sign_directory
from trustlists.engine import Engine
from trustlists.errors import OtpkiError, StoreBusy
from trustlists.models import CertificateRecord, CertificateStatus, IssuanceKind, KeyType, RevocationReason
from trustlists.testing import Clock, make_csr, make_engine, new_key


def test_batch_signs_good_csrs_and_lists_failures(engine: Engine, tmp_path: Path) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for i in range(5):
        (in_dir / f"dev-{i}.csr").write_bytes(make_csr(f"line3-dev-{i}"))
    (in_dir / "garbage.csr").write_bytes(b"\x00\x01 not a csr")
    (in_dir / "weak.csr").write_bytes(make_csr("line3-weak", key=rsa.generate_private_key(65537, 1024)))
    (in_dir / "readme.txt").write_text("ignored: not a CSR suffix")
    owners_before = len(engine.registry.list("mqtt-device"))

    report = sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line3")

    assert (report.issued, report.failed) == (5, 2)
    failures = {i.file: i.reason for i in report.items if not i.ok}
    assert failures == {"garbage.csr": "csr_malformed", "weak.csr": "key_size_forbidden"}
    # A refused CSR registers nobody.
    assert len(engine.registry.list("mqtt-device")) == owners_before + 5
    for item in report.items:
        if item.ok:
            chain = x509.load_pem_x509_certificates((out_dir / f"{Path(item.file).stem}.crt").read_bytes())
            chain[0].verify_directly_issued_by(chain[1])
    pending = engine.inventory.query(status=CertificateStatus.NOT_DELIVERED)
    assert len(pending) == 5
    engine.authority.mark_delivered(pending[0].serial, actor="field")
    assert len(engine.inventory.query(status=CertificateStatus.NOT_DELIVERED)) == 4


# -- idempotent batches (issue 10, part 5) ------------------------------------------------------------------

def _csr_dir(root: Path, names: list[str]) -> tuple[Path, dict[str, object]]:
    """A directory of CSRs, one per name, and the private keys behind them (a re-run reuses the same keys)."""
    in_dir = root / "in"
    in_dir.mkdir(exist_ok=True)
    keys: dict[str, object] = {}
    for name in names:
        keys[name] = new_key()
        (in_dir / f"{name}.csr").write_bytes(make_csr(name, key=keys[name]))
    return in_dir, keys


def _serials(report: BatchReport) -> dict[str, str | None]:
    return {i.file: i.serial for i in report.items}


def _on_disk(out_dir: Path, report: BatchReport) -> dict[str, str]:
    """CSR file -> serial of the leaf certificate in its output file."""
    return {i.file: format(x509.load_pem_x509_certificates((out_dir / i.output).read_bytes())[0].serial_number, "x")
            for i in report.items if i.output}


def test_rerun_hands_back_the_issued_certificates_and_heals_the_files(engine: Engine, tmp_path: Path) -> None:
    in_dir, _keys = _csr_dir(tmp_path, [f"line4-dev-{i}" for i in range(5)])
    out_dir = tmp_path / "out"
    first = sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line4")
    assert (first.issued, first.reused, first.failed) == (5, 0, 0)
    issued_records = sum(1 for r in engine.audit_records() if r.action == "certificate.issue")
    # An interrupted run: one certificate never reached disk, another is torn.
    (out_dir / "line4-dev-1.crt").unlink()
    (out_dir / "line4-dev-3.crt").write_bytes(b"-----BEGIN CERT")

    again = sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line4")

    assert (again.issued, again.reused, again.failed) == (0, 5, 0)
    assert all(i.reused for i in again.items)
    assert _serials(again) == _serials(first)
    assert engine.inventory.count() == 5
    assert sum(1 for r in engine.audit_records() if r.action == "certificate.issue") == issued_records
    assert _on_disk(out_dir, again) == _serials(first)
    assert sorted(p.name for p in out_dir.iterdir()) == [f"line4-dev-{i}.crt" for i in range(5)]


def test_a_commit_reuses_what_another_process_recorded_after_we_signed(engine: Engine, tmp_path: Path) -> None:
    """The check is repeated under the write lock: a second engine (its own SQLite connection, as another
    process has) records certificates for the same CSRs between our signing and our commit."""
    in_dir, _keys = _csr_dir(tmp_path, [f"dev-{i}" for i in range(4)])
    other = make_engine(tmp_path, config=engine.config, clock=engine.now)
    seen: list[BatchReport] = []
    commit = engine.authority._commit

    def other_station_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not seen:
            seen.append(sign_directory(other, in_dir, tmp_path / "out-b", group="mqtt-device", actor="station-b"))
        return commit(*args, **kwargs)

    try:
        engine.authority._commit = other_station_first  # type: ignore[method-assign]
        mine = sign_directory(engine, in_dir, tmp_path / "out-a", group="mqtt-device", actor="station-a")
    finally:
        other.close()
    assert (seen[0].issued, seen[0].failed) == (4, 0)
    assert (mine.issued, mine.reused, mine.failed) == (0, 4, 0)
    assert _serials(mine) == _serials(seen[0])
    assert engine.inventory.count() == 4
    assert _on_disk(tmp_path / "out-a", mine) == _serials(seen[0])


def test_key_history_decides_between_reuse_new_certificate_and_refusal(engine: Engine, clock: Clock,
                                                                       tmp_path: Path) -> None:
    names = ["compromised", "decommissioned", "renewed", "old", "clone-source"]
    in_dir, keys = _csr_dir(tmp_path, names)
    out_dir = tmp_path / "out"
    first = {i.file: i for i in sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line").items}
    engine.authority.revoke(first["compromised.csr"].serial or "", reason=RevocationReason.KEY_COMPROMISE,
                            actor="sec")
    engine.authority.revoke(first["decommissioned.csr"].serial or "",
                            reason=RevocationReason.CESSATION_OF_OPERATION, actor="ops")
    engine.authority.renew(first["renewed.csr"].serial or "", new_key=True, actor="ops")
    # A device whose key is a copy of another device's (a factory defect), and a CSR file twice.
    (in_dir / "clone.csr").write_bytes(make_csr("clone", key=keys["clone-source"]))
    (in_dir / "old-copy.csr").write_bytes((in_dir / "old.csr").read_bytes())

    again = {i.file: i for i in sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line").items}

    assert again["compromised.csr"].reason == "key_compromised"
    assert again["decommissioned.csr"].ok and not again["decommissioned.csr"].reused
    assert again["decommissioned.csr"].serial != first["decommissioned.csr"].serial
    assert again["renewed.csr"].reason == "key_superseded"
    assert again["old.csr"].reused and again["old.csr"].serial == first["old.csr"].serial
    assert again["old-copy.csr"].reused and again["old-copy.csr"].serial == first["old.csr"].serial
    assert again["clone.csr"].reason == "key_in_use"
    assert again["clone-source.csr"].reused

    # Past the end of its life the certificate is not handed back: the same key gets a new one.
    clock.now = engine.inventory.get(first["old.csr"].serial or "").not_after + timedelta(days=1)
    later = {i.file: i for i in sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line").items}
    assert later["old.csr"].ok and later["old.csr"].serial != first["old.csr"].serial
    assert later["old-copy.csr"].serial == later["old.csr"].serial  # one new certificate for the two copies
    assert [later[f].reused for f in ("old-copy.csr", "old.csr")] == [False, True]
    # The cloned key is refused even when both copies are new in the same run.
    assert later["clone-source.csr"].ok and not later["clone-source.csr"].reused
    assert later["clone.csr"].reason == "key_in_use"


def test_two_csr_files_with_one_stem_do_not_share_a_certificate_file(engine: Engine, tmp_path: Path) -> None:
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    (in_dir / "dev-1.csr").write_bytes(make_csr("dev-1"))
    (in_dir / "dev-1.pem").write_bytes(make_csr("dev-1b"))
    report = sign_directory(engine, in_dir, tmp_path / "out", group="mqtt-device", actor="line")
    by_file = {i.file: i for i in report.items}
    assert by_file["dev-1.csr"].ok
    assert by_file["dev-1.pem"].reason == "output_name_clash"
    assert engine.inventory.count() == 1


def test_certificates_from_before_the_key_index_are_found(engine: Engine, tmp_path: Path) -> None:
    """A data directory from before the key index: its certificates are indexed once, on the first batch."""
    in_dir, _keys = _csr_dir(tmp_path, ["legacy-1", "legacy-2"])
    first = sign_directory(engine, in_dir, tmp_path / "out", group="mqtt-device", actor="line")
    with engine._ctx.store.transaction() as tx:
        tx.execute("DELETE FROM certificate_keys")
        tx.execute("DELETE FROM meta WHERE key = ?", (key_index.COMPLETE_MARK,))
    fresh = make_engine(tmp_path, config=engine.config, clock=engine.now)
    try:
        again = sign_directory(fresh, in_dir, tmp_path / "out", group="mqtt-device", actor="line")
        assert (again.issued, again.reused) == (0, 2)
        assert _serials(again) == _serials(first)
        assert key_index.ensure_complete(fresh._ctx.store) == 0  # done once, remembered
    finally:
        fresh.close()


def test_no_other_station_registers_a_device_while_a_chunk_registers_its_own(engine: Engine, tmp_path: Path
                                                                            ) -> None:
    """A chunk's look-ups and registrations are one write transaction: another station meeting the same new
    device waits (here: gives up after 50 ms) instead of registering it between our look-up and ours."""
    in_dir, _keys = _csr_dir(tmp_path, ["dev-race"])
    other = make_engine(tmp_path, config=engine.config, clock=engine.now, busy_timeout_s=0.05)
    register_many = engine.registry.register_many
    blocked: list[str] = []

    def other_station_tries_first(tx, owners, *, actor):  # type: ignore[no-untyped-def]
        try:
            other.registry.register(group=owners[0].group, name=owners[0].name, actor="station-b")
        except StoreBusy as exc:
            blocked.append(exc.reason)
        return register_many(tx, owners, actor=actor)

    try:
        engine.registry.register_many = other_station_tries_first  # type: ignore[method-assign]
        report = sign_directory(engine, in_dir, tmp_path / "out", group="mqtt-device", actor="station-a")
    finally:
        other.close()
    assert blocked == ["store_busy"]
    assert (report.issued, report.failed) == (1, 0)
    assert [o.name for o in engine.registry.list("mqtt-device")] == ["dev-race"]


def _record(serial: str, *, owner: str, group: str = "mqtt-device", issued_day: int = 0, ca: str = "ca",
            revoked: RevocationReason | None = None, superseded_by: str | None = None) -> CertificateRecord:
    start = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=issued_day)
    return CertificateRecord(
        serial=serial, issuer_ca_id=ca, owner_id=owner, group=group, site=None, subject=f"CN={owner}",
        san_uri=None, key_type=KeyType.EC_P256, not_before=start, not_after=start + timedelta(days=365),
        fingerprint_sha256=serial, issuance=IssuanceKind.BATCH, issued_at=start, delivered=False,
        superseded_by=superseded_by, revoked_at=start if revoked is not None else None, revocation_reason=revoked)


def test_key_history_rules() -> None:
    claim = key_index.KeyClaim("dev", "mqtt-device", "spki")
    now = datetime(2030, 3, 1, tzinfo=UTC)

    def verdict(*history: CertificateRecord, revoked_cas: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        return key_index.judge(list(history), claim, now=now, issuer_revoked=lambda ca: ca in revoked_cas)

    assert verdict() is None
    newest = verdict(_record("a", owner="dev"), _record("b", owner="dev", issued_day=3))
    assert isinstance(newest, CertificateRecord) and newest.serial == "b"  # duplicates from before: the newest
    assert verdict(_record("a", owner="dev", ca="gone"), revoked_cas=("gone",)) is None  # its issuer was revoked
    assert verdict(_record("a", owner="dev", revoked=RevocationReason.SUPERSEDED)) is None
    refused = verdict(_record("a", owner="other", group="opcua-application", revoked=RevocationReason.KEY_COMPROMISE),
                      _record("b", owner="dev", issued_day=3))
    assert isinstance(refused, OtpkiError) and refused.reason == "key_compromised"
    assert getattr(verdict(_record("a", owner="other")), "reason", None) == "key_in_use"
    shared = verdict(_record("a", owner="other", group="opcua-application"))  # the same box in another group
    assert shared is None
    retired = verdict(_record("a", owner="dev", superseded_by="z"))
    assert isinstance(retired, OtpkiError) and retired.reason == "key_superseded"


def test_an_application_uri_is_registered_for_one_device_only(engine: Engine, tmp_path: Path) -> None:
    """Bulk registration keeps the per-device refusal: a URI another device holds already, or one two new
    devices of the chunk both claim, refuses that CSR alone; the others are signed."""
    engine.registry.register(group="opcua-application", name="old-app", application_uri="urn:plant:old",
                             actor="ops")
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    (in_dir / "a.csr").write_bytes(make_csr("app-a", uris=["urn:plant:a"]))
    (in_dir / "b.csr").write_bytes(make_csr("app-b", uris=["urn:plant:a"]))
    (in_dir / "c.csr").write_bytes(make_csr("app-c", uris=["urn:plant:old"]))
    (in_dir / "d.csr").write_bytes(make_csr("app-d", uris=["urn:plant:d"]))
    report = sign_directory(engine, in_dir, tmp_path / "out", group="opcua-application", actor="line")
    by_file = {i.file: i for i in report.items}
    assert by_file["a.csr"].ok and by_file["d.csr"].ok
    assert (by_file["b.csr"].reason, by_file["c.csr"].reason) == ("already_exists", "already_exists")
    assert sorted(o.name for o in engine.registry.list("opcua-application")) == ["app-a", "app-d", "old-app"]
    assert engine.verify_audit().ok


def test_chunks_signed_by_workers_are_recorded_in_any_order_like_sign_directory(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sign_chunks` (a worker's part: nothing stored) over two shares, recorded by one `ChunkRecorder` in an
    order of its own, chunks of both shares joined into one commit: the report, inventory, files and audit chain of
    one `sign_directory` run; a device made by both shares is registered once."""
    monkeypatch.setattr(batch, "CHUNK", 2)
    in_dir, keys = _csr_dir(tmp_path, [f"line2-dev-{i}" for i in range(7)])
    (in_dir / "broken.csr").write_bytes(b"not a CSR")
    (in_dir / "zz-again.csr").write_bytes(make_csr("line2-dev-0"))  # another key for a device of the other share
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    first, second = (list(batch.sign_chunks(engine, in_dir, out_dir, group="mqtt-device", shard=(i, 2)))
                     for i in range(2))
    assert engine.inventory.count() == 0 and not list(engine.audit_records(action="owner.register"))
    recorder = batch.ChunkRecorder(engine, out_dir, group="mqtt-device", site=None, actor="line2")
    recorder.record([second[0], first[1]])  # joined: no device in common
    for chunk in [*first[2:], first[0], *second[1:]]:
        recorder.record([chunk])
    report = recorder.report()

    assert (report.issued, report.reused, report.failed) == (8, 0, 1)
    assert [i.file for i in report.items] == sorted(p.name for p in in_dir.iterdir())
    assert [(i.file, i.reason) for i in report.items if not i.ok] == [("broken.csr", "csr_malformed")]
    assert engine.inventory.count() == 8
    assert {i.serial for i in report.items if i.ok} == set(_on_disk(out_dir, report).values())
    assert sum(1 for r in engine.audit_records() if r.action == "owner.register") == len(keys)
    assert engine.verify_audit().ok
    again = sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line2")
    assert (again.issued, again.reused, again.failed) == (0, 8, 1)
    assert _serials(again) == _serials(report)


def test_chunks_ready_together_that_sign_one_key_are_judged_one_after_the_other(
        engine: Engine, tmp_path: Path) -> None:
    """Two workers sign one key for two devices and the recorder gets both chunks at once: one commit for both
    would record two certificates for the key (each checked against the store only); recorded one after the
    other, the second is refused as `sign_directory` refuses it."""
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    key = new_key()
    (in_dir / "a.csr").write_bytes(make_csr("line1-dev-a", key=key))
    (in_dir / "b.csr").write_bytes(make_csr("line1-dev-b", key=key))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    chunks = [chunk for i in range(2)
              for chunk in batch.sign_chunks(engine, in_dir, out_dir, group="mqtt-device", shard=(i, 2))]
    recorder = batch.ChunkRecorder(engine, out_dir, group="mqtt-device", site=None, actor="line1")
    recorder.record(chunks)
    report = recorder.report()
    assert [(i.file, i.ok, i.reason) for i in report.items] == [("a.csr", True, None), ("b.csr", False, "key_in_use")]
    assert engine.inventory.count() == 1
    assert engine.verify_audit().ok
