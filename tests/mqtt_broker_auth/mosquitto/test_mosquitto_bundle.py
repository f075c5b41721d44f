"""Mosquitto's cafile and crlfile from a trust list, checked with OpenSSL (what Mosquitto loads them with)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mqtt_broker_auth.mosquitto.bundle import mosquitto_bundle, write_mosquitto_files
from tests.small_pki import Cert, Pki, build_pki, content_v1, content_v2, file_names, trust
from trustlists.errors import InvalidInput
from trustlists.models import TrustListContent

OPENSSL = "/usr/bin/openssl"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki()


# --- Mosquitto ----------------------------------------------------------------------------------------

def _openssl_verify(ca: Path, crl: Path, leaf: Cert, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(leaf.pem)
    return subprocess.run([OPENSSL, "verify", "-CAfile", str(ca), "-CRLfile", str(crl), "-crl_check_all",
                           str(leaf_file)], capture_output=True, text=True, check=False)


def test_mosquitto_bundle_contents(pki: Pki) -> None:
    ca_pem, crl_pem = mosquitto_bundle(trust(content_v1(pki), 1))
    certs = x509.load_pem_x509_certificates(ca_pem)
    # Only CAs: the self-signed vendor end-entity certificate stays out of the cafile.
    assert [c.subject for c in certs] == [pki.root.cert.subject, pki.issuing.cert.subject,
                                          pki.old_issuing.cert.subject]
    blocks = [b for b in crl_pem.split(b"-----END X509 CRL-----\n") if b.strip()]
    crls = [x509.load_pem_x509_crl(b + b"-----END X509 CRL-----\n") for b in blocks]
    assert [c.public_bytes(serialization.Encoding.DER) for c in crls] == [
        pki.root_crl, pki.issuing_crl_v1, pki.old_issuing_crl]


def test_mosquitto_files_work_with_openssl(pki: Pki, tmp_path: Path) -> None:
    ca, crl = tmp_path / "ca.pem", tmp_path / "crl.pem"
    write_mosquitto_files(trust(content_v2(pki), 2), ca, crl)

    ok = _openssl_verify(ca, crl, pki.leaf_good, tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip().endswith(": OK"), ok.stdout + ok.stderr
    bad = _openssl_verify(ca, crl, pki.leaf_revoked, tmp_path)
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr

    parsed = subprocess.run([OPENSSL, "crl", "-in", str(crl), "-noout", "-text"], capture_output=True,
                            text=True, check=False)
    assert parsed.returncode == 0 and "Certificate Revocation List" in parsed.stdout


def test_mosquitto_files_replaced_atomically(pki: Pki, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ca, crl = tmp_path / "ca.pem", tmp_path / "crl.pem"
    write_mosquitto_files(trust(content_v1(pki), 1), ca, crl)
    inodes = (ca.stat().st_ino, crl.stat().st_ino)
    first = (ca.read_bytes(), crl.read_bytes())

    write_mosquitto_files(trust(content_v2(pki), 2), ca, crl)
    assert (ca.stat().st_ino, crl.stat().st_ino) != inodes
    assert inodes[0] != ca.stat().st_ino and inodes[1] != crl.stat().st_ino
    assert (ca.read_bytes(), crl.read_bytes()) == mosquitto_bundle(trust(content_v2(pki), 2))
    assert (ca.read_bytes(), crl.read_bytes()) != first
    assert file_names(tmp_path) == {"ca.pem", "crl.pem"}

    # A failed replace leaves the previous file whole and no temporary file behind.
    second = ca.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_mosquitto_files(trust(content_v1(pki), 1), ca, crl)
    assert ca.read_bytes() == second
    assert file_names(tmp_path) == {"ca.pem", "crl.pem"}




def test_bundle_rejects_garbage_der(pki: Pki) -> None:
    bad = TrustListContent(trusted_certificates=[b"\x30\x03garbage"])
    with pytest.raises(InvalidInput):
        mosquitto_bundle(trust(bad, 1))
