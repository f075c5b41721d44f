"""Revocation-to-disconnect latency on a real Mosquitto kept in sync by otpki (MosquittoSync).

engine:   a connected mTLS device (paho) is revoked with `engine.authority.revoke`; the sync service (running,
          0.25 s poll) installs the new CRL (verified, renamed, SIGHUP) and then kicks the session through
          dynsec. Measured: from the revoke call to the client's disconnect callback. Each sample also checks
          that the reconnect is refused by TLS.
baseline: the bare dynsec path: `disableClient` published by an admin client, from publish to (a) the
          plugin's response and (b) the device's disconnect callback; same broker, same run.

Target: revocation -> disconnect <= 1 s (every sample).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from bench._common import ACTOR, emit, make_engine, note, parse_args, summary, workdir
from mqtt_broker_auth.mosquitto import dynsec as ds
from mqtt_broker_auth.mosquitto.config import MosquittoSettings
from mqtt_broker_auth.mosquitto.process import MosquittoProcess, provision_broker
from mqtt_broker_auth.mosquitto.sync import MosquittoSync
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.policy import load_default_config
from trustlists.safe_files import write_public, write_secret
from trustlists.testing import free_port

TARGET_S = 1.0
GROUP = "mqtt-device"
WAIT_S = 10.0


class Device:
    """A paho mTLS client that timestamps its disconnect."""

    def __init__(self, port: int, root: Path, cert: Path, key: Path) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        ctx = ssl.create_default_context(cafile=str(root))
        ctx.load_cert_chain(str(cert), str(key))
        self.client.tls_set_context(ctx)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.disconnected_at = 0.0
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None

        def on_disconnect(c: object, u: object, f: object, rc: object, p: object) -> None:
            self.disconnected_at = time.perf_counter()
            self.disconnected.set()

        self.client.on_disconnect = on_disconnect
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(WAIT_S):
            raise RuntimeError("device did not connect")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tls_refused(port: int, root: Path, cert: Path, key: Path) -> bool:
    import socket

    ctx = ssl.create_default_context(cafile=str(root))
    ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.recv(1)
    except ssl.SSLError as exc:
        return "revoked" in str(exc)
    return False


def write_device(engine: Engine, name: str, directory: Path) -> tuple[Path, Path, str]:
    owner = engine.registry.register(group=GROUP, name=name, site="north", actor=ACTOR)
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    write_public(cert, x509.load_der_x509_certificate(issued.certificate_der).public_bytes(Encoding.PEM))
    assert issued.private_key is not None  # a server-generated key comes back with the certificate
    write_secret(key, issued.private_key)
    return cert, key, issued.record.serial


class RevocationRun(TypedDict):
    latency: list[float]
    revoke_call: list[float]
    refused: int
    roundtrip: list[float]
    to_disconnect: list[float]
    p50: float
    base_p50: float


async def measure(samples: int) -> RevocationRun:
    with workdir("mqtt-mosquitto") as base:
        config = load_default_config()
        config = config.model_copy(update={"groups": {g: config.group(g) for g in (GROUP, "mqtt-broker")}})
        (base / "pki").mkdir()
        engine = make_engine(base / "pki", config)
        settings = MosquittoSettings(workdir=base / "broker", port=free_port(), admin_port=free_port(),
                                     admin_password=SecretStr(secrets.token_urlsafe(16)))
        provision_broker(engine, settings, group=GROUP, name="bench-broker", actor=ACTOR)
        root = base / "root.pem"
        root.write_bytes(x509.load_der_x509_certificate(engine.hierarchy.root().certificate_der)
                         .public_bytes(Encoding.PEM))
        process = MosquittoProcess(settings).start()
        admin = ds.DynsecClient("127.0.0.1", settings.admin_port, settings.admin_username,
                                settings.admin_password.get_secret_value()).connect()
        sync = MosquittoSync(engine, settings, GROUP, reload=process.hup, interval_s=0.25)
        try:
            devices = [write_device(engine, f"dev-{i}", base) for i in range(samples)]
            baseline_devices = [write_device(engine, f"base-{i}", base) for i in range(samples)]
            await sync.sync_once()  # dynsec clients for all of them

            note(f"baseline: {samples} x bare dynsec disableClient")
            roundtrip: list[float] = []
            to_disconnect: list[float] = []
            for (cert, key, _), i in zip(baseline_devices, range(samples), strict=True):
                dev = await run_blocking(Device, settings.port, root, cert, key)
                start = time.perf_counter()
                await admin.aexecute([ds.disable_client(f"base-{i}")])
                roundtrip.append(time.perf_counter() - start)
                await run_blocking(dev.disconnected.wait, WAIT_S)
                to_disconnect.append(dev.disconnected_at - start)
                dev.close()

            note(f"engine: {samples} x revoke with the sync service running")
            latency: list[float] = []
            revoke_call: list[float] = []
            refused = 0
            task = asyncio.create_task(sync.run())
            try:
                for cert, key, serial in devices:
                    dev = await run_blocking(Device, settings.port, root, cert, key)
                    start = time.perf_counter()
                    await run_blocking(engine.authority.revoke, serial, reason=RevocationReason.KEY_COMPROMISE,
                                       actor=ACTOR)
                    revoke_call.append(time.perf_counter() - start)
                    await run_blocking(dev.disconnected.wait, WAIT_S)
                    if not dev.disconnected.is_set():
                        raise RuntimeError("revoked device was not disconnected")
                    latency.append(dev.disconnected_at - start)
                    dev.close()
                    refused += await run_blocking(tls_refused, settings.port, root, cert, key)
            finally:
                sync.stop()
                await task
        finally:
            admin.close()
            process.stop()
            engine.close()
    p50 = sorted(latency)[len(latency) // 2]
    base_p50 = sorted(to_disconnect)[len(to_disconnect) // 2]
    return {"latency": latency, "revoke_call": revoke_call, "refused": refused, "roundtrip": roundtrip,
            "to_disconnect": to_disconnect, "p50": p50, "base_p50": base_p50}


def main() -> None:
    args = parse_args(__doc__ or "")
    samples = 3 if args.quick else 15
    r = asyncio.run(measure(samples))
    latency = r["latency"]
    emit(benchmark="mqtt_revocation_mosquitto",
         engine={"revocation_to_disconnect_s": {**summary(latency, 4), "p50": round(float(r["p50"]), 4)},
                 "revoke_call_s": summary(r["revoke_call"], 4),
                 "reconnects_refused_by_tls": r["refused"], "samples": len(latency)},
         baseline={"dynsec_disable_response_s": summary(r["roundtrip"], 4),
                   "dynsec_disable_to_disconnect_s": {**summary(r["to_disconnect"], 4),
                                                      "p50": round(float(r["base_p50"]), 4)}},
         ratio=float(r["p50"]) / max(float(r["base_p50"]), 1e-6),
         target=f"revocation -> disconnect <= {TARGET_S} s (max over samples)",
         meets_target=max(latency) <= TARGET_S and r["refused"] == len(latency),
         params={"samples": len(latency), "poll_interval_s": 0.25, "broker": "mosquitto 2.0 + dynsec",
                 "ratio_is": "p50 revocation->disconnect / p50 bare disableClient->disconnect"})


if __name__ == "__main__":
    main()
