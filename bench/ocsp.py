"""OCSP responses: the engine's responder, uncached and cached, against raw `cryptography` response signing.

engine uncached: `OcspResponder.respond(request)` with caching off, cycling over the requests for N issued
                 certificates (10% revoked): parse the request, find the CA, read the status from the store, build,
                 sign with the CA's delegated signer (EC P-256), encode.
engine cached:   `Engine.ocsp.cached(request)` after one `respond` per request: parse, find the CA, check the cached
                 answer is still right (revocation index, signer, age); what the HTTP front does on the event loop.
baseline:        `cryptography.x509.ocsp.OCSPResponseBuilder` for the same CertIDs and statuses, signed with the same
                 key and encoded (the signing the responder cannot avoid), same loop.

Targets: uncached >= 0.8x the baseline's rate; cached >= 10x the uncached rate.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from bench._common import ACTOR, config_with, emit, make_engine, note, parse_args, summary, workdir
from trustlists.clock import utcnow
from trustlists.models import RevocationReason
from trustlists.testing import make_csr, ocsp_responder

UNCACHED_TARGET = 0.8
CACHED_TARGET = 10.0
CHUNK = 20  # requests per timed sample
CACHED_PASSES = 20  # a cached sample answers its chunk this many times (a cached answer takes microseconds)


def main() -> None:
    args = parse_args(__doc__ or "")
    n, reps = (40, 3) if args.quick else (400, 15)
    with workdir("ocsp") as d:
        engine = make_engine(d, config_with("mqtt-device"))
        try:
            engine.ocsp_signers.ensure(actor=ACTOR)
            owner = engine.registry.register(group="mqtt-device", name="pump", actor=ACTOR)
            requests: list[bytes] = []
            statuses: list[tuple[ocsp.OCSPRequest, bool]] = []
            note(f"issuing {n} certificates")
            for i in range(n):
                issued = engine.authority.issue_from_csr(make_csr("pump"), owner_id=owner.id, actor=ACTOR)
                cert = x509.load_der_x509_certificate(issued.certificate_der)
                issuer = x509.load_der_x509_certificate(issued.chain_der[0])
                der = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build().public_bytes(
                    Encoding.DER)
                revoked = i % 10 == 0
                if revoked:
                    engine.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE,
                                            actor=ACTOR)
                requests.append(der)
                statuses.append((ocsp.load_der_ocsp_request(der), revoked))
            signer = engine.ocsp_signers.load("mqtt-device")
            assert signer is not None

            def raw(chunk: range) -> None:
                now = utcnow().replace(microsecond=0)
                for i in chunk:
                    req, revoked = statuses[i]
                    status = ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD
                    (ocsp.OCSPResponseBuilder()
                     .add_response_by_hash(req.issuer_name_hash, req.issuer_key_hash, req.serial_number,
                                           req.hash_algorithm, status, now, now + timedelta(hours=1),
                                           now if revoked else None,
                                           x509.ReasonFlags.key_compromise if revoked else None)
                     .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
                     .certificates([signer.certificate])
                     .sign(signer.key, hashes.SHA256())
                     .public_bytes(Encoding.DER))

            uncached_responder = ocsp_responder(engine, max_cached=0)

            def uncached(chunk: range) -> None:
                respond = uncached_responder.respond
                for i in chunk:
                    assert respond(requests[i]).status == "successful"

            for der in requests:  # fill the engine responder's cache
                engine.ocsp.respond(der)

            def cached(chunk: range) -> None:
                cached_answer = engine.ocsp.cached
                for _ in range(CACHED_PASSES):
                    for i in chunk:
                        if cached_answer(requests[i]) is None:
                            engine.ocsp.respond(requests[i])  # the index's age ran out: one refresh, as the front does

            chunks = [range(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]
            for chunk in chunks:  # warm-up
                raw(chunk), uncached(chunk), cached(chunk)  # type: ignore[func-returns-value]
            note("measuring")
            # Seconds per response of every chunk: short (a few ms) and interleaved, so a noisy neighbour on a
            # shared machine spoils some chunks of all three alike; the best chunk of each counts.
            raw_s: list[float] = []
            uncached_s: list[float] = []
            cached_s: list[float] = []
            clock = time.perf_counter
            for _ in range(reps):
                for chunk in chunks:
                    for fn, samples, per in ((raw, raw_s, len(chunk)), (uncached, uncached_s, len(chunk)),
                                             (cached, cached_s, len(chunk) * CACHED_PASSES)):
                        start = clock()
                        fn(chunk)
                        samples.append((clock() - start) / per)
            uncached_responder.close()
        finally:
            engine.close()
    raw_rate = 1 / min(raw_s)
    uncached_rate = 1 / min(uncached_s)
    cached_rate = 1 / min(cached_s)
    uncached_ratio = uncached_rate / raw_rate
    cached_ratio = cached_rate / uncached_rate
    emit(
        benchmark="ocsp",
        engine={"uncached_responses_per_s": round(uncached_rate), "cached_responses_per_s": round(cached_rate),
                "uncached_vs_raw": round(uncached_ratio, 3), "cached_vs_uncached": round(cached_ratio, 1),
                "uncached_us_per_response": summary([x * 1e6 for x in uncached_s], 2),
                "cached_us_per_response": summary([x * 1e6 for x in cached_s], 3)},
        baseline={"raw_cryptography_responses_per_s": round(raw_rate),
                  "raw_us_per_response": summary([x * 1e6 for x in raw_s], 2)},
        ratio=uncached_ratio,
        target=f"uncached >= {UNCACHED_TARGET}x raw cryptography signing (ratio = uncached / raw); "
               f"cached >= {CACHED_TARGET}x uncached",
        meets_target=uncached_ratio >= UNCACHED_TARGET and cached_ratio >= CACHED_TARGET,
        params={"certificates": n, "revoked_share": 0.1, "ca_key": "ec-p256", "reps": reps, "chunk": CHUNK,
                "cached_passes_per_chunk": CACHED_PASSES, "store": "sqlite"},
    )


if __name__ == "__main__":
    main()
