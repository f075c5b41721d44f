"""A revocation made on one instance drops the device's sessions on brokers attached to other instances.

Three otpki processes on one PostgreSQL store: two `otpki mqtt serve` brokers (instances A and C, each with its
own data directory) and `otpki certs revoke` (instance B). One device holds a session on each broker. The brokers
poll the store only every 30 s here ([mqtt] revocation_interval_s), so sessions that end within the 10 s below
were ended by the revocation's notification (LISTEN/NOTIFY), not by a poll.
"""

from __future__ import annotations

from pathlib import Path

from mqtt_broker_auth.testing import TlsDevice, device_files
from trustlists.testing import PostgresCluster, free_port, make_engine

from .instances import instances, otpki, second_instance, wait_for

POLL_S = 30
WAIT_S = 10.0


def test_a_revocation_on_one_instance_drops_the_sessions_on_brokers_of_other_instances(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    url = postgres_cluster.database()
    cfg = tmp_path / "otpki.toml"
    cfg.write_text(f'[pki.root]\nkey_type = "ec-p256"\n[mqtt]\nrevocation_interval_s = {POLL_S}\n')
    a_dir = tmp_path / "a"
    otpki(a_dir, url, "init", "--config", str(cfg))
    b_dir = second_instance(a_dir, tmp_path / "b")
    c_dir = second_instance(a_dir, tmp_path / "c")
    issuer = make_engine(second_instance(a_dir, tmp_path / "issuer"), store_url=url)
    cert, key, serial = device_files(issuer, "pump-1", tmp_path / "device")
    other_cert, other_key, _ = device_files(issuer, "pump-2", tmp_path / "device")
    issuer.close()
    with instances(tmp_path) as group:
        brokers = [(group.start(d, url, "mqtt", "serve", "--port", str(port), "--no-enrollment"), d, port)
                   for d, port in ((a_dir, free_port()), (c_dir, free_port()))]
        for proc, d, _port in brokers:
            wait_for(f"broker of {d.name} ready", lambda proc=proc: "ready" in group.stdout(proc), deadline_s=90,
                     alive=group.alive(proc))
        revoked: list[TlsDevice] = []
        kept: list[TlsDevice] = []
        try:
            for _proc, d, port in brokers:  # the device pump-1 on both brokers, pump-2 beside it
                ca = d / "mqtt" / "server-ca.pem"
                revoked.append(TlsDevice(port, ca, cert, key, client_id="pump-1"))
                kept.append(TlsDevice(port, ca, other_cert, other_key, client_id="pump-2"))
            otpki(b_dir, url, "certs", "revoke", serial, "--reason", "key-compromise")
            for session in revoked:
                assert session.ended.wait(WAIT_S), "the revoked device's session is still open"
            assert not any(s.ended.is_set() for s in kept)  # only the revoked device was dropped
        finally:
            for session in revoked + kept:
                session.close()


def test_a_revocation_on_one_instance_reaches_mosquitto_kept_by_another(postgres_cluster: PostgresCluster,
                                                                        tmp_path: Path) -> None:
    """The same with an operator's Mosquitto: `otpki mqtt sync` (instance A, rounds every 30 s here) installs the
    new CRL and kicks the device's session as soon as the revocation from instance B is announced."""
    from pydantic import SecretStr

    from mqtt_broker_auth.mosquitto.config import MosquittoSettings
    from mqtt_broker_auth.mosquitto.process import MosquittoProcess

    url = postgres_cluster.database()
    password = "a dynsec admin password"
    port, admin_port = free_port(), free_port()
    cfg = tmp_path / "otpki.toml"
    cfg.write_text('[pki.root]\nkey_type = "ec-p256"\n'
                   f'[mqtt]\nbroker = "mosquitto"\n[mqtt.mosquitto]\nport = {port}\nadmin_port = {admin_port}\n'
                   f'bootstrap = false\nsync_interval_s = {POLL_S}\nreload_command = ["true"]\n')
    a_dir = tmp_path / "a"
    otpki(a_dir, url, "init", "--config", str(cfg))
    b_dir = second_instance(a_dir, tmp_path / "b")
    issuer = make_engine(second_instance(a_dir, tmp_path / "issuer"), store_url=url)
    cert, key, serial = device_files(issuer, "pump-1", tmp_path / "device")
    issuer.close()
    secrets = {"OTPKI_MQTT_ADMIN_PASSWORD": password}
    otpki(a_dir, url, "mqtt", "mosquitto-config", **secrets)
    ms = MosquittoSettings(workdir=a_dir / "mosquitto", port=port, admin_port=admin_port,
                           admin_password=SecretStr(password))
    broker = MosquittoProcess(ms)
    session: TlsDevice | None = None
    try:
        broker.start(fresh_dynsec=False)
        config = a_dir / "otpki.toml"
        config.write_text(config.read_text().replace('["true"]', f'["kill", "-HUP", "{broker.pid}"]'))
        with instances(tmp_path) as group:
            sync = group.start(a_dir, url, "mqtt", "sync", "--no-enrollment", **secrets)
            wait_for("otpki mqtt sync ready", lambda: "ready" in group.stdout(sync), deadline_s=90,
                     alive=group.alive(sync))
            session = TlsDevice(port, ms.workdir / "server-ca.pem", cert, key, client_id="pump-1")
            otpki(b_dir, url, "certs", "revoke", serial, "--reason", "key-compromise")
            assert session.ended.wait(WAIT_S), "the revoked device's session on Mosquitto is still open"
    finally:
        if session is not None:
            session.close()
        broker.stop()
