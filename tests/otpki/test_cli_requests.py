"""`otpki requests list/approve/reject`: the administrator's side of requests that wait for approval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otpki.cli.main import app
from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.testing import make_csr

PASS = "a long enough test passphrase"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, d: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["-d", str(d), *args], env={"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_ACTOR": "admin"})


@pytest.fixture
def data_dir(tmp_path: Path, runner: CliRunner) -> Path:
    d = tmp_path / "pki"
    cfg = tmp_path / "in.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p384"\n[pki.groups.opcua-user]\nauto_approve = false\n')
    res = run(runner, d, "init", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    for name in ("alice", "bob"):
        res = run(runner, d, "owners", "add", "opcua-user", name)
        assert res.exit_code == 0, res.output
    return d


def _submit(d: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str]:
    """What a protocol front does: requests from alice (CSR, new key) and bob (CSR)."""
    monkeypatch.setenv("OTPKI_CA_PASSPHRASE", PASS)
    eng = open_engine(load_settings(d))
    try:
        alice = eng.registry.find("opcua-user", name="alice")
        bob = eng.registry.find("opcua-user", name="bob")
        assert alice is not None and bob is not None
        a = eng.requests.submit_csr(alice.id, make_csr("alice"), actor="front", requester_fingerprint="ab" * 32)
        k = eng.requests.submit_new_key(alice.id, actor="front", key_format="pem", requester_fingerprint=None)
        b = eng.requests.submit_csr(bob.id, make_csr("bob"), actor="front", requester_fingerprint=None)
        return a.id, k.id, b.id
    finally:
        eng.close()


def test_requests_list_approve_reject(runner: CliRunner, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, k, b = _submit(data_dir, monkeypatch)
    res = run(runner, data_dir, "requests", "list", "--json")
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert [(r["id"], r["status"], r["owner"]) for r in listed] == [
        (a, "pending", "alice"), (k, "pending", "alice"), (b, "pending", "bob")]
    assert "csr_der" not in listed[0] and listed[0]["requester_fingerprint"] == "ab" * 32
    table = run(runner, data_dir, "requests", "list")
    assert table.exit_code == 0 and "3 requests" in table.stdout

    res = run(runner, data_dir, "requests", "approve", a)
    assert res.exit_code == 0, res.output
    assert "issued certificate" in res.stdout
    res = run(runner, data_dir, "requests", "approve", k)
    assert res.exit_code == 0 and "when the owner collects them" in res.stdout
    res = run(runner, data_dir, "requests", "reject", b, "--reason", "bob is not an operator")
    assert res.exit_code == 0, res.output

    issued = json.loads(run(runner, data_dir, "requests", "list", "--status", "issued", "--json").stdout)
    assert [r["id"] for r in issued] == [a] and issued[0]["decided_by"] == "admin"
    certs = json.loads(run(runner, data_dir, "certs", "list", "--group", "opcua-user", "--json").stdout)
    assert [c["serial"] for c in certs] == [issued[0]["serial"]]
    rejected = json.loads(run(runner, data_dir, "requests", "list", "--status", "rejected", "--group", "opcua-user",
                              "--json").stdout)
    assert [(r["id"], r["reason"]) for r in rejected] == [(b, "bob is not an operator")]
    assert [r["id"] for r in json.loads(run(runner, data_dir, "requests", "list", "--status", "approved",
                                            "--json").stdout)] == [k]

    # The front collects alice's certificate after the CLI (another process) approved it.
    eng = open_engine(load_settings(data_dir))
    try:
        alice = eng.registry.find("opcua-user", name="alice")
        assert alice is not None
        assert eng.requests.finish(a, owner_id=alice.id).record.serial == issued[0]["serial"]
        assert eng.requests.finish(k, owner_id=alice.id).private_key is not None
    finally:
        eng.close()

    audit = json.loads(run(runner, data_dir, "audit", "log", "--json", "--last", "100").stdout)
    assert {"request.submit", "request.approve", "request.reject", "request.issue"} <= {r["action"] for r in audit}
    assert run(runner, data_dir, "audit", "verify").exit_code == 0


def test_requests_errors(runner: CliRunner, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _, b = _submit(data_dir, monkeypatch)
    assert run(runner, data_dir, "requests", "approve", a).exit_code == 0
    cases = [
        (["requests", "approve", "no-such-id"], "no certificate request with id 'no-such-id'"),
        (["requests", "reject", "no-such-id", "--reason", "x"], "no certificate request with id 'no-such-id'"),
        (["requests", "approve", a], "not pending"),
        (["requests", "reject", a, "--reason", "too late"], "can no longer be rejected"),
        (["requests", "reject", b, "--reason", " "], "needs a reason"),
        (["requests", "list", "--group", "nope"], "unknown certificate group"),
    ]
    for args, message in cases:
        res = run(runner, data_dir, *args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    assert run(runner, data_dir, "requests", "reject", b).exit_code == 2  # --reason is required
    assert run(runner, data_dir, "requests", "list", "--status", "bogus").exit_code == 2
