"""A plain amqtt 0.12.1 broker for the enrollment tests: TLS on 127.0.0.1, client certificate optional,
anonymous allowed, no topic ACL.

Deliberately permissive: any client may publish on any device's request topic, which is exactly the situation
in which the enrollment service's own checks (credential + signature + replay + rate limit) must hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amqtt.broker import Broker
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.engine import Engine

ACTOR = "tester"


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


@dataclass
class PlainBroker:
    broker: Broker
    host: str
    port: int
    server_ca_file: Path  # what clients trust for the broker's certificate (the engine root)

    async def stop(self) -> None:
        if self.broker.transitions.state == "started":
            await self.broker.shutdown()


async def start_plain_broker(engine: Engine, workdir: Path, *, group: str = "mqtt-device",
                             port: int = 0) -> PlainBroker:
    """Start it with an engine-issued `mqtt-broker` server certificate; clients that present a certificate
    must chain to `group`'s trust list (imported manufacturer CAs included) because OpenSSL checks it."""
    workdir.mkdir(parents=True, exist_ok=True)
    owner = engine.registry.find("mqtt-broker", name="plain-broker") or engine.registry.register(
        group="mqtt-broker", name="plain-broker", actor=ACTOR, ip_addresses=["127.0.0.1"])
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR)
    assert issued.private_key is not None
    cert_file, key_file = workdir / "broker.crt", workdir / "broker.key"
    cert_file.write_bytes(b"".join(_pem(der) for der in [issued.certificate_der, *issued.chain_der[:-1]]))
    key_file.write_bytes(issued.private_key)
    key_file.chmod(0o600)
    server_ca_file = workdir / "server-ca.pem"
    server_ca_file.write_bytes(_pem(issued.chain_der[-1]))
    content = engine.trustlists.get(group).content
    client_ca_file = workdir / "client-ca.pem"
    client_ca_file.write_bytes(b"".join(_pem(der) for der in dict.fromkeys(
        [*content.trusted_certificates, *content.issuer_certificates])))
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "ssl": True,
                                  "cafile": str(client_ca_file), "certfile": str(cert_file),
                                  "keyfile": str(key_file)}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    # amqtt has no public accessor for the bound port; with port 0 the OS chose it.
    port = broker._servers["default"].instance.sockets[0].getsockname()[1]
    return PlainBroker(broker=broker, host="127.0.0.1", port=port, server_ca_file=server_ca_file)
