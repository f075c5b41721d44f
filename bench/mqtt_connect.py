"""MQTT over mTLS on the embedded amqtt broker: connects per second with otpki's gate, and revocation latency.

engine:   EmbeddedBroker with otpki's DeviceGate (connect path), auth and topic plugins and revocation watcher.
baseline: the same broker class, listener and TLS settings with amqtt's own connect path and its
          AnonymousAuthPlugin (admits everyone), measured in the same run with the same client certificates.
Both: N sequential paho-mqtt 3.1.1 connect + CONNACK + disconnect, alternating rounds so drift hits both.
Target: engine connects/s >= 0.9 x baseline.
Second figure: revocation-to-disconnect latency. A connected device's certificate is revoked through a second
Engine on the same SQLite file (what `otpki certs revoke` does from another process) at t0; the latency is t0
until the client's on_disconnect fires. Target: worst <= 1 s.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench._common import ACTOR, emit, note, parse_args, summary, workdir
from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from trustlists import testing
from trustlists.engine import Engine
from trustlists.models import KeyType, RevocationReason
from trustlists.policy import PkiConfig, load_default_config
from trustlists.safe_files import private_directory, write_public, write_secret

TARGET = 0.9
LATENCY_TARGET_S = 1.0
BASELINE_PLUGINS = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}


def mqtt_config() -> PkiConfig:
    config = load_default_config()
    groups = {name: config.group(name) for name in ("mqtt-device", "mqtt-broker")}
    return config.model_copy(update={"groups": groups,
                                     "root": config.root.model_copy(update={"key_type": KeyType.EC_P256})})


def open_engine(directory: Path) -> Engine:
    return testing.make_engine(directory, config=mqtt_config())


class BrokerThread:
    """An EmbeddedBroker on its own event loop in a thread, so blocking paho clients can drive it."""

    def __init__(self, engine: Engine, workdir: Path, plugins: dict[str, Any] | None, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.broker = EmbeddedBroker(engine, workdir=workdir, plugins=plugins, revocation_interval=0.2, **kwargs)
        self._call(self.broker.start())

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    def stop(self) -> None:
        try:
            self._call(self.broker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


def client_context(server_ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_ca))
    context.load_cert_chain(str(cert), str(key))
    return context


def connect_once(port: int, context: ssl.SSLContext, client_id: str) -> None:
    """One full session: TLS handshake, CONNECT, CONNACK 0, DISCONNECT."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.tls_set_context(context)
    result: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    client.connect("127.0.0.1", port, keepalive=30)
    deadline = time.monotonic() + 15
    while not result and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    if result != [0]:
        raise RuntimeError(f"connect of {client_id} failed: {result or 'no CONNACK'}")
    client.disconnect()
    client.loop(timeout=0.01)


def connect_rate(port: int, devices: list[tuple[str, ssl.SSLContext]], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        name, context = devices[i % len(devices)]
        connect_once(port, context, name)
    return n / (time.perf_counter() - start)


def revocation_latency(port: int, server_ca: Path, engine: Engine, directory: Path, certs: Path,
                       name: str) -> dict[str, float]:
    owner = engine.registry.register(group="mqtt-device", name=name, site="north", actor=ACTOR)
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    cert, key = write_files(certs, name, issued.certificate_der, issued.chain_der, issued.private_key or b"")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    client.tls_set_context(client_context(server_ca, cert, key))
    connected = threading.Event()
    gone = threading.Event()
    when: list[float] = []
    client.on_connect = lambda c, u, f, rc, p: connected.set() if rc.value == 0 else None

    def disconnected(*_args: object) -> None:
        when.append(time.perf_counter())
        gone.set()

    client.on_disconnect = disconnected
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(15):
            raise RuntimeError(f"{name} did not connect")
        other = open_engine(directory)  # the CLI in another process: same database, its own index
        try:
            t0 = time.perf_counter()
            other.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="cli")
            revoke_call = time.perf_counter() - t0
        finally:
            other.close()
        if not gone.wait(15):
            raise RuntimeError(f"{name} was not disconnected within 15 s of its revocation")
        return {"latency_s": when[0] - t0, "revoke_call_s": revoke_call}
    finally:
        client.loop_stop()


