"""cafile/crlfile installation for Mosquitto: only verified files are renamed into place and HUPed.

No broker here (test_mosquitto_broker.py runs one): these tests pin each refusal rule on a real engine's
trust list, plus the generated configuration and dynsec file.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import SecretStr

from mqtt_broker_auth.mosquitto import dynsec as ds
from mqtt_broker_auth.mosquitto.bundle import mosquitto_bundle
from mqtt_broker_auth.mosquitto.config import MosquittoSettings, render_config
from mqtt_broker_auth.mosquitto.dynsec_file import write_dynsec_file
from mqtt_broker_auth.mosquitto.files import UnsafeTrustFiles, install_trust_files, openssl_verify_crls
from mqtt_broker_auth.policy import mqtt_policy
from mqtt_broker_auth.topics import device_topics
from tests.mqtt_broker_auth.conftest import make_external_ca
from trustlists.clock import utcnow
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import ca_signing_material

GROUP = "mqtt-device"


def pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


class Reloads:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def installed(engine: Engine, tmp_path: Path) -> tuple[Path, Path, Reloads]:
    """The engine's current bundle installed in tmp_path/broker; returns (cafile, crlfile, reload counter)."""
    cafile, crlfile = tmp_path / "broker" / "ca.pem", tmp_path / "broker" / "crl.pem"
    reloads = Reloads()
    install_trust_files(cafile, crlfile, *mosquitto_bundle(engine.trustlists.get(GROUP)), reload=reloads)
    assert reloads.count == 1
    return cafile, crlfile, reloads


def device_ca(engine: Engine):  # type: ignore[no-untyped-def]
    return engine.hierarchy.issuing_ca_for(GROUP, None)


def test_engine_bundle_installs_once_and_identical_content_is_not_reinstalled(
        engine: Engine, installed: tuple[Path, Path, Reloads]) -> None:
    cafile, crlfile, reloads = installed
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get(GROUP))
    assert cafile.read_bytes() == ca_pem and crlfile.read_bytes() == crl_pem
    assert pem(device_ca(engine).certificate_der) in ca_pem
    assert os.stat(cafile).st_mode & 0o777 == 0o644
    result = install_trust_files(cafile, crlfile, ca_pem, crl_pem, reload=reloads)
    assert not result.changed and reloads.count == 1
    assert sorted(p.name for p in cafile.parent.iterdir()) == ["ca.pem", "crl.pem"]  # no temp files left


def test_revoked_issuing_ca_leaves_the_cafile(engine: Engine, installed: tuple[Path, Path, Reloads]) -> None:
    # Mosquitto checks CRLs for the leaf only: the engine's trust list must drop a revoked CA entirely.
    cafile, crlfile, reloads = installed
    ca = device_ca(engine)
    engine.authority.revoke(ca.serial, reason=RevocationReason.CA_COMPROMISE, actor="test")
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get(GROUP))
    assert pem(ca.certificate_der) not in ca_pem
    assert install_trust_files(cafile, crlfile, ca_pem, crl_pem, reload=reloads).changed
    assert pem(ca.certificate_der) not in cafile.read_bytes() and reloads.count == 2

    # A cafile that still carries the revoked CA (another exporter, a hand edit) is refused.
    with pytest.raises(UnsafeTrustFiles) as refused:
        install_trust_files(cafile, crlfile, ca_pem + pem(ca.certificate_der), crl_pem, reload=reloads)
    assert refused.value.reason == "revoked_ca_in_cafile" and reloads.count == 2


def _signed_crl(issuer: x509.Name, key, *, last: timedelta, next_: timedelta) -> bytes:  # type: ignore[no-untyped-def]
    now = utcnow()
    return (x509.CertificateRevocationListBuilder().issuer_name(issuer).last_update(now + last)
            .next_update(now + next_).sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))


