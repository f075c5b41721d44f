"""First contact with only the root trusted (issue 12 §2): a node-opcua client against the GDS and a pushed PLC.

The client (tests/interop/node_opcua/chain_client.js) holds the plant root and the CRLs, nothing else. It reads
the server's certificate chain from GetEndpoints with node-opcua, validates it with OpenSSL against the root and
the CRLs (node-opcua's own PKI cannot trust through a CA it does not hold itself: see the script), then opens a
SignAndEncrypt session with node-opcua, sending its own certificate with its issuing CA after it. For
comparison it validates the leaf alone the same way: what a server presenting no chain would give it,
BadCertificateChainIncomplete.

The pushed PLC trusts only the root as well (a root-only trust list pushed after its certificate): it presents
the issuing CA it was given with its certificate, and accepts node-opcua's session only because node-opcua
sends its issuing CA after its certificate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.access import AccessConfig, GdsRole, PasswordUser, hash_password
from opcua_gds.push.client import expect_certificate, fingerprint, push_certificate, push_trust_list
from opcua_gds.testing import AppIdentity, issue_app_identity
from simulators.plc import PlcSimulator
from tests.interop.conftest import NODE_DIR
from tests.opcua_gds.gds.gds_fixture import running_gds
from trustlists.engine import Engine
from trustlists.models import TrustListContent, TrustListMask
from trustlists.testing import free_port, make_engine

CHAIN_CLIENT = NODE_DIR / "chain_client.js"
CLIENT_TIMEOUT_S = 90.0
GROUP = "opcua-application"
PLC_ACCESS = AccessConfig(users=[
    PasswordUser(name="plc-admin", password_hash=hash_password("plc-admin-pw"), roles=[GdsRole.SECURITY_ADMIN]),
    PasswordUser(name="operator", password_hash=hash_password("operator-pw"), roles=[])])


def root_only_pki(engine: Engine, folder: Path) -> Path:
    """A client PKI folder with the root in trusted/certs and every CRL of the hierarchy in trusted/crl."""
    content = engine.trustlists.get(GROUP).content
    roots = [der for der in content.issuer_certificates
             if (c := x509.load_der_x509_certificate(der)).issuer == c.subject]
    assert roots and not set(roots) & set(content.trusted_certificates)
    (folder / "trusted" / "certs").mkdir(parents=True)
    (folder / "trusted" / "crl").mkdir(parents=True)
    for i, der in enumerate(roots):
        (folder / "trusted" / "certs" / f"root{i}.der").write_bytes(der)
    for i, der in enumerate([*content.trusted_crls, *content.issuer_crls]):
        (folder / "trusted" / "crl" / f"ca{i}.crl").write_bytes(der)
    return folder


def root_only_trust_list(engine: Engine) -> TrustListContent:
    """The group's roots as the only trusted certificates, with every CRL of the hierarchy."""
    content = engine.trustlists.get(GROUP).content
    roots = [der for der in content.issuer_certificates
             if (c := x509.load_der_x509_certificate(der)).issuer == c.subject]
    return TrustListContent(specified_lists=int(TrustListMask.ALL), trusted_certificates=roots,
                            trusted_crls=[*content.trusted_crls, *content.issuer_crls])


def client_with_chain(engine: Engine, folder: Path) -> tuple[Path, Path]:
    """An engine-issued client certificate as a PEM bundle (leaf, then its issuing CA) and its key."""
    app = issue_app_identity(engine, folder, "node-chain-client", "urn:otpki:interop:node-chain-client")
    issuing_ca = engine.hierarchy.issuing_ca_for(GROUP, None).certificate_der
    bundle = folder / "node-chain-client.chain.pem"
    bundle.write_bytes(b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM)
                                for d in (app.cert_der, issuing_ca)))
    return bundle, app.key_path


