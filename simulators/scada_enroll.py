"""`python -m simulators.scada_enroll`: a SCADA server that registers with a GDS and pulls its certificate.

    OTPKI_GDS_PASSWORD=... python -m simulators.scada_enroll --gds opc.tcp://127.0.0.1:4840/otpki/gds \\
        --name scada-1 --port 48500 --pki-dir ./scada-1 --user registrar

Starts the SCADA simulator with a self-signed certificate, registers it (RegisterApplication), pulls a
CA-issued certificate (StartSigningRequest + FinishRequest) and the trust list, restarts it with the new
identity, prints one JSON line (application id, certificate SHA-256, trust-list sizes) and stops. The
registrar's password comes from the environment variable named by --password-env, never the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from simulators.scada import ScadaSettings, ScadaSimulator


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.scada_enroll", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gds", required=True, help="the GDS endpoint URL")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True, help="where the SCADA server itself listens")
    parser.add_argument("--pki-dir", type=Path, required=True)
    parser.add_argument("--uri", help="ApplicationUri (default urn:otpki:scada:NAME)")
    parser.add_argument("--user", default="registrar", help="a GDS user with RegistrationAuthorityAdmin")
    parser.add_argument("--password-env", default="OTPKI_GDS_PASSWORD")
    parser.add_argument("--new-key", action="store_true", help="let the GDS make the key (PKCS#12)")
    args = parser.parse_args(argv)
    password = os.environ.get(args.password_env)
    if not password:
        print(f"error: set {args.password_env} to the password of GDS user {args.user!r}", file=sys.stderr)
        return 2
    scada = ScadaSimulator(ScadaSettings(
        name=args.name, application_uri=args.uri or f"urn:otpki:scada:{args.name}",
        endpoint=f"opc.tcp://127.0.0.1:{args.port}/scada", pki_dir=args.pki_dir, gds_url=args.gds,
        registrar_user=args.user, registrar_password=password, key_flow="new-key" if args.new_key else "csr"))
    await scada.start()
    try:
        await scada.enroll()
        trust = scada.trust_list
        print(json.dumps({
            "application_id": str(scada.application_id),
            "certificate_sha256": hashlib.sha256(scada.certificate().public_bytes(Encoding.DER)).hexdigest(),
            "issuer": scada.certificate().issuer.rfc4514_string(),
            "trusted_certificates": len(trust.trusted_certificates) if trust else 0,
            "trusted_crls": len(trust.trusted_crls) if trust else 0,
        }))
    finally:
        await scada.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
