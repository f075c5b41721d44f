"""A broker's or service's TLS identity is reused across restarts and reissued only when it must be."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from mqtt_broker_auth.tls_identity import ensure_tls_identity, identity_is_current, server_ca_pem
from trustlists.engine import Engine
from trustlists.models import RevocationReason


def serial_of(cert_file: Path) -> str:
    return format(x509.load_pem_x509_certificates(cert_file.read_bytes())[0].serial_number, "x")


def test_reused_while_current_reissued_when_revoked_or_due(engine: Engine, clock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    owner = engine.registry.register(group="mqtt-broker", name="broker-1", ip_addresses=["127.0.0.1"], actor="t")
    cert, key = tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key"
    assert ensure_tls_identity(engine, owner, cert, key, eku="serverAuth", actor="t", hostname="127.0.0.1")
    assert key.stat().st_mode & 0o777 == 0o600
    first = serial_of(cert)
    # A restart: nothing new is minted.
    assert not ensure_tls_identity(engine, owner, cert, key, eku="serverAuth", actor="t", hostname="127.0.0.1")
    assert serial_of(cert) == first
    # The wrong usage or host name is not "current".
    assert not identity_is_current(engine, cert, key, group="mqtt-broker", eku="clientAuth")
    assert not identity_is_current(engine, cert, key, group="mqtt-broker", eku="serverAuth", hostname="10.9.9.9")
    # Revoked: reissued.
    engine.authority.revoke(first, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    assert ensure_tls_identity(engine, owner, cert, key, eku="serverAuth", actor="t", hostname="127.0.0.1")
    second = serial_of(cert)
    assert second != first
    # Inside the renewal window: reissued.
    window = engine.config.group("mqtt-broker").renewal_window_days
    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    clock.now = leaf.not_valid_after_utc - timedelta(days=window - 1)
    assert not identity_is_current(engine, cert, key, group="mqtt-broker", eku="serverAuth")


def test_server_ca_file_names_the_broker_chain(engine: Engine) -> None:
    pem = server_ca_pem(engine, "mqtt-broker")
    subjects = [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem)]
    assert len(subjects) == 2 and any("mqtt-broker" in s for s in subjects)
    with pytest.raises(ValueError, match="no active CA"):
        server_ca_pem(engine, "no-such-group")
