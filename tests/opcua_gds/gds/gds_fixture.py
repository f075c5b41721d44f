"""A running GDS on a free loopback port, with users of every role, for the OPC UA tests."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.gds.context import Installer
from opcua_gds.gds.server import GdsServer
from opcua_gds.gds.settings import GdsSettings
from trustlists.engine import Engine
from trustlists.policy import PkiConfig
from trustlists.testing import free_port, initialized_engine

PASSWORDS = {
    "discovery-admin": ("discovery-pw", [GdsRole.DISCOVERY_ADMIN]),
    "ca-admin": ("ca-pw", [GdsRole.CERTIFICATE_AUTHORITY_ADMIN]),
    "ra-admin": ("ra-pw", [GdsRole.REGISTRATION_AUTHORITY_ADMIN]),
    "security-admin": ("security-pw", [GdsRole.SECURITY_ADMIN]),
    "no-role": ("no-role-pw", []),
    # A commissioning account: registers applications and signs their first certificate.
    "registrar": ("registrar-pw", [GdsRole.DISCOVERY_ADMIN, GdsRole.CERTIFICATE_AUTHORITY_ADMIN]),
}


@dataclass
class RunningGds:
    gds: GdsServer
    engine: Engine
    url: str
    tmp: Path


@functools.cache
def access_config() -> AccessConfig:
    """Argon2 hashes are slow on purpose: made once per process, not for every GDS a test starts."""
    return AccessConfig(users=[PasswordUser(name=n, password_hash=hash_password(pw), roles=roles)
                               for n, (pw, roles) in PASSWORDS.items()])


async def running_gds(tmp: Path, installers: list[Installer] | None = None, *,
                      config: PkiConfig | None = None) -> AsyncIterator[RunningGds]:
    engine = initialized_engine(tmp / "pki", config=config)
    settings = GdsSettings(endpoint=f"opc.tcp://127.0.0.1:{free_port()}/otpki/gds", access=access_config())
    gds = GdsServer(engine, settings, tmp / "gds", installers=installers)
    await gds.start()
    try:
        yield RunningGds(gds=gds, engine=engine, url=settings.endpoint, tmp=tmp)
    finally:
        await gds.stop()
        engine.close()
