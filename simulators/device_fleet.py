"""`python -m simulators.device_fleet`: many MQTT devices at once, half paho-mqtt and half gmqtt.

    python -m simulators.device_fleet --devices 200 --workdir /tmp/fleet --prepare-only
    # register the devices of /tmp/fleet/manifest.json (bootstrap allow-list) and import
    # /tmp/fleet/manufacturer/ca.pem into the mqtt-device trust list, then:
    python -m simulators.device_fleet --devices 200 --workdir /tmp/fleet --port 8883 --ca-file broker-ca.pem \
        --duration 60 --summary /tmp/fleet/summary.json

The first run makes a manufacturer CA and one IDevID per device (`manifest.json` lists them); later runs reuse
them, and devices that enrolled before reuse their operational certificates. Enrollment runs with bounded
concurrency (the enrollment service signs one request at a time per worker, and hundreds of simultaneous TLS
handshakes help nobody). Prints a summary JSON at the end; exit code 0 when every device was online.
In-process users (tests, the demo) call `prepare`, `register_fleet` and `run_fleet` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import BaseModel, ConfigDict, Field

from simulators.manufacturer import BootstrapCredential, Manufacturer
from simulators.mqtt_device import DeviceConfig, DeviceState, MqttDevice
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists
from trustlists.safe_files import private_directory, write_public, write_secret

__all__ = ["FleetConfig", "FleetDevice", "FleetManifest", "FleetSummary", "bring_online", "prepare", "register_fleet",
           "run_fleet"]

ACTOR = "device-fleet"


class FleetDevice(BaseModel):
    name: str
    site: str
    bootstrap_subject_cn: str
    bootstrap_cert_file: Path
    bootstrap_key_file: Path
    workdir: Path


class FleetManifest(BaseModel):
    manufacturer_ca_file: Path
    # The manufacturer's CRL: Mosquitto (OpenSSL) refuses leaves of a CA in its cafile that has no CRL.
    manufacturer_crl_file: Path | None = None
    devices: list[FleetDevice]


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: int = Field(gt=0)
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 8883
    bootstrap_port: int | None = None  # otpki's bootstrap listener, when the broker is Mosquitto
    ca_file: Path | None = None  # trust anchor for the broker certificate
    site: str = "north"
    prefix: str = "dev"
    library: Literal["mix", "paho", "gmqtt"] = "mix"
    enrollment: Literal["mix", "csr", "server_keygen"] = "csr"
    enroll_concurrency: int = Field(default=8, gt=0)
    telemetry_interval_s: float = 5.0
    duration_s: float = 30.0  # how long to keep the fleet online after enrollment
    request_timeout_s: float = 60.0


class FleetSummary(BaseModel):
    devices: int
    states: dict[str, int]
    enrolled: int
    online_at_end: int
    telemetry_messages: int
    renewals: int
    enrollment_seconds: dict[str, float]  # p50 / p95 / max, start to online, devices that enrolled in this run
    elapsed_s: float
    failures: dict[str, str]  # device -> last error (first 50)


# -- preparing bootstrap material -------------------------------------------------------------------------------

def _load_or_create_manufacturer(directory: Path) -> Manufacturer:
    ca_file, key_file = directory / "ca.pem", directory / "ca.key"
    if ca_file.exists() and key_file.exists():
        cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{key_file} holds a {type(key).__name__}, which cannot sign certificates")
        name = cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
        return Manufacturer(str(name[0].value) if name else "ACME Devices", key, cert)
    maker = Manufacturer.create("ACME Devices")
    private_directory(directory)
    write_public(ca_file, maker.ca_pem.encode())
    write_secret(key_file, maker.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return maker


def prepare(config: FleetConfig) -> FleetManifest:
    """IDevIDs for devices 0..N-1 (existing ones kept) and the manifest an operator registers them from."""
    manifest_file = config.workdir / "manifest.json"
    known: dict[str, FleetDevice] = {}
    if manifest_file.exists():
        old = FleetManifest.model_validate_json(manifest_file.read_text())
        known = {d.name: d for d in old.devices}
    maker = _load_or_create_manufacturer(config.workdir / "manufacturer")
    devices: list[FleetDevice] = []
    for i in range(config.devices):
        name = f"{config.prefix}-{i:04d}"
        if name in known and known[name].bootstrap_cert_file.exists():
            devices.append(known[name])
            continue
        credential: BootstrapCredential = maker.issue_idevid(f"SN-{name}")
        workdir = config.workdir / "devices" / name
        cert_file, key_file = credential.write(workdir / "factory")
        devices.append(FleetDevice(name=name, site=config.site, bootstrap_subject_cn=credential.subject_cn,
                                   bootstrap_cert_file=cert_file, bootstrap_key_file=key_file, workdir=workdir))
    crl_file = config.workdir / "manufacturer" / "crl.pem"
    if not crl_file.exists():  # valid a year, like the IDevIDs it is kept with
        write_public(crl_file, maker.crl_pem().encode())
    manifest = FleetManifest(manufacturer_ca_file=config.workdir / "manufacturer" / "ca.pem",
                             manufacturer_crl_file=crl_file, devices=devices)
    config.workdir.mkdir(parents=True, exist_ok=True)
    manifest_file.write_text(manifest.model_dump_json(indent=2))
    return manifest


def register_fleet(engine: Engine, manifest: FleetManifest, *, group: str = "mqtt-device") -> int:
    """What an operator does once: trust the manufacturer CA (and its CRL), allow-list each device's IDevID."""
    ca_pem = manifest.manufacturer_ca_file.read_bytes()
    with contextlib.suppress(AlreadyExists):  # registering twice (a second run) changes nothing
        engine.trustlists.import_external(group, ca_pem, list_name="trusted",
                                          note="fleet manufacturer IDevID CA", actor=ACTOR)
    if manifest.manufacturer_crl_file is not None and manifest.manufacturer_crl_file.exists():
        with contextlib.suppress(AlreadyExists):
            engine.trustlists.import_external(group, manifest.manufacturer_crl_file.read_bytes(), list_name="trusted",
                                              note="fleet manufacturer CRL", actor=ACTOR)
    added = 0
    for device in manifest.devices:
        if engine.registry.find(group, name=device.name) is not None:
            continue
        engine.registry.register(group=group, name=device.name, site=device.site, actor=ACTOR,
                                 attributes={"bootstrap": [{"subject_cn": device.bootstrap_subject_cn}]})
        added += 1
    return added


