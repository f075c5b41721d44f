"""A batch's CSR signatures are checked on several cores at once, and every refusal stays with its request."""

from __future__ import annotations

import threading

import pytest

from trustlists import csr_checks, parallel
from trustlists.authority import CsrIssueRequest
from trustlists.engine import Engine
from trustlists.errors import CsrRejected, InvalidInput, NotFound
from trustlists.models import IssuedCertificate, Owner
from trustlists.testing import make_csr


def tampered(csr_der: bytes) -> bytes:
    der = bytearray(csr_der)
    der[-5] ^= 0xFF  # inside the signature value
    return bytes(der)


def test_batch_signatures_are_checked_on_several_threads_and_refusals_keep_their_slots(
        engine: Engine, device: Owner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "CORES", 2)  # two shares even where the machine has one core
    threads: set[int] = set()
    check = csr_checks.verify_csr_signature

    def recording(csr):  # type: ignore[no-untyped-def]
        threads.add(threading.get_ident())
        check(csr)

    monkeypatch.setattr(csr_checks, "verify_csr_signature", recording)
    n = 2 * parallel.MIN_SHARE + 4
    bad = {0, parallel.MIN_SHARE + 1, n - 1}
    csrs = [tampered(make_csr("pump-7", pem=False)) if i in bad else make_csr("pump-7") for i in range(n)]
    requests = [CsrIssueRequest(csr=c, owner_id=device.id) for c in csrs]
    requests[5] = CsrIssueRequest(csr=b"junk", owner_id=device.id)
    requests[7] = CsrIssueRequest(csr=tampered(make_csr("pump-7", pem=False)), owner_id="no-such-owner")

    results = engine.authority.issue_many(requests, actor="t")

    assert len(threads) >= 2
    assert len(results) == n
    for i, result in enumerate(results):
        if i in bad:
            assert isinstance(result, CsrRejected) and result.reason == "bad_signature", (i, result)
        elif i == 5:
            assert isinstance(result, InvalidInput) and result.reason == "csr_malformed"
        elif i == 7:  # the owner is judged before the CSR, as one at a time
            assert isinstance(result, NotFound)
        else:
            assert isinstance(result, IssuedCertificate), (i, result)
    assert engine.inventory.count() == n - len(bad) - 2
    assert engine.verify_audit().ok
