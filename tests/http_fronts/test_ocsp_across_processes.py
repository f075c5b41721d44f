"""A revocation made by another process (`otpki certs revoke`) is answered as revoked by the responder serving
here, on SQLite (the revocation index is polled at most every 0.25 s before a cached answer is used) and on
PostgreSQL (the revocation is announced with NOTIFY)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.x509 import ocsp

from trustlists.engine import Engine
from trustlists.testing import PASSPHRASE, PostgresCluster, make_engine

from .conftest import EC_ROOT_TOML, ec_root_config, fronts_app, issue, run, serving
from .test_ocsp_http import ocsp_request

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, dict[str, str]]]:
    """An initialised engine and the environment of a CLI process on the same data directory and store."""
    data = tmp_path / "pki"
    env = {**os.environ, "OTPKI_DATA_DIR": str(data), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode()}
    url = None
    if request.param == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = env["OTPKI_STORE_URL"] = cluster.database()
    eng = make_engine(data, config=ec_root_config(), store_url=url)
    (data / "otpki.toml").write_text(EC_ROOT_TOML)
    eng.hierarchy.initialize(actor="tester")
    eng.ocsp_signers.ensure(actor="tester")
    yield eng, env
    eng.close()


async def test_a_revocation_by_the_cli_is_answered_as_revoked(store: tuple[Engine, dict[str, str]],
                                                               tmp_path: Path) -> None:
    engine, env = store
    target = issue(engine, "pump-1", tmp_path)
    request = ocsp_request(target.certificate, target.issuer_certificate)
    post = {"Content-Type": "application/ocsp-request"}
    async with serving(fronts_app(engine)) as url, httpx.AsyncClient() as client:
        async def status() -> ocsp.OCSPCertStatus:
            res = await client.post(f"{url}/ocsp", content=request, headers=post)
            return ocsp.load_der_ocsp_response(res.content).certificate_status

        assert await status() == ocsp.OCSPCertStatus.GOOD
        assert await status() == ocsp.OCSPCertStatus.GOOD  # now from the cache
        code, out, err = await run(sys.executable, "-m", "otpki.cli.main", "certs", "revoke", target.serial,
                                   "--reason", "key-compromise", env=env, cwd=ROOT)
        assert code == 0, out + err
        committed = time.monotonic()
        answers = [await status()]
        while answers[-1] != ocsp.OCSPCertStatus.REVOKED:  # polled with a deadline, not timed
            assert time.monotonic() - committed < 10, f"still {answers[-1]} 10 s after the revocation"
            answers.append(await status())
        print(f"revoked answered {time.monotonic() - committed:.3f} s after `otpki certs revoke` returned "
              f"({len(answers)} requests)")
