"""`otpki gds serve` as an operator runs it: a real process, a real SignAndEncrypt session, a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from opcua_gds.testing import connect, issue_app_identity
from otpki.cli.main import app
from trustlists.policy import load_default_config
from trustlists.testing import free_port, make_engine, read_line_until

PASS = "a long enough test passphrase"


def test_gds_serve_process(tmp_path: Path) -> None:
    data = tmp_path / "pki"
    env = {**os.environ, "OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(data)}
    assert CliRunner().invoke(app, ["init"], env=env).exit_code == 0
    url = f"opc.tcp://127.0.0.1:{free_port()}/otpki/gds"
    exe = Path(sys.executable).parent / "otpki"
    proc = subprocess.Popen([str(exe), "gds", "serve", "--endpoint", url], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = read_line_until(proc.stdout, lambda text: "GDS listening" in text, "the GDS to listen", timeout=60)
        assert "GDS listening" in line, line

        async def browse() -> list[str]:
            # A second engine on the same data directory, as a client application would be enrolled.
            eng = make_engine(data, config=load_default_config(), passphrase=PASS.encode())
            try:
                client_id = issue_app_identity(eng, tmp_path / "client", "scada-1", "urn:plant:scada-1")
            finally:
                eng.close()
            client = await connect(url, client_id)
            try:
                idx = await client.get_namespace_index("http://opcfoundation.org/UA/GDS/")
                children = await client.get_node(f"ns={idx};i=141").get_children()
                return [(await c.read_browse_name()).Name for c in children]
            finally:
                await client.disconnect()

        names = asyncio.run(browse())
        assert {"Applications", "CertificateGroups"} <= set(names)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "GDS stopped" in out


def test_hash_password_reads_stdin() -> None:
    res = CliRunner().invoke(app, ["users", "hash-password"], input="s3cret-password\n")
    assert res.exit_code == 0 and res.stdout.startswith("$argon2id$")
    from opcua_gds.access import verify_password

    assert verify_password("s3cret-password", res.stdout.strip())
