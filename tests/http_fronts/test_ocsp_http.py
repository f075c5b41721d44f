"""The OCSP responder and the CRLs over HTTP, driven by clients that are not ours: `openssl ocsp`, curl, `openssl
crl`, pkilint's OCSP response linter; and by an attacker's inputs over raw sockets."""

from __future__ import annotations

import asyncio
import base64
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from http_fronts.ocsp.settings import OcspSettings
from trustlists.engine import Engine
from trustlists.errors import StoreError
from trustlists.models import RevocationReason
from trustlists.testing import foreign_engine, make_csr

from .conftest import Issued, fronts_app, issue, pem_files, run, serving


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                 algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


async def openssl_ocsp(url: str, target: Issued, *extra: str) -> tuple[int, str]:
    """`openssl ocsp` asking about `target`, verifying the answer's signature up to the root; (status, output)."""
    code, out, err = await run(
        "openssl", "ocsp", "-issuer", str(target.issuer), "-url", f"{url}/ocsp", "-CAfile", str(target.root),
        "-verify_other", str(target.issuer), "-resp_text", *extra)
    return code, out + err


async def test_openssl_ocsp_answers_good_revoked_and_unknown_verified_against_the_chain(
        engine: Engine, tmp_path: Path) -> None:
    good = issue(engine, "pump-1", tmp_path)
    revoked = issue(engine, "pump-2", tmp_path)
    engine.authority.revoke(revoked.serial, reason=RevocationReason.KEY_COMPROMISE, actor="tester")
    unknown_serial = f"0x{secrets.randbits(159) | 1 << 158:x}"  # never issued by the CA
    async with serving(fronts_app(engine)) as url:
        for nonce in ((), ("-no_nonce",)):  # with a nonce (signed for the request) and without (the cached path)
            code, out = await openssl_ocsp(url, good, "-cert", str(good.cert), *nonce)
            assert code == 0, out
            assert "Response verify OK" in out and f"{good.cert}: good" in out, out
            assert "WARNING" not in out, out  # openssl warns when a nonce it sent is not echoed
            code, out = await openssl_ocsp(url, revoked, "-cert", str(revoked.cert), *nonce)
            assert code == 0, out
            assert "Response verify OK" in out and f"{revoked.cert}: revoked" in out, out
            assert "Reason: keyCompromise" in out and "Revocation Time:" in out, out
            code, out = await openssl_ocsp(url, good, "-serial", unknown_serial, *nonce)
            assert code == 0, out
            assert "Response verify OK" in out and f"{unknown_serial}: unknown" in out, out
        # The signer is the CA's delegated one: id-kp-OCSPSigning, ocsp-nocheck, issued by the CA itself.
        assert "OCSP No Check" in out and "Responder Id: " in out, out


async def test_the_nonce_is_echoed_also_when_a_request_is_replayed(engine: Engine, tmp_path: Path) -> None:
    good = issue(engine, "pump-1", tmp_path)
    nonce = secrets.token_bytes(16)
    request = ocsp_request(good.certificate, good.issuer_certificate, nonce=nonce)
    async with serving(fronts_app(engine)) as url, httpx.AsyncClient() as client:
        answers = []
        for _ in range(2):  # the same request twice: allowed (RFC 8954 leaves replay checks to the client)
            res = await client.post(f"{url}/ocsp", content=request,
                                    headers={"Content-Type": "application/ocsp-request"})
            assert res.status_code == 200
            assert res.headers["cache-control"] == "no-store"  # an answer for one requester only
            answers.append(ocsp.load_der_ocsp_response(res.content))
        for answer in answers:
            assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
        too_long = ocsp_request(good.certificate, good.issuer_certificate, nonce=b"n" * 33)
        res = await client.post(f"{url}/ocsp", content=too_long, headers={"Content-Type": "application/ocsp-request"})
        assert ocsp.load_der_ocsp_response(res.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_get_with_curl_carries_rfc5019_caching_headers_and_a_verifiable_answer(
        engine: Engine, tmp_path: Path) -> None:
    good = issue(engine, "pump-1", tmp_path)
    request = ocsp_request(good.certificate, good.issuer_certificate, algorithm=hashes.SHA256())
    encoded = quote(base64.b64encode(request).decode(), safe="")
    body, headers = tmp_path / "answer.der", tmp_path / "headers.txt"
    async with serving(fronts_app(engine)) as url:
        code, _out, err = await run("curl", "-sS", "--fail", "-D", str(headers), "-o", str(body),
                                    f"{url}/ocsp/{encoded}")
        assert code == 0, err
        lines = {k.strip().lower(): v.strip() for k, _, v in
                 (line.partition(":") for line in headers.read_text().splitlines()[1:] if ":" in line)}
        assert lines["content-type"] == "application/ocsp-response"
        assert lines["cache-control"].startswith("max-age=") and "public" in lines["cache-control"]
        assert 3000 < int(lines["cache-control"].split(",")[0].removeprefix("max-age=")) <= 3600
        etag = lines["etag"]
        assert etag.startswith('"') and "last-modified" in lines and "expires" in lines
        # The same question again: the cached answer, byte for byte; If-None-Match gets 304.
        code, out, err = await run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                   f"If-None-Match: {etag}", f"{url}/ocsp/{encoded}")
        assert (code, out) == (0, "304"), err
    code, out, err = await run("openssl", "ocsp", "-respin", str(body), "-no_nonce", "-sha256", "-issuer",
                               str(good.issuer), "-cert", str(good.cert), "-CAfile", str(good.root), "-verify_other",
                               str(good.issuer))
    assert code == 0 and "Response verify OK" in out + err and f"{good.cert}: good" in out, out + err


