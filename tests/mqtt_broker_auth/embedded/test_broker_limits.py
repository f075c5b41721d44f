"""What the embedded broker spends before authentication, and who it refuses at the TLS layer.

Real broker on 127.0.0.1 (port 0), real TLS; the clients are raw Python ssl sockets (to hold a connection at
an exact phase), paho-mqtt, and the Debian `mosquitto_pub` as an independent TLS/MQTT implementation.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mqtt_broker_auth.embedded.broker import EmbeddedBroker
from mqtt_broker_auth.embedded.broker_limits import BrokerLimits
from simulators.manufacturer import Manufacturer
from tests.mqtt_broker_auth.conftest import (
    ACTOR,
    DeviceCert,
    issue_device,
    make_external_ca,
    make_external_leaf,
    mqtt_config,
    write_cert_files,
)
from tests.mqtt_broker_auth.embedded import test_amqtt_broker as amqtt_tests
from tests.mqtt_broker_auth.embedded.test_amqtt_broker import (
    Client,
    connect,
    connected,
    dropped_at_tls,
)
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import ca_signing_material, eventually, make_engine

WAIT = amqtt_tests.WAIT
clients = amqtt_tests.clients  # the paho clients fixture, closed after each test

MakeBroker = Callable[..., Awaitable[EmbeddedBroker]]


@pytest.fixture
async def make_broker(engine: Engine, tmp_path: Path) -> AsyncIterator[MakeBroker]:
    started: list[EmbeddedBroker] = []

    async def make(**kwargs: object) -> EmbeddedBroker:
        broker = EmbeddedBroker(engine, workdir=tmp_path / f"broker-{len(started)}", revocation_interval=0.1,
                                **kwargs)  # type: ignore[arg-type]
        await broker.start()
        started.append(broker)
        (tmp_path / "server-ca.pem").write_bytes(broker.server_ca_pem())
        return broker

    yield make
    for broker in started:
        await broker.stop()


@pytest.fixture
def server_ca(tmp_path: Path) -> Path:
    return tmp_path / "server-ca.pem"  # written by make_broker


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return tmp_path / "certs"


# -- raw clients ---------------------------------------------------------------------------------------------------

def connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(body)]) + body


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tls_context(server_ca: Path, cert: DeviceCert | None, *, tls12: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_ca))
    if cert is not None:
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def open_tls(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def closed_by_server(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Wait until the server closes the connection; returns what it sent before (b"" when nothing)."""
    received = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return received
        if not data:
            return received
        received += data
    raise AssertionError(f"the server did not close the connection within {timeout} s (sent {received!r})")


def mosquitto_pub(port: int, server_ca: Path, cert: DeviceCert, client_id: str,
                  topic: str) -> subprocess.CompletedProcess[str]:
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile", str(server_ca), "--cert",
            str(cert.cert_file), "--key", str(cert.key_file), "-V", "mqttv311", "-d", "-q", "1", "-i", client_id,
            "-t", topic, "-m", "hello"]
    return subprocess.run(args, capture_output=True, text=True, timeout=WAIT, check=False)


def got_connack_0(res: subprocess.CompletedProcess[str]) -> bool:
    return res.returncode == 0 and "received CONNACK (0)" in res.stdout


def no_connack(res: subprocess.CompletedProcess[str]) -> bool:
    return res.returncode != 0 and "received CONNACK" not in res.stdout


# -- connect timeout -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["tcp-only", "tls-no-connect", "partial-connect"])
async def test_connection_without_connect_in_time_is_closed(engine: Engine, make_broker: MakeBroker,
                                                            server_ca: Path, certs: Path, clients: list[Client],
                                                            caplog: pytest.LogCaptureFixture, phase: str) -> None:
    broker = await make_broker(limits=BrokerLimits(connect_timeout_s=0.5))
    pump = issue_device(engine, "pump-7", certs)

    def idle() -> bytes:
        sock: socket.socket = socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT)
        try:
            if phase != "tcp-only":
                sock = tls_context(server_ca, pump).wrap_socket(sock, server_hostname="127.0.0.1")
            if phase == "partial-connect":
                sock.sendall(connect_packet("pump-7")[:9])  # a slow client: the CONNECT never completes
            return closed_by_server(sock)
        finally:
            sock.close()

    with caplog.at_level(logging.WARNING, logger="mqtt_broker_auth"):
        assert await asyncio.to_thread(idle) == b""  # closed, and no CONNACK ever sent
    assert broker.broker is not None and broker.broker.events.counts["connect_timeout"] == 1
    assert "connect_timeout_s" in caplog.text
    await eventually(lambda: broker.broker.unauthenticated.in_use == 0,  # type: ignore[union-attr]
                     "the slot to be released", timeout=WAIT)
    await connected(clients, broker, server_ca, pump, "pump-7")  # a client that does connect is unaffected


