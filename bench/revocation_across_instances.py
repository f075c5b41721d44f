"""Revocation propagation across otpki instances on one PostgreSQL store: commit on one, session dropped on another.

engine:   `otpki mqtt serve` runs as its own process (instance A, default [mqtt] settings) on a throwaway PostgreSQL
          cluster with durable commits (fsync, synchronous_commit on). This process is instance B: it holds the CA
          keys too (a copy of the encrypted key files), connects a device (paho, mTLS) to A's broker, revokes the
          device's certificate with `engine.authority.revoke` and waits for the broker to drop the session.
          Measured per revocation, from the start of the revoke call (so it includes B's CRL signing and commit:
          an upper bound of commit -> dropped) to the device's disconnect callback; and the revoke call alone.
baseline: bare PostgreSQL LISTEN/NOTIFY between two connections of this process (NOTIFY commit -> notification
          received): the floor of any notification-driven propagation, same cluster, same run.

Target (issue 13): revocation commit -> session dropped p50 <= 100 ms, max < 1 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._common import ACTOR, emit, note, parse_args, postgres_cluster, workdir
from mqtt_broker_auth.testing import TlsDevice, device_files
from trustlists.models import RevocationReason
from trustlists.testing import PASSPHRASE, free_port, make_engine

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 10.0
P50_TARGET_S = 0.100
MAX_TARGET_S = 1.0


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 4),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
            "max": round(ordered[-1], 4), "min": round(ordered[0], 4), "samples": len(ordered)}


def notify_roundtrips(url: str, n: int) -> list[float]:
    samples = []
    with psycopg.connect(url, autocommit=True) as listener, psycopg.connect(url, autocommit=True) as sender:
        listener.execute("LISTEN bench_baseline")
        for _ in range(n):
            start = time.perf_counter()
            sender.execute("SELECT pg_notify('bench_baseline', '')")
            next(iter(listener.notifies(timeout=WAIT_S, stop_after=1)))
            samples.append(time.perf_counter() - start)
    return samples


def _stop(broker: subprocess.Popen[bytes] | None) -> None:
    if broker is not None and broker.poll() is None:
        broker.kill()
        broker.wait()


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 5 if args.quick else 50
    broker: subprocess.Popen[bytes] | None = None
    durable = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    with postgres_cluster(durable) as cluster:
        url = cluster.database()
        # The broker writes into the work directory: it is stopped before that directory is removed.
        with workdir("revocation-instances") as tmp, contextlib.ExitStack() as stop_broker:
            stop_broker.callback(lambda: _stop(broker))
            a_dir = tmp / "a"
            env = {**os.environ, "OTPKI_DATA_DIR": str(a_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode(),
                   "OTPKI_STORE_URL": url}
            cli = [sys.executable, "-m", "otpki.cli.main"]
            subprocess.run([*cli, "init"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
            b_dir = tmp / "b"
            shutil.copytree(a_dir, b_dir)
            port = free_port()
            log = open(tmp / "broker.log", "wb")  # noqa: SIM115 - closed below, after the broker
            broker = subprocess.Popen([*cli, "mqtt", "serve", "--port", str(port), "--no-enrollment"], env=env,
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
            assert broker.stdout is not None
            deadline = time.monotonic() + 120
            while b"ready" not in broker.stdout.readline():
                if broker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the broker did not start: {(tmp / 'broker.log').read_text()[-2000:]}")
            engine = make_engine(b_dir, store_url=url)
            server_ca = a_dir / "mqtt" / "server-ca.pem"
            note(f"issuing {n} device certificates on instance B")
            devices = [device_files(engine, f"pump-{i}", tmp / "devices") for i in range(n)]
            note(f"{n} revocations on instance B, each dropping a session on A's broker")
            dropped: list[float] = []
            revoke_call: list[float] = []
            for i, (cert, key, serial) in enumerate(devices):
                dev = TlsDevice(port, server_ca, cert, key, client_id=f"pump-{i}")
                start = time.perf_counter()
                engine.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor=ACTOR)
                revoke_call.append(time.perf_counter() - start)
                if not dev.ended.wait(WAIT_S):
                    raise RuntimeError(f"the session of revoked pump-{i} was not dropped within {WAIT_S} s")
                dropped.append(dev.ended_at - start)
                dev.close()
            engine.close()
            baseline = notify_roundtrips(url, n)
            log.close()
    engine_figures = percentiles(dropped)
    emit(benchmark="revocation_across_instances",
         engine={"revoke_start_to_session_dropped_s": engine_figures, "revoke_call_s": percentiles(revoke_call)},
         baseline={"notify_to_listener_s": percentiles(baseline)},
         ratio=engine_figures["p50"] / max(statistics.median(baseline), 1e-6),
         target=f"commit -> session dropped on another instance: p50 <= {P50_TARGET_S * 1000:g} ms, "
                f"max < {MAX_TARGET_S:g} s",
         meets_target=engine_figures["p50"] <= P50_TARGET_S and engine_figures["max"] < MAX_TARGET_S,
         params={"revocations": n, "store": "postgresql, durable commits", "broker": "otpki mqtt serve (embedded)",
                 "instances": "broker = instance A (own process), revoker = instance B (this process)",
                 "ratio_is": "p50 revoke start -> dropped / p50 bare NOTIFY -> LISTEN"})


if __name__ == "__main__":
    main()
