"""The dynsec file otpki writes: private from its first byte, loaded by a real Mosquitto, the admin logs in.

`otpki mqtt mosquitto-config` runs as a real process under tests/secret_exposure_probe.py (umask 0; every
state of every secret file is looked at); then a real Mosquitto starts on those files and otpki's dynsec
admin client logs in and changes something, which makes Mosquitto save the file again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from mqtt_broker_auth.mosquitto import dynsec as ds
from mqtt_broker_auth.mosquitto.config import MosquittoSettings
from mqtt_broker_auth.mosquitto.dynsec_file import PBKDF2_ITERATIONS, dynsec_password
from mqtt_broker_auth.mosquitto.process import MosquittoProcess
from otpki.cli.main import app
from tests.secret_exposure_probe import run_under_probe
from trustlists.testing import free_port

ADMIN_PASSWORD = "a dynsec admin password"
PASS = "a long enough test passphrase"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    result = CliRunner().invoke(app, ["-d", str(d), "init", "--site", "north"], env={"OTPKI_CA_PASSPHRASE": PASS})
    assert result.exit_code == 0, result.output
    return d


def test_dynsec_password_is_mosquittos_pbkdf2_sha512_format() -> None:
    fields = dynsec_password("pw")
    salt = base64.b64decode(fields["salt"])
    assert len(salt) == 12 and fields["iterations"] == PBKDF2_ITERATIONS >= 10_000  # mosquitto_ctrl: 101
    assert base64.b64decode(fields["password"]) == hashlib.pbkdf2_hmac("sha512", b"pw", salt, PBKDF2_ITERATIONS, 64)
    assert dynsec_password("pw")["salt"] != fields["salt"]


def test_dynsec_file_is_private_from_creation_and_loads_in_mosquitto(data_dir: Path, tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    with (data_dir / "otpki.toml").open("a") as fh:
        fh.write(f"\n[mqtt.mosquitto]\nport = {port}\nadmin_port = {admin_port}\n")
    out = tmp_path / "broker"
    res, exposures = run_under_probe(tmp_path, [out], "-d", str(data_dir), "mqtt", "mosquitto-config", "--out",
                                     str(out), env={"OTPKI_CA_PASSPHRASE": PASS,
                                                    "OTPKI_MQTT_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert res.returncode == 0, res.stderr
    assert exposures == []  # neither the dynsec file nor the server key, at any moment
    dynsec_file = out / "dynamic-security.json"
    assert mode(dynsec_file) == 0o600 and mode(out / "server.key") == 0o600 and mode(out) == 0o700
    (admin,) = json.loads(dynsec_file.read_text())["clients"]
    assert admin["iterations"] == PBKDF2_ITERATIONS and ADMIN_PASSWORD not in dynsec_file.read_text()

    settings = MosquittoSettings(workdir=out, port=port, admin_port=admin_port,
                                 admin_password=SecretStr(ADMIN_PASSWORD))
    broker = MosquittoProcess(settings).start(fresh_dynsec=False)
    try:
        with pytest.raises(ds.DynsecUnavailable, match="login"):
            ds.DynsecClient("127.0.0.1", admin_port, settings.admin_username, "a wrong password").connect()
        with ds.DynsecClient("127.0.0.1", admin_port, settings.admin_username, ADMIN_PASSWORD) as admin_client:
            admin_client.execute([ds.create_role("saved-by-mosquitto")])
            roles = admin_client.execute([ds.list_roles()])[0]["data"]["roles"]
        assert "saved-by-mosquitto" in roles
    finally:
        broker.stop()
    # Mosquitto saved the change in place: still 0600, the admin's hash as otpki made it.
    saved = json.loads(dynsec_file.read_text())
    assert "saved-by-mosquitto" in {r["rolename"] for r in saved["roles"]}
    assert stat.S_IMODE(dynsec_file.stat().st_mode) == 0o600
    assert [c["iterations"] for c in saved["clients"]] == [admin["iterations"]]
