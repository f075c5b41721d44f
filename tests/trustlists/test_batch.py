"""Batch signing of a directory of CSRs for a factory line."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import make_csr
from trustlists.batch import sign_directory
from trustlists.engine import Engine
from trustlists.models import CertificateStatus


def test_batch_signs_good_csrs_and_lists_failures(engine: Engine, tmp_path: Path) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for i in range(5):
        (in_dir / f"dev-{i}.csr").write_bytes(make_csr(f"line3-dev-{i}"))
    (in_dir / "garbage.csr").write_bytes(b"\x00\x01 not a csr")
    (in_dir / "weak.csr").write_bytes(make_csr("line3-weak", key=rsa.generate_private_key(65537, 1024)))
    (in_dir / "readme.txt").write_text("ignored: not a CSR suffix")
    owners_before = len(engine.registry.list("mqtt-device"))

    report = sign_directory(engine, in_dir, out_dir, group="mqtt-device", actor="line3")

    assert (report.issued, report.failed) == (5, 2)
    failures = {i.file: i.reason for i in report.items if not i.ok}
    assert failures == {"garbage.csr": "csr_malformed", "weak.csr": "key_size_forbidden"}
    # A refused CSR registers nobody.
    assert len(engine.registry.list("mqtt-device")) == owners_before + 5
    for item in report.items:
        if item.ok:
            chain = x509.load_pem_x509_certificates((out_dir / f"{Path(item.file).stem}.crt").read_bytes())
            chain[0].verify_directly_issued_by(chain[1])
    pending = engine.inventory.query(status=CertificateStatus.NOT_DELIVERED)
    assert len(pending) == 5
    engine.authority.mark_delivered(pending[0].serial, actor="field")
    assert len(engine.inventory.query(status=CertificateStatus.NOT_DELIVERED)) == 4