async def test_get_takes_base64_whether_or_not_the_client_percent_encoded_it(engine: Engine, tmp_path: Path) -> None:
    good = issue(engine, "pump-1", tmp_path)
    name_hash, key_hash = _cert_id(good)
    while True:  # a request whose base64 has the characters a URL treats specially: '/' and '+'
        request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            name_hash, key_hash, secrets.randbits(159), hashes.SHA1()).build().public_bytes(Encoding.DER)
        text = base64.b64encode(request).decode()
        if "/" in text and "+" in text:
            break
    async with serving(fronts_app(engine)) as url, httpx.AsyncClient() as client:
        for path in (text, quote(text, safe="")):
            res = await client.get(f"{url}/ocsp/{path}")
            assert res.status_code == 200
            assert ocsp.load_der_ocsp_response(res.content).certificate_status == ocsp.OCSPCertStatus.UNKNOWN


async def test_crl_download_with_curl_verifies_with_openssl(engine: Engine, tmp_path: Path) -> None:
    revoked = issue(engine, "pump-2", tmp_path)
    engine.authority.revoke(revoked.serial, reason=RevocationReason.KEY_COMPROMISE, actor="tester")
    crl_file = tmp_path / "mqtt-device.crl"
    async with serving(fronts_app(engine)) as url:
        code, _out, err = await run("curl", "-sS", "--fail", "-o", str(crl_file), f"{url}/crl/mqtt-device.crl")
        assert code == 0, err
        code, out, err = await run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                   f"{url}/crl/not-a-ca.crl")
        assert out == "404"
    code, out, err = await run("openssl", "crl", "-inform", "DER", "-in", str(crl_file), "-CAfile",
                               str(revoked.issuer), "-verify", "-noout", "-text")
    assert code == 0 and "verify OK" in out + err, out + err
    assert f"Serial Number: {revoked.serial.upper()}" in out.replace(" 0", " "), out


async def test_pkilint_finds_no_error_in_good_revoked_unknown_answers(engine: Engine, tmp_path: Path) -> None:
    good = issue(engine, "pump-1", tmp_path)
    revoked = issue(engine, "pump-2", tmp_path)
    engine.authority.revoke(revoked.serial, reason=RevocationReason.SUPERSEDED, actor="tester")
    async with serving(fronts_app(engine)) as url, httpx.AsyncClient() as client:
        unknown = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            *_cert_id(good), secrets.randbits(159) | 1 << 158, hashes.SHA1()).build().public_bytes(Encoding.DER)
        for name, request in (("good", ocsp_request(good.certificate, good.issuer_certificate)),
                              ("revoked", ocsp_request(revoked.certificate, revoked.issuer_certificate)),
                              ("nonce", ocsp_request(good.certificate, good.issuer_certificate,
                                                     nonce=secrets.token_bytes(32))),
                              ("unknown", unknown)):
            res = await client.post(f"{url}/ocsp", content=request,
                                    headers={"Content-Type": "application/ocsp-request"})
            path = tmp_path / f"{name}.der"
            path.write_bytes(res.content)
            code, out, err = await run(LINTER, "lint", "-s", "INFO", str(path))
            # The exit status counts the findings at or above the threshold: none, not even a notice.
            assert code == 0 and not out.strip(), (name, out, err)
        # The delegated signer's certificate the answers carry, through pkilint's RFC 5280 certificate linter
        # (its only finding is the INFO that the key identifier is RFC 5280's method 1).
        signer = tmp_path / "signer.pem"
        signer.write_bytes(ocsp.load_der_ocsp_response(res.content).certificates[0].public_bytes(Encoding.PEM))
        code, out, err = await run(str(Path(LINTER).parent / "lint_pkix_cert"), "lint", "-s", "NOTICE", str(signer))
        assert code == 0 and not out.strip(), (out, err)


LINTER = str(Path(sys.executable).parent / "lint_ocsp_response")


def _cert_id(target: Issued) -> tuple[bytes, bytes]:
    probe = ocsp.load_der_ocsp_request(ocsp_request(target.certificate, target.issuer_certificate))
    return probe.issuer_name_hash, probe.issuer_key_hash


