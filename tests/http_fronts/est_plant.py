"""A real `otpki serve` (web part only) with EST, and the files curl and openssl need to talk to it.

The data directory is made by an engine in the test process (registrations, the manufacturer's IDevID CA imported
into mqtt-device's trust list); then `otpki serve` runs on it as its own process, and the test drives it with curl
(--cert/--key, --cacert, -u) and checks what comes back with openssl.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from simulators.manufacturer import BootstrapCredential, Manufacturer
from tests.http_fronts.conftest import EC_ROOT_TOML, ec_root_config
from trustlists.engine import Engine
from trustlists.policy import PkiConfig
from trustlists.testing import PASSPHRASE, initialized_engine, make_engine, wait_until

OTPKI = Path(sys.executable).parent / "otpki"
REGISTRAR = "commissioning"
REGISTRAR_PASSWORD = "registrar pass phrase"


@dataclass
class EstServer:
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path
    url: str  # https://127.0.0.1:PORT
    root_pem: Path
    config: PkiConfig

    def engine(self) -> Engine:
        """An engine of this test process on the server's store (another process, as an operator's CLI is)."""
        return make_engine(self.data, config=self.config)

    def env(self) -> dict[str, str]:
        return {**os.environ, "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), "OTPKI_DATA_DIR": str(self.data)}

    def otpki(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(OTPKI), *args], env=self.env(), capture_output=True, text=True, timeout=120,
                              check=False)


def write_pem(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def idevid_files(credential: BootstrapCredential, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return (write_pem(folder / f"{credential.subject_cn}.crt", credential.cert_file_pem),
            write_pem(folder / f"{credential.subject_cn}.key", credential.key_pem))


def b64_file(path: Path, der: bytes) -> Path:
    path.write_bytes(base64.encodebytes(der))
    return path


@contextmanager
def est_server(folder: Path, *, auto_approve: bool = True, registrar_hash: str | None = None,
               prepare: list[tuple[str, BootstrapCredential | None]] | None = None,
               manufacturer: Manufacturer | None = None) -> Iterator[EstServer]:
    """`otpki serve` with only its web part; `prepare`: (device name, allow-listed IDevID or None) to register."""
    data = folder / "pki"
    config = ec_root_config()
    if not auto_approve:
        groups = dict(config.groups)
        groups["mqtt-device"] = groups["mqtt-device"].model_copy(update={"auto_approve": False})
        config = config.model_copy(update={"groups": groups})
    eng = initialized_engine(data, config=config, actor="tester")
    try:
        if manufacturer is not None:
            eng.trustlists.import_external("mqtt-device", manufacturer.ca_pem.encode(), list_name="trusted",
                                           note=f"{manufacturer.name} IDevID CA", actor="tester")
        for name, credential in prepare or []:
            attributes = {"bootstrap": [credential.allow_list_entry()]} if credential else None
            eng.registry.register(group="mqtt-device", name=name, site="north", actor="tester",
                                  attributes=attributes)
        root = next(ca for ca in eng.hierarchy.list() if ca.parent_id is None)
        root_pem = folder / "root.pem"
        root_pem.write_bytes(x509.load_der_x509_certificate(root.certificate_der).public_bytes(Encoding.PEM))
    finally:
        eng.close()
    registrars = ""
    if registrar_hash is not None:
        registrars = (f'[[web.est.registrars]]\nname = "{REGISTRAR}"\npassword_hash = "{registrar_hash}"\n'
                      'groups = ["mqtt-device"]\n')
    approval = "" if auto_approve else "[pki.groups.mqtt-device]\nauto_approve = false\n"
    (data / "otpki.toml").write_text(f"""{EC_ROOT_TOML}{approval}
[serve]
gds = false
push = false
mqtt = false
[web]
listen = "127.0.0.1:0"
[web.est]
labels = {{hmi = "mqtt-device"}}
max_body_bytes = 4096
{registrars}""")
    log = folder / "serve.log"
    env = {**os.environ, "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(), "OTPKI_DATA_DIR": str(data)}
    with log.open("wb") as out:
        proc = subprocess.Popen([str(OTPKI), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: "ready; stop with" in log.read_text(errors="replace") or proc.poll() is not None,
                   "otpki serve to be ready", timeout=120)
        assert proc.poll() is None, log.read_text()
        state = json.loads((data / "serve" / "state.json").read_text())
        yield EstServer(proc, data, log, str(state["listeners"]["web"]), root_pem, config)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only when the test failed before its own SIGTERM
            proc.wait(timeout=30)
