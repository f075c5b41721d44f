"""The web listener's identity (otpki.web.tls) and its address rules (otpki.web.listener), in-process."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from otpki.web.listener import PlainHttpRefused, check_plain_http, parse_listen
from otpki.web.tls import certificate_names, ensure_server_identity
from trustlists.errors import InvalidInput
from trustlists.models import RevocationReason
from trustlists.testing import PASSPHRASE, initialized_engine


def test_identity_is_issued_once_kept_encrypted_and_reissued_for_new_names_or_after_revocation(tmp_path: Path) -> None:
    eng = initialized_engine(tmp_path / "pki")
    try:
        directory = tmp_path / "web"
        first, issued = ensure_server_identity(eng, directory, group="web-server", names=["127.0.0.1"],
                                               actor="test", password=PASSPHRASE)
        assert issued
        key_pem = first.key_file.read_bytes()
        assert b"ENCRYPTED PRIVATE KEY" in key_pem and first.key_file.stat().st_mode & 0o077 == 0
        with pytest.raises(TypeError):
            load_pem_private_key(key_pem, None)  # not readable without the passphrase
        load_pem_private_key(key_pem, PASSPHRASE)

        _, again = ensure_server_identity(eng, directory, group="web-server", names=["127.0.0.1"], actor="test",
                                          password=PASSPHRASE)
        assert not again  # a restart reuses a current certificate

        renamed, issued = ensure_server_identity(eng, directory, group="web-server",
                                                 names=["pki.plant.example", "127.0.0.1"], actor="test",
                                                 password=PASSPHRASE)
        assert issued
        leaf = x509.load_pem_x509_certificates(renamed.cert_file.read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["pki.plant.example"]

        serial = format(leaf.serial_number, "x")
        eng.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
        eng.refresh_revocations()
        _, issued = ensure_server_identity(eng, directory, group="web-server",
                                           names=["pki.plant.example", "127.0.0.1"], actor="test",
                                           password=PASSPHRASE)
        assert issued, serial  # a revoked listener certificate is replaced at the next start
    finally:
        eng.close()


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0", "--listen").port == 0
    assert parse_listen("[::1]:8443", "--listen").host == "::1"
    for bad in ("8443", "host:port", "::1:8443", "h:70000"):
        with pytest.raises(InvalidInput, match="--listen"):
            parse_listen(bad, "--listen")


def test_plain_http_only_on_loopback() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_plain_http(parse_listen(f"[{host}]:80" if ":" in host else f"{host}:80", "x"), tls=False)
    for host in ("0.0.0.0", "10.0.0.5", "pki.plant.example"):
        with pytest.raises(PlainHttpRefused, match="loopback"):
            check_plain_http(parse_listen(f"{host}:80", "x"), tls=False)
    check_plain_http(parse_listen("0.0.0.0:443", "x"), tls=True)


def test_wildcard_listen_names_this_machine_unless_names_are_configured() -> None:
    assert "localhost" in certificate_names("0.0.0.0", [])
    assert certificate_names("0.0.0.0", ["pki.plant.example"]) == ["pki.plant.example"]
    assert certificate_names("10.0.0.5", ["PKI.plant.example"]) == ["pki.plant.example", "10.0.0.5"]


async def _served_serial(port: int, root: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(root))
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_running_listener_replaces_a_revoked_certificate_without_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from otpki.config import EnvSettings, FileSettings, build_settings
    from otpki.web.listener import WebListeners

    monkeypatch.setenv("OTPKI_CA_PASSPHRASE", PASSPHRASE.decode())
    monkeypatch.setenv("OTPKI_ACTOR", "test")
    data = tmp_path / "pki"
    eng = initialized_engine(data)
    root = tmp_path / "root.pem"
    root_ca = next(ca for ca in eng.hierarchy.list() if ca.parent_id is None)
    root.write_bytes(x509.load_der_x509_certificate(root_ca.certificate_der).public_bytes(Encoding.PEM))
    settings = build_settings(FileSettings(), data, EnvSettings())

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("no request is made")

    web = WebListeners(eng, settings, main=parse_listen("127.0.0.1:0", "test"), tls=True, http=None,
                       main_app=app, http_app=app, renew_check_s=0.05)
    await web.start()
    try:
        assert web.main is not None and web.main.port is not None
        first = await _served_serial(web.main.port, root)
        eng.authority.revoke(format(first, "x"), reason=RevocationReason.KEY_COMPROMISE, actor="test")
        eng.refresh_revocations()
        deadline = asyncio.get_running_loop().time() + 20
        while await _served_serial(web.main.port, root) == first:
            assert asyncio.get_running_loop().time() < deadline, "the listener kept its revoked certificate"
            await asyncio.sleep(0.05)
    finally:
        await web.stop()
        eng.close()


def test_data_directory_from_before_the_web_group_gets_its_ca_at_first_start(tmp_path: Path) -> None:
    from trustlists.policy import load_default_config
    from trustlists.testing import make_engine

    full = load_default_config()
    older = full.model_copy(update={"groups": {k: v for k, v in full.groups.items() if k != "web-server"}})
    old = make_engine(tmp_path / "pki", config=older)
    old.hierarchy.initialize(actor="test")
    old.close()
    eng = make_engine(tmp_path / "pki", config=full)
    try:
        assert not any(ca.group == "web-server" for ca in eng.hierarchy.list())
        _, issued = ensure_server_identity(eng, tmp_path / "web", group="web-server", names=["127.0.0.1"],
                                           actor="test", password=PASSPHRASE)
        assert issued and any(ca.group == "web-server" for ca in eng.hierarchy.list())
        assert [r.subject for r in eng.audit_records(action="ca.create")][-1] == "web-server"
    finally:
        eng.close()
