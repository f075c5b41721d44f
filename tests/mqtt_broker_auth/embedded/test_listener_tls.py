"""When the listener lets OpenSSL check CRLs: built from real trust lists of a real engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from mqtt_broker_auth.embedded.listener_tls import build_listener_tls
from simulators.manufacturer import Manufacturer
from tests.mqtt_broker_auth.conftest import ACTOR, from_issued
from trustlists.engine import Engine


def build(engine: Engine, tmp_path: Path, now: datetime | None = None):  # type: ignore[no-untyped-def]
    owner = engine.registry.find("mqtt-broker", name="broker-1") or engine.registry.register(
        group="mqtt-broker", name="broker-1", actor=ACTOR, ip_addresses=["127.0.0.1"])
    server = from_issued(engine.authority.issue_with_new_key(owner_id=owner.id, actor=ACTOR), owner,
                         tmp_path / "server")
    trust = engine.trustlists.get("mqtt-device")
    return build_listener_tls(trust.content, trust.version, certfile=server.cert_file, keyfile=server.key_file,
                              cafile=tmp_path / "client-ca.pem", crlfile=tmp_path / "client-crl.pem",
                              require_certificate=True, now=now)


def test_engine_cas_only_openssl_checks_crls_until_the_first_next_update(engine: Engine, tmp_path: Path) -> None:
    tls = build(engine, tmp_path)
    assert tls.crl_checked is not None and tls.why_no_crl_check is None
    assert (tmp_path / "client-crl.pem").read_bytes().startswith(b"-----BEGIN X509 CRL")
    assert tls.crl_in_force_until is not None
    assert tls.context() == (tls.crl_checked, True)
    # From the first nextUpdate on, a CRL check would refuse every client: the plain context takes over.
    assert tls.context(tls.crl_in_force_until) == (tls.plain, False)


def test_a_manufacturer_ca_without_crl_turns_the_openssl_check_off(engine: Engine, tmp_path: Path) -> None:
    assert build(engine, tmp_path).crl_checked is not None
    maker = Manufacturer.create("ACME Devices")
    engine.trustlists.import_external("mqtt-device", maker.ca_pem.encode(), list_name="trusted", note="ACME",
                                      actor=ACTOR)
    tls = build(engine, tmp_path)
    assert tls.crl_checked is None and "no CRL of" in (tls.why_no_crl_check or "")
    assert "ACME Devices" in (tls.why_no_crl_check or "")
    assert not (tmp_path / "client-crl.pem").exists()  # no file suggesting a check that is off
    assert tls.context() == (tls.plain, False)

    engine.trustlists.import_external("mqtt-device", maker.crl_pem().encode(), list_name="trusted",
                                      note="ACME CRL", actor=ACTOR)
    assert build(engine, tmp_path).crl_checked is not None  # with its CRL, the check is back on


def test_crls_not_in_force_on_the_wall_clock_turn_the_check_off(engine: Engine, tmp_path: Path) -> None:
    past = datetime.now(UTC) - timedelta(days=1)  # the CRLs' lastUpdate is after this
    tls = build(engine, tmp_path, now=past)
    assert tls.crl_checked is None and "not valid before" in (tls.why_no_crl_check or "")
    future = datetime.now(UTC) + timedelta(days=400)  # every CRL is past its nextUpdate
    tls = build(engine, tmp_path, now=future)
    assert tls.crl_checked is None and "past its nextUpdate" in (tls.why_no_crl_check or "")
