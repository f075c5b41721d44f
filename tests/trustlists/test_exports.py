"""Trust-list exports checked against the software that reads them: asyncua's TrustStore, the spec layout, JSON."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.small_pki import (
    NOW,
    Cert,
    Pki,
    build_pki,
    content_v1,
    content_v2,
    file_names,
    make_cert,
    make_crl,
    thumb,
    trust,
)
from trustlists.errors import InvalidInput
from trustlists.exports import pki_folders as pki_module
from trustlists.exports import trustlist_to_json, write_pki_folders
from trustlists.exports.pki_folders import MANIFEST_NAME
from trustlists.models import TrustListContent, TrustListMask


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki()


# --- PKI folders ------------------------------------------------------------------------------------

def test_pki_folders_layout_and_names(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "pki"
    summary = write_pki_folders(trust(content_v1(pki), 1), root,
                                own_certificate_der=pki.leaf_good.der,
                                own_private_key_pem=pki.leaf_good.key_pem)

    t = thumb
    assert file_names(root / "trusted/certs") == {f"Test Root CA [{t(pki.root.der)}].der",
                                              f"Vendor HMI_ unit_7 [{t(pki.vendor.der)}].der"}
    assert file_names(root / "issuer/certs") == {f"Test Issuing CA [{t(pki.issuing.der)}].der",
                                             f"Old Issuing CA [{t(pki.old_issuing.der)}].der"}
    root_crl = f"Test Root CA [{t(pki.root_crl)}].crl"
    assert file_names(root / "trusted/crl") == {root_crl, root_crl + ".der"}
    issuing_crl = f"Test Issuing CA [{t(pki.issuing_crl_v1)}].crl"
    old_crl = f"Old Issuing CA [{t(pki.old_issuing_crl)}].crl"
    assert file_names(root / "issuer/crl") == {issuing_crl, issuing_crl + ".der", old_crl, old_crl + ".der"}
    own = f"plc-01 [{t(pki.leaf_good.der)}]"
    assert file_names(root / "own/certs") == {own + ".der"}
    assert file_names(root / "own/private") == {own + ".pem"}

    # Files hold DER exactly as in the trust list; the key is private.
    assert (root / "trusted/crl" / root_crl).read_bytes() == pki.root_crl
    assert (root / "own/certs" / (own + ".der")).read_bytes() == pki.leaf_good.der
    assert stat.S_IMODE((root / "own/private" / (own + ".pem")).stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "own/private").stat().st_mode) == 0o700
    assert summary.added == 12 and summary.removed == 0 and summary.kept == 0 and summary.foreign == 0
    assert (root / MANIFEST_NAME).is_file()
    assert not list(root.rglob(".otpki-tmp-*"))

    # Same content again: nothing to do.
    again = write_pki_folders(trust(content_v1(pki), 1), root, own_certificate_der=pki.leaf_good.der,
                              own_private_key_pem=pki.leaf_good.key_pem)
    assert (again.added, again.removed, again.kept) == (0, 0, 12)


def test_pki_folders_no_private_folder_without_key(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(trust(content_v1(pki), 1), tmp_path, own_certificate_der=pki.leaf_good.der)
    assert not (tmp_path / "own/private").exists()
    assert len(file_names(tmp_path / "own/certs")) == 1
    with pytest.raises(InvalidInput):
        write_pki_folders(trust(content_v1(pki), 1), tmp_path, own_private_key_pem=pki.leaf_good.key_pem)
    with pytest.raises(InvalidInput):  # a key that is not the certificate's
        write_pki_folders(trust(content_v1(pki), 1), tmp_path, own_certificate_der=pki.leaf_good.der,
                          own_private_key_pem=pki.vendor.key_pem)


def test_pki_folders_more_own_certificates_sit_beside_the_own_one_and_go_when_dropped(pki: Pki,
                                                                                      tmp_path: Path) -> None:
    """An application with a certificate per type (RSA and ECC): each with its key, each ours to replace."""
    own = {"own_certificate_der": pki.leaf_good.der, "own_private_key_pem": pki.leaf_good.key_pem}
    write_pki_folders(trust(content_v1(pki), 1), tmp_path, **own,
                      more_own=[(pki.leaf_revoked.der, pki.leaf_revoked.key_pem)])
    names = {f"plc-01 [{thumb(pki.leaf_good.der)}]", f"plc-02 [{thumb(pki.leaf_revoked.der)}]"}
    assert file_names(tmp_path / "own/certs") == {n + ".der" for n in names}
    assert file_names(tmp_path / "own/private") == {n + ".pem" for n in names}
    summary = write_pki_folders(trust(content_v1(pki), 1), tmp_path, **own)  # the second one is gone now
    assert summary.removed == 2
    assert file_names(tmp_path / "own/certs") == {f"plc-01 [{thumb(pki.leaf_good.der)}].der"}
    with pytest.raises(InvalidInput):  # a key that is not its certificate's
        write_pki_folders(trust(content_v1(pki), 1), tmp_path, **own,
                          more_own=[(pki.leaf_revoked.der, pki.vendor.key_pem)])
    with pytest.raises(InvalidInput):  # more own certificates need the own one
        write_pki_folders(trust(content_v1(pki), 1), tmp_path,
                          more_own=[(pki.leaf_revoked.der, pki.leaf_revoked.key_pem)])


def _pem_private_key(der: bytes) -> bytes:
    return b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"


def test_pki_folders_unreadable_own_key_is_invalid_input(pki: Pki, tmp_path: Path) -> None:
    """A damaged key or one of an algorithm cryptography does not know is bad input, not a crash."""
    der = serialization.load_pem_private_key(pki.leaf_good.key_pem, None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    damaged = der[:30] + bytes(10) + der[40:]  # cryptography: ValueError
    ec_public_key_oid = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, 1.2.840.10045.2.1
    assert ec_public_key_oid in der
    unknown = der.replace(ec_public_key_oid, bytes.fromhex("06072a8648ce3d0209"))  # cryptography: UnsupportedAlgorithm
    for key_der in (damaged, unknown):
        with pytest.raises(InvalidInput, match="own private key cannot be read"):
            write_pki_folders(trust(content_v1(pki), 1), tmp_path / "pki", own_certificate_der=pki.leaf_good.der,
                              own_private_key_pem=_pem_private_key(key_der))
        assert not (tmp_path / "pki").exists()


def test_pki_folders_sync_removes_only_our_stale_files(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "pki"
    write_pki_folders(trust(content_v1(pki), 1), root)
    # Operators drop their own files; one even uses our naming style but was never written by us.
    operator_cert = make_cert("Operator Extra", None, ca=False)
    foreign = {
        "trusted/certs/operator.der": operator_cert.der,
        f"issuer/certs/Lookalike [{'A' * 40}].der": pki.old_issuing.der,
        "issuer/crl/manual.crl": pki.old_issuing_crl,
    }
    for rel, data in foreign.items():
        (root / rel).write_bytes(data)

    summary = write_pki_folders(trust(content_v2(pki), 2), root)

    t = thumb
    old_ca = f"issuer/certs/Old Issuing CA [{t(pki.old_issuing.der)}].der"
    old_crl = f"issuer/crl/Test Issuing CA [{t(pki.issuing_crl_v1)}].crl"
    new_crl = f"issuer/crl/Test Issuing CA [{t(pki.issuing_crl_v2)}].crl"
    gone_crl = f"issuer/crl/Old Issuing CA [{t(pki.old_issuing_crl)}].crl"
    for rel in (old_ca, old_crl, old_crl + ".der", gone_crl, gone_crl + ".der"):
        assert not (root / rel).exists(), rel
    assert (root / new_crl).read_bytes() == pki.issuing_crl_v2
    for rel, data in foreign.items():
        assert (root / rel).read_bytes() == data, rel
    assert sorted(summary.removed_files) == sorted([old_ca, old_crl, old_crl + ".der", gone_crl,
                                                    gone_crl + ".der"])
    assert summary.added_files == sorted([new_crl, new_crl + ".der"])
    assert (summary.added, summary.removed, summary.kept, summary.foreign) == (2, 5, 5, 3)
    assert set(summary.foreign_files) == set(foreign)


def test_pki_folders_leave_edited_files_and_unspecified_lists_alone(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(trust(content_v1(pki), 1), tmp_path)
    old_ca = tmp_path / f"issuer/certs/Old Issuing CA [{thumb(pki.old_issuing.der)}].der"
    old_ca.write_bytes(pki.old_issuing.pem)  # an operator converted our file: it is theirs now

    # Version 2 names only the issuer certificates; the CRL folders must not be touched.
    only_issuers = content_v2(pki).model_copy(update={"specified_lists": TrustListMask.ISSUER_CERTIFICATES})
    summary = write_pki_folders(trust(only_issuers, 2), tmp_path)
    assert old_ca.read_bytes() == pki.old_issuing.pem
    assert summary.removed == 0 and summary.foreign_files == [f"issuer/certs/{old_ca.name}"]
    assert len(file_names(tmp_path / "issuer/crl")) == 4  # v1 CRLs, untouched

    # Those untouched files are still ours: a later full sync removes what v2 no longer has.
    full = write_pki_folders(trust(content_v2(pki), 3), tmp_path)
    assert len(file_names(tmp_path / "issuer/crl")) == 2
    assert full.removed == 4


def test_pki_folders_adopt_after_lost_manifest(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(trust(content_v1(pki), 1), tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{ not json")
    summary = write_pki_folders(trust(content_v1(pki), 1), tmp_path)
    assert (summary.added, summary.kept, summary.foreign) == (0, 10, 0)
    write_pki_folders(trust(content_v2(pki), 2), tmp_path)
    assert len(file_names(tmp_path / "issuer/certs")) == 1


def test_pki_folders_keep_old_crl_when_new_one_cannot_be_written(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pki_folders(trust(content_v1(pki), 1), tmp_path)
    new_crl = f"Test Issuing CA [{thumb(pki.issuing_crl_v2)}].crl"
    real_write = pki_module.write_public

    def failing_write(target: Path, data: bytes, **kwargs) -> None:
        if target.name == new_crl:
            raise OSError("disk full")
        real_write(target, data, **kwargs)

    monkeypatch.setattr(pki_module, "write_public", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_pki_folders(trust(content_v2(pki), 2), tmp_path)
    old_crl = tmp_path / f"issuer/crl/Test Issuing CA [{thumb(pki.issuing_crl_v1)}].crl"
    assert old_crl.read_bytes() == pki.issuing_crl_v1
    assert not list(tmp_path.rglob(".otpki-tmp-*"))


def _asyncua_validates(root: Path, *certs: Cert) -> list[bool]:
    from asyncua.crypto.truststore import TrustStore

    store = TrustStore([root / "trusted/certs", root / "issuer/certs"],
                       [root / "trusted/crl", root / "issuer/crl"])
    asyncio.run(store.load())
    return [store.validate(c.cert) for c in certs]


def test_pki_folders_load_in_asyncua_truststore(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(trust(content_v1(pki), 1), tmp_path)
    (tmp_path / "trusted/certs/operator.der").write_bytes(make_cert("Operator", None, ca=False).der)
    write_pki_folders(trust(content_v2(pki), 2), tmp_path)

    outsider = make_cert("outsider", make_cert("Other Root", None, ca=True), ca=False)
    good, revoked, vendor, stranger = _asyncua_validates(
        tmp_path, pki.leaf_good, pki.leaf_revoked, pki.vendor, outsider)
    assert (good, revoked, vendor, stranger) == (True, False, True, False)


def test_asyncua_ignores_plain_crl_files(pki: Pki, tmp_path: Path) -> None:
    # Why asyncua_crl_copies exists: asyncua's TrustStore skips "*.crl", so without the ".crl.der"
    # copies a revoked certificate passes there.
    write_pki_folders(trust(content_v2(pki), 2), tmp_path, asyncua_crl_copies=False)
    assert all(n.endswith(".crl") for n in file_names(tmp_path / "issuer/crl"))
    assert _asyncua_validates(tmp_path, pki.leaf_revoked) == [True]


def test_asyncua_loads_crl_of_ca_named_with_der(tmp_path: Path) -> None:
    # asyncua parses any file whose name contains "der"/"pem" (and does not end in .der) as PEM, so a
    # plain "Schneider Root CA [..].crl" would abort TrustStore.load(); the label is defused instead.
    root = make_cert("Schneider Root CA", None, ca=True)
    leaf = make_cert("drive-7", root, ca=False)
    content = TrustListContent(trusted_certificates=[root.der], trusted_crls=[make_crl(root, 1, [leaf])])
    write_pki_folders(trust(content, 1), tmp_path)
    names = file_names(tmp_path / "trusted/crl")
    assert all(n.startswith("Schneid_r Root CA [") for n in names) and len(names) == 2
    assert _asyncua_validates(tmp_path, leaf) == [False]


def test_pki_folders_node_opcua_issuer_folder(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(trust(content_v1(pki), 1), tmp_path, issuer_folder="issuers")
    assert len(file_names(tmp_path / "issuers/certs")) == 2
    assert not (tmp_path / "issuer").exists()


# --- JSON ---------------------------------------------------------------------------------------------

def test_json_shape_and_values(pki: Pki) -> None:
    import json

    doc = trustlist_to_json(trust(content_v1(pki), 7))
    json.dumps(doc)  # plain JSON types only
    assert doc["group"] == "DefaultApplicationGroup" and doc["version"] == 7
    assert doc["content_hash"] == content_v1(pki).content_hash()
    assert datetime.fromisoformat(doc["created_at"]) == NOW
    assert doc["specified_lists"] == 15

    root, vendor = doc["trusted_certificates"]
    assert root["subject"] == "CN=Test Root CA,O=otpki test" == root["issuer"]
    assert root["serial"] == format(pki.root.cert.serial_number, "x")
    assert root["sha1"] == thumb(pki.root.der)
    assert root["sha256"] == hashlib.sha256(pki.root.der).hexdigest()
    assert root["is_ca"] is True and vendor["is_ca"] is False
    assert datetime.fromisoformat(root["not_before"]) == pki.root.cert.not_valid_before_utc
    assert datetime.fromisoformat(root["not_after"]) == pki.root.cert.not_valid_after_utc
    assert x509.load_pem_x509_certificate(root["pem"].encode()) == pki.root.cert

    issuing_crl = doc["issuer_crls"][0]
    assert issuing_crl["issuer"] == "CN=Test Issuing CA,O=otpki test"
    assert issuing_crl["crl_number"] == 1 and issuing_crl["entries"] == 1
    assert datetime.fromisoformat(issuing_crl["this_update"]) == NOW - timedelta(hours=1)
    assert datetime.fromisoformat(issuing_crl["next_update"]) == NOW + timedelta(days=7)
    assert x509.load_pem_x509_crl(issuing_crl["pem"].encode()).public_bytes(
        serialization.Encoding.DER) == pki.issuing_crl_v1
    assert doc["issuer_crls"][1]["crl_number"] == 5 and doc["issuer_crls"][1]["entries"] == 0
    assert [c["subject"] for c in doc["issuer_certificates"]] == [
        "CN=Test Issuing CA,O=otpki test", "CN=Old Issuing CA,O=otpki test"]


def test_json_unspecified_lists_are_null(pki: Pki) -> None:
    doc = trustlist_to_json(trust(content_v1(pki, mask=TrustListMask.TRUSTED_CERTIFICATES), 1))
    assert len(doc["trusted_certificates"]) == 2
    assert doc["trusted_crls"] is None and doc["issuer_certificates"] is None and doc["issuer_crls"] is None


def test_exports_reject_garbage_der(pki: Pki, tmp_path: Path) -> None:
    bad = TrustListContent(trusted_certificates=[b"\x30\x03garbage"])
    with pytest.raises(InvalidInput):
        trustlist_to_json(trust(bad, 1))
    with pytest.raises(InvalidInput):
        write_pki_folders(trust(bad, 1), tmp_path)
