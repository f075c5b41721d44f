"""CRL of one CA with 1M revoked entries (quick: 20k): the engine's build from the store vs raw cryptography.

engine: the store holds the revocations (inserted directly, one transaction, not timed); timed = reading the
        rows with `tx.revoked_entries` + `trustlists.crl.build_crl` (entry objects, builder, sign) +
        `public_bytes(DER)`, as `trustlists.testing.build_crl_from_store` runs them. `publish_crl` (the same
        plus storing the CRL and its audit record) is timed once for context.
raw:    the same entries as in-memory tuples (int serial, datetime, CRLReason or None) ->
        RevokedCertificateBuilder -> CertificateRevocationListBuilder(revoked_certificates=[...]) with the same
        CRL extensions (CRLNumber, AKI) -> sign -> DER.

Target: engine time <= 1.2 x raw time.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from bench._common import ACTOR, config_with, emit, make_engine, note, parse_args, summary, timed, workdir
from trustlists.crl import build_crl
from trustlists.engine import Engine
from trustlists.models import CARecord, RevocationReason
from trustlists.serials import random_serial, serial_hex
from trustlists.testing import (
    build_crl_from_store,
    ca_signing_material,
    insert_revocations,
    publish_crl_now,
    revoked_entries,
)

GROUP = "mqtt-device"  # P-256 issuing CA in the default profile
TARGET = 1.2
HASH = "sha256"
# Mostly a reasonCode on each entry (as in pki.md's measurements), some "unspecified" (no reasonCode).
REASONS = [RevocationReason.KEY_COMPROMISE, RevocationReason.SUPERSEDED, RevocationReason.SUPERSEDED,
           RevocationReason.CESSATION_OF_OPERATION, RevocationReason.AFFILIATION_CHANGED,
           RevocationReason.PRIVILEGE_WITHDRAWN, RevocationReason.CESSATION_OF_OPERATION,
           RevocationReason.SUPERSEDED, RevocationReason.KEY_COMPROMISE, RevocationReason.UNSPECIFIED]
_RAW_REASON_EXT = {
    RevocationReason.KEY_COMPROMISE: x509.CRLReason(x509.ReasonFlags.key_compromise),
    RevocationReason.SUPERSEDED: x509.CRLReason(x509.ReasonFlags.superseded),
    RevocationReason.CESSATION_OF_OPERATION: x509.CRLReason(x509.ReasonFlags.cessation_of_operation),
    RevocationReason.AFFILIATION_CHANGED: x509.CRLReason(x509.ReasonFlags.affiliation_changed),
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.CRLReason(x509.ReasonFlags.privilege_withdrawn),
}


def make_rows(n: int, ca_id: str, now_s: int, rng: random.Random) -> list[tuple[str, str, int, int, int]]:
    """(serial hex, ca id, revoked_at, reason, not_after): revoked over the past year, valid for up to 2 more."""
    rows: list[tuple[str, str, int, int, int]] = []
    seen: set[int] = set()
    while len(rows) < n:
        serial = random_serial()
        if serial in seen:
            continue
        seen.add(serial)
        rows.append((serial_hex(serial), ca_id, now_s - rng.randrange(365 * 86400),
                     int(rng.choice(REASONS)), now_s + 86400 + rng.randrange(730 * 86400)))
    return rows


def main() -> None:
    args = parse_args(__doc__ or "")
    n = 20_000 if args.quick else 1_000_000
    reps = 2
    rng = random.Random(1234)
    with workdir("crl") as d:
        note(f"crl: setting up an engine and {n} revocations")
        engine = make_engine(d, config_with(GROUP))
        try:
            ca = engine.hierarchy.issuing_ca_for(GROUP, None)
            ca_cert, key = ca_signing_material(engine, ca)
            crl_days = engine.config.group(GROUP).crl_lifetime_days
            now_s = int(time.time())
            rows = make_rows(n, ca.id, now_s, rng)
            t0 = time.perf_counter()
            insert_revocations(engine, rows)
            insert_s = time.perf_counter() - t0
            # The raw side gets the same entries, already decoded, in memory.
            raw_entries = [(int(s, 16), datetime.fromtimestamp(at, UTC), _RAW_REASON_EXT.get(RevocationReason(r)))
                           for s, _ca, at, r, _na in rows]
            del rows
            ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

            def engine_crl() -> tuple[bytes, int]:
                crl, count = build_crl_from_store(engine, ca, key, hash_name=HASH, crl_days=crl_days,
                                                  now=datetime.now(UTC))
                return crl.public_bytes(Encoding.DER), count

            raw_stages: list[dict[str, float]] = []

            def raw_crl() -> tuple[bytes, int]:
                t0 = time.perf_counter()
                now = datetime.now(UTC)
                revoked = []
                for serial, at, ext in raw_entries:
                    b = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at)
                    if ext is not None:
                        b = b.add_extension(ext, critical=False)
                    revoked.append(b.build())
                t1 = time.perf_counter()
                builder = x509.CertificateRevocationListBuilder(
                    issuer_name=ca_cert.subject, last_update=now, next_update=now + timedelta(days=crl_days),
                    revoked_certificates=revoked,
                    extensions=[x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(1)),
                                x509.Extension(x509.AuthorityKeyIdentifier.oid, False, aki)])
                crl = builder.sign(key, hashes.SHA256())
                t2 = time.perf_counter()
                der = crl.public_bytes(Encoding.DER)
                t3 = time.perf_counter()
                raw_stages.append({"entry_objects": round(t1 - t0, 3), "builder_sign": round(t2 - t1, 3),
                                   "public_bytes_der": round(t3 - t2, 3)})
                return der, len(revoked)

            engine_s: list[float] = []
            raw_s: list[float] = []
            engine_der = raw_der = b""
            engine_count = raw_count = 0
            for i in range(reps):  # interleaved; the first engine run also warms SQLite's and the OS's caches
                note(f"crl: run {i + 1}/{reps}")
                t, (raw_der, raw_count) = timed(raw_crl)
                raw_s.append(t)
                t, (engine_der, engine_count) = timed(engine_crl)
                engine_s.append(t)
            stages = engine_stages(engine, ca, ca_cert, key, crl_days)
            note("crl: publish_crl once (build + store + audit)")
            publish_s, _ = timed(lambda: _publish(engine, ca, key, crl_days))
        finally:
            engine.close()
    assert engine_count == raw_count == n, (engine_count, raw_count, n)
    ratio = min(engine_s) / min(raw_s)
    emit(
        benchmark="crl",
        engine={"seconds": summary(engine_s), "entries": engine_count, "der_bytes": len(engine_der),
                "stages_s": stages, "publish_crl_s": round(publish_s, 3)},
        baseline={"seconds": summary(raw_s), "entries": raw_count, "der_bytes": len(raw_der),
                  "stages_s": raw_stages[raw_s.index(min(raw_s))]},
        ratio=ratio,
        target=f"engine time <= {TARGET} x raw time (best runs)",
        meets_target=ratio <= TARGET,
        params={
            "revoked_entries": n, "runs": reps, "statistic": "best run", "ca": f"{GROUP} issuing CA (P-256)",
            "signature_hash": HASH, "serials": "random 159-bit",
            "reasons": "reasonCode on ~90% of entries, ~10% unspecified (no reasonCode)",
            "store_setup_s": round(insert_s, 2),
            "engine_path": "tx.revoked_entries -> build_crl -> public_bytes(DER)",
            "raw_path": "in-memory tuples -> RevokedCertificateBuilder -> CertificateRevocationListBuilder("
                        "revoked_certificates=...) -> sign -> public_bytes(DER)",
            "stages_note": "engine: one extra run split into stages (rows fetched to a list first); "
                           "raw: the stages of its best run",
        },
    )


def engine_stages(engine: Engine, ca: CARecord, ca_cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes,
                  crl_days: int) -> dict[str, float]:
    """Where the engine's time goes: the rows fetched to a list first, then build_crl, then DER."""
    now = datetime.now(UTC)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = revoked_entries(engine, ca.id, now)
    out["fetch_rows"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    crl, _ = build_crl(issuer_cert=ca_cert, issuer_key=key, issuer_key_type=ca.key_type, hash_name=HASH,
                       crl_number=1, this_update=now, next_update=now + timedelta(days=crl_days), entries=rows)
    out["build_crl_entries_and_sign"] = time.perf_counter() - t0
    del rows
    t0 = time.perf_counter()
    crl.public_bytes(Encoding.DER)
    out["public_bytes_der"] = time.perf_counter() - t0
    return {k: round(v, 3) for k, v in out.items()}


def _publish(engine: Engine, ca: CARecord, key: CertificateIssuerPrivateKeyTypes, crl_days: int) -> None:
    publish_crl_now(engine, ca, key, crl_days=crl_days, hash_name=HASH, actor=ACTOR)


if __name__ == "__main__":
    main()
