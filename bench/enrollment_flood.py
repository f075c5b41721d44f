"""What a flood of enrollment requests costs the service, now that replay memory and rate limits live in the store.

    PYTHONPATH=. .venv/bin/python bench/enrollment_flood.py [--quick]

engine: one device floods the enrollment service's message handler (no broker in between: the cost measured
is the service's own) with validly signed requests; the in-memory filter sheds everything beyond the burst.
Also a flood of garbage on many device names. Reported: microseconds per shed message, and how many store
write transactions each flood caused.
baseline: one shared-store admission (`engine.request_guard.admit`: a write transaction with SQLite's fsync),
which is what every flooded message would cost if the rate limit were asked of the store first.
Target: a flood writes to the store at most `burst` times, and shedding a message is at least 50 times cheaper
than a store admission.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

from cryptography.hazmat.primitives import serialization

from bench._common import ACTOR, config_with, emit, make_engine, note, parse_args, summary, workdir
from mqtt_broker_auth.enrollment.messages import build_request
from mqtt_broker_auth.enrollment.service import EnrollmentService, EnrollmentSettings
from simulators.manufacturer import Manufacturer
from trustlists.engine import Engine
from trustlists.keys.algorithms import can_sign_certificates
from trustlists.request_guard import RateLimit
from trustlists.testing import counting_writes

PREFIX = "otpki/enroll"


class FloodRun(TypedDict):
    messages: int
    burst: int
    flood_outcomes: dict[str, int]
    flood_store_writes: int
    shed_us_per_message: float
    garbage_outcomes: dict[str, int]
    garbage_store_writes: int
    garbage_us_per_message: float


async def flood(engine: Engine, directory: Path, messages: int) -> FloodRun:
    maker = Manufacturer.create("Bench Devices")
    engine.trustlists.import_external("mqtt-device", maker.ca_pem.encode(), list_name="trusted", note="bench",
                                      actor=ACTOR)
    idevid = maker.issue_idevid("SN-FLOOD")
    engine.registry.register(group="mqtt-device", name="flooder", site=None, actor=ACTOR,
                             attributes={"bootstrap": [idevid.allow_list_entry()]})
    key = serialization.load_pem_private_key(idevid.key_pem.encode(), password=None)
    assert can_sign_certificates(key)
    settings = EnrollmentSettings(burst=5)
    service = EnrollmentService(engine, host="127.0.0.1", port=1, ca_file=directory / "none",
                                cert_file=directory / "none", key_file=directory / "none", settings=settings,
                                client_id="bench-service")
    topic = f"{PREFIX}/flooder/csr"
    payloads = [build_request(topic, credential_pem=idevid.cert_file_pem, credential_key=key,
                              server_keygen=True).model_dump_json(exclude_none=True).encode()
                for _ in range(messages)]
    with counting_writes(engine) as writes:
        start = time.perf_counter()
        for payload in payloads:
            service._on_message(None, topic, payload, 1, None)
        shed_s = time.perf_counter() - start
        await service.stop()  # waits for the burst's requests to be served
    flood_answers = dict(service.counters)
    service.counters = dict.fromkeys(service.counters, 0)
    garbage_topics = [f"{PREFIX}/dev-{i}/csr" for i in range(messages)]
    with counting_writes(engine) as garbage_writes:
        start = time.perf_counter()
        for t in garbage_topics:
            service._on_message(None, t, b"{not json", 1, None)
        await service.stop()
        garbage_s = time.perf_counter() - start
    # shed_us_per_message: the handler's time per message while the burst waits in the queue (what the broker's
    # event loop pays for each flooded message); garbage: parsed and refused, or dropped once the queue is full.
    return {"messages": messages, "burst": settings.burst, "flood_outcomes": flood_answers,
            "flood_store_writes": writes[0], "shed_us_per_message": round(shed_s / messages * 1e6, 2),
            "garbage_outcomes": dict(service.counters), "garbage_store_writes": garbage_writes[0],
            "garbage_us_per_message": round(garbage_s / messages * 1e6, 2)}


def store_admission(engine: Engine, calls: int) -> dict[str, float]:
    limit = RateLimit(burst=10**9, refill_per_s=1.0)
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        engine.request_guard.admit("bench", f"dev-{i % 50}", str(uuid.uuid4()),
                                   expires_at=engine.now() + timedelta(minutes=10), limit=limit)
        samples.append((time.perf_counter() - start) * 1e6)
    return summary(samples, digits=1)


def main() -> None:
    args = parse_args(__doc__ or "")
    logging.disable(logging.WARNING)  # every refusal is a warning line: 50k of them would be the benchmark
    messages, calls = (2_000, 100) if args.quick else (50_000, 1_000)
    with workdir("enrollment-flood") as directory:
        engine = make_engine(directory, config_with("mqtt-device"))
        try:
            note(f"flooding the service with {messages} messages")
            result = asyncio.run(flood(engine, directory, messages))
            note(f"{calls} store admissions")
            admit_us = store_admission(engine, calls)
        finally:
            engine.close()
    ratio = admit_us["median"] / max(result["shed_us_per_message"], 0.01)
    ok = (result["flood_store_writes"] <= 3 * result["burst"]
          and result["garbage_store_writes"] == 0 and ratio >= 50)
    emit(benchmark="enrollment_flood", engine=dict(result), baseline={"store_admission_us": admit_us}, ratio=ratio,
         target="store writes only for the burst (guard + issuance each), shedding >= 50x cheaper than a store "
                "admission", meets_target=ok, params={"messages": messages, "admissions": calls})


if __name__ == "__main__":
    main()
