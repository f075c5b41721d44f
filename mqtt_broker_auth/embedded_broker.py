"""An amqtt broker in this process, with TLS from the engine, device authentication and live revocation.

    async with EmbeddedBroker(engine, workdir=path) as broker:
        ...  # devices connect to 127.0.0.1:broker.port with mTLS, trusting broker.server_ca_pem()

The broker's TLS server certificate is the engine's too: owner `broker-<host>` in group `mqtt-broker`,
issued with a server-generated key when missing, revoked, expired or due for renewal (key file 0600 in
`workdir`). Client certificates are verified by OpenSSL against the device group's trust list (`cafile`),
then by the DeviceGate (revocation of leaf and CAs, identity, client id) — see amqtt_plugin.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

from mqtt_broker_auth.amqtt_plugin import DeviceGateBroker, register_gate, unregister_gate
from mqtt_broker_auth.decision import DeviceGate
from mqtt_broker_auth.live_sessions import RevocationWatcher
from mqtt_broker_auth.tls_identity import embedded_broker_owner_name, ensure_tls_identity, pem_of, server_ca_pem
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.safe_files import private_directory, write_public

_log = logging.getLogger(__name__)

ACTOR = "otpki-mqtt-broker"
AUTH_PLUGIN = "mqtt_broker_auth.amqtt_plugin.DeviceCertAuthPlugin"
TOPIC_PLUGIN = "mqtt_broker_auth.amqtt_plugin.DeviceTopicPlugin"


class EmbeddedBroker:
    def __init__(self, engine: Engine, *, workdir: Path, host: str = "127.0.0.1", port: int = 0,
                 group: str = "mqtt-device", broker_group: str = "mqtt-broker", require_certificate: bool = True,
                 revocation_interval: float = 0.2, plugins: dict[str, Any] | None = None) -> None:
        """`plugins` replaces otpki's auth and topic plugins (the benchmark's admit-everyone baseline)."""
        self.engine = engine
        self.workdir = Path(workdir)
        self.host = host
        self.group = group
        self.broker_group = broker_group
        self._requested_port = port
        self._require_certificate = require_certificate
        self._interval = revocation_interval
        self._plugins = plugins
        self.gate = DeviceGate(engine, group)
        self._gate_name: str | None = None
        self.broker: DeviceGateBroker | None = None
        self.watcher: RevocationWatcher | None = None
        self.port = 0

    @property
    def cafile(self) -> Path:
        return self.workdir / "client-ca.pem"

    @property
    def certfile(self) -> Path:
        return self.workdir / "broker.crt"

    @property
    def keyfile(self) -> Path:
        return self.workdir / "broker.key"

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        private_directory(self.workdir)  # holds the broker's key
        await run_blocking(self._ensure_server_certificate)
        trust_version = await run_blocking(self._write_cafile)
        self._gate_name = register_gate(self.gate)
        plugins = self._plugins if self._plugins is not None else {
            AUTH_PLUGIN: {"gate": self._gate_name},
            TOPIC_PLUGIN: {"gate": self._gate_name},
        }
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self._bind_host()}:{self._requested_port}",
                                      "ssl": True, "cafile": str(self.cafile), "certfile": str(self.certfile),
                                      "keyfile": str(self.keyfile)}},
            "plugins": plugins,
        }
        gate = self.gate if self._plugins is None else None  # replaced plugins: amqtt's connect path, no gate
        self.broker = DeviceGateBroker(config, gate=gate, require_certificate=self._require_certificate)
        try:
            await self.broker.start()
            # amqtt binds with asyncio.start_server; with port 0 the OS picks one, read back from the socket.
            server = self.broker._servers["default"].instance  # no public accessor in amqtt 0.12.1
            self.port = server.sockets[0].getsockname()[1]
            self.watcher = RevocationWatcher(self.engine, self.gate, self.broker, interval=self._interval,
                                             on_trust_change=self._reload_client_cas, trust_version=trust_version)
            self.watcher.start()
        except BaseException:
            await self.stop()
            raise
        _log.info("embedded MQTT broker listening on %s:%s (mTLS, group %s)", self.host, self.port, self.group)

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
        if self.broker is not None:
            broker, self.broker = self.broker, None
            if broker.transitions.state == "started":
                await broker.shutdown()
        if self._gate_name is not None:
            unregister_gate(self._gate_name)
            self._gate_name = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- what devices need --------------------------------------------------------------------------------------

    def server_ca_pem(self) -> bytes:
        """PEM of the broker group's issuing CA(s) and the root: what devices put in their CA file."""
        return server_ca_pem(self.engine, self.broker_group)

    # -- files --------------------------------------------------------------------------------------------------

    def _ensure_server_certificate(self) -> None:
        owner_name = embedded_broker_owner_name(self.host)
        owner = self.engine.registry.find(self.broker_group, name=owner_name)
        if owner is None:
            names = _host_names(self.host)
            owner = self.engine.registry.register(group=self.broker_group, name=owner_name, actor=ACTOR, **names)
        ensure_tls_identity(self.engine, owner, self.certfile, self.keyfile, eku="serverAuth", actor=ACTOR,
                            hostname=self.host)

    def _client_ca_bundle(self) -> tuple[bytes, int]:
        # Every certificate of the device group's trust list: CAs (engine and imported manufacturer CAs) and
        # operator-trusted self-signed certificates, which OpenSSL accepts as their own anchors.
        trust = self.engine.trustlists.get(self.group)
        content = trust.content
        ders = dict.fromkeys([*content.trusted_certificates, *content.issuer_certificates])
        return b"".join(pem_of(der) for der in ders), trust.version

    def _write_cafile(self) -> int:
        bundle, version = self._client_ca_bundle()
        write_public(self.cafile, bundle)
        return version

    async def _reload_client_cas(self) -> None:
        """A new trust-list version: let the TLS layer know new CAs (removals are enforced by the gate)."""
        await run_blocking(self._write_cafile)
        bundle = self.cafile.read_bytes()
        if self.broker is not None:
            for context in self.broker.ssl_contexts:
                try:
                    context.load_verify_locations(cadata=bundle.decode("ascii"))
                except ssl.SSLError:
                    _log.exception("could not load the new client CA bundle into the TLS listener")

    def _bind_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host



def _host_names(host: str) -> dict[str, list[str]]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {"dns_names": [host]}
    return {"ip_addresses": [host]}
