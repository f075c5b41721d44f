"""GDS pull round trips (StartSigningRequest + FinishRequest, auto-approved) over a SignAndEncrypt session.

engine:   one asyncua client session (Basic256Sha256, SignAndEncrypt, the application's own engine-issued
          certificate, ApplicationSelfAdmin) calls StartSigningRequest then FinishRequest for a fresh CSR;
          the GDS checks access, the request, issues, records and returns the certificate and its chain.
baseline: measured in the same run: two bare asyncua method calls (a no-op method on a server with the
          same security and certificates) over the same kind of session, plus one engine issuance from
          the same kind of CSR (`issue_from_csr`) — the cost of the parts, without the GDS around them.
Target: engine time per round trip <= 1.5 x baseline.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asyncua import Server, ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench._common import emit, note, parse_args, summary, workdir
from opcua_gds.gds.client import GdsClient
from opcua_gds.gds.server import GdsServer
from opcua_gds.gds.settings import GdsSettings
from opcua_gds.testing import connect, issue_app_identity
from trustlists.testing import free_port, make_engine

TARGET = 1.5
APP_URI = "urn:bench:scada"


def make_csrs(n: int) -> list[bytes]:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-scada")])
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(APP_URI), x509.DNSName("localhost")])
    return [x509.CertificateSigningRequestBuilder().subject_name(subject).add_extension(san, False)
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
            for _ in range(n)]


class PullRun(TypedDict):
    pull_s: list[float]
    base_s: list[float]


async def run(n: int, reps: int, d: Path) -> PullRun:
    engine = make_engine(d / "pki")
    engine.hierarchy.initialize(actor="bench")
    app = issue_app_identity(engine, d / "certs", "bench-scada", APP_URI)
    csrs = make_csrs(n * (reps + 1) * 2)
    gds = GdsServer(engine, GdsSettings(endpoint=f"opc.tcp://127.0.0.1:{free_port()}/gds"), d / "gds")
    await gds.start()
    assert gds.context is not None
    app_id = gds.context.application_id(app.owner_id)

    # The baseline server: same policies and certificate, one no-op method.
    bare = Server()
    await bare.init()
    bare_url = f"opc.tcp://127.0.0.1:{free_port()}/bare"
    bare.set_endpoint(bare_url)
    bare.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await bare.load_certificate(str(d / "gds" / "own" / "otpki-gds.der"))
    await bare.load_private_key(str(d / "gds" / "own" / "otpki-gds.key.pem"))
    idx = await bare.register_namespace("urn:bench")
    obj = await bare.nodes.objects.add_object(idx, "Bench")

    async def noop(_parent: ua.NodeId, *_args: ua.Variant) -> list[ua.Variant]:
        return [ua.Variant(b"", ua.VariantType.ByteString)]

    method = await obj.add_method(idx, "Noop", noop, [ua.VariantType.ByteString], [ua.VariantType.ByteString])
    await bare.start()

    gds_client = await connect(gds.endpoint, app)
    bare_client = await connect(bare_url, app)
    pull = GdsClient(gds_client)
    csr_iter = iter(csrs)
    try:
        async def pull_round() -> None:
            for _ in range(n):
                request_id = await pull.start_signing_request(app_id, next(csr_iter))
                await pull.finish_request(app_id, request_id)

        async def baseline_round() -> None:
            for _ in range(n):
                csr = next(csr_iter)
                await obj_call(csr)
                await asyncio.to_thread(engine.authority.issue_from_csr, csr, owner_id=app.owner_id, actor="bench")
                await obj_call(b"")

        async def obj_call(payload: bytes) -> None:
            node = bare_client.get_node(obj.nodeid)
            await node.call_method(method.nodeid, ua.Variant(payload, ua.VariantType.ByteString))

        await pull_round()  # warm-up
        pulls: list[float] = []
        bases: list[float] = []
        for _ in range(reps):
            t = time.perf_counter()
            await baseline_round()
            bases.append(time.perf_counter() - t)
            t = time.perf_counter()
            await pull_round()
            pulls.append(time.perf_counter() - t)
    finally:
        await gds_client.disconnect()
        await bare_client.disconnect()
        await bare.stop()
        await gds.stop()
        engine.close()
    return {"pull_s": pulls, "base_s": bases}


def main() -> None:
    args = parse_args(__doc__ or "")
    n, reps = (10, 2) if args.quick else (100, 3)
    note(f"gds_pull: {n} round trips x {reps} runs")
    with workdir("gds-pull") as d:
        r = asyncio.run(run(n, reps, d))
    pull_best, base_best = min(r["pull_s"]), min(r["base_s"])
    ratio = pull_best / base_best
    emit(benchmark="gds_pull",
         engine={"round_trips_per_s": round(n / pull_best, 1), "seconds": summary(r["pull_s"])},
         baseline={"round_trips_per_s": round(n / base_best, 1), "seconds": summary(r["base_s"])},
         ratio=ratio, target=f"pull round trip time <= {TARGET} x (two bare asyncua calls + one engine issuance)",
         meets_target=ratio <= TARGET,
         params={"round_trips_per_run": n, "runs": reps, "statistic": "best run",
                 "security": "Basic256Sha256 SignAndEncrypt, RSA-2048 certificates, ApplicationSelfAdmin",
                 "csr": "P-256 leaf keys, generated before timing", "approval": "auto (opcua-application policy)"})


if __name__ == "__main__":
    main()
