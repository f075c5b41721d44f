"""Roles, security modes and ApplicationSelfAdmin, decided per method call over real SignAndEncrypt sessions."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import argon2
import pytest
import pytest_asyncio
from asyncua import Server, ua
from asyncua.ua.uaerrors import BadSecurityModeInsufficient, BadUserAccessDenied
from pydantic import ValidationError

from opcua_gds import call_context
from opcua_gds.access import (
    AccessConfig,
    CertificateUser,
    GdsRole,
    GdsUserManager,
    MethodError,
    PasswordUser,
    SelfAdmin,
    caller,
    hash_password,
    needs_rehash,
    opcua_method,
    require_mode,
    roles_of,
    verify_password,
)
from opcua_gds.testing import AppIdentity, connect, issue_app_identity
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.testing import foreign_engine, free_port, initialized_engine

# One probe server for the module (starting one is most of a test's time); its tests run on the module's event
# loop, and one that revokes a certificate revokes one of its own.
on_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    eng = initialized_engine(tmp_path_factory.mktemp("pki"))
    yield eng
    eng.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe_server(engine: Engine, tmp_path_factory: pytest.TempPathFactory
                       ) -> AsyncIterator[tuple[str, dict[str, AppIdentity]]]:
    tmp_path = tmp_path_factory.mktemp("probe")
    ids = {
        "server": issue_app_identity(engine, tmp_path / "certs", "gds", "urn:otpki:gds"),
        "scada": issue_app_identity(engine, tmp_path / "certs", "scada-1", "urn:plant:scada-1"),
        "operator": issue_app_identity(engine, tmp_path / "certs", "operator-token", "urn:plant:operator"),
    }
    config = AccessConfig(
        users=[PasswordUser(name="ca-admin", password_hash=hash_password("ca-admin-pw"),
                            roles=[GdsRole.CERTIFICATE_AUTHORITY_ADMIN]),
               PasswordUser(name="nobody", password_hash=hash_password("nobody-pw"), roles=[])],
        certificate_users=[CertificateUser(name="operator", roles=[GdsRole.REGISTRATION_AUTHORITY_ADMIN],
                                           certificate_sha256=hashlib.sha256(ids["operator"].cert_der).hexdigest())])
    call_context.install()
    server = Server(user_manager=GdsUserManager(config))
    await server.init()
    url = f"opc.tcp://127.0.0.1:{free_port()}/otpki"
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                ua.SecurityPolicyType.Basic256Sha256_Sign])
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken, ua.X509IdentityToken])
    await server.set_application_uri("urn:otpki:gds")
    await server.load_certificate(str(ids["server"].cert_path))
    await server.load_private_key(str(ids["server"].key_path))
    idx = await server.register_namespace("urn:otpki:test")
    obj = await server.nodes.objects.add_object(idx, "Probe")
    self_admin = SelfAdmin(engine)

    @opcua_method
    async def who_am_i(_parent: ua.NodeId) -> list[ua.Variant]:
        ctx = caller()
        require_mode(ctx, ua.MessageSecurityMode.SignAndEncrypt)
        roles = roles_of(ctx)
        owner = self_admin.owner_id(ctx)
        if not roles and owner is None:
            raise MethodError(ua.StatusCodes.BadUserAccessDenied, "no role and not the application itself")
        return [ua.Variant(",".join(sorted(roles)), ua.VariantType.String),
                ua.Variant(owner or "", ua.VariantType.String)]

    await obj.add_method(idx, "WhoAmI", who_am_i, [], [ua.VariantType.String, ua.VariantType.String])
    await server.start()
    try:
        yield url, ids
    finally:
        await server.stop()


async def _who(client, url: str) -> list[str]:  # type: ignore[no-untyped-def]
    idx = await client.get_namespace_index("urn:otpki:test")
    obj = await client.nodes.objects.get_child(f"{idx}:Probe")
    return await obj.call_method(f"{idx}:WhoAmI")


@on_module_loop
async def test_password_user_roles_reach_the_method(probe_server) -> None:  # type: ignore[no-untyped-def]
    url, ids = probe_server
    client = await connect(url, ids["scada"], username="ca-admin", password="ca-admin-pw")
    try:
        roles, owner = await _who(client, url)
    finally:
        await client.disconnect()
    assert roles == "CertificateAuthorityAdmin"
    assert owner == ids["scada"].owner_id  # the channel also proves the application (SelfAdmin)


@on_module_loop
async def test_x509_user_token_roles(probe_server) -> None:  # type: ignore[no-untyped-def]
    url, ids = probe_server
    client = await connect(url, ids["scada"], user_cert=ids["operator"])
    try:
        roles, _owner = await _who(client, url)
    finally:
        await client.disconnect()
    assert roles == "RegistrationAuthorityAdmin"


@on_module_loop
async def test_wrong_password_is_refused_at_activation(probe_server) -> None:  # type: ignore[no-untyped-def]
    url, ids = probe_server
    with pytest.raises(BadUserAccessDenied):
        await connect(url, ids["scada"], username="ca-admin", password="guess")


@on_module_loop
async def test_anonymous_with_self_admin_channel(probe_server, engine: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, _ids = probe_server
    scada = issue_app_identity(engine, tmp_path / "certs", "scada-2", "urn:plant:scada-2")  # revoked below
    client = await connect(url, scada)
    try:
        roles, owner = await _who(client, url)
        assert (roles, owner) == ("", scada.owner_id)
        # Revoking the application's certificate takes the privilege away on the very next call.
        serial = engine.inventory.by_fingerprint(hashlib.sha256(scada.cert_der).hexdigest())
        assert serial is not None
        engine.authority.revoke(serial.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
        with pytest.raises(BadUserAccessDenied):
            await _who(client, url)
    finally:
        await client.disconnect()


@on_module_loop
async def test_user_without_role_and_foreign_certificate_is_denied(probe_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, _ids = probe_server
    # A certificate the engine did not issue (another engine): no SelfAdmin, and "nobody" has no role.
    other = foreign_engine(tmp_path / "other")
    stranger = issue_app_identity(other, tmp_path / "other-certs", "stranger", "urn:plant:stranger")
    other.close()
    client = await connect(url, stranger, username="nobody", password="nobody-pw")
    try:
        with pytest.raises(BadUserAccessDenied):
            await _who(client, url)
    finally:
        await client.disconnect()


@on_module_loop
async def test_sign_only_channel_is_insufficient(probe_server) -> None:  # type: ignore[no-untyped-def]
    url, ids = probe_server
    client = await connect(url, ids["scada"], mode=ua.MessageSecurityMode.Sign, username="ca-admin",
                           password="ca-admin-pw")
    try:
        with pytest.raises(BadSecurityModeInsufficient):
            await _who(client, url)
    finally:
        await client.disconnect()


def test_password_hashes_are_argon2id_at_owasp_minimum() -> None:
    stored = hash_password("s3cret")
    params = argon2.extract_parameters(stored)
    assert params.type is argon2.Type.ID and "s3cret" not in stored
    # OWASP Password Storage Cheat Sheet, argon2id minimum: 19 MiB, 2 iterations, 1 degree of parallelism.
    assert (params.memory_cost, params.time_cost, params.parallelism) >= (19 * 1024, 2, 1)
    assert verify_password("s3cret", stored)
    assert not verify_password("S3cret", stored)
    assert not verify_password("s3cret", "garbage")
    assert hash_password("s3cret") != stored  # salted
    assert not needs_rehash(stored)


def _hash_with(**params: object) -> str:
    return argon2.PasswordHasher(**params).hash("s3cret")  # type: ignore[arg-type]


# Explicit ids: a hash carries a random salt, and every pytest-xdist worker must collect the same test names.
@pytest.mark.parametrize(("stored", "message"), [
    (_hash_with(memory_cost=8, time_cost=1, parallelism=1), "below otpki's floor"),
    (_hash_with(memory_cost=19 * 1024, time_cost=1, parallelism=1), "below otpki's floor"),
    (_hash_with(memory_cost=8192, time_cost=2, parallelism=1), "below otpki's floor"),
    (_hash_with(memory_cost=19 * 1024, time_cost=2, parallelism=1, type=argon2.Type.I), "otpki needs argon2id"),
    ("scrypt$16384$8$1$c2FsdA==$ZGlnZXN0", "scrypt hash of an earlier otpki"),
    ("s3cret", "not an argon2id password hash"),
], ids=["argon2id-m8-t1", "argon2id-m19MiB-t1", "argon2id-m8MiB-t2", "argon2i", "scrypt", "plain-text"])
def test_weak_or_foreign_hash_is_refused_at_config_load(stored: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        PasswordUser(name="ca-admin", password_hash=stored)
    assert "otpki users hash-password" in str(refused.value)


def test_config_file_with_a_weak_hash_fails_to_load(tmp_path: Path) -> None:
    from otpki.config import read_file_settings
    from trustlists.errors import InvalidInput

    weak = _hash_with(memory_cost=8, time_cost=1, parallelism=1)
    config = tmp_path / "otpki.toml"
    config.write_text(f'[[gds.access.users]]\nname = "registrar"\npassword_hash = "{weak}"\n')
    with pytest.raises(InvalidInput, match=r"\[\[gds\.access\.users\]\] #1 password_hash: .*below otpki's floor"):
        read_file_settings(config)


def test_rehash_check_on_login_is_reported_once_and_by_doctor(caplog: pytest.LogCaptureFixture) -> None:
    from opcua_gds import access
    from otpki.doctor import check_gds_password_hashes

    stronger = _hash_with(memory_cost=65536, time_cost=3, parallelism=4)  # above the floor, not otpki's
    current = hash_password("s3cret")
    assert needs_rehash(stronger) and not needs_rehash(current)
    logins = access.VerifiedLogins(ttl_s=0)  # no cache: every check is a full one
    with caplog.at_level("WARNING", logger="opcua_gds.access"):
        assert logins.check("alice", "s3cret", stronger) and logins.check("alice", "s3cret", stronger)
        assert not logins.check("alice", "wrong", stronger)
        assert logins.check("bob", "s3cret", current)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "'alice'" in warnings[0] and "otpki users hash-password" in warnings[0]
    users = [PasswordUser(name="alice", password_hash=stronger), PasswordUser(name="bob", password_hash=current)]
    assert [(f.subject, f.level) for f in check_gds_password_hashes(users)] == [("alice", "warn"), ("bob", "ok")]


def test_wrong_password_and_unknown_user_pay_a_full_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    from opcua_gds import access

    calls: list[str] = []
    real = access._HASHER

    class Counting(argon2.PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append(str(password))
            return real.verify(hash, password)

    monkeypatch.setattr(access, "_HASHER", Counting(time_cost=real.time_cost, memory_cost=real.memory_cost,
                                                     parallelism=real.parallelism))
    manager = GdsUserManager(AccessConfig(users=[PasswordUser(name="ca-admin", password_hash=hash_password("pw"))]))
    assert manager.get_user(None, username="ca-admin", password="pw").authenticated  # type: ignore[union-attr]
    assert manager.get_user(None, username="ca-admin", password="pw").authenticated  # type: ignore[union-attr]
    assert calls == ["pw"]  # the second success came from the cache
    for _ in range(3):
        assert manager.get_user(None, username="ca-admin", password="guess") is None
    assert calls == ["pw", "guess", "guess", "guess"]  # every wrong guess costs the full argon2id
    assert manager.get_user(None, username="ghost", password="guess") is None
    assert calls[-1] == "guess" and len(calls) == 5  # an unknown name costs one too (no user enumeration)


def test_verified_logins_skip_the_hash_only_for_a_recent_identical_success(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from opcua_gds import access

    calls: list[str] = []
    real = access.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(access, "verify_password", counting)
    stored = access.hash_password("right")
    logins = access.VerifiedLogins(ttl_s=60)
    assert logins.check("alice", "right", stored) and logins.check("alice", "right", stored)
    assert calls == ["right"]  # the second success came from the cache
    assert not logins.check("alice", "wrong", stored) and not logins.check("alice", "wrong", stored)
    assert calls == ["right", "wrong", "wrong"]  # failures are never cached
    assert logins.check("alice", "right", stored) and len(calls) == 3
    rotated = access.hash_password("right")  # the operator re-hashed the password: verify again
    assert logins.check("alice", "right", rotated) and len(calls) == 4
    expired = access.VerifiedLogins(ttl_s=0)
    assert expired.check("bob", "right", stored) and expired.check("bob", "right", stored) and len(calls) == 6