def _bad_bundle(engine: Engine, kind: str) -> tuple[bytes, bytes]:
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get(GROUP))
    ca = device_ca(engine)
    subject = x509.load_der_x509_certificate(ca.certificate_der).subject
    root_only_crl = b"".join(b for b in _split(crl_pem) if x509.load_pem_x509_crl(b).issuer != subject)
    if kind == "corrupt":
        return ca_pem, crl_pem[:60] + b"AAAA" + crl_pem[64:]
    if kind == "truncated":
        return ca_pem, crl_pem[: len(crl_pem) // 2]
    if kind == "empty":
        return ca_pem, b""
    if kind == "garbage-outside-pem":
        return ca_pem, crl_pem + b"rm -rf /\n"
    if kind == "expired":
        _cert, key = ca_signing_material(engine, ca)
        return ca_pem, root_only_crl + _signed_crl(subject, key, last=-timedelta(days=9), next_=-timedelta(hours=1))
    if kind == "expiring":
        _cert, key = ca_signing_material(engine, ca)
        return ca_pem, root_only_crl + _signed_crl(subject, key, last=-timedelta(days=9), next_=timedelta(minutes=5))
    if kind == "wrong-key":
        other = ec.generate_private_key(ec.SECP256R1())
        return ca_pem, root_only_crl + _signed_crl(subject, other, last=-timedelta(0), next_=timedelta(days=30))
    if kind == "ca-without-crl":
        return ca_pem, root_only_crl
    if kind == "cafile-empty":
        return b"", crl_pem
    if kind == "cafile-x25519-ca":
        # A CA named like the device CA but holding a key that cannot sign (X25519), ahead of the real one: the
        # CRL's signer is looked for among the CAs of that name, and this one must be passed over, not crash it.
        signer = ec.generate_private_key(ec.SECP256R1())
        now = utcnow()
        impostor = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                    .public_key(x25519.X25519PrivateKey.generate().public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .sign(signer, hashes.SHA256()))
        return impostor.public_bytes(Encoding.PEM) + ca_pem, crl_pem
    if kind == "cafile-leaf":
        leaf = engine.registry.register(group=GROUP, name="leafy", site="north", actor="test")
        issued = engine.authority.issue_with_new_key(owner_id=leaf.id, actor="test")
        return ca_pem + pem(issued.certificate_der), crl_pem
    raise AssertionError(kind)


def _split(crl_pem: bytes) -> list[bytes]:
    marker = b"-----END X509 CRL-----\n"
    return [part + marker for part in crl_pem.split(marker) if part.strip()]


@pytest.mark.parametrize(("kind", "reason"), [
    ("corrupt", "crl_invalid"), ("truncated", "crlfile_garbage"), ("empty", "crl_empty"),
    ("garbage-outside-pem", "crlfile_garbage"), ("expired", "crl_expired"), ("expiring", "crl_expiring"),
    ("wrong-key", "crl_bad_signature"), ("ca-without-crl", "ca_without_crl"), ("cafile-empty", "cafile_empty"),
    ("cafile-leaf", "cafile_invalid"), ("cafile-x25519-ca", "ca_without_crl"),
])
def test_unsafe_files_are_refused_and_nothing_changes(engine: Engine, installed: tuple[Path, Path, Reloads],
                                                       kind: str, reason: str) -> None:
    cafile, crlfile, reloads = installed
    before = cafile.read_bytes(), crlfile.read_bytes()
    ca_pem, crl_pem = _bad_bundle(engine, kind)
    with pytest.raises(UnsafeTrustFiles) as refused:
        install_trust_files(cafile, crlfile, ca_pem, crl_pem, reload=reloads)
    assert refused.value.reason == reason, refused.value
    assert (cafile.read_bytes(), crlfile.read_bytes()) == before
    assert reloads.count == 1
    assert sorted(p.name for p in cafile.parent.iterdir()) == ["ca.pem", "crl.pem"]


def test_openssl_is_an_independent_second_check(engine: Engine, tmp_path: Path) -> None:
    ca_pem, crl_pem = mosquitto_bundle(engine.trustlists.get(GROUP))
    good = tmp_path / "ca.pem"
    good.write_bytes(ca_pem)
    openssl_verify_crls("openssl", good, crl_pem)  # passes
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(make_external_ca().pem)
    with pytest.raises(UnsafeTrustFiles) as refused:
        openssl_verify_crls("openssl", stranger, crl_pem)
    assert refused.value.reason == "crl_openssl_verify_failed"
    with pytest.raises(UnsafeTrustFiles) as refused:
        openssl_verify_crls(tmp_path / "no-openssl-here", good, crl_pem)
    assert refused.value.reason == "openssl_unavailable"


def test_config_holds_the_security_settings(tmp_path: Path) -> None:
    settings = MosquittoSettings(workdir=tmp_path, port=18883, admin_port=11884, admin_password=SecretStr("pw"))
    conf = render_config(settings)
    lines = conf.splitlines()
    device = lines[lines.index("listener 18883 127.0.0.1"):]
    for line in ("require_certificate true", "use_identity_as_username true", "use_username_as_clientid true",
                 f"cafile {tmp_path / 'ca.pem'}", f"crlfile {tmp_path / 'crl.pem'}"):
        assert line in device
    admin = lines[lines.index("listener 11884 127.0.0.1"):lines.index("listener 18883 127.0.0.1")]
    assert not any(line.startswith(("cafile", "use_", "require_")) for line in admin)
    for line in ("per_listener_settings false", "allow_anonymous false", "persistence false",
                 f"log_dest file {tmp_path / 'mosquitto.log'}", f"plugin_opt_config_file {settings.dynsec_file}",
                 f"user {settings.run_as_user}"):
        assert line in lines
    assert "syslog" not in conf and "pw" not in conf


def test_dynsec_file_admin_has_only_control_rights_and_default_is_deny(tmp_path: Path) -> None:
    settings = MosquittoSettings(workdir=tmp_path, port=18883, admin_port=11884, admin_password=SecretStr("pw"))
    write_dynsec_file(settings)
    data = json.loads(settings.dynsec_file.read_text())
    (admin,) = data["clients"]
    assert admin["username"] == "otpki-admin" and admin["password"] != "pw"
    (role,) = data["roles"]
    assert {a["topic"] for a in role["acls"]} == {"$CONTROL/dynamic-security/#"}
    assert data["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                        "subscribe": False, "unsubscribe": True}
    assert os.stat(settings.dynsec_file).st_mode & 0o777 == 0o600


def test_device_and_enrollment_acls(engine: Engine) -> None:
    policy = mqtt_policy(engine.config, GROUP)
    acls = ds.device_acls(device_topics(policy, device="pump-7", site="north", group=GROUP))
    assert {(a.acltype, a.topic) for a in acls} == {
        ("publishClientSend", "plant/north/pump-7/#"), ("publishClientSend", "otpki/enroll/pump-7/csr"),
        ("subscribePattern", "plant/north/pump-7/cmd/#"), ("publishClientReceive", "plant/north/pump-7/cmd/#"),
        ("subscribePattern", "otpki/enroll/pump-7/+"), ("publishClientReceive", "otpki/enroll/pump-7/+")}
    service = ds.enrollment_service_acls(policy)
    assert {(a.acltype, a.topic) for a in service} == {
        ("subscribePattern", "otpki/enroll/+/csr"), ("publishClientReceive", "otpki/enroll/+/csr"),
        ("publishClientSend", "otpki/enroll/+/accepted"), ("publishClientSend", "otpki/enroll/+/rejected")}
    assert [c["command"] for c in ds.kick("pump-7")] == ["disableClient", "enableClient"]
