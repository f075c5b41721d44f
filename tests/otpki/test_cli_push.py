"""`otpki targets add` and `otpki push` against a PLC simulator running in its own event loop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path

from typer.testing import CliRunner

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from otpki.cli import common as cli_common
from otpki.cli.common import EXIT_PROBLEM, EXIT_USAGE
from otpki.cli.main import app
from simulators.plc import PlcSimulator
from trustlists.testing import free_port

PASS = "a long enough test passphrase"


class PlcThread:
    """A PLC simulator on a private loop in a thread: the CLI under test runs its own asyncio.run."""

    def __init__(self, plc: PlcSimulator) -> None:
        self.plc = plc
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PlcSimulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.plc.start(), self.loop).result(timeout=60)
        return self.plc

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.plc.stop(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def test_targets_add_and_push(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = tmp_path / "otpki.toml"
    cfg.write_text('[push]\nconcurrency = 2\ntimeout_s = 60\n'
                   '[push.credentials.plc]\nusername = "plc-admin"\npassword_env = "OTPKI_TEST_PLC_PASSWORD"\n')
    env = {"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(tmp_path / "pki"),
           "OTPKI_TEST_PLC_PASSWORD": "plc-admin-pw"}
    assert runner.invoke(app, ["init", "--config", str(cfg)], env=env).exit_code == 0
    access = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                              roles=[GdsRole.SECURITY_ADMIN])])
    plc = PlcSimulator("press-4", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-pki", access)
    with PlcThread(plc):
        res = runner.invoke(app, ["targets", "add", "press-4", plc.endpoint, "--credentials", "plc",
                                  "--uri", plc.application_uri, "--dns", "localhost", "--ip", "127.0.0.1"], env=env)
        assert res.exit_code == 0, res.output
        assert "no --server-sha256" in res.stderr  # the operator is told the first push will trust on first use
        factory = hashlib.sha256(plc.certificate_der).hexdigest()
        res = runner.invoke(app, ["push", "--all", "--json"], env=env)
        assert res.exit_code == 0, res.output
        report = json.loads(res.stdout)
        assert (report["delivered"], report["failed"]) == (1, 0)
        assert report["outcomes"][0]["trust_list_applied"] is True
        # Trust on first use, said out loud: the fingerprint to compare with the PLC's display.
        assert report["outcomes"][0]["first_contact_sha256"] == factory
        assert f"pinned at this first contact: SHA-256 {display(factory)}" in res.stderr
        res = runner.invoke(app, ["push", "--all", "--json"], env=env)  # nothing left to do
        assert json.loads(res.stdout)["attempted"] == 0
        targets = json.loads(runner.invoke(app, ["targets", "list", "--json"], env=env).stdout)
        assert targets[0]["state"] == "delivered" and targets[0]["delivered_serial"]
    res = runner.invoke(app, ["push"], env=env)
    assert res.exit_code == 2 and "--all" in res.output


def test_a_refused_target_registers_no_plc(tmp_path: Path) -> None:
    """`targets add` registers the PLC and adds its target together: refused (its endpoint is another PLC's
    target already), it leaves no registration behind."""
    runner = CliRunner()
    env = {"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(tmp_path / "pki")}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    endpoint = "opc.tcp://127.0.0.1:4840/plc"  # never connected to: adding a target only records it
    add = ["targets", "add", "--credentials", "plc"]
    assert runner.invoke(app, [*add, "press-4", endpoint], env=env).exit_code == 0
    res = runner.invoke(app, [*add, "press-5", endpoint], env=env)
    assert res.exit_code == EXIT_USAGE and "already" in res.output, res.output
    owners = json.loads(runner.invoke(app, ["owners", "list", "--json"], env=env).stdout)
    assert [o["name"] for o in owners if o["name"].startswith("press-")] == ["press-4"]
    # The same PLC under a free endpoint goes through, registered once.
    assert runner.invoke(app, [*add, "press-5", endpoint + "2"], env=env).exit_code == 0
    owners = json.loads(runner.invoke(app, ["owners", "list", "--json"], env=env).stdout)
    assert sorted(o["name"] for o in owners if o["name"].startswith("press-")) == ["press-4", "press-5"]


def display(sha256_hex: str) -> str:
    return ":".join(sha256_hex[i: i + 2] for i in range(0, 64, 2)).upper()


def test_a_refused_plc_is_listed_and_an_operator_repins_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cli_common.console, "width", 400)  # the whole table on one line per target
    runner = CliRunner()
    cfg = tmp_path / "otpki.toml"
    cfg.write_text('[push.credentials.plc]\nusername = "plc-admin"\npassword_env = "OTPKI_TEST_PLC_PASSWORD"\n')
    env = {"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(tmp_path / "pki"),
           "OTPKI_TEST_PLC_PASSWORD": "plc-admin-pw"}
    assert runner.invoke(app, ["init", "--config", str(cfg)], env=env).exit_code == 0
    access = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                              roles=[GdsRole.SECURITY_ADMIN])])
    plc = PlcSimulator("press-6", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-pki", access)
    add = ["targets", "add", "press-6", plc.endpoint, "--credentials", "plc", "--uri", plc.application_uri,
           "--dns", "localhost", "--ip", "127.0.0.1"]
    bad = runner.invoke(app, [*add, "--server-sha256", "12:34"], env=env)
    assert bad.exit_code == 2 and "64 hex digits" in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert json.loads(runner.invoke(app, ["targets", "list", "--json"], env=env).stdout) == []
    # Registered with the fingerprint of another device (a wrong pin, or an impostor at the PLC's address).
    assert runner.invoke(app, [*add, "--server-sha256", "ee" * 32], env=env).exit_code == 0
    with PlcThread(plc):
        recorder = plc.server.iserver.user_manager  # type: ignore[union-attr]
        logins: list[str | None] = []

        def get_user(iserver, username=None, password=None, certificate=None):  # type: ignore[no-untyped-def]
            logins.append(username)
            return recorder.get_user(iserver, username=username, password=password, certificate=certificate)

        plc.server.iserver.set_user_manager(type("Recorder", (), {"get_user": staticmethod(get_user)})())  # type: ignore[union-attr]
        factory = hashlib.sha256(plc.certificate_der).hexdigest()
        res = runner.invoke(app, ["push", "--all", "--json"], env=env)
        assert res.exit_code == EXIT_PROBLEM  # a target failed (and is retried), not an operator error
        error = json.loads(res.stdout)["outcomes"][0]["error"]
        assert error.startswith("server_identity: BadCertificateUntrusted") and factory in error
        assert logins == []
        listed = runner.invoke(app, ["targets", "list"], env=env).stdout
        row = next(line for line in listed.splitlines() if plc.endpoint in line)
        assert "BadCertificateUntrusted" in row and "pinned eeeeeeeeeeeeeeee… (registered)" in row, listed

        res = runner.invoke(app, ["targets", "repin", "press-6", "--server-sha256", display(factory)], env=env)
        assert res.exit_code == 0, res.output
        target = json.loads(runner.invoke(app, ["targets", "list", "--json"], env=env).stdout)[0]
        assert target["pin"]["fingerprint_sha256"] == factory and target["pin"]["source"] == "operator"
        res = runner.invoke(app, ["push", "--all", "--json"], env=env)  # due at once, despite the backoff
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["delivered"] == 1 and logins
        target = json.loads(runner.invoke(app, ["targets", "list", "--json"], env=env).stdout)[0]
        assert target["state"] == "delivered" and target["pin"] is None
        listed = runner.invoke(app, ["targets", "list"], env=env).stdout
        assert "engine certificate" in next(line for line in listed.splitlines() if plc.endpoint in line)
    missing = runner.invoke(app, ["targets", "repin", "press-404", "--server-sha256", factory], env=env)
    assert missing.exit_code == 2 and "press-404" in missing.stderr


def test_push_every_keeps_serving_until_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    runner = CliRunner()
    cfg = tmp_path / "otpki.toml"
    cfg.write_text('[push.credentials.plc]\nusername = "plc-admin"\npassword_env = "OTPKI_TEST_PLC_PASSWORD"\n')
    env = {"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(tmp_path / "pki"),
           "OTPKI_TEST_PLC_PASSWORD": "plc-admin-pw"}
    assert runner.invoke(app, ["init", "--config", str(cfg)], env=env).exit_code == 0
    access = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                              roles=[GdsRole.SECURITY_ADMIN])])
    plc = PlcSimulator("press-5", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-pki", access)
    with PlcThread(plc):
        added = runner.invoke(app, ["targets", "add", "press-5", plc.endpoint, "--credentials", "plc", "--uri",
                                    plc.application_uri, "--dns", "localhost", "--ip", "127.0.0.1"], env=env)
        assert added.exit_code == 0, added.output
        service = subprocess.Popen([sys.executable, "-m", "otpki.cli.main", "push", "--all", "--every", "1", "--json"],
                                   env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        try:
            deadline = time.monotonic() + 90
            state = None
            while time.monotonic() < deadline and service.poll() is None:
                targets = json.loads(runner.invoke(app, ["targets", "list", "--json"], env=env).stdout)
                state = targets[0]["state"]
                if state == "delivered":
                    break
                time.sleep(0.5)
            assert state == "delivered", service.stderr.read() if service.poll() is not None else state
        finally:
            service.send_signal(signal.SIGTERM)
            out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    first_round, _end = json.JSONDecoder().raw_decode(out)
    assert first_round["delivered"] == 1
