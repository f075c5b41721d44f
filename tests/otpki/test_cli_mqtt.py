"""`otpki mqtt ...` as an operator runs it: serve the embedded broker, enroll a device with its IDevID, revoke it.

`otpki mqtt serve` runs as a real subprocess on a free port; the operator's other steps go through the CLI
(in-process, on the same data directory, as a second process would).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otpki.cli.main import app
from otpki.cli.mqtt import mqtt_app
from simulators.manufacturer import Manufacturer
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from trustlists.testing import free_port

PASS = "a long enough test passphrase"
WAIT_S = 30.0
# `otpki` with the mqtt commands mounted, whether or not main.py registers them yet.
OTPKI = [sys.executable, "-c",
         "from otpki.cli.main import app\n"
         "from otpki.cli.mqtt import mqtt_app\n"
         "if not any(g.name == 'mqtt' for g in app.registered_groups):\n"
         "    app.add_typer(mqtt_app, name='mqtt')\n"
         "app(prog_name='otpki')\n"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(tmp_path / "pki")}


@pytest.fixture
def data_dir(tmp_path: Path, env: dict[str, str]) -> Path:
    cfg = tmp_path / "in.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p256"\n')
    result = CliRunner().invoke(app, ["init", "--config", str(cfg), "--site", "north"], env=env)
    assert result.exit_code == 0, result.output
    return tmp_path / "pki"


def cli(env: dict[str, str], *args: str, target=app):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(target, list(args), env=env)


@pytest.fixture
async def serve(data_dir: Path, env: dict[str, str]) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(*OTPKI, "mqtt", "serve", "--port", str(port),
                                                env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        output = b""
        while b"ready" not in output:
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)  # type: ignore[union-attr]
            assert line, f"otpki mqtt serve exited early:\n{output.decode()}"
            output += line
        assert f"127.0.0.1:{port}".encode() in output and b"server-ca.pem" in output, output
        yield proc, port
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def test_serve_enroll_revoke_and_stop(serve: tuple[asyncio.subprocess.Process, int], data_dir: Path,
                                            env: dict[str, str], tmp_path: Path) -> None:
    proc, port = serve
    # Operator: import the manufacturer CA, allow-list pump-1's IDevID, hand the device the broker's CA file.
    maker = Manufacturer.create("ACME Devices")
    (tmp_path / "manufacturer-ca.pem").write_text(maker.ca_pem)
    result = cli(env, "trustlist", "import", "mqtt-device", str(tmp_path / "manufacturer-ca.pem"), "--list", "trusted")
    assert result.exit_code == 0, result.output
    idevid = maker.issue_idevid("SN-0001")
    result = cli(env, "owners", "add", "mqtt-device", "pump-1", "--site", "north", "--bootstrap-cn", "SN-0001")
    assert result.exit_code == 0 and "subject_cn SN-0001" in result.output, result.output
    result = cli(env, "ca-file", "--out", str(tmp_path / "broker-ca.pem"), target=mqtt_app)
    assert result.exit_code == 0, result.output

    cert_file, key_file = idevid.write(tmp_path / "pump-1" / "factory")
    device = MqttDevice(DeviceConfig(name="pump-1", site="north", port=port, ca_file=tmp_path / "broker-ca.pem",
                                     workdir=tmp_path / "pump-1", bootstrap_cert_file=cert_file,
                                     bootstrap_key_file=key_file, telemetry_interval_s=0.5))
    device.start()
    try:
        # The broker learns the new CA from the trust list within its watch interval; the device retries.
        await asyncio.wait_for(device.online.wait(), WAIT_S)
        serial = device.serial_hex
        assert serial is not None
        result = cli(env, "certs", "revoke", serial, "--reason", "key-compromise")
        assert result.exit_code == 0, result.output
        await asyncio.wait_for(device.ended.wait(), WAIT_S)
        assert device.state == DeviceState.REVOKED, (device.state, device.last_error)
    finally:
        await device.stop()

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0


async def logged(proc: asyncio.subprocess.Process, words: bytes) -> None:
    """Read the server's output until a line carries `words` (bounded by WAIT_S)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - loop.time()))  # type: ignore[union-attr]
        assert line, "the server exited"
        if words in line:
            return


