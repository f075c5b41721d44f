"""Factory batch signing on every core: `otpki batch sign --workers N` against raw single-core signing.

engine: the real command in a subprocess, wall time, on a fresh copy of one initialized data directory per run
        (SQLite, synchronous=FULL): `--workers 1` (one process: every chunk of 100 certificates a durable commit,
        after the chunk's files are durable: temp files, one syncfs, renames, one directory fsync) and
        `--workers <cores>` (that many signing processes writing temp files, and the command recording: for the
        chunks ready together one syncfs, the renames, one directory fsync, one durable commit).
        Process start-up, opening the engine and registering every device are in the time; start-up alone (the
        same command over an empty directory) is reported beside it, as the part no certificate count amortizes.
        The commands run with a bytecode cache (in the bench's temporary directory), as an installed otpki does
        (pip compiles at install): where PYTHONDONTWRITEBYTECODE is set, as in this environment, every start would
        otherwise compile otpki's own modules again. Start-up so (libraries compiled, otpki not) is reported too.
raw:    in this process, one core: for each CSR file, read + load + verify the CSR, build a leaf with the group's
        extensions, sign with the same CA key, DER; nothing stored, nothing written.

Target: `--workers <cores>` >= 1.6 x raw single-core signing (certificates per second, best runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from bench._common import emit, note, parse_args, summary, timed, workdir
from otpki.config import load_settings
from otpki.runtime import open_engine
from trustlists.serials import random_serial
from trustlists.testing import PASSPHRASE, ca_signing_material, make_csr

GROUP = "mqtt-device"
TARGET = 1.6


def otpki(data_dir: Path, *args: str, env_extra: dict[str, str | None] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """The otpki command in a subprocess; `env_extra` sets variables (None: removes one)."""
    env = {**os.environ, "OTPKI_DATA_DIR": str(data_dir), "OTPKI_CA_PASSPHRASE": PASSPHRASE.decode()}
    for name, value in (env_extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-m", "otpki.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=1800, check=False)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csrs", type=int, default=None,
                        help="CSRs per batch (default 3000; 150 with --quick); a factory batch is typically "
                             "1k-100k, and the start-up weighs less the larger it is")


def main() -> None:
    args = parse_args(__doc__ or "", _options)
    n = args.csrs or (150 if args.quick else 3000)
    reps = 1 if args.quick else 2
    cores = os.cpu_count() or 1
    with workdir("batch-workers") as d:
        note(f"batch_workers: data directory and {n} CSRs")
        use_bytecode_cache(d)
        template = d / "template"
        res = otpki(template, "init")
        assert res.returncode == 0, res.stderr
        in_dir = d / "csrs"
        in_dir.mkdir()
        for i in range(n):
            (in_dir / f"dev-{i:05d}.csr").write_bytes(make_csr(f"dev-{i:05d}"))
        os.environ["OTPKI_CA_PASSPHRASE"] = PASSPHRASE.decode()
        engine = open_engine(load_settings(template))
        try:
            ca = engine.hierarchy.issuing_ca_for(GROUP, None)
            issuer_cert, issuer_key = ca_signing_material(engine, ca)
            lifetime = timedelta(days=engine.config.group(GROUP).leaf_lifetime_days)
        finally:
            engine.close()
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        files = sorted(in_dir.iterdir())

        def raw() -> int:
            for f in files:
                raw_sign(f.read_bytes(), issuer_cert, issuer_key, aki, lifetime)
            return len(files)

        empty = d / "empty"
        empty.mkdir()

        def startup() -> int:
            res = otpki(template, "batch", "sign", str(empty), str(d / "out-empty"), "--group", GROUP,
                        "--workers", str(cores), "--json")
            assert res.returncode == 0, res.stderr[-2000:]
            return 0

        def startup_uncompiled() -> int:
            # otpki's own modules compiled at every start (the installed libraries keep their bytecode)
            res = otpki(template, "batch", "sign", str(empty), str(d / "out-empty"), "--group", GROUP,
                        "--workers", str(cores), "--json",
                        env_extra={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": None})
            assert res.returncode == 0, res.stderr[-2000:]
            return 0

        def command(workers: int, run: int) -> int:
            data_dir = d / f"run-{workers}-{run}"
            shutil.copytree(template, data_dir)
            res = otpki(data_dir, "batch", "sign", str(in_dir), str(d / f"out-{workers}-{run}"), "--group", GROUP,
                        "--workers", str(workers), "--json")
            assert res.returncode == 0, res.stderr[-2000:]
            report = json.loads(res.stdout)
            assert report["issued"] == n and report["failed"] == 0, report
            verified = otpki(data_dir, "audit", "verify")
            assert verified.returncode == 0, verified.stdout
            return int(report["issued"])

        raw_s: list[float] = []
        one_s: list[float] = []
        all_s: list[float] = []
        start_s: list[float] = []
        uncompiled_s: list[float] = []
        for run in range(reps):  # interleaved: the same machine noise for every path
            note(f"batch_workers: run {run + 1}/{reps}")
            raw_s.append(timed(raw)[0])
            one_s.append(timed(lambda: command(1, run))[0])  # noqa: B023 (called at once)
            all_s.append(timed(lambda: command(cores, run))[0])  # noqa: B023
            start_s.append(timed(startup)[0])
            uncompiled_s.append(timed(startup_uncompiled)[0])
    raw_rate, one_rate, all_rate = n / min(raw_s), n / min(one_s), n / min(all_s)
    ratio = all_rate / raw_rate
    emit(
        benchmark="batch_workers",
        engine={f"workers_{cores}_certs_per_s": round(all_rate, 1), "workers_1_certs_per_s": round(one_rate, 1),
                f"workers_{cores}_seconds": summary(all_s), "workers_1_seconds": summary(one_s),
                "speedup_over_one_worker": round(all_rate / one_rate, 3),
                "startup_seconds_no_csrs": summary(start_s),
                "startup_seconds_no_csrs_no_bytecode_cache": summary(uncompiled_s),
                f"workers_{cores}_ms_per_certificate_after_startup": round((min(all_s) - min(start_s)) / n * 1000, 4)},
        baseline={"raw_single_core_certs_per_s": round(raw_rate, 1), "raw_seconds": summary(raw_s)},
        ratio=ratio,
        target=f"otpki batch sign --workers {cores} >= {TARGET} x raw single-core signing (best runs)",
        meets_target=ratio >= TARGET,
        params={"csrs": n, "runs": reps, "statistic": "best run", "cores": cores, "group": GROUP,
                "ca_key": "the group's default issuing CA key (P-256)", "leaf_key": "ec-p256",
                "engine_path": "otpki batch sign (subprocess, wall time incl. start-up and device registration), "
                               "SQLite synchronous=FULL, one durable commit per chunk of 100 (--workers 1) or per "
                               "the chunks ready together (--workers N: workers sign, the command records), after "
                               "their files are durable (one syncfs + one directory fsync)",
                "raw_path": "read + load_pem_x509_csr + is_signature_valid + CertificateBuilder + sign + DER",
                "loadavg_at_end": os.getloadavg()},
    )


def use_bytecode_cache(directory: Path) -> None:
    """The otpki commands of this bench write and reuse compiled bytecode under `directory` (not in the source
    tree), as an installed otpki has it; the `init` that makes the template data directory fills it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")


def raw_sign(csr_pem: bytes, issuer_cert: x509.Certificate, issuer_key: CertificateIssuerPrivateKeyTypes,
             aki: x509.AuthorityKeyIdentifier, lifetime: timedelta) -> bytes:
    """A device certificate with cryptography alone: what a hand-written factory signer does."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("bad CSR signature")
    public_key = csr.public_key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(csr.subject).issuer_name(issuer_cert.subject).public_key(public_key)
        .serial_number(random_serial()).not_valid_before(now - timedelta(minutes=10))
        .not_valid_after(min(now + lifetime, issuer_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


if __name__ == "__main__":
    main()
