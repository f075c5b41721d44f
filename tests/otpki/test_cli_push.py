"""`otpki targets add` and `otpki push` against a PLC simulator running in its own event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from typer.testing import CliRunner

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from otpki.cli.main import app
from simulators.plc import PlcSimulator
from tests.opcua_gds.opcua_helpers import free_port

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
        res = runner.invoke(app, ["push", "--all", "--json"], env=env)
        assert res.exit_code == 0, res.output
        report = json.loads(res.stdout)
        assert (report["delivered"], report["failed"]) == (1, 0)
        assert report["outcomes"][0]["trust_list_applied"] is True
        res = runner.invoke(app, ["push", "--all", "--json"], env=env)  # nothing left to do
        assert json.loads(res.stdout)["attempted"] == 0
        targets = json.loads(runner.invoke(app, ["targets", "list", "--json"], env=env).stdout)
        assert targets[0]["state"] == "delivered" and targets[0]["delivered_serial"]
    res = runner.invoke(app, ["push"], env=env)
    assert res.exit_code == 2 and "--all" in res.output


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