async def run_chain_client(endpoint: str, pki: Path, cert: Path, key: Path, *args: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        pytest.fail("node and node-opcua are needed (bash scripts/setup.sh installs them)")
    # Asynchronous: the server under test answers from this very event loop.
    proc = await asyncio.create_subprocess_exec(
        node, str(CHAIN_CLIENT), "--endpoint", endpoint, "--pki", str(pki), "--cert", str(cert), "--key", str(key),
        *args, cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLIENT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, \
        f"chain_client.js failed ({proc.returncode}):\n{out.decode()}\n{err.decode()}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def assert_first_contact(result: dict[str, Any], leaf: bytes, issuing_ca: bytes) -> None:
    chain = [base64.b64decode(c) for c in result["endpoint_chain"]]
    assert chain == [leaf, issuing_ca], "the endpoint presents the certificate and its issuing CA"
    assert result["leaf_alone_status"] == "BadCertificateChainIncomplete", result["openssl"]["leaf"]
    assert result["chain_status"] == "Good", result["openssl"]["chain"]
    assert result["session"].get("status") == "Good", result["session"]
    assert result["session"]["value"] == 0  # ServerStatus.State: Running


async def test_a_client_trusting_only_the_root_connects_to_the_gds(tmp_path: Path) -> None:
    async for env in running_gds(tmp_path):
        pki = root_only_pki(env.engine, tmp_path / "node-pki")
        cert, key = client_with_chain(env.engine, tmp_path / "node-client")
        result = await run_chain_client(env.url, pki, cert, key)
        gds_leaf = (tmp_path / "gds" / "own" / "otpki-gds.der").read_bytes()
        issuing_ca = env.engine.hierarchy.issuing_ca_for(GROUP, None).certificate_der
        assert_first_contact(result, gds_leaf, issuing_ca)


async def test_a_client_trusting_only_the_root_connects_to_a_pushed_plc(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "pki")
    engine.hierarchy.initialize(actor="test")
    pusher: AppIdentity = issue_app_identity(engine, tmp_path / "certs", "otpki-push", "urn:otpki:push")
    plc = PlcSimulator("plc-9", f"opc.tcp://127.0.0.1:{free_port()}/plc", tmp_path / "plc-pki", PLC_ACCESS)
    owner = engine.registry.register(group=GROUP, name="plc-9", application_uri=plc.application_uri,
                                     dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor="test")
    await plc.start()
    try:
        assert plc.push is not None
        factory = plc.push.certificate_der

        async def issue(csr: bytes) -> tuple[bytes, list[bytes]]:
            issued = engine.authority.issue_from_csr(csr, owner_id=owner.id, actor="push", delivered=False)
            return issued.certificate_der, issued.chain_der[:-1]

        issuing_ca = engine.hierarchy.issuing_ca_for(GROUP, None).certificate_der
        pusher_chain = tmp_path / "certs" / "otpki-push.chain.der"  # sent with its CA, as `otpki push` does
        pusher_chain.write_bytes(pusher.cert_der + issuing_ca)
        common: dict[str, Any] = {"client_cert_path": pusher_chain, "client_key_path": pusher.key_path,
                                  "client_app_uri": pusher.application_uri, "username": "plc-admin",
                                  "password": "plc-admin-pw"}
        pushed = await push_certificate(plc.endpoint, **common, issue=issue,
                                        trust_list=engine.trustlists.get(GROUP).content,
                                        server_check=expect_certificate(fingerprint(factory)))
        assert pushed.certificate_presented and pushed.trust_list_applied is True
        # Then the PLC, too, trusts only the root (and holds the CRLs): the client must send its chain, and the
        # PLC presents the issuing CA it was given with its certificate.
        root_only = root_only_trust_list(engine)
        await push_trust_list(plc.endpoint, **common, trust_list=root_only,
                              server_check=expect_certificate(fingerprint(plc.certificate_der)))
        assert issuing_ca not in plc.push.trust_list.trusted_certificates + plc.push.trust_list.issuer_certificates

        pki = root_only_pki(engine, tmp_path / "node-pki")
        cert, key = client_with_chain(engine, tmp_path / "node-client")
        result = await run_chain_client(plc.endpoint, pki, cert, key, "--user", "operator", "--password",
                                        "operator-pw")
        assert_first_contact(result, plc.certificate_der, issuing_ca)
    finally:
        await plc.stop()
        engine.close()
