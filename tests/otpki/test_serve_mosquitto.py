"""`otpki serve` with `[mqtt] broker = "mosquitto"`: the sync, the bootstrap listener and enrollment as one part
of the service, against a real Mosquitto process; a device enrolls with its IDevID and a revocation drops it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from pydantic import SecretStr
from typer.testing import CliRunner

from mqtt_broker_auth.mosquitto.config import MosquittoSettings
from mqtt_broker_auth.mosquitto.process import MosquittoProcess
from otpki.cli.main import app
from simulators.manufacturer import Manufacturer
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from trustlists.testing import PASSPHRASE, free_port, initialized_engine

OTPKI = Path(sys.executable).parent / "otpki"
WAIT_S = 60.0


async def test_serve_runs_the_mosquitto_side(tmp_path: Path) -> None:
    data = tmp_path / "pki"
    initialized_engine(data).close()
    password = "a dynsec admin password"
    env = {**os.environ, "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), "OTPKI_DATA_DIR": str(data),
           "OTPKI_MQTT_ADMIN_PASSWORD": password}
    port, admin_port, boot_port = free_port(), free_port(), free_port()
    config = data / "otpki.toml"
    config.write_text(f'[serve]\ngds = false\npush = false\n[web]\nlisten = "127.0.0.1:0"\n'
                      f'[mqtt]\nbroker = "mosquitto"\n[mqtt.mosquitto]\nport = {port}\nadmin_port = {admin_port}\n'
                      f'bootstrap_port = {boot_port}\nreload_command = ["true"]\n')
    assert CliRunner().invoke(app, ["mqtt", "mosquitto-config"], env=env).exit_code == 0
    ms = MosquittoSettings(workdir=data / "mosquitto", port=port, admin_port=admin_port,
                           admin_password=SecretStr(password))
    broker = MosquittoProcess(ms)
    broker.start(fresh_dynsec=False)
    config.write_text(config.read_text().replace('["true"]', f'["kill", "-HUP", "{broker.pid}"]'))
    maker = Manufacturer.create("ACME Devices")
    (tmp_path / "acme-ca.pem").write_text(maker.ca_pem)
    (tmp_path / "acme-crl.pem").write_text(maker.crl_pem())
    for name in ("acme-ca.pem", "acme-crl.pem"):
        assert CliRunner().invoke(app, ["trustlist", "import", "mqtt-device", str(tmp_path / name)],
                                  env=env).exit_code == 0
    assert CliRunner().invoke(app, ["owners", "add", "mqtt-device", "pump-2", "--bootstrap-cn", "SN-0002"],
                              env=env).exit_code == 0

    log = tmp_path / "serve.log"
    out = log.open("wb")
    serve = await asyncio.create_subprocess_exec(str(OTPKI), "serve", env=env, stdout=out, stderr=out)
    device: MqttDevice | None = None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while "ready; stop with" not in log.read_text(errors="replace"):
            assert serve.returncode is None and loop.time() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        text = log.read_text()
        assert f"bootstrap listener on 127.0.0.1:{boot_port}" in text and "engine CAs only" in text, text
        parts = json.loads((data / "serve" / "state.json").read_text())["parts"]
        assert parts["mqtt"] == {"state": "running", "detail": f"127.0.0.1:{port}"}

        cert_file, key_file = maker.issue_idevid("SN-0002").write(tmp_path / "pump-2" / "factory")
        device = MqttDevice(DeviceConfig(name="pump-2", port=port, bootstrap_port=boot_port,
                                         ca_file=ms.workdir / "server-ca.pem", workdir=tmp_path / "pump-2",
                                         bootstrap_cert_file=cert_file, bootstrap_key_file=key_file,
                                         telemetry_interval_s=0.5))
        device.start()
        await asyncio.wait_for(device.online.wait(), WAIT_S)  # enrolled through the serve process, on Mosquitto
        assert device.serial_hex is not None
        revoke = await asyncio.create_subprocess_exec(str(OTPKI), "certs", "revoke", device.serial_hex, "--reason",
                                                      "key-compromise", env=env, stdout=asyncio.subprocess.DEVNULL)
        assert await revoke.wait() == 0
        await asyncio.wait_for(device.ended.wait(), WAIT_S)  # the sync kicked it
        assert device.state == DeviceState.REVOKED, (device.state, device.last_error)

        serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), WAIT_S) == 0, log.read_text()
    finally:
        if device is not None:
            await device.stop()
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
        out.close()
        broker.stop()