# -- packet size ------------------------------------------------------------------------------------------------------

async def test_oversize_packet_closes_the_connection(engine: Engine, make_broker: MakeBroker, server_ca: Path,
                                                     certs: Path, clients: list[Client],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    broker = await make_broker(limits=BrokerLimits(max_packet_size=4096))
    assert broker.broker is not None
    pump = issue_device(engine, "pump-7", certs)
    client = await connected(clients, broker, server_ca, pump, "pump-7")
    assert await asyncio.to_thread(client.subscribe, "plant/north/pump-7/cmd/#") == [1]
    fits = b"x" * 3000
    await asyncio.to_thread(client.publish, "plant/north/pump-7/cmd/a", fits)
    assert await asyncio.to_thread(client.next_message) == ("plant/north/pump-7/cmd/a", fits)

    with caplog.at_level(logging.WARNING, logger="mqtt_broker_auth"):
        client.mqtt.publish("plant/north/pump-7/cmd/b", b"x" * 5000, qos=0)
        assert await asyncio.to_thread(client.disconnected.wait, WAIT)
    assert broker.broker.events.counts["packet_too_large"] == 1
    assert "max_packet_size" in caplog.text and "'pump-7'" in caplog.text
    assert client.messages.empty()

    # Before authentication: a CONNECT announcing 64 MiB is refused on its header, its body never read.
    def huge_connect() -> bytes:
        with open_tls(broker.port, tls_context(server_ca, pump)) as sock:
            sock.sendall(b"\x10" + remaining_length(64 * 1024 * 1024) + b"\x00\x04MQTT")
            return closed_by_server(sock)

    assert await asyncio.to_thread(huge_connect) == b""
    assert broker.broker.events.counts["packet_too_large"] == 2


# -- unauthenticated connections -----------------------------------------------------------------------------------

async def test_unauthenticated_connections_are_capped(engine: Engine, make_broker: MakeBroker, server_ca: Path,
                                                      certs: Path, clients: list[Client],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    broker = await make_broker(limits=BrokerLimits(max_unauthenticated=3, connect_timeout_s=60))
    assert broker.broker is not None
    pump = issue_device(engine, "pump-7", certs)
    context = tls_context(server_ca, pump)
    idle = [await asyncio.to_thread(open_tls, broker.port, context) for _ in range(3)]
    try:
        await eventually(lambda: broker.broker.unauthenticated.in_use == 3,  # type: ignore[union-attr]
                         "three connections waiting", timeout=WAIT)

        def one_more() -> str:
            try:
                with open_tls(broker.port, context) as sock:
                    return f"closed after sending {closed_by_server(sock)!r}"  # TLS 1.3 may finish client-side
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                return f"handshake failed: {exc}"

        with caplog.at_level(logging.WARNING, logger="mqtt_broker_auth"):
            assert (await asyncio.to_thread(one_more)).startswith("handshake failed")  # closed before TLS
        assert broker.broker.events.counts["too_many_unauthenticated"] == 1
        assert "max_unauthenticated" in caplog.text
        _, outcome = await connect(clients, broker, server_ca, pump, "pump-7")
        assert outcome.kind == "dropped"  # a real device too, while the slots are taken

        idle.pop().close()  # one waiting connection goes away: its slot is free again
        await eventually(lambda: broker.broker.unauthenticated.in_use == 2,  # type: ignore[union-attr]
                         "the slot to be released", timeout=WAIT)
        await connected(clients, broker, server_ca, pump, "pump-7")
        assert broker.broker.unauthenticated.in_use == 2  # an authenticated session holds no slot
    finally:
        for sock in idle:
            sock.close()


# -- revocation and unknown certificates at the TLS layer ------------------------------------------------------------

def revoke_elsewhere(tmp_path: Path, serial_hex: str) -> None:
    """Another Engine on the same SQLite file: what `otpki certs revoke` does from another process."""
    other = make_engine(tmp_path / "pki", config=mqtt_config())
    try:
        other.authority.revoke(serial_hex, reason=RevocationReason.KEY_COMPROMISE, actor="cli")
    finally:
        other.close()


async def test_certificate_revoked_after_start_is_refused_by_openssl(
        engine: Engine, make_broker: MakeBroker, server_ca: Path, certs: Path, clients: list[Client],
        tmp_path: Path) -> None:
    """Every CA of the trust list has a CRL: OpenSSL itself refuses the revoked leaf in the handshake."""
    broker = await make_broker()
    assert broker.broker is not None and broker.tls is not None
    assert broker.tls.crl_checked is not None, broker.tls.why_no_crl_check
    pump = issue_device(engine, "pump-7", certs)
    topic = "plant/north/pump-7/telemetry"
    ok = await asyncio.to_thread(mosquitto_pub, broker.port, server_ca, pump, "pump-7", topic)
    assert got_connack_0(ok), ok.stdout + ok.stderr

    version = broker.tls.version
    await asyncio.to_thread(revoke_elsewhere, tmp_path, pump.serial_hex)
    await eventually(lambda: broker.tls is not None and broker.tls.version > version,
                     "the TLS contexts to be rebuilt", timeout=WAIT)
    before = len(broker.broker.refusals)

    # TLS 1.2: the client's own handshake fails; no TLS session, let alone MQTT.
    def tls12() -> str:
        try:
            with open_tls(broker.port, tls_context(server_ca, pump, tls12=True)):
                return "handshake completed"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            return f"handshake failed: {exc}"

    assert (await asyncio.to_thread(tls12)).startswith("handshake failed")
    dropped_at_tls(broker, amqtt_tests.Outcome("dropped"), before, "revoked", "openssl")

    # TLS 1.3: the client finishes first; the server's verdict ends the connection before any MQTT answer.
    def tls13() -> bytes:
        with open_tls(broker.port, tls_context(server_ca, pump)) as sock:
            try:
                sock.sendall(connect_packet("pump-7"))
            except (ConnectionError, ssl.SSLError, OSError):
                return b""
            return closed_by_server(sock)

    assert await asyncio.to_thread(tls13) == b""
    dropped_at_tls(broker, amqtt_tests.Outcome("dropped"), before, "revoked", "openssl")

    _, outcome = await connect(clients, broker, server_ca, pump, "pump-7")  # paho
    dropped_at_tls(broker, outcome, before, "revoked", "openssl")
    res = await asyncio.to_thread(mosquitto_pub, broker.port, server_ca, pump, "pump-7", topic)
    assert no_connack(res), res.stdout + res.stderr
    dropped_at_tls(broker, amqtt_tests.Outcome("dropped"), before, "revoked", "openssl")


async def test_revoked_certificate_refused_after_handshake_when_openssl_cannot_check_crls(
        engine: Engine, make_broker: MakeBroker, server_ca: Path, certs: Path, clients: list[Client],
        tmp_path: Path) -> None:
    """A manufacturer CA without a CRL turns OpenSSL's CRL check off (it would refuse every IDevID); the check
    right after the handshake refuses the revoked certificate before its CONNECT is read."""
    acme = make_external_ca()
    engine.trustlists.import_external("mqtt-device", acme.pem, list_name="trusted", note="ACME", actor=ACTOR)
    engine.registry.register(group="mqtt-device", name="valve-1", site="north", actor=ACTOR,
                             attributes={"bootstrap": [{"subject_cn": "ACME-SN-1"}]})
    broker = await make_broker()
    assert broker.broker is not None and broker.tls is not None
    assert broker.tls.crl_checked is None and "ACME" in (broker.tls.why_no_crl_check or "")

    pump = issue_device(engine, "pump-7", certs)
    topic = "plant/north/pump-7/telemetry"
    assert got_connack_0(await asyncio.to_thread(mosquitto_pub, broker.port, server_ca, pump, "pump-7", topic))
    version = broker.tls.version
    await asyncio.to_thread(revoke_elsewhere, tmp_path, pump.serial_hex)
    # The broker learns of another process's revocation on its watcher's next round (revocation_interval).
    await eventually(lambda: broker.tls is not None and broker.tls.version > version,
                     "the watcher's next round", timeout=WAIT)
    assert broker.tls.crl_checked is None
    before = len(broker.broker.refusals)
    res = await asyncio.to_thread(mosquitto_pub, broker.port, server_ca, pump, "pump-7", topic)
    assert no_connack(res), res.stdout + res.stderr
    dropped_at_tls(broker, amqtt_tests.Outcome("dropped"), before, "revoked", "handshake_check")
    _, outcome = await connect(clients, broker, server_ca, pump, "pump-7")
    dropped_at_tls(broker, outcome, before, "revoked", "handshake_check")

    idevid = make_external_leaf(tmp_path / "acme", "ACME-SN-1", ca=acme)  # what the CRL check would have cost
    await connected(clients, broker, server_ca, idevid, "valve-1")


def forge(engine: Engine, genuine: DeviceCert, directory: Path) -> DeviceCert:
    """A certificate the engine never issued: the genuine one's subject and extensions, another key and serial,
    signed with the issuing CA's own key (what a stolen CA key, or a restored old database, allows)."""
    cert = x509.load_der_x509_certificate(genuine.certificate_der)
    ca_record = next(ca for ca in engine.hierarchy.list() if ca.certificate_der == genuine.chain_der[0])
    _cert, ca_key = ca_signing_material(engine, ca_record)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
    for ext in cert.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(value, ext.critical)
    forged = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    der = forged.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_file, key_file = write_cert_files(directory, "forged", der, genuine.chain_der, key_pem)
    return DeviceCert(owner=genuine.owner, certificate_der=der, chain_der=genuine.chain_der, key_pem=key_pem,
                      cert_file=cert_file, key_file=key_file)


async def test_certificate_the_engine_never_issued_is_refused_before_connect(
        engine: Engine, make_broker: MakeBroker, server_ca: Path, certs: Path, clients: list[Client],
        tmp_path: Path) -> None:
    broker = await make_broker()
    assert broker.broker is not None
    genuine = issue_device(engine, "pump-7", certs)
    forged = forge(engine, genuine, tmp_path / "forged")
    before = len(broker.broker.refusals)
    _, outcome = await connect(clients, broker, server_ca, forged, "pump-7")
    dropped_at_tls(broker, outcome, before, "unknown_certificate", "handshake_check")
    res = await asyncio.to_thread(mosquitto_pub, broker.port, server_ca, forged, "pump-7",
                                  "plant/north/pump-7/telemetry")
    assert no_connack(res), res.stdout + res.stderr
    dropped_at_tls(broker, amqtt_tests.Outcome("dropped"), before, "unknown_certificate", "handshake_check")
    await connected(clients, broker, server_ca, genuine, "pump-7")  # the genuine one still works


async def test_manufacturer_crl_keeps_openssl_checking_and_refuses_a_revoked_idevid(
        engine: Engine, make_broker: MakeBroker, server_ca: Path, clients: list[Client], tmp_path: Path) -> None:
    """A manufacturer CA imported with its CRL: OpenSSL checks IDevIDs against it in the handshake."""
    maker = Manufacturer.create("ACME Devices")
    good, bad = maker.issue_idevid("SN-0001"), maker.issue_idevid("SN-0002")
    bad_serial = x509.load_pem_x509_certificate(bad.certificate_pem.encode()).serial_number
    for pem, note in ((maker.ca_pem, "ACME CA"), (maker.crl_pem(revoked=(bad_serial,)), "ACME CRL")):
        engine.trustlists.import_external("mqtt-device", pem.encode(), list_name="trusted", note=note, actor=ACTOR)
    for name, cred in (("valve-1", good), ("valve-2", bad)):
        engine.registry.register(group="mqtt-device", name=name, site="north", actor=ACTOR,
                                 attributes={"bootstrap": [cred.allow_list_entry()]})
    broker = await make_broker()
    assert broker.broker is not None and broker.tls is not None
    assert broker.tls.crl_checked is not None, broker.tls.why_no_crl_check

    files = {}
    for name, cred in (("valve-1", good), ("valve-2", bad)):
        cert_file, key_file = cred.write(tmp_path / name)
        files[name] = DeviceCert(owner=None, certificate_der=b"", chain_der=[], key_pem=b"", cert_file=cert_file,
                                 key_file=key_file)
    await connected(clients, broker, server_ca, files["valve-1"], "valve-1")
    before = len(broker.broker.refusals)
    _, outcome = await connect(clients, broker, server_ca, files["valve-2"], "valve-2")
    dropped_at_tls(broker, outcome, before, "revoked", "openssl")
