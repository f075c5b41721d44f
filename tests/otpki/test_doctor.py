"""`otpki doctor` finds what an operator must act on, and exits 1 only for failures."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from opcua_gds.push.rollout import KIND
from otpki.cli.main import app
from otpki.doctor import examine
from trustlists.testing import Clock, free_port, initialized_engine, make_csr

PASS = "a long enough test passphrase"


def levels(report, check: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {f.subject: f.level for f in report.findings if f.check == check}


def test_findings_follow_the_clock_keys_and_targets(tmp_path: Path) -> None:
    clock = Clock()
    engine = initialized_engine(tmp_path / "pki", clock=clock, actor="t")
    owner = engine.registry.register(group="mqtt-device", name="pump-1", site="north", actor="t")
    engine.authority.issue_from_csr(make_csr("pump-1", uris=["urn:otpki:mqtt:north:pump-1"]), owner_id=owner.id,
                                    actor="t")
    healthy = examine(engine)
    assert not healthy.failures and not healthy.warnings

    # A PLC that could not be pushed to, and one whose port nobody listens on.
    plc = engine.registry.register(group="opcua-application", name="plc-1", application_uri="urn:plc-1", actor="t")
    target = engine.targets.add(owner_id=plc.id, kind=KIND, address=f"opc.tcp://127.0.0.1:{free_port()}/plc",
                                credentials_ref="plc", actor="t")
    engine.targets.record_failure(target.id, error="connect: BadTimeout", actor="t")
    found = examine(engine, probe_targets=True)
    [finding] = [f for f in found.findings if f.check == "push-target"]
    assert finding.level == "fail" and "not reachable" in finding.detail

    # Six days on the 7-day CRLs are inside their 2-day margin: warn. Eight days on they have expired: fail.
    clock.now += timedelta(days=6)
    crls = levels(examine(engine), "crl")
    assert crls.pop("root") == "ok" and set(crls.values()) == {"warn"}
    clock.now += timedelta(days=2)
    crls = levels(examine(engine), "crl")
    assert crls["mqtt-device"] == "fail" and crls["root"] == "ok"  # the root CRL lives for 180 days

    # The device certificate (365 days) comes within the expiry window.
    clock.now += timedelta(days=340)
    expiring = [f for f in examine(engine).findings if f.check == "expiry"]
    assert [f.subject for f in expiring] == ["mqtt-device/CN=pump-1"] and expiring[0].level == "warn"
    engine.close()


def test_cli_exit_codes_and_a_broken_ca_key(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"OTPKI_CA_PASSPHRASE": PASS, "OTPKI_DATA_DIR": str(tmp_path / "pki")}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    ok = runner.invoke(app, ["doctor", "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["failures"] == 0

    # An issuing CA's key file replaced by another key: it no longer signs for its certificate.
    keys = sorted((tmp_path / "pki" / "keys").glob("*mqtt-device*"))
    others = sorted((tmp_path / "pki" / "keys").glob("*mqtt-broker*"))
    assert keys and others
    keys[0].write_bytes(others[0].read_bytes())
    bad = runner.invoke(app, ["doctor", "--json"], env=env)
    assert bad.exit_code == 1
    failed = [f for f in json.loads(bad.stdout)["findings"] if f["level"] == "fail"]
    assert [f["subject"] for f in failed] == ["mqtt-device"] and failed[0]["check"] == "ca-key"
    text = runner.invoke(app, ["doctor"], env=env)
    assert text.exit_code == 1 and "1 failure(s)" in text.output


def test_mosquitto_files_checked_against_the_engine(tmp_path: Path) -> None:
    from otpki.config import FileSettings, build_settings, EnvSettings  # noqa: I001
    from otpki.doctor import mqtt_checks
    from mqtt_broker_auth.mosquitto.files import install_trust_files
    from mqtt_broker_auth.mosquitto.bundle import mosquitto_bundle
    from trustlists.models import RevocationReason

    clock = Clock()
    engine = initialized_engine(tmp_path / "pki", clock=clock, actor="t")
    workdir = tmp_path / "broker"
    file = FileSettings.model_validate({"mqtt": {"broker": "mosquitto", "mosquitto": {"workdir": str(workdir)}}})
    settings = build_settings(file, tmp_path / "pki", EnvSettings())

    def broker_findings() -> list:  # type: ignore[type-arg]
        return [f for check in mqtt_checks(engine, settings) for f in check() if f.check == "mqtt-broker-files"]

    # Nothing installed yet.
    [missing] = broker_findings()
    assert missing.level == "fail" and "cannot read" in missing.detail
    # Installed by the sync's safe path: in sync.
    owner = engine.registry.register(group="mqtt-device", name="pump-1", site="north", actor="t")
    issued = engine.authority.issue_from_csr(make_csr("pump-1", uris=["urn:otpki:mqtt:north:pump-1"]),
                                             owner_id=owner.id, actor="t")
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get("mqtt-device", imported=False))
    install_trust_files(workdir / "ca.pem", workdir / "crl.pem", ca_pem, crl_pem, reload=None, now=clock.now)
    [ok] = broker_findings()
    assert ok.level == "ok", ok
    # A revocation the broker has not been given: out of sync.
    engine.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    [stale] = broker_findings()
    assert stale.level == "fail" and "out of sync" in stale.detail and "otpki mqtt sync --once" in stale.detail
    # Synced again, then the installed CRL ages: warn inside the refresh margin, fail once expired.
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get("mqtt-device", imported=False))
    install_trust_files(workdir / "ca.pem", workdir / "crl.pem", ca_pem, crl_pem, reload=None, now=clock.now)
    assert [f.level for f in broker_findings()] == ["ok"]
    clock.now += timedelta(days=6)
    assert [f.level for f in broker_findings()] == ["warn"]
    clock.now += timedelta(days=2)
    expired = broker_findings()
    assert {f.level for f in expired} == {"fail"} and any("expired" in f.detail for f in expired)
    # An embedded-broker deployment has no files to check.
    embedded = build_settings(FileSettings(), tmp_path / "pki", EnvSettings())
    assert [f for check in mqtt_checks(engine, embedded) for f in check()] == []
    engine.close()
