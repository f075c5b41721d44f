"""Revocation checks on a hot path: RevocationIndex.is_revoked with 1M revoked serials (quick: 20k).

engine:   `trustlists.crl.RevocationIndex.is_revoked(ca_id, serial)`, 1M random 159-bit serials spread over two
          CAs, for hits (revoked serials, right CA) and misses (random serials that are not revoked).
baseline: `serial in revoked` on a plain Python set of the same serials, same loop.
mqtt:     `mqtt_broker_auth.decision.DeviceGate.still_valid(identity)`, the check the brokers make for every
          live session and topic, against a real engine whose live index also holds the 1M serials.
contrast: cryptography's `CertificateRevocationList.get_revoked_certificate_by_serial_number` on a CRL with
          the same number of entries (a linear scan; only a handful of calls).

Target: <= 5 us per check (hits and misses).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from bench._common import emit, note, parse_args, summary, timed
from trustlists.crl import RevocationIndex
from trustlists.models import RevocationReason
from trustlists.serials import random_serial
from trustlists.testing import fill_revocation_index, revocation_index_size

TARGET_US = 5.0
CAS = ("opcua-application", "mqtt-device")
REASONS = [int(RevocationReason.KEY_COMPROMISE), int(RevocationReason.SUPERSEDED),
           int(RevocationReason.CESSATION_OF_OPERATION), int(RevocationReason.UNSPECIFIED)]

Query = list[tuple[str, int]]


def per_check_us(fn: Callable[[Query], object], queries: Query, reps: int) -> tuple[float, dict[str, float]]:
    fn(queries[:1000])  # warm-up
    samples = [timed(lambda: fn(queries))[0] for _ in range(reps)]
    us = [s / len(queries) * 1e6 for s in samples]
    return min(us), summary(us, 4)


def crl_contrast(serials: list[int], probes: list[int]) -> dict[str, object]:
    """A CRL with all the serials, then a few get_revoked_certificate_by_serial_number calls."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    now = datetime.now(UTC)
    revoked_at = now.replace(tzinfo=None, microsecond=0) - timedelta(days=1)  # naive UTC, as the builder keeps it
    base = x509.RevokedCertificateBuilder()
    t0 = time.perf_counter()
    revoked = [base.serial_number(s).revocation_date(revoked_at).build() for s in serials]
    der = x509.CertificateRevocationListBuilder(
        issuer_name=name, last_update=now, next_update=now + timedelta(days=7), revoked_certificates=revoked,
    ).sign(key, hashes.SHA256()).public_bytes(Encoding.DER)
    build_s = time.perf_counter() - t0
    del revoked
    t0 = time.perf_counter()
    crl = x509.load_der_x509_crl(der)
    load_s = time.perf_counter() - t0
    lookups_ms = []
    found = 0
    for serial in probes:
        t, entry = timed(partial(crl.get_revoked_certificate_by_serial_number, serial))
        lookups_ms.append(t * 1000)
        found += entry is not None
    return {"entries": len(serials), "build_and_der_s": round(build_s, 3), "load_der_s": round(load_s, 4),
            "lookups": len(probes), "lookups_found": found,
            "ms_per_lookup": summary(lookups_ms, 3)}


