"""A running engine: CRLs kept fresh by the maintenance task, issuance from many threads, serial clashes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from trustlists import authority as authority_module
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import KeyAccessError
from trustlists.maintenance import MaintenanceReport, maintain_once, run_maintenance
from trustlists.models import Owner
from trustlists.policy import load_default_config
from trustlists.testing import eventually, make_csr


async def test_maintenance_task_refreshes_due_crls(engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    policy = engine.config.group("mqtt-device")
    clock.now += timedelta(days=policy.crl_lifetime_days - policy.crl_refresh_margin_days + 1)
    reports: list[MaintenanceReport] = []
    task = asyncio.create_task(run_maintenance(engine, interval_s=0.01, on_report=reports.append))
    try:
        await eventually(lambda: len(reports) >= 2, "two maintenance rounds", timeout=20, interval=0.01)
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert any(p.startswith("mqtt-device#") for p in reports[0].crls_published)
    assert reports[1].crls_published == []  # fresh now
    assert reports[0].errors == []


def test_unreachable_key_does_not_stop_other_crls(engine: Engine, clock, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real_signer = engine._ctx.keys.signer

    def offline_root(ca):  # type: ignore[no-untyped-def]
        if ca.parent_id is None:
            raise KeyAccessError("root key is offline (USB token not inserted)")
        return real_signer(ca)

    monkeypatch.setattr(engine._ctx.keys, "signer", offline_root)
    clock.now += timedelta(days=200)  # every CRL is due, the root's too
    report = maintain_once(engine)
    assert {p.split("#")[0] for p in report.crls_published} == set(load_default_config().groups)
    # The offline root can neither re-sign its CRL nor certify its OCSP signer; the issuing CAs get theirs.
    assert report.errors == ["CRL of root not refreshed: root key is offline (USB token not inserted)",
                             "OCSP signer of root not issued: root key is offline (USB token not inserted)"]
    assert {s.split("#")[0] for s in report.ocsp_signers_issued} == set(load_default_config().groups)


async def test_concurrent_issuance_off_the_event_loop(engine: Engine, device: Owner) -> None:
    csrs = [make_csr("pump-7") for _ in range(24)]
    results = await asyncio.gather(*(
        run_blocking(engine.authority.issue_from_csr, csr, owner_id=device.id, actor="t") for csr in csrs))
    assert len({r.record.serial for r in results}) == 24
    assert engine.inventory.count() == 24
    assert engine.verify_audit().ok  # the hash chain stayed linear under concurrency


def test_serial_clash_signs_again(engine: Engine, device: Owner, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    serials = iter([int(first.record.serial, 16), int(first.record.serial, 16) + 2])
    monkeypatch.setattr(authority_module, "random_serial", lambda: next(serials))
    second = engine.authority.issue_from_csr(make_csr("pump-7"), owner_id=device.id, actor="t")
    assert int(second.record.serial, 16) == int(first.record.serial, 16) + 2
    assert engine.inventory.count() == 2 and engine.verify_audit().ok
