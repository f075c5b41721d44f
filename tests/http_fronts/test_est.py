"""EST (RFC 7030) against a real `otpki serve` over HTTPS, driven by clients that are not ours: curl (client
certificates, HTTP Basic, base64 CSR bodies) and openssl (base64 -d, pkcs7 -print_certs, verify, asn1parse, pkey).

No EST client can be installed from the registries this machine reaches (`apt-cache policy libest`: no such
package; the PyPI index offers no RFC 7030 client), so curl + openssl speak the protocol by the RFC.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import HTTP
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from simulators.manufacturer import Manufacturer
from tests.http_fronts.est_plant import (
    REGISTRAR,
    REGISTRAR_PASSWORD,
    EstServer,
    b64_file,
    est_server,
    idevid_files,
    write_pem,
)
from trustlists.models import RevocationReason
from trustlists.passwords import hash_password
from trustlists.testing import make_csr, make_engine, new_key

MAKER = Manufacturer.create("ACME Devices")
OTHER_MAKER = Manufacturer.create("Rogue Devices")  # never imported: a foreign CA
IDEVIDS = {name: MAKER.issue_idevid(f"SN-{name}") for name in ("hmi-1", "hmi-2", "gw-1", "gw-2", "hmi-3")}


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, timeout=60, check=False)


def openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], capture_output=True, timeout=60, check=False)


class Answer:
    def __init__(self, res: subprocess.CompletedProcess[bytes], body: Path, headers: Path) -> None:
        assert res.returncode == 0, res.stderr.decode()
        self.status = int(res.stdout.decode().strip())
        self.body_file = body
        self.body = body.read_bytes()
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in headers.read_text().splitlines() if ":" in line)}

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def est(server: EstServer, tmp: Path, path: str, *, csr: bytes | None = None, cert: Path | None = None,
        key: Path | None = None, user: str | None = None, body: Path | None = None) -> Answer:
    """One EST request with curl; `csr` (DER) goes as a base64 application/pkcs10 body."""
    out, headers = tmp / "answer.bin", tmp / "headers.txt"
    args = ["--cacert", str(server.root_pem), "-o", str(out), "-D", str(headers), "-w", "%{http_code}"]
    if cert is not None and key is not None:
        args += ["--cert", str(cert), "--key", str(key)]
    if user is not None:
        args += ["-u", user]
    if csr is not None or body is not None:
        data = body if body is not None else b64_file(tmp / "csr.b64", csr or b"")
        args += ["-H", "Content-Type: application/pkcs10", "-H", "Content-Transfer-Encoding: base64",
                 "--data-binary", f"@{data}"]
    return Answer(curl(*args, f"{server.url}/.well-known/est/{path}"), out, headers)


def certs_of(answer: Answer, tmp: Path, name: str) -> Path:
    """base64 certs-only CMS -> PEM certificates, by openssl alone."""
    assert answer.headers["content-type"].startswith("application/pkcs7-mime"), answer.headers
    der, pem = tmp / f"{name}.p7", tmp / f"{name}.pem"
    res = openssl("base64", "-d", "-in", str(answer.body_file), "-out", str(der))
    assert res.returncode == 0, res.stderr
    res = openssl("pkcs7", "-inform", "DER", "-in", str(der), "-print_certs", "-out", str(pem))
    assert res.returncode == 0, res.stderr
    return pem


def verify(server: EstServer, cacerts: Path, cert: Path) -> None:
    res = openssl("verify", "-CAfile", str(server.root_pem), "-untrusted", str(cacerts), str(cert))
    assert res.returncode == 0 and b": OK" in res.stdout, res.stdout + res.stderr


def csr_der(cn: str, key: object | None = None) -> bytes:
    return make_csr(cn, key=key, pem=False)  # type: ignore[arg-type]  # a private key of ours


def key_file(folder: Path, key: object) -> Path:
    return write_pem(folder / "op.key", key.private_bytes(  # type: ignore[attr-defined]  # an EC key
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstServer]:
    folder = tmp_path_factory.mktemp("est")
    devices = [(name, IDEVIDS[name]) for name in IDEVIDS] + [("plc-9", None)]
    with est_server(folder, manufacturer=MAKER, prepare=devices) as srv:
        yield srv


# -- cacerts, csrattrs ------------------------------------------------------------------------------------------

def test_cacerts_is_the_groups_chain_and_csrattrs_the_policy(server: EstServer, tmp_path: Path) -> None:
    answer = est(server, tmp_path, "cacerts")
    assert answer.status == 200 and answer.headers["content-transfer-encoding"] == "base64"
    pem = certs_of(answer, tmp_path, "cacerts")
    certs = x509.load_pem_x509_certificates(pem.read_bytes())
    subjects = {c.subject.rfc4514_string() for c in certs}
    root = x509.load_pem_x509_certificate(server.root_pem.read_bytes())
    assert root.subject.rfc4514_string() in subjects and len(certs) == 2, subjects
    issuing = next(c for c in certs if c.subject != root.subject)
    verify(server, server.root_pem, write_pem(tmp_path / "issuing.pem", issuing.public_bytes(Encoding.PEM).decode()))
    labelled = est(server, tmp_path, "hmi/cacerts")  # the label names the same group here
    assert labelled.status == 200 and labelled.body == answer.body
    assert est(server, tmp_path, "nolabel/cacerts").status == 404

    attrs = est(server, tmp_path, "csrattrs")
    assert attrs.status == 200 and attrs.headers["content-type"].startswith("application/csrattrs")
    der = tmp_path / "csrattrs.der"
    assert openssl("base64", "-d", "-in", str(attrs.body_file), "-out", str(der)).returncode == 0
    parsed = openssl("asn1parse", "-inform", "DER", "-in", str(der))
    assert parsed.returncode == 0, parsed.stderr
    for name in (b"commonName", b"Subject Alternative Name", b"id-ecPublicKey", b"prime256v1", b"ED25519"):
        assert name in parsed.stdout, parsed.stdout


# -- bootstrap, re-enroll ---------------------------------------------------------------------------------------

def test_idevid_enrolls_then_operational_certificate_reenrolls(server: EstServer, tmp_path: Path) -> None:
    cert, key = idevid_files(IDEVIDS["hmi-1"], tmp_path)
    cacerts = certs_of(est(server, tmp_path, "cacerts"), tmp_path, "cacerts")
    op_key = new_key()
    first = est(server, tmp_path, "simpleenroll", csr=csr_der("hmi-1", op_key), cert=cert, key=key)
    assert first.status == 200, first.text
    op_cert = certs_of(first, tmp_path, "op1")
    verify(server, cacerts, op_cert)
    issued = x509.load_pem_x509_certificate(op_cert.read_bytes())
    assert issued.subject.rfc4514_string() == "CN=hmi-1"
    eng = server.engine()
    try:
        pin = eng.bootstrap.pin(eng.registry.find("mqtt-device", name="hmi-1").id)  # type: ignore[union-attr]
        assert pin is not None and pin.fingerprint_sha256 == IDEVIDS["hmi-1"].sha256
    finally:
        eng.close()

    # Re-enroll with the operational certificate (and its key) as the TLS client certificate.
    new_op_key = new_key()
    second = est(server, tmp_path, "simplereenroll", csr=csr_der("hmi-1", new_op_key), cert=op_cert,
                 key=key_file(tmp_path, op_key))
    assert second.status == 200, second.text
    renewed = x509.load_pem_x509_certificate(certs_of(second, tmp_path, "op2").read_bytes())
    assert renewed.serial_number != issued.serial_number and renewed.subject == issued.subject
    verify(server, cacerts, tmp_path / "op2.pem")
    # The superseded certificate renews nothing any more.
    again = est(server, tmp_path, "simplereenroll", csr=csr_der("hmi-1"), cert=op_cert,
                key=key_file(tmp_path, op_key))
    assert again.status == 403, again.text


def test_serverkeygen_answers_key_and_certificate_as_multipart(server: EstServer, tmp_path: Path) -> None:
    cert, key = idevid_files(IDEVIDS["gw-1"], tmp_path)
    answer = est(server, tmp_path, "serverkeygen", csr=csr_der("gw-1"), cert=cert, key=key)
    assert answer.status == 200, answer.text
    content_type = answer.headers["content-type"]
    assert content_type.startswith("multipart/mixed") and "boundary=" in content_type
    message = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + answer.body, policy=HTTP)
    parts = {part.get_content_type(): part for part in message.iter_parts()}  # type: ignore[attr-defined]
    assert set(parts) == {"application/pkcs8", "application/pkcs7-mime"}
    key_der = tmp_path / "key.der"
    key_der.write_bytes(parts["application/pkcs8"].get_payload(decode=True))
    cert_b64 = tmp_path / "cert.b64"
    cert_b64.write_bytes(base64.encodebytes(parts["application/pkcs7-mime"].get_payload(decode=True)))
    p7 = tmp_path / "cert.p7"
    assert openssl("base64", "-d", "-in", str(cert_b64), "-out", str(p7)).returncode == 0
    res = openssl("pkcs7", "-inform", "DER", "-in", str(p7), "-print_certs", "-out", str(tmp_path / "gw.pem"))
    assert res.returncode == 0, res.stderr
    from_key = openssl("pkey", "-inform", "DER", "-in", str(key_der), "-pubout")
    from_cert = openssl("x509", "-in", str(tmp_path / "gw.pem"), "-pubkey", "-noout")
    assert from_key.returncode == 0 and from_key.stdout == from_cert.stdout, from_key.stderr
    assert b"CN=gw-1" in openssl("x509", "-in", str(tmp_path / "gw.pem"), "-noout", "-subject").stdout.replace(
        b" ", b"")


# -- refusals ---------------------------------------------------------------------------------------------------

def test_refusals_issue_nothing_and_change_no_registration(server: EstServer, tmp_path: Path) -> None:
    eng = server.engine()
    try:
        before = len(eng.audit_records(action="certificate.issue"))
    finally:
        eng.close()
    cert, key = idevid_files(IDEVIDS["hmi-2"], tmp_path)

    # No credential: 401 with the challenge.
    none = est(server, tmp_path, "simpleenroll", csr=csr_der("hmi-2"))
    assert none.status == 401 and none.headers["www-authenticate"].startswith("Basic"), none.headers
    # A CSR for another identity, with hmi-2's IDevID.
    other = est(server, tmp_path, "simpleenroll", csr=csr_der("gw-2"), cert=cert, key=key)
    assert other.status == 403 and "gw-2" in other.text, other.text
    # Not a CSR (base64 of garbage): 400; not base64 at all: 400.
    assert est(server, tmp_path, "simpleenroll", csr=b"\x30\x03\x02\x01\x00", cert=cert, key=key).status == 400
    assert est(server, tmp_path, "simpleenroll", body=write_pem(tmp_path / "x.b64", "*not base64*"),
               cert=cert, key=key).status == 400
    # Oversized: 413 before the body is read.
    big = tmp_path / "big.b64"
    big.write_bytes(base64.encodebytes(b"\0" * 8192))
    oversized = est(server, tmp_path, "simpleenroll", body=big, cert=cert, key=key)
    assert oversized.status == 413, oversized.text
    # A foreign manufacturer's IDevID: the TLS handshake refuses it (the listener trusts imported CAs only).
    rogue_cert, rogue_key = idevid_files(OTHER_MAKER.issue_idevid("SN-hmi-2"), tmp_path / "rogue")
    res = curl("--cacert", str(server.root_pem), "--cert", str(rogue_cert), "--key", str(rogue_key),
               "-H", "Content-Type: application/pkcs10", "--data-binary", "@" + str(b64_file(tmp_path / "r.b64",
                                                                                          csr_der("hmi-2"))),
               "-o", "/dev/null", "-w", "%{http_code}", f"{server.url}/.well-known/est/simpleenroll")
    assert res.returncode != 0 and res.stdout.strip() == b"000", res  # no HTTP answer at all: no request made
    # An IDevID of the imported manufacturer that no registration lists: 403.
    stray_cert, stray_key = idevid_files(MAKER.issue_idevid("SN-unlisted"), tmp_path / "stray")
    stray = est(server, tmp_path, "simpleenroll", csr=csr_der("hmi-2"), cert=stray_cert, key=stray_key)
    assert stray.status == 403 and "bootstrap_not_allowed" in stray.text, stray.text
    # simplereenroll with a bootstrap certificate: 403.
    assert est(server, tmp_path, "simplereenroll", csr=csr_der("hmi-2"), cert=cert, key=key).status == 403

    eng = server.engine()
    try:
        assert len(eng.audit_records(action="certificate.issue")) == before
        owner = eng.registry.find("mqtt-device", name="hmi-2")
        assert owner is not None and eng.bootstrap.pin(owner.id) is None  # not pinned by any refusal
        refusals = eng.audit_records(action="est.refuse")
        reasons = {r.details.get("reason") for r in refusals}
        # Every refusal that got past the TLS handshake is audited, except the bare 401 (no credential at all).
        assert {"subject_mismatch", "csr_malformed", "bootstrap_not_allowed", "not_enrolled"} <= reasons, reasons
    finally:
        eng.close()


def test_replayed_csr_is_not_issued_twice(server: EstServer, tmp_path: Path) -> None:
    cert, key = idevid_files(IDEVIDS["hmi-3"], tmp_path)
    csr = csr_der("hmi-3")
    first = est(server, tmp_path, "simpleenroll", csr=csr, cert=cert, key=key)
    assert first.status == 200, first.text
    eng = server.engine()
    try:
        issued = len(eng.audit_records(action="certificate.issue"))
    finally:
        eng.close()
    replay = est(server, tmp_path, "simpleenroll", csr=csr, cert=cert, key=key)
    assert replay.status == 403 and "replay" in replay.text, replay.text
    eng = server.engine()
    try:
        assert len(eng.audit_records(action="certificate.issue")) == issued
    finally:
        eng.close()


def test_revoked_operational_certificate_is_refused(server: EstServer, tmp_path: Path) -> None:
    key = new_key()
    eng = server.engine()
    try:
        owner = eng.registry.find("mqtt-device", name="plc-9")
        assert owner is not None
        issued = eng.authority.issue_from_csr(make_csr("plc-9", key=key), owner_id=owner.id, actor="tester")
        eng.authority.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="tester")
        before = len(eng.audit_records(action="certificate.issue"))
    finally:
        eng.close()
    cert = write_pem(tmp_path / "plc-9.pem", x509.load_der_x509_certificate(issued.certificate_der)
                     .public_bytes(Encoding.PEM).decode())
    answer = est(server, tmp_path, "simplereenroll", csr=csr_der("plc-9"), cert=cert, key=key_file(tmp_path, key))
    assert answer.status == 403 and "revoked" in answer.text, answer.text
    eng = server.engine()
    try:
        assert len(eng.audit_records(action="certificate.issue")) == before
    finally:
        eng.close()


# -- registrar, approval ----------------------------------------------------------------------------------------

def test_registrar_request_waits_for_approval_then_finishes_once(tmp_path: Path) -> None:
    with est_server(tmp_path / "srv", auto_approve=False, registrar_hash=hash_password(REGISTRAR_PASSWORD),
                    prepare=[("panel-7", None), ("panel-8", None)]) as server:
        user = f"{REGISTRAR}:{REGISTRAR_PASSWORD}"
        csr = csr_der("panel-7")
        wrong = est(server, tmp_path, "simpleenroll", csr=csr, user=f"{REGISTRAR}:wrong")
        assert wrong.status == 401 and "www-authenticate" in wrong.headers
        pending = est(server, tmp_path, "simpleenroll", csr=csr, user=user)
        assert pending.status == 202 and int(pending.headers["retry-after"]) > 0, pending.text
        still = est(server, tmp_path, "simpleenroll", csr=csr, user=user)
        assert still.status == 202 and still.text == pending.text  # the same request, not a second one
        request_id = pending.text.split()[1]
        approved = server.otpki("requests", "approve", request_id)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        done = est(server, tmp_path, "simpleenroll", csr=csr, user=user)
        assert done.status == 200, done.text
        cacerts = certs_of(est(server, tmp_path, "cacerts"), tmp_path, "cacerts")
        verify(server, cacerts, certs_of(done, tmp_path, "panel"))
        replay = est(server, tmp_path, "simpleenroll", csr=csr, user=user)
        assert replay.status == 403 and "replay" in replay.text, replay.text
        # A CSR for a name nobody registered: 403, nothing stored.
        unknown = est(server, tmp_path, "simpleenroll", csr=csr_der("ghost"), user=user)
        assert unknown.status == 403 and "ghost" in unknown.text
        # serverkeygen on the device's behalf: waits too, then hands the key out once.
        keygen = est(server, tmp_path, "serverkeygen", csr=csr_der("panel-8"), user=user)
        assert keygen.status == 202, keygen.text
        approved = server.otpki("requests", "approve", keygen.text.split()[1])
        assert approved.returncode == 0, approved.stdout + approved.stderr
        key_and_cert = est(server, tmp_path, "serverkeygen", csr=csr_der("panel-8"), user=user)
        assert key_and_cert.status == 200 and key_and_cert.headers["content-type"].startswith("multipart/mixed")
        eng = server.engine()
        try:
            assert len(eng.requests.list()) == 2
            assert {r.status.value for r in eng.requests.list()} == {"issued"}
        finally:
            eng.close()


# -- devices that authenticate by certificate, in a group that requires approval (RFC 7030 4.2.3) ----------------

def _requests(server: EstServer) -> dict[str, dict[str, object]]:
    listed = server.otpki("requests", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return {r["id"]: r for r in json.loads(listed.stdout)}


def _issued_count(server: EstServer) -> int:
    eng = server.engine()
    try:
        return len(eng.audit_records(action="certificate.issue"))
    finally:
        eng.close()


def test_device_requests_wait_for_approval_and_collect_one_certificate(tmp_path: Path) -> None:
    """IDevID bootstrap and operational re-enroll: 202 until an operator decides with `otpki requests`, then the
    certificate, issued once and the same on every repeat; a new CSR supersedes the open request."""
    cam1, cam2, cam3 = (MAKER.issue_idevid(f"SN-cam-{n}") for n in (1, 2, 3))
    with est_server(tmp_path / "srv", auto_approve=False, manufacturer=MAKER,
                    prepare=[("cam-1", cam1), ("cam-2", cam2), ("cam-3", cam3)]) as server:
        cert, key = idevid_files(cam1, tmp_path / "idevid")
        before = _issued_count(server)
        lost = est(server, tmp_path, "simpleenroll", csr=csr_der("cam-1"), cert=cert, key=key)
        assert lost.status == 202 and int(lost.headers["retry-after"]) > 0, lost.text
        lost_id = lost.text.split()[1]
        # The device lost that key and sends a new CSR: its request supersedes the open one.
        op_key = new_key()
        csr = csr_der("cam-1", op_key)
        pending = est(server, tmp_path, "simpleenroll", csr=csr, cert=cert, key=key)
        assert pending.status == 202, pending.text
        request_id = pending.text.split()[1]
        assert request_id != lost_id
        listed = _requests(server)
        assert listed[request_id]["status"] == "pending" and listed[request_id]["kind"] == "device-csr"
        assert listed[request_id]["owner"] == "cam-1"
        assert listed[lost_id]["status"] == "expired" and request_id in str(listed[lost_id]["reason"])
        assert server.otpki("requests", "approve", lost_id).returncode == 2  # nothing to approve any more
        again = est(server, tmp_path, "simpleenroll", csr=csr, cert=cert, key=key)
        assert again.status == 202 and again.text == pending.text  # the same request, not a second one
        assert len(_requests(server)) == 2 and _issued_count(server) == before

        approved = server.otpki("requests", "approve", request_id)
        assert approved.returncode == 0 and "device" in approved.stdout, approved.stdout + approved.stderr
        assert _issued_count(server) == before  # issued when the device is back, with its pin
        done = est(server, tmp_path, "simpleenroll", csr=csr, cert=cert, key=key)
        assert done.status == 200, done.text
        op_cert = certs_of(done, tmp_path, "op1")  # before the next request reuses the answer file
        cacerts = certs_of(est(server, tmp_path, "cacerts"), tmp_path, "cacerts")
        verify(server, cacerts, op_cert)
        repeat = est(server, tmp_path, "simpleenroll", csr=csr, cert=cert, key=key)
        assert repeat.status == 200 and repeat.body == done.body  # the same certificate, not another one
        assert _issued_count(server) == before + 1
        first = x509.load_pem_x509_certificate(op_cert.read_bytes())
        listed = _requests(server)
        assert listed[request_id]["status"] == "issued" and listed[request_id]["serial"] == f"{first.serial_number:x}"
        eng = server.engine()
        try:
            owner = eng.registry.find("mqtt-device", name="cam-1")
            assert owner is not None
            pin = eng.bootstrap.pin(owner.id)
            assert pin is not None and pin.fingerprint_sha256 == cam1.sha256
        finally:
            eng.close()

        # Re-enroll with the operational certificate: the same way through approval; the old one is superseded.
        renew_csr = csr_der("cam-1")
        op_key_file = key_file(tmp_path, op_key)
        waiting = est(server, tmp_path, "simplereenroll", csr=renew_csr, cert=op_cert, key=op_key_file)
        assert waiting.status == 202, waiting.text
        renewal_id = waiting.text.split()[1]
        assert server.otpki("requests", "approve", renewal_id).returncode == 0
        renewed = est(server, tmp_path, "simplereenroll", csr=renew_csr, cert=op_cert, key=op_key_file)
        assert renewed.status == 200, renewed.text
        second = x509.load_pem_x509_certificate(certs_of(renewed, tmp_path, "op2").read_bytes())
        assert second.subject == first.subject and second.serial_number != first.serial_number
        assert est(server, tmp_path, "simplereenroll", csr=renew_csr, cert=op_cert,
                   key=op_key_file).body == renewed.body
        eng = server.engine()
        try:
            old = eng.inventory.get(f"{first.serial_number:x}")
            assert old.superseded_by == f"{second.serial_number:x}" and old.revoked_at is None
        finally:
            eng.close()
        assert _issued_count(server) == before + 2

        # A rejected request: 403 with the operator's reason on the next repeat, and nothing issued or pinned.
        cert2, key2 = idevid_files(cam2, tmp_path / "idevid2")
        csr2 = csr_der("cam-2")
        asked = est(server, tmp_path, "simpleenroll", csr=csr2, cert=cert2, key=key2)
        assert asked.status == 202, asked.text
        rejected = server.otpki("requests", "reject", asked.text.split()[1], "--reason", "camera not commissioned")
        assert rejected.returncode == 0, rejected.stdout + rejected.stderr
        refused = est(server, tmp_path, "simpleenroll", csr=csr2, cert=cert2, key=key2)
        assert refused.status == 403 and "camera not commissioned" in refused.text, refused.text
        assert _issued_count(server) == before + 2
        eng = server.engine()
        try:
            owner = eng.registry.find("mqtt-device", name="cam-2")
            assert owner is not None and eng.bootstrap.pin(owner.id) is None
        finally:
            eng.close()

        # serverkeygen waits the same way; the key is handed out once.
        cert3, key3 = idevid_files(cam3, tmp_path / "idevid3")
        naming = csr_der("cam-3")  # the same request again, as RFC 7030 4.2.3 has the client repeat it
        keygen = est(server, tmp_path, "serverkeygen", csr=naming, cert=cert3, key=key3)
        assert keygen.status == 202, keygen.text
        assert server.otpki("requests", "approve", keygen.text.split()[1]).returncode == 0
        delivered = est(server, tmp_path, "serverkeygen", csr=naming, cert=cert3, key=key3)
        assert delivered.status == 200 and delivered.headers["content-type"].startswith("multipart/mixed")
        assert b"application/pkcs8" in delivered.body, delivered.text
        once = est(server, tmp_path, "serverkeygen", csr=naming, cert=cert3, key=key3)
        assert once.status == 403 and "key_already_collected" in once.text, once.text
        assert _issued_count(server) == before + 3


# -- a foreign CA: refused in the TLS handshake, and audited --------------------------------------------------------

def test_foreign_ca_certificates_are_audited_and_a_flood_is_bounded(tmp_path: Path) -> None:
    """A client certificate of a CA the engine does not trust never gets an HTTP answer (the handshake refuses it),
    but the operator sees it: one audit record per refusal up to 10 a minute, then one record counting the rest."""
    rogue_cert, rogue_key = idevid_files(OTHER_MAKER.issue_idevid("SN-flood"), tmp_path / "rogue")
    body = b64_file(tmp_path / "r.b64", csr_der("cam-9"))
    attempts = 25
    with est_server(tmp_path / "srv", manufacturer=MAKER, prepare=[("cam-9", None)]) as server:
        for _ in range(attempts):
            res = curl("--cacert", str(server.root_pem), "--cert", str(rogue_cert), "--key", str(rogue_key),
                       "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{body}",
                       "-o", "/dev/null", "-w", "%{http_code}", f"{server.url}/.well-known/est/simpleenroll")
            assert res.returncode != 0 and res.stdout.strip() == b"000", res
        config, data = server.config, server.data
    # The server has stopped (SIGTERM): what it still counted is audited by then.
    eng = make_engine(data, config=config)
    try:
        refused = eng.audit_records(action="web.tls_refused")
        suppressed = eng.audit_records(action="web.tls_refused_suppressed")
        assert eng.verify_audit().ok
        assert all(r.details.get("owner") != "cam-9" for r in eng.audit_records(action="certificate.issue"))
    finally:
        eng.close()
    assert len(refused) == 10, [r.details for r in refused]
    first = refused[0]
    assert first.actor == "tls-client:127.0.0.1" and first.details["peer"] == "127.0.0.1"
    assert first.details["verify_code"] == 20 and first.details["alert"] == "unknown_ca"
    assert "unable to get local issuer certificate" in str(first.details["reason"])
    assert len(suppressed) == 1 and suppressed[0].details["count"] == attempts - 10
    assert suppressed[0].details["peers"] == {"127.0.0.1": attempts - 10}