def mqtt_session_check(revoked: dict[int, str], reps: int, k: int) -> dict[str, float]:
    """DeviceGate.still_valid for a live device and for a revoked one, with `revoked` also in the index."""
    import tempfile

    from mqtt_broker_auth.decision import DeviceGate, DeviceIdentity
    from trustlists.testing import make_engine

    with tempfile.TemporaryDirectory(prefix="otpki-bench-") as d:
        engine = make_engine(Path(d))
        engine.hierarchy.initialize(actor="bench")
        identities: list[DeviceIdentity] = []
        gate = DeviceGate(engine)
        for name in ("pump-1", "pump-2"):
            owner = engine.registry.register(group="mqtt-device", name=name, site="north", actor="bench")
            issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor="bench")
            identity = gate.authenticate([issued.certificate_der, *issued.chain_der], name)
            assert isinstance(identity, DeviceIdentity), identity
            identities.append(identity)
        engine.authority.revoke(format(identities[1].serial, "x"), reason=RevocationReason.KEY_COMPROMISE,
                                actor="bench")
        engine.refresh_revocations()
        fill_revocation_index(engine, "mqtt-device", list(revoked), RevocationReason.KEY_COMPROMISE)
        live, dead = identities
        assert gate.still_valid(live) and not gate.still_valid(dead)

        def check(identity: DeviceIdentity) -> float:
            still_valid = gate.still_valid
            best = float("inf")
            for _ in range(reps):
                t = time.perf_counter()
                for _i in range(k):
                    still_valid(identity)
                best = min(best, (time.perf_counter() - t) / k * 1e6)
            return best

        result = {"us_per_check_valid": round(check(live), 4), "us_per_check_revoked": round(check(dead), 4),
                  "index_entries": revocation_index_size(engine)}
        engine.close()
        return result


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 20_000 if args.quick else 1_000_000
    k = 20_000 if args.quick else 200_000
    reps = 3 if args.quick else 5
    crl_probes = 4 if args.quick else 6
    rng = random.Random(4321)

    note(f"revocation_check: {n} revoked serials over {len(CAS)} CAs")
    revoked: dict[int, str] = {}
    while len(revoked) < n:
        revoked.setdefault(random_serial(), CAS[len(revoked) % len(CAS)])
    serials = list(revoked)
    index = RevocationIndex()
    t0 = time.perf_counter()
    for serial, ca in revoked.items():
        index.add(ca, serial, rng.choice(REASONS))
    index_fill_s = time.perf_counter() - t0
    plain = set(serials)

    hits: Query = [(revoked[s], s) for s in rng.sample(serials, k)]
    misses: Query = []
    while len(misses) < k:
        s = random_serial()
        if s not in plain:
            misses.append((CAS[len(misses) % len(CAS)], s))
    assert all(index.is_revoked(ca, s) for ca, s in hits)
    assert not any(index.is_revoked(ca, s) for ca, s in misses)

    def engine_loop(queries: Query) -> None:
        is_revoked = index.is_revoked
        for ca, s in queries:
            is_revoked(ca, s)

    def set_loop(queries: Query) -> None:
        for _ca, s in queries:
            s in plain  # noqa: B015 - the membership test is what is measured

    def empty_loop(queries: Query) -> None:
        for _ca, _s in queries:
            pass

    note("revocation_check: timing index and set lookups")
    e_hit, e_hit_s = per_check_us(engine_loop, hits, reps)
    e_miss, e_miss_s = per_check_us(engine_loop, misses, reps)
    b_hit, b_hit_s = per_check_us(set_loop, hits, reps)
    b_miss, b_miss_s = per_check_us(set_loop, misses, reps)
    loop_us, _ = per_check_us(empty_loop, hits, reps)

    note(f"revocation_check: building a {n}-entry CRL for the get_revoked_certificate_by_serial_number contrast")
    half = crl_probes // 2
    probes = [s for _ca, s in hits[:half]] + [s for _ca, s in misses[: crl_probes - half]]
    contrast = crl_contrast(serials, probes)

    note("revocation_check: DeviceGate.still_valid with the same serials in a real engine's index")
    mqtt = mqtt_session_check(revoked, reps, k)

    worst_engine = max(e_hit, e_miss, mqtt["us_per_check_valid"], mqtt["us_per_check_revoked"])
    emit(
        benchmark="revocation_check",
        engine={"us_per_check_hit": round(e_hit, 4), "us_per_check_miss": round(e_miss, 4),
                "hit_runs_us": e_hit_s, "miss_runs_us": e_miss_s, "revoked_serials": len(index),
                "index_fill_s": round(index_fill_s, 3), "mqtt_session_check": mqtt},
        baseline={"set_membership": {"us_per_check_hit": round(b_hit, 4), "us_per_check_miss": round(b_miss, 4),
                                     "hit_runs_us": b_hit_s, "miss_runs_us": b_miss_s},
                  "cryptography_crl_lookup": contrast},
        ratio=worst_engine / max(b_hit, b_miss),
        target=f"<= {TARGET_US} us per check, hits and misses, index and MQTT session check "
               "(ratio = worst engine check / plain set)",
        meets_target=worst_engine <= TARGET_US,
        params={"revoked_serials": n, "cas": len(CAS), "serials": "random 159-bit", "checks_per_run": k,
                "runs": reps, "statistic": "best run", "loop_overhead_us": round(loop_us, 4),
                "note": "per-check times include the Python for-loop (loop_overhead_us), same for both sides"},
    )


if __name__ == "__main__":
    main()
