"""Relative paths: in otpki.toml against the data directory, on the command line against the working directory.

The commands run as real subprocesses from a working directory that is neither the data directory nor the
source tree, which is where an operator's shell usually is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from mqtt_broker_auth.mosquitto.config import MosquittoSettings, render_config
from otpki.config import EnvSettings, FileSettings, build_settings

OTPKI = Path(sys.executable).parent / "otpki"
PASS = "a long enough test passphrase"


def run(*args: str, cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTPKI_")}, **(extra_env or {})}
    return subprocess.run([str(OTPKI), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
                          check=False)


def test_config_paths_are_relative_to_the_data_directory(tmp_path: Path) -> None:
    """passphrase_file and the Mosquitto workdir written relative in otpki.toml, used from another folder."""
    data, elsewhere = tmp_path / "pki", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (data / "ca-passphrase").write_text(PASS)
    (tmp_path / "in.toml").write_text('[keys]\npassphrase_file = "ca-passphrase"\n'
                                      '[mqtt.mosquitto]\nworkdir = "broker"\n'
                                      '[pki.root]\nkey_type = "ec-p256"\n')
    res = run("-d", str(data), "init", "--config", str(tmp_path / "in.toml"), cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    res = run("-d", str(data), "crl", "refresh", "--force", cwd=elsewhere)  # signs: reads the passphrase file
    assert res.returncode == 0, res.stderr
    res = run("-d", str(data), "mqtt", "mosquitto-config", cwd=elsewhere,
              extra_env={"OTPKI_MQTT_ADMIN_PASSWORD": "a dynsec admin password"})
    assert res.returncode == 0, res.stderr
    assert (data / "broker" / "mosquitto.conf").exists() and (data / "broker" / "server.key").exists()
    assert f"pid_file {data / 'broker' / 'mosquitto.pid'}\n" in (data / "broker" / "mosquitto.conf").read_text()
    assert list(elsewhere.iterdir()) == []


def test_settings_anchor_every_relative_path_once(tmp_path: Path) -> None:
    file = FileSettings.model_validate({
        "keys": {"passphrase_file": "secrets/ca", "pkcs11": {"pin_file": "/etc/otpki/pin"}},
        "push": {"credentials": {"plc": {"username": "admin", "password_file": "plc.pw"}}},
        "mqtt": {"mosquitto": {"workdir": "../broker", "binary": "mosquitto", "openssl_binary": "bin/openssl",
                               "admin_password_file": "~/dynsec.pw"}},
    })
    data = tmp_path / "pki"
    s = build_settings(file, data, EnvSettings(ca_passphrase_file=Path("pass.txt")))
    assert s.file.keys.passphrase_file == data / "secrets" / "ca"
    assert s.file.keys.pkcs11.pin_file == Path("/etc/otpki/pin")
    assert s.file.push.credentials["plc"].password_file == data / "plc.pw"
    m = s.file.mqtt.mosquitto
    assert m.workdir == tmp_path / "broker"  # normalised, not pki/../broker
    assert m.binary == Path("mosquitto")  # a bare command name stays one: PATH finds it
    assert m.openssl_binary == data / "bin" / "openssl"
    assert m.admin_password_file == Path.home() / "dynsec.pw"
    assert s.env.ca_passphrase_file == Path.cwd() / "pass.txt"  # from the environment: the working directory
    assert s.data_dir.is_absolute()


def test_mosquitto_conf_paths_with_a_relative_workdir(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    settings = MosquittoSettings(workdir=Path("demo-data/broker"), port=18883, admin_port=11884,
                                 admin_password=SecretStr("pw"))
    conf = render_config(settings).splitlines()
    broker = tmp_path / "demo-data" / "broker"
    assert f"pid_file {broker / 'mosquitto.pid'}" in conf  # once, not demo-data/broker/demo-data/broker/...
    assert f"cafile {broker / 'ca.pem'}" in conf and settings.pid_file == broker / "mosquitto.pid"