async def test_rearm_lets_a_replaced_part_enroll(serve: tuple[asyncio.subprocess.Process, int], data_dir: Path,
                                                env: dict[str, str], tmp_path: Path) -> None:
    """The broker runs in its own process; the operator pins, refuses and re-arms from the CLI on the same store."""
    proc, port = serve
    maker = Manufacturer.create("ACME Devices")
    (tmp_path / "manufacturer-ca.pem").write_text(maker.ca_pem)
    assert cli(env, "trustlist", "import", "mqtt-device", str(tmp_path / "manufacturer-ca.pem"),
               "--list", "trusted").exit_code == 0
    assert cli(env, "owners", "add", "mqtt-device", "pump-1", "--site", "north",
               "--bootstrap-cn", "SN-0001").exit_code == 0
    assert cli(env, "ca-file", "--out", str(tmp_path / "broker-ca.pem"), target=mqtt_app).exit_code == 0

    def device(credential_cn: str, where: str, attempts: int = 3) -> MqttDevice:
        cert_file, key_file = maker.issue_idevid(credential_cn).write(tmp_path / where / "factory")
        return MqttDevice(DeviceConfig(name="pump-1", site="north", port=port, ca_file=tmp_path / "broker-ca.pem",
                                       workdir=tmp_path / where, bootstrap_cert_file=cert_file,
                                       bootstrap_key_file=key_file, enroll_attempts=attempts))

    async def run(dev: MqttDevice, until: str) -> MqttDevice:
        dev.start()
        try:
            await asyncio.wait_for((dev.online if until == "online" else dev.ended).wait(), WAIT_S)
        finally:
            await dev.stop()
        return dev

    original = await run(device("SN-0001", "original"), "online")
    listed = json.loads(cli(env, "owners", "list", "--group", "mqtt-device", "--json").output)
    pin = next(o for o in listed if o["name"] == "pump-1")["bootstrap_pin"]
    assert pin is not None and pin["serial"] == original.serial_hex and pin["subject"].endswith("CN=SN-0001")
    assert "pinned" in cli(env, "owners", "list", "--group", "mqtt-device").output

    # Another IDevID with the listed CN (a forgery, or the maker re-issued it) is refused while the pin holds.
    forged = await run(device("SN-0001", "forged", attempts=1), "ended")
    assert forged.state == DeviceState.FAILED and forged.certificate is None, forged.last_error
    await logged(proc, b"bootstrap_pinned")  # the broker says why

    # The part was replaced: the new one has its own IDevID. Re-arm with it, and it enrolls.
    result = cli(env, "owners", "rearm", "mqtt-device", "pump-1", "--bootstrap-cn", "SN-0002")
    assert result.exit_code == 0, result.output
    assert "released the pin" in result.output and pin["fingerprint_sha256"] in result.output.replace("\n", ""), \
        result.output
    replaced = await run(device("SN-0002", "replaced"), "online")
    assert replaced.serial_hex not in (None, original.serial_hex)
    shown = json.loads(cli(env, "certs", "show", original.serial_hex or "", "--json").output)
    assert shown["status"] == "revoked", shown

    # Operator mistakes: one line, exit 2.
    assert cli(env, "owners", "add", "mqtt-device", "pump-2", "--site", "north").exit_code == 0
    for name, words in (("nosuch", "not registered"), ("pump-2", "nothing to re-arm")):
        result = cli(env, "owners", "rearm", "mqtt-device", name)
        assert result.exit_code == 2 and words in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert [r["details"]["released_sha256"] for r in json.loads(cli(env, "audit", "log", "--json").output)
            if r["action"] == "bootstrap.rearm"] == [pin["fingerprint_sha256"]]


