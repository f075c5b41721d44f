"""opcua_gds.certificate_chain: OPC UA's concatenated DER chains and the issuers an application presents."""

from __future__ import annotations

from opcua_gds.certificate_chain import first_certificate, issuer_chain, split_chain
from tests.small_pki import build_pki, make_cert


def test_a_concatenated_chain_splits_into_its_certificates_leaf_first() -> None:
    pki = build_pki()
    chain = pki.leaf_good.der + pki.issuing.der + pki.root.der
    assert split_chain(chain) == [pki.leaf_good.der, pki.issuing.der, pki.root.der]
    assert first_certificate(chain) == pki.leaf_good.der
    assert split_chain(pki.leaf_good.der) == [pki.leaf_good.der]
    assert split_chain(b"") == []


def test_the_issuers_run_from_the_leafs_issuer_up_to_not_including_the_root() -> None:
    pki = build_pki()
    # Order and extras among the candidates do not matter; only verified issuers are taken.
    candidates = [pki.root.der, pki.vendor.der, pki.old_issuing.der, pki.issuing.der]
    assert issuer_chain(pki.leaf_good.der, candidates) == [pki.issuing.der]
    assert issuer_chain(pki.issuing.der, candidates) == []  # issued by the root itself
    assert issuer_chain(pki.root.der, candidates) == []  # self-signed
    assert issuer_chain(pki.vendor.der, candidates) == []  # self-signed leaf


def test_a_deeper_hierarchy_gives_every_intermediate_in_order() -> None:
    pki = build_pki()
    sub = make_cert("Sub CA", pki.issuing, ca=True)
    leaf = make_cert("deep-plc", sub, ca=False, uri="urn:test:deep-plc")
    assert issuer_chain(leaf.der, [pki.root.der, pki.issuing.der, sub.der]) == [sub.der, pki.issuing.der]
    # Without the middle CA the chain stops where the path breaks: a peer needs that CA itself.
    assert issuer_chain(leaf.der, [pki.root.der, sub.der]) == [sub.der]


def test_a_ca_with_the_issuers_name_but_another_key_is_not_taken() -> None:
    pki = build_pki()
    impostor = make_cert("Test Issuing CA", pki.root, ca=True)  # same subject as pki.issuing, its own key
    assert impostor.cert.subject == pki.issuing.cert.subject
    assert issuer_chain(pki.leaf_good.der, [impostor.der]) == []
    assert issuer_chain(pki.leaf_good.der, [impostor.der, pki.issuing.der]) == [pki.issuing.der]


def test_garbage_among_the_candidates_or_as_the_leaf_gives_no_chain_and_no_error() -> None:
    pki = build_pki()
    assert issuer_chain(pki.leaf_good.der, [b"\x30\x03\x02\x01\x00", b"junk", pki.issuing.der]) == [pki.issuing.der]
    assert issuer_chain(b"not a certificate", [pki.issuing.der]) == []
