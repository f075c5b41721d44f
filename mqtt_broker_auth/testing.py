"""What tests and benchmarks of several otpki instances need to watch a device's MQTT session (not product code).

`TlsDevice`: a paho MQTT client with a certificate of the engine, connected over mTLS, that timestamps (with
time.perf_counter) when its session ends. `device_files`: a device registered and given such a certificate.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from paho.mqtt.enums import CallbackAPIVersion

from trustlists.engine import Engine
from trustlists.safe_files import write_public, write_secret

__all__ = ["TlsDevice", "device_files"]


def device_files(engine: Engine, name: str, directory: Path, *, group: str = "mqtt-device",
                 actor: str = "otpki-test") -> tuple[Path, Path, str]:
    """Register device `name`, issue it a certificate with a new key; (certificate file, key file, serial)."""
    owner = engine.registry.register(group=group, name=name, actor=actor)
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=actor)
    assert issued.private_key is not None  # a server-made key comes back with its certificate
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    write_public(cert, x509.load_der_x509_certificate(issued.certificate_der).public_bytes(Encoding.PEM))
    write_secret(key, issued.private_key)
    return cert, key, issued.record.serial


class TlsDevice:
    """A device session on a broker: connected when constructed, `ended` once the broker dropped it."""

    def __init__(self, port: int, server_ca: Path, cert: Path, key: Path, *, client_id: str,
                 connect_timeout_s: float = 30.0) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                  reconnect_on_failure=False)
        ctx = ssl.create_default_context(cafile=str(server_ca))
        ctx.load_cert_chain(str(cert), str(key))
        self.client.tls_set_context(ctx)
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.ended_at = 0.0
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None

        def on_disconnect(c: object, u: object, f: object, rc: object, p: object) -> None:
            self.ended_at = time.perf_counter()
            self.ended.set()

        self.client.on_disconnect = on_disconnect
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        if not self.connected.wait(connect_timeout_s):
            self.close()
            raise RuntimeError(f"device {client_id} did not connect to port {port}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