async def test_attacker_inputs_get_ocsp_errors_never_a_500(engine: Engine, tmp_path: Path) -> None:
    good = issue(engine, "pump-1", tmp_path)
    stranger_engine = foreign_engine(tmp_path / "foreign")
    try:
        owner = stranger_engine.registry.register(group="mqtt-device", name="pump-1", actor="x")
        stranger = pem_files(stranger_engine.authority.issue_from_csr(make_csr("pump-1"), owner_id=owner.id,
                                                                       actor="x"), tmp_path / "foreign", "stranger")
    finally:
        stranger_engine.close()
    settings = OcspSettings(max_request_bytes=1024)
    post = {"Content-Type": "application/ocsp-request"}

    async with serving(fronts_app(engine, settings)) as url, httpx.AsyncClient() as client:
        async def status(res: httpx.Response) -> ocsp.OCSPResponseStatus:
            assert res.headers["content-type"] == "application/ocsp-response"
            return ocsp.load_der_ocsp_response(res.content).response_status

        res = await client.post(f"{url}/ocsp", content=b"\x30\x03garbage", headers=post)
        assert res.status_code == 200 and await status(res) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        res = await client.post(f"{url}/ocsp", content=b"x" * 5000, headers=post)
        assert res.status_code == 413 and await status(res) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST

        async def chunks() -> object:  # no Content-Length: the limit is enforced while reading
            for _ in range(10):
                yield b"y" * 200
        res = await client.post(f"{url}/ocsp", content=chunks(), headers=post)  # type: ignore[arg-type]
        assert res.status_code == 413
        res = await client.post(f"{url}/ocsp", content=ocsp_request(good.certificate, good.issuer_certificate),
                                headers={"Content-Type": "text/plain"})
        assert res.status_code == 415 and await status(res) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        res = await client.get(f"{url}/ocsp/not%20base64%21")
        assert res.status_code == 200 and await status(res) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        res = await client.get(f"{url}/ocsp/" + "QUFB" * 2000)
        assert res.status_code == 414
        # A CA that is not ours: unauthorized (RFC 6960 2.3), for its certificate and for a made-up issuer.
        res = await client.post(f"{url}/ocsp", headers=post,
                                content=ocsp_request(stranger.certificate, stranger.issuer_certificate))
        assert await status(res) == ocsp.OCSPResponseStatus.UNAUTHORIZED
        # Two certificates in one request (openssl makes it): the lightweight profile answers one only.
        two = tmp_path / "two.req"
        other = issue(engine, "pump-9", tmp_path)
        code, _out, err = await run("openssl", "ocsp", "-issuer", str(good.issuer), "-cert", str(good.cert),
                                    "-cert", str(other.cert), "-reqout", str(two))
        assert code == 0, err
        res = await client.post(f"{url}/ocsp", content=two.read_bytes(), headers=post)
        assert await status(res) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        # The responder still answers properly after all of that.
        res = await client.post(f"{url}/ocsp", content=ocsp_request(good.certificate, good.issuer_certificate),
                                headers=post)
        assert ocsp.load_der_ocsp_response(res.content).certificate_status == ocsp.OCSPCertStatus.GOOD


async def test_a_slow_client_is_cut_off_and_does_not_hold_up_the_others(engine: Engine, tmp_path: Path) -> None:
    good = issue(engine, "pump-1", tmp_path)
    request = ocsp_request(good.certificate, good.issuer_certificate)
    settings = OcspSettings(body_timeout_s=0.5)
    async with serving(fronts_app(engine, settings)) as url, httpx.AsyncClient() as client:
        port = int(url.rsplit(":", 1)[1])
        # One client announces a body and sends a third of it; another stops in the middle of its headers.
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(request) + request[:len(request) // 3])
        await slow_writer.drain()
        _idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET /ocsp/ HTTP/1.1\r\nHost: ")
        await idle_writer.drain()
        try:
            res = await client.post(f"{url}/ocsp", content=request,
                                    headers={"Content-Type": "application/ocsp-request"})
            assert ocsp.load_der_ocsp_response(res.content).certificate_status == ocsp.OCSPCertStatus.GOOD
            answer = await asyncio.wait_for(slow_reader.read(4096), 30)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        finally:
            for writer in (slow_writer, idle_writer):
                writer.close()


async def test_a_failing_store_is_answered_with_ocsp_and_http_errors_not_a_500(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = issue(engine, "pump-1", tmp_path)

    def store_down(*_args: object, **_kwargs: object) -> object:
        raise StoreError("database is unreachable")

    async with serving(fronts_app(engine)) as url, httpx.AsyncClient() as client:
        monkeypatch.setattr(engine.ocsp_signers, "current_serial", store_down)
        monkeypatch.setattr(engine, "latest_crl", store_down)
        res = await client.post(f"{url}/ocsp", content=ocsp_request(good.certificate, good.issuer_certificate),
                                headers={"Content-Type": "application/ocsp-request"})
        assert res.status_code == 200
        assert ocsp.load_der_ocsp_response(res.content).response_status == ocsp.OCSPResponseStatus.INTERNAL_ERROR
        res = await client.get(f"{url}/crl/mqtt-device.crl")
        assert res.status_code == 503 and res.headers["retry-after"] == "5"
