"""A PLC simulator: an asyncua server managed by PUSH (OPC 10000-12 7.10), as a shop-floor PLC is.

It ships with a factory self-signed certificate and an empty trust list (so the configured SecurityAdmin
can push the first trust list: trust_on_first_push), exposes a few process variables (Temperature,
Pressure, MotorRunning under Objects/PLC), and gets its certificate and trust list from a push client
through `opcua_gds.push.target`. Everything lives in its PKI folder, so a restarted PLC keeps what was
pushed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlparse

from asyncua import Server, ua

from opcua_gds import _asyncua_compat as asyncua_compat
from opcua_gds.access import AccessConfig, GdsUserManager
from opcua_gds.push.target import PushManagement, install_push_management
from opcua_gds.push.target.certs import key_to_pem, self_signed
from opcua_gds.push.target.state import PushState
from simulators.plc_faults import PlcFaults, install_faults
from trustlists.blocking import run_blocking

PLC_NAMESPACE = "urn:otpki:simulators:plc"


class PlcSimulator:
    def __init__(self, name: str, endpoint: str, pki_dir: Path, access: AccessConfig | None = None, *,
                 application_uri: str | None = None, trust_on_first_push: bool = True,
                 max_trust_list_size: int = 65536, can_generate_keys: bool = True, push_management: bool = True,
                 faults: PlcFaults | None = None) -> None:
        self.name = name
        self.endpoint = endpoint
        self.pki_dir = Path(pki_dir)
        self.access = access
        self.application_uri = application_uri or f"urn:otpki:plc:{name}"
        self.trust_on_first_push = trust_on_first_push
        self.max_trust_list_size = max_trust_list_size
        self.can_generate_keys = can_generate_keys
        self.push_management = push_management  # False: an older PLC that cannot be managed by push at all
        self.faults = faults
        self.server: Server | None = None
        self.push: PushManagement | None = None

    def _factory_identity(self) -> tuple[bytes, bytes] | None:
        """A new self-signed certificate and key, unless the PKI folder already holds an identity."""
        if PushState.load(self.pki_dir) is not None:
            return None
        host = urlparse(self.endpoint).hostname or "localhost"
        der, key = self_signed(self.name, self.application_uri, sorted({host, "localhost"}))
        return der, key_to_pem(key)

    async def start(self) -> None:
        # With push management, install_push_management sets the user manager; an older PLC without it still
        # checks its users.
        users = GdsUserManager(self.access) if self.access is not None and not self.push_management else None
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(self.name)
        await server.set_application_uri(self.application_uri)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                    ua.SecurityPolicyType.Basic256Sha256_Sign])
        factory = await run_blocking(self._factory_identity)
        if factory is not None:
            await server.load_certificate(factory[0], format="der")
            await server.load_private_key(factory[1], format="pem")
        idx = await server.register_namespace(PLC_NAMESPACE)
        plc = await server.nodes.objects.add_object(idx, "PLC")
        await plc.add_variable(idx, "Temperature", 21.5)
        await plc.add_variable(idx, "Pressure", 1.013)
        await plc.add_variable(idx, "MotorRunning", False)
        if self.push_management:
            self.push = await install_push_management(
                server, pki_dir=self.pki_dir, access=self.access, max_trust_list_size=self.max_trust_list_size,
                trust_on_first_push=self.trust_on_first_push, server_capabilities=["DA"],
                can_generate_keys=self.can_generate_keys)
            if self.faults is not None:
                install_faults(server, self.faults)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await asyncua_compat.stop_server(self.server)
            self.server = None

    @property
    def certificate_der(self) -> bytes:
        assert self.push is not None
        return self.push.certificate_der


async def start_plant(n: int, base_port: int, root: Path, access: AccessConfig | None = None, *,
                      host: str = "127.0.0.1", prefix: str = "plc", first: int = 1) -> list[PlcSimulator]:
    """N PLCs on consecutive ports base_port.., each with its own PKI folder under `root`.

    They are named `{prefix}-{first}`, `{prefix}-{first + 1}`, ...: several plant processes can share one
    naming scheme (the demo runs plc-1..plc-50 in one process, plc-51..plc-100 in the next).
    """
    names = [f"{prefix}-{first + i}" for i in range(n)]
    plcs = [PlcSimulator(name, f"opc.tcp://{host}:{base_port + i}/plc", Path(root) / name, access)
            for i, name in enumerate(names)]
    try:
        await asyncio.gather(*(plc.start() for plc in plcs))
    except BaseException:
        await asyncio.gather(*(plc.stop() for plc in plcs), return_exceptions=True)
        raise
    return plcs
