"""An amqtt broker in this process, with TLS from the engine, device authentication and live revocation.

    async with EmbeddedBroker(engine, workdir=path) as broker:
        ...  # devices connect to 127.0.0.1:broker.port with mTLS, trusting broker.server_ca_pem()

The broker's TLS server certificate is the engine's too: owner `broker-<host>` (`bootstrap-broker-<host>` for
a bootstrap listener) in group `mqtt-broker`, issued with a server-generated key when missing, revoked,
expired or due for renewal (key file 0600 in `workdir`). Who gets in, layer by layer:
1. TCP accept: refused at once beyond `limits.max_unauthenticated` connections waiting to authenticate.
2. TLS handshake (OpenSSL): the chain must anchor in the device group's trust list (`cafile`); when every CA
   there has a CRL in force, a revoked leaf is refused here too (`crlfile`, see listener_tls).
3. Right after the handshake, before any MQTT byte (tls_admission): the DeviceGate without the client id
   (revocation of leaf and engine CAs from the live index, expiry, registered identity, bootstrap allow-list)
   and, for engine-CA chains, the inventory (a certificate the engine never issued is refused).
4. CONNECT, within `limits.connect_timeout_s` of accept: the DeviceGate again with the client id, the will
   topic, and the listener's mode; refusals get CONNACK 5 (see amqtt_plugin).
Every packet, before and after authentication, is at most `limits.max_packet_size` bytes.
A new trust-list version (CA imported or removed, any revocation) rebuilds the TLS contexts for the next
handshake; live sessions whose certificate lapses are closed by the RevocationWatcher.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

from mqtt_broker_auth.broker_names import embedded_broker_owner_name
from mqtt_broker_auth.decision import DeviceGate
from mqtt_broker_auth.embedded.amqtt_plugin import DeviceGateBroker, register_gate, unregister_gate
from mqtt_broker_auth.embedded.broker_limits import BrokerLimits, BrokerMode
from mqtt_broker_auth.embedded.last_seen import LastSeenWriter
from mqtt_broker_auth.embedded.listener_tls import ListenerTls, build_listener_tls
from mqtt_broker_auth.embedded.live_sessions import RevocationWatcher
from mqtt_broker_auth.embedded.tls_admission import HandshakeCheck
from mqtt_broker_auth.tls_identity import ensure_tls_identity, server_ca_pem
from trustlists.blocking import run_blocking
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists
from trustlists.safe_files import private_directory

_log = logging.getLogger(__name__)

ACTOR = "otpki-mqtt-broker"
AUTH_PLUGIN = "mqtt_broker_auth.embedded.amqtt_plugin.DeviceCertAuthPlugin"
TOPIC_PLUGIN = "mqtt_broker_auth.embedded.amqtt_plugin.DeviceTopicPlugin"


class EmbeddedBroker:
    def __init__(self, engine: Engine, *, workdir: Path, host: str = "127.0.0.1", port: int = 0,
                 group: str = "mqtt-device", broker_group: str = "mqtt-broker", require_certificate: bool = True,
                 revocation_interval: float = 0.2, plugins: dict[str, Any] | None = None,
                 limits: BrokerLimits | None = None, mode: BrokerMode = "standard") -> None:
        """`plugins` replaces otpki's auth and topic plugins (the benchmark's admit-everyone baseline).

        mode="bootstrap": the listener where devices enroll with their IDevID; it admits only bootstrap
        identities (to their enrollment topics) and the enrollment service, and refuses every other operational
        identity at CONNECT.
        """
        if mode == "bootstrap" and plugins is not None:
            raise ValueError("a bootstrap listener runs otpki's own plugins")
        self.engine = engine
        self.workdir = Path(workdir)
        self.host = host
        self.group = group
        self.broker_group = broker_group
        self.limits = limits or BrokerLimits()
        self.mode: BrokerMode = mode
        self._requested_port = port
        self._require_certificate = require_certificate
        self._interval = revocation_interval
        self._plugins = plugins
        self.gate = DeviceGate(engine, group)
        self.tls: ListenerTls | None = None
        self._gate_name: str | None = None
        self.broker: DeviceGateBroker | None = None
        self.watcher: RevocationWatcher | None = None
        # The devices' last-seen times go to the store (not with amqtt's own plugins: the benchmark's baseline).
        self._record_last_seen = plugins is None
        self.last_seen_writer: LastSeenWriter | None = None
        self.port = 0

    @property
    def cafile(self) -> Path:
        return self.workdir / "client-ca.pem"

    @property
    def crlfile(self) -> Path:
        """The client CAs' CRLs OpenSSL checks (absent while the TLS-layer CRL check is off: see listener_tls)."""
        return self.workdir / "client-crl.pem"

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
        self.tls = await run_blocking(self._build_tls)
        self._log_crl_layer(self.tls)
        self._gate_name = register_gate(self.gate)
        plugins = self._plugins if self._plugins is not None else {
            AUTH_PLUGIN: {"gate": self._gate_name},
            TOPIC_PLUGIN: {"gate": self._gate_name},
        }
        # No "ssl" here: DeviceGateBroker does the handshakes itself, with `self.tls`.
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self._bind_host()}:{self._requested_port}"}},
            "plugins": plugins,
        }
        gate = self.gate if self._plugins is None else None  # replaced plugins: amqtt's connect path, no gate
        self.broker = DeviceGateBroker(config, gate=gate, tls=self.tls,
                                       handshake_check=HandshakeCheck(self.engine, self.gate) if gate else None,
                                       limits=self.limits, mode=self.mode,
                                       require_certificate=self._require_certificate, presence_clock=self.engine.now)
        try:
            await self.broker.start()
            self.port = self.broker.bound_port()
            self.watcher = RevocationWatcher(self.engine, self.gate, self.broker, interval=self._interval,
                                             on_trust_change=self._reload_tls, trust_version=self.tls.version)
            self.watcher.start()
            if self._record_last_seen:
                self.last_seen_writer = LastSeenWriter(
                    self.engine, self.group, online=self.broker.online_devices,
                    disconnected=lambda: dict(self.broker.disconnected_at) if self.broker is not None else {},
                    changed=self.broker.presence_changed)
                self.last_seen_writer.start()
        except BaseException:
            await self.stop()
            raise
        _log.info("embedded MQTT broker (%s listener) on %s:%s (mTLS, group %s; connect timeout %.1f s, max packet "
                  "%d bytes, max %d unauthenticated connections)", self.mode, self.host, self.port, self.group,
                  self.limits.connect_timeout_s, self.limits.max_packet_size, self.limits.max_unauthenticated)

    async def stop(self) -> None:
        if self.last_seen_writer is not None:
            writer, self.last_seen_writer = self.last_seen_writer, None
            await writer.stop()
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

    # -- presence (the console's Devices page) ---------------------------------------------------------------------

    def online_devices(self) -> dict[str, datetime]:
        """Device name -> connected since (engine clock), of the sessions live on this broker now."""
        return {} if self.broker is None else self.broker.online_devices()

    def last_seen(self) -> dict[str, datetime]:
        """Device name -> when its last connection to this broker ended (since the broker started)."""
        return {} if self.broker is None else dict(self.broker.disconnected_at)

    # -- what devices need --------------------------------------------------------------------------------------

    def server_ca_pem(self) -> bytes:
        """PEM of the broker group's issuing CA(s) and the root: what devices put in their CA file."""
        return server_ca_pem(self.engine, self.broker_group)

    # -- files --------------------------------------------------------------------------------------------------

    def _ensure_server_certificate(self) -> None:
        owner_name = embedded_broker_owner_name(self.host, bootstrap=self.mode == "bootstrap")
        owner = self.engine.registry.find(self.broker_group, name=owner_name)
        if owner is None:
            names = _host_names(self.host)
            try:
                owner = self.engine.registry.register(group=self.broker_group, name=owner_name, actor=ACTOR,
                                                      **names)
            except AlreadyExists:
                # Another instance on this store, serving the same host name, registered it a moment ago.
                owner = self.engine.registry.find(self.broker_group, name=owner_name)
                if owner is None:
                    raise
        ensure_tls_identity(self.engine, owner, self.certfile, self.keyfile, eku="serverAuth", actor=ACTOR,
                            hostname=self.host)

    def _build_tls(self) -> ListenerTls:
        # Every certificate of the device group's trust list: CAs (engine and imported manufacturer CAs) and
        # operator-trusted self-signed certificates, which OpenSSL accepts as their own anchors; and their CRLs.
        trust = self.engine.trustlists.get(self.group)
        return build_listener_tls(trust.content, trust.version, certfile=self.certfile, keyfile=self.keyfile,
                                  cafile=self.cafile, crlfile=self.crlfile,
                                  require_certificate=self._require_certificate)

    async def _reload_tls(self) -> None:
        """A new trust-list version: new TLS contexts for the next handshakes (CAs added and removed, CRLs)."""
        tls = await run_blocking(self._build_tls)
        self._log_crl_layer(tls)
        self.tls = tls
        if self.broker is not None:
            self.broker.tls = tls

    def _log_crl_layer(self, tls: ListenerTls) -> None:
        if tls.crl_checked is not None:
            _log.info("MQTT listener TLS from trust list v%d: OpenSSL checks CRLs (in force until %s)", tls.version,
                      tls.crl_in_force_until)
        else:
            _log.info("MQTT listener TLS from trust list v%d: no CRL check in OpenSSL (%s); revocation is checked "
                      "right after the handshake", tls.version, tls.why_no_crl_check)

    def _bind_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host



class _HostNames(TypedDict, total=False):
    dns_names: list[str]
    ip_addresses: list[str]


def _host_names(host: str) -> _HostNames:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {"dns_names": [host]}
    return {"ip_addresses": [host]}
