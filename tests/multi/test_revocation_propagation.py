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
