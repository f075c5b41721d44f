"""`otpki demo`: the engine's lifecycle on a fresh data directory, every step checked.

The plant-wide demo (GDS, push to PLCs, MQTT devices) builds on this once those parts exist; today it
exercises the trust-list engine end to end and checks each step with an independent tool where one exists
(`openssl verify` on the exported Mosquitto files).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import BaseModel
from rich.console import Console

from otpki.config import EnvSettings, build_settings, read_file_settings
from otpki.runtime import open_engine
from trustlists.exports import write_mosquitto_files, write_pki_folders
from trustlists.models import RevocationReason

MARKER = ".otpki-demo"


class DemoStep(BaseModel):
    number: int
    name: str
    ok: bool
    detail: str
    seconds: float


class DemoReport(BaseModel):
    ok: bool
    data_dir: str
    steps: list[DemoStep]
    counts: dict[str, int]


class _Failed(Exception):
    pass


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise _Failed(message)


def _prepare_dir(data_dir: Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise _Failed(f"{data_dir} exists and is not a demo directory; choose another --data-dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    (data_dir / MARKER).write_text("created by otpki demo; safe to delete\n")


def run_demo(data_dir: Path, *, devices: int = 20, applications: int = 5, show: bool = True) -> DemoReport:
    console = Console(stderr=True, quiet=not show)
    steps: list[DemoStep] = []
    counts: dict[str, int] = {}
    state: dict[str, object] = {}

    def step(name: str, fn: Callable[[], str]) -> bool:
        number = len(steps) + 1
        start = time.perf_counter()
        try:
            detail, ok = fn(), True
        except _Failed as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # a demo step that crashes is a failed check, reported like one
            detail, ok = f"{type(exc).__name__}: {exc}", False
        seconds = time.perf_counter() - start
        steps.append(DemoStep(number=number, name=name, ok=ok, detail=detail, seconds=round(seconds, 3)))
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        console.print(f"{mark} {number}. {name} [dim]({seconds:.2f}s)[/] {detail}")
        return ok

    try:
        _prepare_dir(data_dir)
    except _Failed as exc:
        return DemoReport(ok=False, data_dir=str(data_dir), steps=[
            DemoStep(number=1, name="prepare data directory", ok=False, detail=str(exc), seconds=0)], counts={})
    env = EnvSettings()
    if not (env.ca_passphrase or env.ca_passphrase_file):
        secret = data_dir / "demo-passphrase"
        secret.write_text(secrets.token_urlsafe(24))
        secret.chmod(0o600)
        env = env.model_copy(update={"ca_passphrase_file": secret})
    (data_dir / "otpki.toml").write_text('[pki]\nsites = ["north", "south"]\n')
    settings = build_settings(read_file_settings(data_dir / "otpki.toml"), data_dir, env)
    engine = open_engine(settings, key_pool=True)
    try:
        def create_hierarchy() -> str:
            cas = engine.hierarchy.initialize(actor="demo")
            _check(len(cas) == 1 + len(settings.pki.groups), f"expected a root and {len(settings.pki.groups)} "
                   f"issuing CAs, got {len(cas)}")
            return f"root + {len(cas) - 1} issuing CAs ({', '.join(c.id for c in cas[1:])})"

        def enroll_applications() -> str:
            serials = []
            for i in range(applications):
                name = f"scada-{i + 1:02d}"
                owner = engine.registry.register(group="opcua-application", name=name,
                                                 application_uri=f"urn:demo:{name}", dns_names=[name], actor="demo")
                key = ec.generate_private_key(ec.SECP256R1())
                csr = (x509.CertificateSigningRequestBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                       .add_extension(x509.SubjectAlternativeName([
                           x509.UniformResourceIdentifier(f"urn:demo:{name}"), x509.DNSName(name)]), False)
                       .sign(key, hashes.SHA256()))
                issued = engine.authority.issue_from_csr(csr.public_bytes(Encoding.PEM), owner_id=owner.id,
                                                         actor="demo")
                serials.append(issued.record.serial)
            state["apps"] = serials
            counts["applications"] = len(serials)
            _check(len(serials) == applications, "not every application got a certificate")
            return f"{len(serials)} OPC UA applications issued from CSRs"

        def enroll_devices() -> str:
            serials = []
            for i in range(devices):
                site = ("north", "south")[i % 2]
                owner = engine.registry.register(group="mqtt-device", name=f"dev-{i + 1:03d}", site=site,
                                                 actor="demo")
                issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor="demo")
                _check(issued.private_key is not None and b"PRIVATE KEY" in issued.private_key,
                       "server-side key generation returned no key")
                serials.append(issued.record.serial)
            state["devices"] = serials
            counts["devices"] = len(serials)
            return f"{len(serials)} MQTT devices with server-generated keys"

        def refuse_bad_csr() -> str:
            owner = engine.registry.find("opcua-application", name="scada-01")
            assert owner is not None
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scada-01")]))
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:demo:intruder")]),
                                  False).sign(key, hashes.SHA256()))
            before = engine.inventory.count()
            try:
                engine.authority.issue_from_csr(csr.public_bytes(Encoding.PEM), owner_id=owner.id, actor="demo")
            except Exception as exc:
                _check(engine.inventory.count() == before, "a refused CSR changed the inventory")
                return f"foreign-URI CSR refused: {exc}"
            raise _Failed("a CSR with someone else's URI was signed")

        def renew() -> str:
            serial = state["apps"][0]  # type: ignore[index]
            new = engine.authority.renew(serial, actor="demo")
            old = engine.inventory.get(serial)
            _check(old.superseded_by == new.record.serial, "the old certificate is not marked superseded")
            return f"{serial[:12]}… renewed (same key) as {new.record.serial[:12]}…"

        def revoke() -> str:
            dev = state["devices"][0]  # type: ignore[index]
            app = state["apps"][1] if applications > 1 else None  # type: ignore[index]
            v_before = engine.trustlists.get("mqtt-device").version
            engine.authority.revoke(dev, reason=RevocationReason.KEY_COMPROMISE, actor="demo")
            if app:
                engine.authority.revoke(app, reason=RevocationReason.CESSATION_OF_OPERATION, actor="demo")
            v_after = engine.trustlists.get("mqtt-device").version
            _check(v_after > v_before, "revocation did not bump the trust list version")
            return f"device {dev[:12]}… revoked; mqtt-device trust list v{v_before} -> v{v_after}"

        def export_and_verify() -> str:
            tl = engine.trustlists.get("mqtt-device")
            out = data_dir / "exports"
            write_mosquitto_files(tl, out / "mosquitto" / "ca.pem", out / "mosquitto" / "crl.pem")
            write_pki_folders(engine.trustlists.get("opcua-application"), out / "opcua-pki")
            good = engine.inventory.get(state["devices"][1])  # type: ignore[index]
            bad = engine.inventory.get(state["devices"][0])  # type: ignore[index]
            results = {}
            for label, rec in (("good", good), ("revoked", bad)):
                assert rec.der is not None
                pem = out / f"{label}.pem"
                pem.write_bytes(x509.load_der_x509_certificate(rec.der).public_bytes(Encoding.PEM))
                proc = subprocess.run(
                    ["openssl", "verify", "-CAfile", str(out / "mosquitto" / "ca.pem"), "-CRLfile",
                     str(out / "mosquitto" / "crl.pem"), "-crl_check_all", str(pem)],
                    capture_output=True, text=True, check=False)
                results[label] = proc
            _check(results["good"].returncode == 0, f"openssl refused a valid device: {results['good'].stderr}")
            _check(results["revoked"].returncode != 0 and "revoked" in results["revoked"].stdout
                   + results["revoked"].stderr, "openssl accepted a revoked device")
            return "openssl verify: valid device OK, revoked device 'certificate revoked'"

        def audit_chain() -> str:
            result = engine.verify_audit()
            _check(result.ok, f"audit log broken: {result.problem}")
            counts["audit_records"] = result.records
            return f"{result.records} hash-chained records intact"

        for name, fn in (("CA hierarchy created", create_hierarchy),
                         ("OPC UA applications enrolled from CSRs", enroll_applications),
                         ("MQTT devices enrolled with server-side keys", enroll_devices),
                         ("CSR with a foreign ApplicationUri refused", refuse_bad_csr),
                         ("certificate renewed before expiry", renew),
                         ("device and application revoked", revoke),
                         ("trust lists exported and checked by openssl", export_and_verify),
                         ("audit log verified", audit_chain)):
            if not step(name, fn):
                break
        counts["certificates"] = engine.inventory.count()
    finally:
        engine.close()
    ok = all(s.ok for s in steps) and len(steps) == 8
    console.print(("[bold green]demo passed[/]" if ok else "[bold red]demo failed[/]")
                  + f" — data left in {data_dir} (try: otpki -d {data_dir} certs list)")
    if os.environ.get("OTPKI_CA_PASSPHRASE") is None and (data_dir / "demo-passphrase").exists():
        console.print(f"[dim]demo passphrase in {data_dir / 'demo-passphrase'}: "
                      f"export OTPKI_CA_PASSPHRASE_FILE={data_dir / 'demo-passphrase'} to use the CLI on it[/]")
    return DemoReport(ok=ok, data_dir=str(data_dir), steps=steps, counts=counts)
