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


def test_push_reports_refusals_trust_lists_not_applied_backoff_and_named_targets(tmp_path: Path) -> None:
    """The real `otpki` executable against a PLC simulator: a wrong password (BadUserAccessDenied in the table),
    a selection that skips the target in its backoff and says until when, --force, a trust list the PLC drops
    (its own state in `targets list`, a warning in `doctor`), a named target pushed during its backoff, and a
    named target that is up to date (not pushed: exit 1 until --force)."""
    import os
    import subprocess
    import sys

    from simulators.plc_faults import PlcFaults

    data = tmp_path / "pki"
    password = tmp_path / "plc-password"
    password.write_text("not-the-password\n")
    cfg = tmp_path / "otpki.toml"
    cfg.write_text(f'[push]\ntimeout_s = 60\n[push.credentials.plc]\nusername = "plc-admin"\n'
                   f'password_file = "{password}"\n')

    def otpki(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTPKI_")},
               "OTPKI_CA_PASSPHRASE": PASS, "COLUMNS": "400"}
        return subprocess.run([str(Path(sys.executable).parent / "otpki"), "-d", str(data), *args],
                              capture_output=True, text=True, env=env, timeout=180, check=False)

    def target() -> dict:  # type: ignore[type-arg]
        [listed] = json.loads(otpki("targets", "list", "--json").stdout)
        return listed

    assert otpki("init", "--config", str(cfg)).returncode == 0
    access = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                              roles=[GdsRole.SECURITY_ADMIN])])
    plc = PlcSimulator("press-7", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-pki", access,
                       faults=PlcFaults(drop_later_trust_lists=1))
    with PlcThread(plc):
        added = otpki("targets", "add", "press-7", plc.endpoint, "--credentials", "plc", "--uri",
                      plc.application_uri, "--dns", "localhost", "--ip", "127.0.0.1")
        assert added.returncode == 0, added.stderr

        # Refused: the table names the PLC's status, and so does the target's record.
        refused = otpki("push", "--all")
        assert refused.returncode == EXIT_PROBLEM, refused.stderr
        row = next(line for line in refused.stdout.splitlines() if plc.endpoint in line)
        assert "connect: BadUserAccessDenied" in row, refused.stdout
        assert "0 delivered, 0 trust list not applied, 1 failed; those are pushed again after a backoff" in \
            refused.stdout
        failed = target()
        assert failed["state"] == "retrying" and failed["last_error"].startswith("connect: BadUserAccessDenied")

        # A selection leaves it to its backoff, and says until when and how to override.
        password.write_text("plc-admin-pw\n")
        waiting = otpki("push", "--all")
        assert waiting.returncode == 0, waiting.stderr
        until = failed["next_attempt_at"].replace("T", " ")[:19]
        assert f"skipped {plc.endpoint}: backing off until {until} UTC (last: connect: BadUserAccessDenied" in \
            waiting.stderr and "Name it, or use --force, to push it now" in waiting.stderr, waiting.stderr
        assert "0 delivered" in waiting.stdout

        # --force pushes it now: certificate and first trust list go in.
        forced = otpki("push", "--all", "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert [o["result"] for o in json.loads(forced.stdout)["outcomes"]] == ["delivered"]

        # A revocation: the next trust list is accepted and dropped by the PLC.
        assert otpki("owners", "add", "opcua-application", "hmi-1", "--uri", "urn:plant:hmi-1").returncode == 0
        hmi = otpki("certs", "issue", "--group", "opcua-application", "--owner", "hmi-1", "--new-key", "--out",
                    str(tmp_path / "hmi.pem"), "--key-out", str(tmp_path / "hmi.key"))
        assert hmi.returncode == 0, hmi.stderr
        [serial] = [c["serial"] for c in json.loads(otpki("certs", "list", "--json").stdout)
                    if c["san_uri"] == "urn:plant:hmi-1"]
        assert otpki("certs", "revoke", serial, "--reason", "key-compromise").returncode == 0
        dropped = otpki("push", "press-7")
        assert dropped.returncode == EXIT_PROBLEM, dropped.stderr
        row = next(line for line in dropped.stdout.splitlines() if plc.endpoint in line)
        assert "trust list v" in row and "written but not applied: the server answered Good" in row, dropped.stdout
        assert "0 delivered, 1 trust list not applied, 0 failed" in dropped.stdout
        listed = otpki("targets", "list").stdout
        row = next(line for line in listed.splitlines() if plc.endpoint in line)
        assert "trust list not applied" in row and "delivered" not in row.split("trust list not applied")[0], listed
        assert target()["state"] == "not_applied"
        doctor = otpki("doctor")
        row = next(line for line in doctor.stdout.splitlines() if plc.endpoint in line)
        assert "warn" in row and "press-7: trust list v" in row and "not applied" in row, doctor.stdout

        # Named, it is pushed during its backoff; the PLC applies it this time.
        named = otpki("push", plc.endpoint)
        assert named.returncode == 0, (named.stdout, named.stderr)
        assert "1 delivered, 0 trust list not applied, 0 failed" in named.stdout
        assert target()["state"] == "delivered"

        # Named and up to date: not pushed, and the exit says so, until --force.
        current = otpki("push", "press-7")
        assert current.returncode == EXIT_PROBLEM
        assert f"skipped {plc.endpoint}: up to date, nothing to push; --force pushes it anyway" in current.stderr
        assert otpki("push", "press-7", "--force").returncode == 0
    unknown = otpki("push", "press-404")
    assert unknown.returncode == EXIT_USAGE and "press-404" in unknown.stderr