def write_files(directory: Path, name: str, cert_der: bytes, chain_der: list[bytes], key_pem: bytes
                ) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    private_directory(directory)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    pems = [x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM) for d in [cert_der, *chain_der[:-1]]]
    write_public(cert_path, b"".join(pems))
    write_secret(key_path, key_pem)
    return cert_path, key_path


def main() -> None:
    args = parse_args(__doc__ or "")
    n, rounds, devices_n, samples = (30, 2, 5, 2) if args.quick else (200, 3, 20, 5)
    with workdir("mqtt-connect") as d:
        engine = open_engine(d / "pki")
        engine.hierarchy.initialize(actor=ACTOR)
        certs = d / "certs"
        otpki = BrokerThread(engine, d / "broker-otpki", None)
        baseline = BrokerThread(engine, d / "broker-baseline", BASELINE_PLUGINS)
        try:
            server_ca = d / "server-ca.pem"
            server_ca.write_bytes(otpki.broker.server_ca_pem())
            devices = []
            for i in range(devices_n):
                owner = engine.registry.register(group="mqtt-device", name=f"dev-{i}", site="north", actor=ACTOR)
                issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
                cert, key = write_files(certs, owner.name, issued.certificate_der, issued.chain_der,
                                        issued.private_key or b"")
                devices.append((owner.name, client_context(server_ca, cert, key)))
            connect_rate(otpki.broker.port, devices, min(10, n))  # warm both: caches, first-connect costs
            connect_rate(baseline.broker.port, devices, min(10, n))
            engine_rates, baseline_rates = [], []
            for r in range(rounds):
                note(f"mqtt_connect: round {r + 1}/{rounds}, {n} connects each")
                baseline_rates.append(connect_rate(baseline.broker.port, devices, n))
                engine_rates.append(connect_rate(otpki.broker.port, devices, n))
            note(f"mqtt_connect: {samples} revocation-to-disconnect samples")
            latencies = [revocation_latency(otpki.broker.port, server_ca, engine, d / "pki", certs, f"rev-{i}")
                         for i in range(samples)]
        finally:
            otpki.stop()
            baseline.stop()
            engine.close()
    engine_rate = sorted(engine_rates)[len(engine_rates) // 2]
    baseline_rate = sorted(baseline_rates)[len(baseline_rates) // 2]
    ratio = engine_rate / baseline_rate
    worst_latency = max(s["latency_s"] for s in latencies)
    emit(benchmark="mqtt_connect",
         engine={"connects_per_s": round(engine_rate, 1), "rounds": [round(x, 1) for x in engine_rates],
                 "revocation_to_disconnect_s": summary([s["latency_s"] for s in latencies], 4),
                 "revoke_call_s": summary([s["revoke_call_s"] for s in latencies], 4),
                 "latency_target_s": LATENCY_TARGET_S, "latency_meets_target": worst_latency <= LATENCY_TARGET_S},
         baseline={"connects_per_s": round(baseline_rate, 1), "rounds": [round(x, 1) for x in baseline_rates],
                   "plugins": list(BASELINE_PLUGINS)},
         ratio=ratio, target=f"connects/s >= {TARGET} x admit-everyone; revocation-to-disconnect <= 1 s",
         meets_target=ratio >= TARGET and worst_latency <= LATENCY_TARGET_S,
         params={"connects_per_round": n, "rounds": rounds, "devices": devices_n, "latency_samples": samples,
                 "revocation_poll_s": 0.2, "client": "paho-mqtt 3.1.1, sequential, EC P-256, TLS 1.3"})


if __name__ == "__main__":
    main()
