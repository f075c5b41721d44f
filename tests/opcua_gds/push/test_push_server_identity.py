"""The push client authenticates the PLC before it hands over anything, against real asyncua servers.

Every impostor here is a real PLC simulator (same production push-management code) at the target's address,
configured with the same admin login and, where it matters, the same ApplicationUri: if the push client sent
its password, the impostor would accept it and the push would go through. Each impostor's user manager
records the logins it receives, which proves the password never reached it.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.own_identity import ensure_identity
from opcua_gds.push.client import PushError, push_certificate
from opcua_gds.push.rollout import KIND, Rollout, TargetOutcome
from opcua_gds.push.server_identity import TargetServerIdentity
from simulators.plc import PlcSimulator
from simulators.plc_faults import PlcFaults
from trustlists.engine import Engine
from trustlists.models import RevocationReason
from trustlists.targets import PinSource, TargetState
from trustlists.testing import Clock, free_port, initialized_engine

ACCESS = AccessConfig(users=[PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"),
                                          roles=[GdsRole.SECURITY_ADMIN])])
LATER = timedelta(hours=2)  # past any backoff


def sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class LoginRecorder:
    """Wraps a server's user manager and keeps every login it is asked to check (ActivateSession)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.logins: list[tuple[str | None, str | None]] = []

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        self.logins.append((username, password))
        return self.inner.get_user(iserver, username=username, password=password, certificate=certificate)


def record_logins(plc: PlcSimulator) -> list[tuple[str | None, str | None]]:
    assert plc.server is not None
    recorder = LoginRecorder(plc.server.iserver.user_manager)
    plc.server.iserver.set_user_manager(recorder)
    return recorder.logins


def presented(plc: PlcSimulator) -> bytes:
    assert plc.server is not None
    return plc.server.iserver.certificate.public_bytes(Encoding.DER)


