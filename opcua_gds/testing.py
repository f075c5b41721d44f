"""Support for OPC UA tests and benchmarks: engine-issued application identities and secure client sessions.

Shared by `tests/` and `bench/`; engines and free ports are in `trustlists.testing`, this module adds only what needs
asyncua.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.engine import Engine
from trustlists.models import KeyType


@dataclass(frozen=True)
class AppIdentity:
    name: str
    application_uri: str
    owner_id: str
    cert_path: Path
    key_path: Path
    cert_der: bytes


def issue_app_identity(engine: Engine, directory: Path, name: str, uri: str, *,
                       key_type: KeyType = KeyType.RSA2048) -> AppIdentity:
    """Register an OPC UA application and give it an engine-issued certificate and key on disk."""
    owner = engine.registry.find("opcua-application", name=name) or engine.registry.register(
        group="opcua-application", name=name, application_uri=uri, dns_names=["localhost"],
        ip_addresses=["127.0.0.1"], actor="test")
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor="test", key_type=key_type)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.der"
    key_path = directory / f"{name}.key.pem"
    cert_path.write_bytes(issued.certificate_der)
    assert issued.private_key is not None
    key_path.write_bytes(issued.private_key)
    return AppIdentity(name, uri, owner.id, cert_path, key_path, issued.certificate_der)


def user_certificate_pem(cert_der: bytes) -> bytes:
    return x509.load_der_x509_certificate(cert_der).public_bytes(Encoding.PEM)


async def connect(url: str, app: AppIdentity, *, mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
                  username: str | None = None, password: str | None = None,
                  user_cert: AppIdentity | None = None) -> Client:
    # asyncua's health probe (every watchdog_intervall, default 1 s) marks the client disconnected when the server
    # is busy for just over a second, as servers are when tests run in parallel; give it the request timeout,
    # as opcua_gds.client_session does for the product's own sessions.
    client = Client(url, timeout=10, watchdog_intervall=10)
    client.application_uri = app.application_uri
    await client.set_security(SecurityPolicyBasic256Sha256, str(app.cert_path), str(app.key_path), mode=mode)
    if username is not None:
        client.set_user(username)
        client.set_password(password or "")
    if user_cert is not None:
        await client.load_client_certificate(str(user_cert.cert_path))
        await client.load_private_key(user_cert.key_path)
    await client.connect()
    return client
