"""CA keys reachable from several hosts: two otpki instances (real processes, each with its own data directory)
issue with the same CA at the same time on one PostgreSQL store, for both key backends: encrypted key files
that every instance has a copy of (and the passphrase), and one PKCS#11 token (SoftHSM2) both processes log in to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.softhsm import softhsm_token
from trustlists.testing import PASSPHRASE, PostgresCluster, make_engine

from .instances import ROOT, cli_env, otpki, second_instance

PER_WORKER = 6
DEADLINE_S = 180.0


@pytest.mark.parametrize("backend", ["file", "pkcs11"])
def test_two_instances_issue_with_one_ca_key(postgres_cluster: PostgresCluster, tmp_path: Path,
                                             backend: str) -> None:
    url = postgres_cluster.database()
    cfg = tmp_path / "otpki.toml"
    secrets = {"OTPKI_CA_PASSPHRASE": PASSPHRASE.decode()}
    init = ["init", "--config", str(cfg)]
    if backend == "pkcs11":
        token = softhsm_token(prefix="multi")
        cfg.write_text(f'[keys.pkcs11]\nmodule = "{token.module}"\ntoken_label = "{token.label}"\n')
        secrets = {"OTPKI_HSM_PIN": token.pin, "OTPKI_CA_PASSPHRASE": "", "SOFTHSM2_CONF": str(token.conf)}
        init.append("--hsm")
    else:
        cfg.write_text("")
    a_dir = tmp_path / "a"
    otpki(a_dir, url, *init, **secrets)
    b_dir = second_instance(a_dir, tmp_path / "b")
    for name in ("pump-a", "pump-b"):
        otpki(a_dir, url, "owners", "add", "mqtt-device", name, **secrets)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.multi.issue_worker", str(d), name, str(PER_WORKER),
                               str(go)], cwd=ROOT, env=cli_env(d, url, **secrets), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for d, name in ((a_dir, "pump-a"), (b_dir, "pump-b"))]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()
        issued = []
        for p in procs:
            out, err = p.communicate(timeout=DEADLINE_S)
            assert p.returncode == 0, err[-2000:]
            issued.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert all(len(batch) == PER_WORKER for batch in issued)
    every = [item for batch in issued for item in batch]
    assert len({serial for serial, _, _ in every}) == 2 * PER_WORKER
    assert len({ca_id for _, ca_id, _ in every}) == 1  # both instances signed with the one issuing CA
    observer = make_engine(tmp_path / "observer", store_url=url)
    try:
        ca = observer.ca_status(every[0][1]).record
        assert ca.key_backend == backend
        ca_cert = x509.load_der_x509_certificate(ca.certificate_der)
        for _, _, der in every:
            x509.load_der_x509_certificate(bytes.fromhex(der)).verify_directly_issued_by(ca_cert)
        assert observer.verify_audit().ok
    finally:
        observer.close()
    if backend == "pkcs11":  # nothing of the keys is on either instance's disk
        assert not (a_dir / "keys").exists() and not (b_dir / "keys").exists()