class Site:
    """An engine, otpki's push identity and a rollout; PLCs (real or not) started at target addresses."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.clock = Clock()
        self.engine: Engine = initialized_engine(tmp_path / "pki", clock=self.clock)
        self.cert, self.key = ensure_identity(self.engine, tmp_path / "push-own", name="otpki-push",
                                              application_uri="urn:otpki:push", host="localhost")
        self.rollout = Rollout(self.engine, client_cert_path=self.cert, client_key_path=self.key,
                               client_app_uri="urn:otpki:push", credentials=lambda _ref: ("plc-admin", "plc-admin-pw"),
                               concurrency=4, reconnect_attempts=10, reconnect_delay_s=0.3, timeout_s=60)
        self.running: list[PlcSimulator] = []

    def register(self, name: str, endpoint: str, *, pin: str | None = None) -> str:
        owner = self.engine.registry.register(group="opcua-application", name=name,
                                              application_uri=f"urn:otpki:plc:{name}", dns_names=["localhost"],
                                              ip_addresses=["127.0.0.1"], actor="test")
        return self.engine.targets.add(owner_id=owner.id, kind=KIND, address=endpoint, credentials_ref="plc",
                                       actor="test", pin_sha256=pin).id

    async def start(self, name: str, endpoint: str, pki: str, *, uri_of: str | None = None,
                    faults: PlcFaults | None = None) -> PlcSimulator:
        """A PLC simulator named `name` at `endpoint` with its PKI folder `pki`; `uri_of` gives it another PLC's
        ApplicationUri (an impostor claiming to be that PLC)."""
        plc = PlcSimulator(name, endpoint, self.tmp / pki, ACCESS, faults=faults,
                           application_uri=f"urn:otpki:plc:{uri_of or name}")
        await plc.start()
        self.running.append(plc)
        return plc

    async def stop(self, plc: PlcSimulator) -> None:
        await plc.stop()
        self.running.remove(plc)

    async def push(self, target_id: str, *, force: bool = False) -> TargetOutcome:
        self.clock.now += LATER
        address = self.engine.targets.get(target_id).address
        report = await self.rollout.run(address=address, force=force)
        assert report.attempted == 1, report
        return report.outcomes[0]

    def issued_to(self, target_id: str) -> list[str]:
        owner_id = self.engine.targets.get(target_id).owner_id
        return [r.serial for r in self.engine.inventory.query(owner_id=owner_id)]

    async def close(self) -> None:
        for plc in list(self.running):
            await plc.stop()
        self.engine.close()


@pytest.fixture
async def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Site(tmp_path)
    try:
        yield s
    finally:
        await s.close()


async def test_first_contact_pins_and_an_impostor_gets_no_login(site: Site) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/plc"
    target = site.register("press-1", endpoint)
    # The first push reaches the real PLC and fails later (its first CSR is refused): the pin stays.
    real = await site.start("press-1", endpoint, "press-1", faults=PlcFaults(refuse_csr=1))
    factory = presented(real)
    shutil.copytree(site.tmp / "press-1", site.tmp / "press-1-factory")  # its factory state, for later
    first = await site.push(target)
    assert not first.ok and first.error is not None and first.error.startswith("create_signing_request:")
    assert first.first_contact_sha256 == sha256(factory)  # reported, for the operator to compare
    pin = site.engine.targets.get(target).pin
    assert pin is not None and (pin.fingerprint_sha256, pin.source) == (sha256(factory), PinSource.FIRST_CONTACT)
    assert [r.details["sha256"] for r in site.engine.audit_records(action="target.pin")] == [sha256(factory)]
    await site.stop(real)

    # An impostor answers at the PLC's address: same ApplicationUri, same admin login, its own certificate.
    impostor = await site.start("impostor", endpoint, "impostor", uri_of="press-1")
    logins = record_logins(impostor)
    refused = await site.push(target)
    assert logins == []  # not even a session: the password never left
    assert not refused.ok and refused.error is not None
    assert refused.error.startswith("server_identity: BadCertificateUntrusted"), refused.error
    assert sha256(presented(impostor)) in refused.error and refused.first_contact_sha256 is None
    listed = site.engine.targets.get(target)
    assert listed.state is TargetState.RETRYING and listed.last_error == refused.error
    assert listed.pin == pin  # a later contact never re-pins
    assert site.issued_to(target) == []  # and nothing was issued from an impostor's CSR
    await site.stop(impostor)

    # The real PLC is back: the push goes through, and the factory pin is released with the delivery.
    real = await site.start("press-1", endpoint, "press-1")
    delivered = await site.push(target)
    assert delivered.ok, delivered.error
    after = site.engine.targets.get(target)
    assert after.pin is None and after.delivered_serial == delivered.serial
    assert sha256(presented(real)) == site.engine.inventory.get(delivered.serial).fingerprint_sha256
    await site.stop(real)

    # From now on the engine certificate is required: the PLC's own factory certificate no longer counts (a
    # device reset to factory state, or a copy of its factory identity).
    reset = await site.start("press-1", endpoint, "press-1-factory")
    assert presented(reset) == factory
    logins = record_logins(reset)
    refused = await site.push(target, force=True)
    assert logins == []
    assert refused.error is not None and refused.error.startswith("server_identity: BadCertificateUntrusted")
    assert "holds an engine certificate" in refused.error

    # The operator checks the reset device and re-pins it: the next push (due at once) gives it a certificate.
    site.engine.targets.repin(target, sha256(factory), actor="operator")
    due = site.engine.targets.needing_delivery(kind=KIND)
    assert [r for t, r in due if t.id == target] == ["re-pinned: the device needs a certificate"]
    report = await site.rollout.run(address=endpoint)
    assert report.delivered == 1, report
    assert logins and set(logins) == {("plc-admin", "plc-admin-pw")}  # the re-pinned device got the login
    assert site.engine.targets.get(target).pin is None
    assert site.engine.verify_audit().ok
    assert [r.details["sha256"] for r in site.engine.audit_records(action="target.repin")] == [sha256(factory)]


async def test_a_registered_pin_is_required_before_the_first_delivery(site: Site) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/plc"
    # The commissioning engineer reads the PLC's fingerprint from its display and registers it.
    real = await site.start("press-2", endpoint, "press-2")
    factory = presented(real)
    await site.stop(real)
    target = site.register("press-2", endpoint, pin=":".join(f"{b:02X}" for b in bytes.fromhex(sha256(factory))))

    impostor = await site.start("impostor", endpoint, "impostor", uri_of="press-2")
    logins = record_logins(impostor)
    refused = await site.push(target)
    assert logins == []
    assert refused.error is not None and refused.error.startswith("server_identity: BadCertificateUntrusted")
    assert "at registration" in refused.error
    pin = site.engine.targets.get(target).pin
    assert pin is not None and pin.source is PinSource.REGISTERED and pin.fingerprint_sha256 == sha256(factory)
    assert site.engine.audit_records(action="target.pin") == []  # no trust on first use with a registered pin
    await site.stop(impostor)

    real = await site.start("press-2", endpoint, "press-2")
    delivered = await site.push(target)
    assert delivered.ok and delivered.first_contact_sha256 is None, delivered.error


async def test_an_engine_certificate_of_another_owner_or_a_revoked_one_gets_no_login(site: Site) -> None:
    a_endpoint, b_endpoint = (f"opc.tcp://127.0.0.1:{free_port()}/plc" for _ in range(2))
    a, b = site.register("press-a", a_endpoint), site.register("press-b", b_endpoint)
    real_a = await site.start("press-a", a_endpoint, "press-a")
    real_b = await site.start("press-b", b_endpoint, "press-b")
    report = await site.rollout.run()
    assert report.delivered == 2, report
    await site.stop(real_a)
    await site.stop(real_b)

    # At press-a's address: a box with press-b's genuine engine identity (key, certificate, trust list), which
    # validates against the group's trust list and trusts otpki's push client. It names press-a's URI.
    shutil.copytree(site.tmp / "press-b", site.tmp / "stolen-b")
    impostor = await site.start("press-b", a_endpoint, "stolen-b", uri_of="press-a")
    logins = record_logins(impostor)
    refused = await site.push(a, force=True)
    assert logins == []
    assert refused.error is not None and refused.error.startswith("server_identity: server_identity_mismatch")
    assert "'press-b'" in refused.error and "'press-a'" in refused.error
    await site.stop(impostor)

    # press-a's own engine certificate, revoked (its key was compromised): refused with the validator's code.
    real_a = await site.start("press-a", a_endpoint, "press-a")
    logins = record_logins(real_a)
    serial = site.engine.targets.get(a).delivered_serial
    assert serial is not None
    site.engine.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
    refused = await site.push(a)
    assert logins == []
    assert refused.error is not None and refused.error.startswith("server_identity: BadCertificateRevoked")
    assert b in {t.id for t in site.engine.targets.list()}  # press-b's target is untouched by all of this


async def test_a_server_that_takes_over_during_the_push_gets_no_login(site: Site) -> None:
    """After UpdateCertificate the push reconnects to find out what the PLC kept: only the certificate it
    accepted first or the one just installed may answer then."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/plc"
    target = site.register("press-3", endpoint)
    real = await site.start("press-3", endpoint, "press-3")
    owner_id = site.engine.targets.get(target).owner_id
    impostors: list[PlcSimulator] = []

    async def issue(csr: bytes) -> tuple[bytes, list[bytes]]:
        issued = site.engine.authority.issue_from_csr(csr, owner_id=owner_id, actor="test", delivered=False)
        # The real PLC goes away mid-push and something else takes its address.
        await site.stop(real)
        impostor = await site.start("impostor", endpoint, "impostor", uri_of="press-3")
        record_logins(impostor)
        impostors.append(impostor)
        return issued.certificate_der, issued.chain_der[:-1]

    identity = TargetServerIdentity(site.engine, target, actor="test")
    with pytest.raises(PushError) as err:
        await push_certificate(endpoint, client_cert_path=site.cert, client_key_path=site.key,
                               client_app_uri="urn:otpki:push", username="plc-admin", password="plc-admin-pw",
                               server_check=identity, issue=issue, reconnect_attempts=5, reconnect_delay_s=0.2)
    assert impostors and not impostors[0].server.iserver.user_manager.logins  # type: ignore[union-attr]
    assert err.value.step == "update_certificate" and "another server answers at the endpoint" in str(err.value)
    assert sha256(presented(impostors[0])) in str(err.value)
    assert identity.accepted is not None and identity.accepted.first_contact is not None
