"""Fleet rollout: a new certificate and trust list pushed to N simulated PLCs (default 200; quick: 3).

The PLCs run in worker processes (`python -m simulators.plant`, 50 per process) on consecutive ports.
baseline: pushes to a sample of the PLCs one after another (`Rollout.push_one`), measured in this run;
          the sequential cost of the fleet is estimated as N x the mean single push.
engine:   `Rollout.run(force=True)` over the whole fleet with the configured concurrency: wall time.
Target: wall time <= 0.1 x sequential.
server_check: what the server-identity check (before every push's login) costs otpki, measured on its own
          after the rollout: the first-contact path (a pin recorded for a fresh target) and the
          engine-certificate path (inventory lookup + validation against the trust list) per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import emit, note, parse_args, workdir
from opcua_gds.own_identity import ensure_identity
from opcua_gds.push.rollout import KIND, Rollout
from opcua_gds.push.server_identity import TargetServerIdentity
from simulators.plant_workers import chunks, start_workers, stop_workers, wait_ready
from trustlists.engine import Engine
from trustlists.testing import free_port_block, make_engine

TARGET = 0.1
PER_PROCESS = 50
PASSWORD = "bench-plc-admin-pw"


class FleetRun(TypedDict):
    singles: list[float]
    wall: float
    delivered: int
    failed: int
    errors: list[str | None]
    startup_s: float
    cpu_plcs_s: float
    cpu_otpki_s: float
    check_ms: dict[str, float]


async def run(n: int, sample: int, concurrency: int, d: Path) -> FleetRun:
    engine = make_engine(d / "pki")
    engine.hierarchy.initialize(actor="bench")
    cert, key = ensure_identity(engine, d / "push-own", name="otpki-push", application_uri="urn:otpki:push",
                                host="localhost")
    base = free_port_block(n)
    note(f"push_fleet: starting {n} PLCs from port {base}")
    t0 = time.perf_counter()
    parts = chunks(n, per_process=PER_PROCESS)
    workers = start_workers(parts, base_port=base, root=d / "plant", password=PASSWORD, admin="plc-admin")
    try:
        await wait_ready(workers, [size for _start, size in parts])
    except BaseException:
        stop_workers(workers, grace_s=20)
        raise
    startup_s = time.perf_counter() - t0
    try:
        for i in range(n):
            owner = engine.registry.register(group="opcua-application", name=f"plc-{i + 1}",
                                             application_uri=f"urn:otpki:plc:plc-{i + 1}",
                                             dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="bench")
            engine.targets.add(owner_id=owner.id, kind=KIND, address=f"opc.tcp://127.0.0.1:{base + i}/plc",
                               credentials_ref="plc", actor="bench")
        rollout = Rollout(engine, client_cert_path=cert, client_key_path=key, client_app_uri="urn:otpki:push",
                          credentials=lambda _ref: ("plc-admin", PASSWORD), concurrency=concurrency)
        targets = [t for t, _r in engine.targets.needing_delivery(kind=KIND)]
        note(f"push_fleet: {sample} sequential single pushes")
        singles = []
        for target in targets[:sample]:
            t = time.perf_counter()
            outcome = await rollout.push_one(target, "baseline")
            assert outcome.ok, outcome.error
            singles.append(time.perf_counter() - t)
        note(f"push_fleet: rollout to {n} PLCs, concurrency {concurrency}")
        cpu_before = cpu_seconds(workers)
        t = time.perf_counter()
        report = await rollout.run(force=True)
        wall = time.perf_counter() - t
        cpu_after = cpu_seconds(workers)
        check_ms = await server_check_cost(engine, [t.id for t in targets])
    finally:
        stop_workers(workers, grace_s=20)
        engine.close()
    return {"singles": singles, "wall": wall, "delivered": report.delivered, "failed": report.failed,
            "errors": [o.error for o in report.outcomes if not o.ok][:5], "startup_s": startup_s,
            "cpu_plcs_s": cpu_after[0] - cpu_before[0], "cpu_otpki_s": cpu_after[1] - cpu_before[1],
            "check_ms": check_ms}


async def server_check_cost(engine: Engine, target_ids: list[str]) -> dict[str, float]:
    """Mean milliseconds of one server-identity decision, as the rollout makes it (one thread hop each)."""
    delivered = []
    for target_id in target_ids:
        serial = engine.targets.get(target_id).delivered_serial
        assert serial is not None
        der = engine.inventory.get(serial).der
        assert der is not None
        delivered.append((target_id, der))
    t = time.perf_counter()
    for target_id, der in delivered:
        await TargetServerIdentity(engine, target_id, actor="bench")([der])
    engine_path = (time.perf_counter() - t) / len(delivered)
    owner = engine.registry.register(group="opcua-application", name="plc-first-contact",
                                     application_uri="urn:otpki:plc:plc-first-contact", actor="bench")
    fresh = [engine.targets.add(owner_id=owner.id, kind=KIND, address=f"opc.tcp://127.0.0.1:1/first-{i}",
                                credentials_ref="plc", actor="bench").id for i in range(len(delivered))]
    t = time.perf_counter()
    for target_id, (_other, der) in zip(fresh, delivered, strict=True):
        await TargetServerIdentity(engine, target_id, actor="bench")([der[::-1]])  # any bytes: pinned as seen
    first_contact = (time.perf_counter() - t) / len(fresh)
    return {"engine_certificate_ms": round(1000 * engine_path, 3), "first_contact_ms": round(1000 * first_contact, 3)}


def cpu_seconds(workers: list[subprocess.Popen[str]]) -> tuple[float, float]:
    """CPU time (user + system) of the PLC worker processes and of this process (otpki's side)."""
    import psutil

    plcs = 0.0
    for w in workers:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(w.pid).cpu_times()
            plcs += times.user + times.system
    own = os.times()
    return plcs, own.user + own.system


def main() -> None:
    args = parse_args(__doc__ or "")
    n, sample, concurrency = (3, 1, 3) if args.quick else (200, 8, 64)
    with workdir("push-fleet") as d:
        r = asyncio.run(run(n, sample, concurrency, d))
    mean_single = statistics.mean(r["singles"])
    sequential = n * mean_single
    ratio = r["wall"] / sequential
    emit(benchmark="push_fleet",
         engine={"wall_s": round(r["wall"], 3), "delivered": r["delivered"], "failed": r["failed"],
                 "errors": r["errors"],
                 # Where the CPU went during the rollout: on a plant every PLC has its own CPU, here 200
                 # simulated PLCs share the two cores with otpki, so their share bounds the wall time.
                 "cpu_s_plcs": round(r["cpu_plcs_s"], 1), "cpu_s_otpki": round(r["cpu_otpki_s"], 1),
                 "cpu_ms_per_push_otpki": round(1000 * r["cpu_otpki_s"] / max(1, r["delivered"]), 1),
                 # The server-identity check alone, per call (it runs once per push; reconnects compare hashes).
                 "server_check_ms": r["check_ms"]},
         baseline={"mean_single_push_s": round(mean_single, 3), "sequential_estimate_s": round(sequential, 3),
                   "single_pushes_s": [round(s, 3) for s in r["singles"]]},
         ratio=ratio, target=f"rollout wall time <= {TARGET} x the sequential sum of single pushes",
         meets_target=ratio <= TARGET and r["failed"] == 0,
         params={"plcs": n, "concurrency": concurrency, "baseline_sample": sample,
                 "plcs_per_worker_process": PER_PROCESS, "plant_startup_s": round(r["startup_s"], 1),
                 "push": "trust list write + CreateSigningRequest (new RSA-2048 key on the PLC) + engine issuance + "
                         "UpdateCertificate + ApplyChanges + reconnect and verify, SignAndEncrypt Basic256Sha256"})


if __name__ == "__main__":
    main()