# -- running ----------------------------------------------------------------------------------------------------

def _device(config: FleetConfig, entry: FleetDevice, index: int) -> MqttDevice:
    assert config.ca_file is not None
    library = config.library if config.library != "mix" else ("paho", "gmqtt")[index % 2]
    enrollment = config.enrollment if config.enrollment != "mix" else ("csr", "server_keygen")[index % 2]
    return MqttDevice(DeviceConfig(
        name=entry.name, site=entry.site, library=library, host=config.host, port=config.port,
        bootstrap_port=config.bootstrap_port, ca_file=config.ca_file, workdir=entry.workdir,
        bootstrap_cert_file=entry.bootstrap_cert_file,
        bootstrap_key_file=entry.bootstrap_key_file, enrollment=enrollment,
        telemetry_interval_s=config.telemetry_interval_s, request_timeout_s=config.request_timeout_s))


async def bring_online(devices: list[MqttDevice], *, concurrency: int, timeout_s: float,
                       on_settled: Callable[[MqttDevice], None] | None = None) -> list[float]:
    """Start every device, at most `concurrency` enrolling/connecting at once; wait until each is online or ended.

    Returns the start-to-online seconds of the devices that enrolled in this call. `on_settled` is told about
    each device as soon as it is online or gave up (progress displays).
    """
    slots = asyncio.Semaphore(concurrency)
    enroll_times: list[float] = []

    async def bring_up(device: MqttDevice) -> None:
        # The slot is held until the device is online (or gave up): enrollment plus its first mTLS connect.
        async with slots:
            t0 = time.monotonic()
            fresh = device.certificate is None
            device.start()
            online = asyncio.ensure_future(device.online.wait())
            ended = asyncio.ensure_future(device.ended.wait())
            try:
                await asyncio.wait({online, ended}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                online.cancel()
                ended.cancel()
            if fresh and device.state == DeviceState.ONLINE:
                enroll_times.append(time.monotonic() - t0)
        if on_settled is not None:
            on_settled(device)

    await asyncio.gather(*(bring_up(d) for d in devices))
    return enroll_times


async def run_fleet(config: FleetConfig, manifest: FleetManifest | None = None,
                    stop: asyncio.Event | None = None) -> FleetSummary:
    """Enroll (bounded), bring everyone online, keep them running `duration_s` (or until `stop`), report."""
    started = time.monotonic()
    manifest = manifest or prepare(config)
    devices = [_device(config, entry, i) for i, entry in enumerate(manifest.devices[:config.devices])]
    stop = stop or asyncio.Event()
    try:
        enroll_times = await bring_online(devices, concurrency=config.enroll_concurrency,
                                          timeout_s=2 * config.request_timeout_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.duration_s):  # not wait_for: it can swallow a cancel on 3.11
                await stop.wait()
        online = sum(1 for d in devices if d.state == DeviceState.ONLINE)
    finally:
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
    # stop() turns a healthy device into "stopped"; any other state is how a device ended on its own.
    states = Counter(str(d.state) for d in devices)
    failures = {d.name: d.last_error or "" for d in devices if d.state != DeviceState.STOPPED}
    return FleetSummary(
        devices=len(devices), states=dict(states), enrolled=sum(1 for d in devices if d.certificate is not None),
        online_at_end=online, telemetry_messages=sum(d.telemetry_sent for d in devices),
        renewals=sum(d.renewals for d in devices), enrollment_seconds=_stats(enroll_times),
        elapsed_s=round(time.monotonic() - started, 3), failures=dict(list(failures.items())[:50]))


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 4)

    return {"p50": pct(0.5), "p95": pct(0.95), "max": round(ordered[-1], 4)}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.device_fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--bootstrap-port", type=int,
                        help="first enrollment on otpki's bootstrap listener (a Mosquitto deployment)")
    parser.add_argument("--ca-file", type=Path, help="trust anchor for the broker's certificate")
    parser.add_argument("--site", default="north")
    parser.add_argument("--prefix", default="dev")
    parser.add_argument("--library", choices=["mix", "paho", "gmqtt"], default="mix")
    parser.add_argument("--enrollment", choices=["mix", "csr", "server_keygen"], default="csr")
    parser.add_argument("--enroll-concurrency", type=int, default=8)
    parser.add_argument("--telemetry-interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--summary", type=Path, help="also write the summary JSON here")
    parser.add_argument("--prepare-only", action="store_true",
                        help="make the IDevIDs and manifest.json, then exit (register the devices, then run)")
    args = parser.parse_args(argv)
    config = FleetConfig(devices=args.devices, workdir=args.workdir, host=args.host, port=args.port,
                         bootstrap_port=args.bootstrap_port, ca_file=args.ca_file, site=args.site,
                         prefix=args.prefix, library=args.library,
                         enrollment=args.enrollment, enroll_concurrency=args.enroll_concurrency,
                         telemetry_interval_s=args.telemetry_interval, duration_s=args.duration)
    manifest = prepare(config)
    if args.prepare_only:
        print(json.dumps({"manifest": str(config.workdir / "manifest.json"),
                          "manufacturer_ca": str(manifest.manufacturer_ca_file), "devices": len(manifest.devices)}))
        return 0
    if config.ca_file is None:
        print("error: --ca-file is required to run the fleet", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    summary = await run_fleet(config, manifest, stop)
    text = summary.model_dump_json(indent=2)
    if args.summary:
        args.summary.write_text(text)
    print(text, flush=True)
    return 0 if summary.online_at_end == summary.devices else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