def test_bootstrap_options_are_refused_where_they_make_no_sense(data_dir: Path, env: dict[str, str]) -> None:
    result = cli(env, "owners", "add", "opcua-application", "plc-1", "--uri", "urn:plc-1", "--bootstrap-cn", "SN-1")
    assert result.exit_code == 2 and "MQTT device groups" in result.output, result.output
    result = cli(env, "owners", "add", "mqtt-device", "pump-1", "--site", "north", "--bootstrap-cn", "pump-1")
    assert result.exit_code == 2 and "registered name" in result.output, result.output
    result = cli(env, "owners", "add", "mqtt-device", "pump-2", "--site", "north", "--bootstrap-sha256", "abc")
    assert result.exit_code == 2 and "64 hex digits" in result.output, result.output
    result = cli(env, "owners", "add", "mqtt-device", "pump-3", "--site", "north", "--bootstrap-cn", "SN-3")
    assert result.exit_code == 0, result.output
    result = cli(env, "owners", "add", "mqtt-device", "pump-4", "--site", "north", "--bootstrap-cn", "SN-3")
    assert result.exit_code == 2 and "already belongs to pump-3" in result.output, result.output


def test_mosquitto_config_writes_the_broker_files(data_dir: Path, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "mosquitto"
    result = cli(env, "mosquitto-config", "--out", str(out), target=mqtt_app)
    assert result.exit_code == 2 and "OTPKI_MQTT_ADMIN_PASSWORD" in result.output, result.output
    result = cli({**env, "OTPKI_MQTT_ADMIN_PASSWORD": "a dynsec admin password"}, "mosquitto-config", "--out",
                 str(out), target=mqtt_app)
    assert result.exit_code == 0, result.output
    for name in ("mosquitto.conf", "ca.pem", "crl.pem", "server.pem", "server.key", "dynamic-security.json",
                 "server-ca.pem"):
        assert (out / name).exists(), name
    conf = (out / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and f"crlfile {out.resolve() / 'crl.pem'}" in conf
    assert "a dynsec admin password" not in (out / "dynamic-security.json").read_text()
    assert (out / "server.key").stat().st_mode & 0o077 == 0


async def test_mosquitto_sync_enroll_revoke(data_dir: Path, env: dict[str, str], tmp_path: Path) -> None:
    """The Mosquitto path: configure, start the broker, `sync --once`, then `sync` with enrollment; revoke."""
    from pydantic import SecretStr

    from mqtt_broker_auth.mosquitto.config import MosquittoSettings
    from mqtt_broker_auth.mosquitto.process import MosquittoProcess
    from trustlists.testing import free_port as free

    password = "a dynsec admin password"
    env = {**env, "OTPKI_MQTT_ADMIN_PASSWORD": password}
    port, admin_port, boot_port = free(), free(), free()
    ms = MosquittoSettings(workdir=data_dir / "mosquitto", port=port, admin_port=admin_port,
                           admin_password=SecretStr(password))
    broker = MosquittoProcess(ms)
    sync: asyncio.subprocess.Process | None = None
    device: MqttDevice | None = None
    try:
        config = data_dir / "otpki.toml"
        with config.open("a") as fh:
            fh.write(f'\n[mqtt]\nbroker = "mosquitto"\n[mqtt.mosquitto]\nport = {port}\nadmin_port = {admin_port}\n'
                     f'bootstrap_port = {boot_port}\nreload_command = ["true"]\n')
        result = cli(env, "mosquitto-config", target=mqtt_app)
        assert result.exit_code == 0 and "mosquitto -d -c" in result.output, result.output
        broker.start(fresh_dynsec=False)  # the dynsec file mosquitto-config wrote
        # In the foreground Mosquitto writes no pid file: the operator's reload command HUPs it.
        config.write_text(config.read_text().replace('["true"]', f'["kill", "-HUP", "{broker.pid}"]'))
        maker = Manufacturer.create("ACME Devices")
        (tmp_path / "acme-ca.pem").write_text(maker.ca_pem)
        (tmp_path / "acme-crl.pem").write_text(maker.crl_pem())
        for name in ("acme-ca.pem", "acme-crl.pem"):  # for the bootstrap listener; Mosquitto never sees them
            result = cli(env, "trustlist", "import", "mqtt-device", str(tmp_path / name))
            assert result.exit_code == 0, result.output
        idevid = maker.issue_idevid("SN-0002")
        result = cli(env, "owners", "add", "mqtt-device", "pump-2", "--site", "north", "--bootstrap-cn", "SN-0002")
        assert result.exit_code == 0, result.output

        once = await asyncio.create_subprocess_exec(*OTPKI, "mqtt", "sync", "--once", env={**os.environ, **env},
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(once.communicate(), WAIT_S)
        # The manufacturer CA is in the trust list, never in Mosquitto's cafile: nothing to install there.
        assert once.returncode == 0 and b"files unchanged" in out, out.decode()
        assert maker.ca_pem.encode() not in (ms.workdir / "ca.pem").read_bytes()

        sync = await asyncio.create_subprocess_exec(*OTPKI, "mqtt", "sync", env={**os.environ, **env},
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output = b""
        while b"ready" not in output:
            line = await asyncio.wait_for(sync.stdout.readline(), WAIT_S)  # type: ignore[union-attr]
            assert line, f"otpki mqtt sync exited early:\n{output.decode()}"
            output += line
        assert f"bootstrap listener on 127.0.0.1:{boot_port}".encode() in output, output.decode()
        assert b"Mosquitto" in output and b"engine CAs only" in output, output.decode()

        cert_file, key_file = idevid.write(tmp_path / "pump-2" / "factory")
        device = MqttDevice(DeviceConfig(name="pump-2", site="north", port=port, bootstrap_port=boot_port,
                                         ca_file=ms.workdir / "server-ca.pem", workdir=tmp_path / "pump-2",
                                         bootstrap_cert_file=cert_file, bootstrap_key_file=key_file,
                                         telemetry_interval_s=0.5))
        device.start()
        await asyncio.wait_for(device.online.wait(), WAIT_S)
        assert device.serial_hex is not None
        result = cli(env, "certs", "revoke", device.serial_hex, "--reason", "key-compromise")
        assert result.exit_code == 0, result.output
        await asyncio.wait_for(device.ended.wait(), WAIT_S)
        assert device.state == DeviceState.REVOKED, (device.state, device.last_error)

        sync.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(sync.wait(), WAIT_S) == 0
    finally:
        if device is not None:
            await device.stop()
        if sync is not None and sync.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                sync.kill()
            await sync.wait()
        broker.stop()


def test_a_factory_certificate_listed_by_fingerprint_only_is_called_out(data_dir: Path, env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """A self-signed factory certificate allow-listed by SHA-256 but not imported would be refused in every TLS
    handshake: registration, rearm and doctor say so, until the certificate is imported."""
    factory = Manufacturer.factory_self_signed("FAC-7")
    result = cli(env, "owners", "add", "mqtt-device", "valve-7", "--site", "north", "--bootstrap-sha256",
                 factory.sha256)
    assert result.exit_code == 0, result.output
    assert f"warning: sha256 {factory.sha256} is not in the mqtt-device trust list" in result.output
    doctor = cli(env, "doctor", "--json")
    assert "mqtt-bootstrap" in doctor.output and "valve-7" in doctor.output, doctor.output

    (tmp_path / "fac-7.pem").write_text(factory.certificate_pem)
    assert cli(env, "trustlist", "import", "mqtt-device", str(tmp_path / "fac-7.pem")).exit_code == 0
    result = cli(env, "owners", "rearm", "mqtt-device", "valve-7", "--bootstrap-sha256", factory.sha256)
    assert result.exit_code == 0 and "warning:" not in result.output, result.output
    doctor = cli(env, "doctor", "--json")
    assert "mqtt-bootstrap" not in doctor.output, doctor.output
