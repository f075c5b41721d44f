"""Trust-list exports checked against the software that reads them: asyncua, OpenSSL, the spec layout."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import stat
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustlists.errors import InvalidInput
from trustlists.exports import (
    decode_trustlist,
    encode_trustlist,
    mosquitto_bundle,
    trustlist_to_json,
    write_mosquitto_files,
    write_pki_folders,
)
from trustlists.exports import pki_folders as pki_module
from trustlists.exports.pki_folders import MANIFEST_NAME
from trustlists.models import TrustList, TrustListContent, TrustListMask

OPENSSL = "/usr/bin/openssl"
NOW = datetime.now(UTC).replace(microsecond=0)


# --- a small PKI, built once per module -------------------------------------------------------------

@dataclass
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otpki test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_cert(cn: str, issuer: Cert | None, *, ca: bool, uri: str | None = None) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
                       critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = (
            builder.add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                              data_encipherment=False, key_agreement=True, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri or f"urn:{cn}")]),
                           critical=False)
        )
    return Cert(builder.sign(signer_key, hashes.SHA256()), key)


def _make_crl(ca: Cert, number: int, revoked: list[Cert]) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - timedelta(hours=1))
        .next_update(NOW + timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.cert.serial_number)
            .revocation_date(NOW - timedelta(minutes=30)).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass
class Pki:
    root: Cert
    issuing: Cert
    old_issuing: Cert  # present in version 1 only
    leaf_good: Cert
    leaf_revoked: Cert
    vendor: Cert  # self-signed end-entity certificate, trusted directly
    root_crl: bytes
    issuing_crl_v1: bytes
    issuing_crl_v2: bytes
    old_issuing_crl: bytes


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = _make_cert("Test Root CA", None, ca=True)
    issuing = _make_cert("Test Issuing CA", root, ca=True)
    old_issuing = _make_cert("Old Issuing CA", root, ca=True)
    leaf_good = _make_cert("plc-01", issuing, ca=False)
    leaf_revoked = _make_cert("plc-02", issuing, ca=False)
    vendor = _make_cert("Vendor HMI: unit/7", None, ca=False, uri="urn:vendor:hmi")
    return Pki(
        root=root, issuing=issuing, old_issuing=old_issuing, leaf_good=leaf_good,
        leaf_revoked=leaf_revoked, vendor=vendor,
        root_crl=_make_crl(root, 1, []),
        issuing_crl_v1=_make_crl(issuing, 1, [leaf_revoked]),
        issuing_crl_v2=_make_crl(issuing, 2, [leaf_revoked]),
        old_issuing_crl=_make_crl(old_issuing, 5, []),
    )


def _trust(content: TrustListContent, version: int) -> TrustList:
    return TrustList(group="DefaultApplicationGroup", version=version, content_hash=content.content_hash(),
                     created_at=NOW, content=content)


def _content_v1(pki: Pki, mask: int = TrustListMask.ALL) -> TrustListContent:
    return TrustListContent(
        specified_lists=mask,
        trusted_certificates=[pki.root.der, pki.vendor.der],
        trusted_crls=[pki.root_crl],
        issuer_certificates=[pki.issuing.der, pki.old_issuing.der],
        issuer_crls=[pki.issuing_crl_v1, pki.old_issuing_crl],
    )


def _content_v2(pki: Pki) -> TrustListContent:
    return TrustListContent(
        trusted_certificates=[pki.root.der, pki.vendor.der],
        trusted_crls=[pki.root_crl],
        issuer_certificates=[pki.issuing.der],
        issuer_crls=[pki.issuing_crl_v2],
    )


def _thumb(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


# --- OPC UA binary encoding -------------------------------------------------------------------------

def _asyncua_struct(content: TrustListContent):
    from asyncua import ua

    return ua.TrustListDataType(
        SpecifiedLists=content.specified_lists,
        TrustedCertificates=list(content.trusted_certificates),
        TrustedCrls=list(content.trusted_crls),
        IssuerCertificates=list(content.issuer_certificates),
        IssuerCrls=list(content.issuer_crls),
    )


def test_binary_round_trip(pki: Pki) -> None:
    content = _content_v1(pki)
    data = encode_trustlist(content)
    assert decode_trustlist(data) == content
    assert struct.unpack_from("<Ii", data) == (15, 2)  # mask, then the TrustedCertificates count


def test_binary_equals_asyncua_both_ways(pki: Pki) -> None:
    from asyncua import ua
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    content = _content_v1(pki)
    theirs = struct_to_binary(_asyncua_struct(content))
    assert encode_trustlist(content) == theirs
    assert decode_trustlist(theirs) == content

    decoded = struct_from_binary(ua.TrustListDataType, Buffer(encode_trustlist(content)))
    assert decoded == _asyncua_struct(content)

    empty = TrustListContent(specified_lists=TrustListMask.NONE)
    assert encode_trustlist(empty) == struct_to_binary(ua.TrustListDataType())


def test_binary_only_specified_lists_count(pki: Pki) -> None:
    from asyncua.ua.ua_binary import struct_to_binary

    mask = TrustListMask.TRUSTED_CERTIFICATES | TrustListMask.TRUSTED_CRLS
    full = _content_v1(pki, mask=mask)
    # A peer may send lists it did not name; they must not leak into what we decode.
    decoded = decode_trustlist(struct_to_binary(_asyncua_struct(full)))
    assert decoded.specified_lists == mask
    assert decoded.trusted_certificates == full.trusted_certificates
    assert decoded.issuer_certificates == [] and decoded.issuer_crls == []
    # And we do not send them: the encoding equals asyncua's with those lists empty.
    trimmed = full.model_copy(update={"issuer_certificates": [], "issuer_crls": []})
    assert encode_trustlist(full) == struct_to_binary(_asyncua_struct(trimmed))


def test_binary_null_arrays_decode_as_empty(pki: Pki) -> None:
    from asyncua import ua
    from asyncua.ua.ua_binary import struct_to_binary

    data = struct_to_binary(ua.TrustListDataType(SpecifiedLists=15, TrustedCertificates=None,
                                                 TrustedCrls=None, IssuerCertificates=[pki.issuing.der],
                                                 IssuerCrls=None))
    assert data[4:8] == b"\xff\xff\xff\xff"  # really a null array on the wire
    decoded = decode_trustlist(data)
    assert decoded.trusted_certificates == [] and decoded.issuer_certificates == [pki.issuing.der]


def test_binary_rejects_every_truncation(pki: Pki) -> None:
    data = encode_trustlist(_content_v1(pki))
    for cut in range(len(data)):
        with pytest.raises(InvalidInput):
            decode_trustlist(data[:cut])


@pytest.mark.parametrize("blob", [
    struct.pack("<Ii", 15, 0x7FFFFFFF),  # absurd array count
    struct.pack("<Iii", 15, 1, 0x7FFFFFFF) + b"x" * 16,  # absurd ByteString length
    struct.pack("<Ii", 15, -2),  # negative count other than -1
    struct.pack("<Iii", 15, 1, -1) + struct.pack("<iii", 0, 0, 0),  # null certificate
    struct.pack("<Iii", 15, 1, 0) + struct.pack("<iii", 0, 0, 0),  # empty certificate
    struct.pack("<Iiiii", 16, 0, 0, 0, 0),  # mask bit outside TrustListMasks
    struct.pack("<Iiiii", 15, 0, 0, 0, 0) + b"\x00",  # trailing garbage
    b"",
    b"\x0f\x00",
])
def test_binary_rejects_malformed(blob: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_trustlist(blob)


def test_binary_rejects_random_garbage() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        blob = rng.randbytes(rng.randrange(0, 200))
        with pytest.raises(InvalidInput):
            decode_trustlist(blob)


# --- PKI folders ------------------------------------------------------------------------------------

def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_pki_folders_layout_and_names(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "pki"
    summary = write_pki_folders(_trust(_content_v1(pki), 1), root,
                                own_certificate_der=pki.leaf_good.der,
                                own_private_key_pem=pki.leaf_good.key_pem)

    t = _thumb
    assert _names(root / "trusted/certs") == {f"Test Root CA [{t(pki.root.der)}].der",
                                              f"Vendor HMI_ unit_7 [{t(pki.vendor.der)}].der"}
    assert _names(root / "issuer/certs") == {f"Test Issuing CA [{t(pki.issuing.der)}].der",
                                             f"Old Issuing CA [{t(pki.old_issuing.der)}].der"}
    root_crl = f"Test Root CA [{t(pki.root_crl)}].crl"
    assert _names(root / "trusted/crl") == {root_crl, root_crl + ".der"}
    issuing_crl = f"Test Issuing CA [{t(pki.issuing_crl_v1)}].crl"
    old_crl = f"Old Issuing CA [{t(pki.old_issuing_crl)}].crl"
    assert _names(root / "issuer/crl") == {issuing_crl, issuing_crl + ".der", old_crl, old_crl + ".der"}
    own = f"plc-01 [{t(pki.leaf_good.der)}]"
    assert _names(root / "own/certs") == {own + ".der"}
    assert _names(root / "own/private") == {own + ".pem"}

    # Files hold DER exactly as in the trust list; the key is private.
    assert (root / "trusted/crl" / root_crl).read_bytes() == pki.root_crl
    assert (root / "own/certs" / (own + ".der")).read_bytes() == pki.leaf_good.der
    assert stat.S_IMODE((root / "own/private" / (own + ".pem")).stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "own/private").stat().st_mode) == 0o700
    assert summary.added == 12 and summary.removed == 0 and summary.kept == 0 and summary.foreign == 0
    assert (root / MANIFEST_NAME).is_file()
    assert not list(root.rglob(".otpki-tmp-*"))

    # Same content again: nothing to do.
    again = write_pki_folders(_trust(_content_v1(pki), 1), root, own_certificate_der=pki.leaf_good.der,
                              own_private_key_pem=pki.leaf_good.key_pem)
    assert (again.added, again.removed, again.kept) == (0, 0, 12)


def test_pki_folders_no_private_folder_without_key(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(_trust(_content_v1(pki), 1), tmp_path, own_certificate_der=pki.leaf_good.der)
    assert not (tmp_path / "own/private").exists()
    assert len(_names(tmp_path / "own/certs")) == 1
    with pytest.raises(InvalidInput):
        write_pki_folders(_trust(_content_v1(pki), 1), tmp_path, own_private_key_pem=pki.leaf_good.key_pem)
    with pytest.raises(InvalidInput):  # a key that is not the certificate's
        write_pki_folders(_trust(_content_v1(pki), 1), tmp_path, own_certificate_der=pki.leaf_good.der,
                          own_private_key_pem=pki.vendor.key_pem)


def test_pki_folders_sync_removes_only_our_stale_files(pki: Pki, tmp_path: Path) -> None:
    root = tmp_path / "pki"
    write_pki_folders(_trust(_content_v1(pki), 1), root)
    # Operators drop their own files; one even uses our naming style but was never written by us.
    operator_cert = _make_cert("Operator Extra", None, ca=False)
    foreign = {
        "trusted/certs/operator.der": operator_cert.der,
        f"issuer/certs/Lookalike [{'A' * 40}].der": pki.old_issuing.der,
        "issuer/crl/manual.crl": pki.old_issuing_crl,
    }
    for rel, data in foreign.items():
        (root / rel).write_bytes(data)

    summary = write_pki_folders(_trust(_content_v2(pki), 2), root)

    t = _thumb
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
    write_pki_folders(_trust(_content_v1(pki), 1), tmp_path)
    old_ca = tmp_path / f"issuer/certs/Old Issuing CA [{_thumb(pki.old_issuing.der)}].der"
    old_ca.write_bytes(pki.old_issuing.pem)  # an operator converted our file: it is theirs now

    # Version 2 names only the issuer certificates; the CRL folders must not be touched.
    only_issuers = _content_v2(pki).model_copy(update={"specified_lists": TrustListMask.ISSUER_CERTIFICATES})
    summary = write_pki_folders(_trust(only_issuers, 2), tmp_path)
    assert old_ca.read_bytes() == pki.old_issuing.pem
    assert summary.removed == 0 and summary.foreign_files == [f"issuer/certs/{old_ca.name}"]
    assert len(_names(tmp_path / "issuer/crl")) == 4  # v1 CRLs, untouched

    # Those untouched files are still ours: a later full sync removes what v2 no longer has.
    full = write_pki_folders(_trust(_content_v2(pki), 3), tmp_path)
    assert len(_names(tmp_path / "issuer/crl")) == 2
    assert full.removed == 4


def test_pki_folders_adopt_after_lost_manifest(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(_trust(_content_v1(pki), 1), tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{ not json")
    summary = write_pki_folders(_trust(_content_v1(pki), 1), tmp_path)
    assert (summary.added, summary.kept, summary.foreign) == (0, 10, 0)
    write_pki_folders(_trust(_content_v2(pki), 2), tmp_path)
    assert len(_names(tmp_path / "issuer/certs")) == 1


def test_pki_folders_keep_old_crl_when_new_one_cannot_be_written(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pki_folders(_trust(_content_v1(pki), 1), tmp_path)
    new_crl = f"Test Issuing CA [{_thumb(pki.issuing_crl_v2)}].crl"
    real_write = pki_module.write_public

    def failing_write(target: Path, data: bytes, **kwargs) -> None:
        if target.name == new_crl:
            raise OSError("disk full")
        real_write(target, data, **kwargs)

    monkeypatch.setattr(pki_module, "write_public", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_pki_folders(_trust(_content_v2(pki), 2), tmp_path)
    old_crl = tmp_path / f"issuer/crl/Test Issuing CA [{_thumb(pki.issuing_crl_v1)}].crl"
    assert old_crl.read_bytes() == pki.issuing_crl_v1
    assert not list(tmp_path.rglob(".otpki-tmp-*"))


def _asyncua_validates(root: Path, *certs: Cert) -> list[bool]:
    from asyncua.crypto.truststore import TrustStore

    store = TrustStore([root / "trusted/certs", root / "issuer/certs"],
                       [root / "trusted/crl", root / "issuer/crl"])
    asyncio.run(store.load())
    return [store.validate(c.cert) for c in certs]


def test_pki_folders_load_in_asyncua_truststore(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(_trust(_content_v1(pki), 1), tmp_path)
    (tmp_path / "trusted/certs/operator.der").write_bytes(_make_cert("Operator", None, ca=False).der)
    write_pki_folders(_trust(_content_v2(pki), 2), tmp_path)

    outsider = _make_cert("outsider", _make_cert("Other Root", None, ca=True), ca=False)
    good, revoked, vendor, stranger = _asyncua_validates(
        tmp_path, pki.leaf_good, pki.leaf_revoked, pki.vendor, outsider)
    assert (good, revoked, vendor, stranger) == (True, False, True, False)


def test_asyncua_ignores_plain_crl_files(pki: Pki, tmp_path: Path) -> None:
    # Why asyncua_crl_copies exists: asyncua's TrustStore skips "*.crl", so without the ".crl.der"
    # copies a revoked certificate passes there.
    write_pki_folders(_trust(_content_v2(pki), 2), tmp_path, asyncua_crl_copies=False)
    assert all(n.endswith(".crl") for n in _names(tmp_path / "issuer/crl"))
    assert _asyncua_validates(tmp_path, pki.leaf_revoked) == [True]


def test_asyncua_loads_crl_of_ca_named_with_der(tmp_path: Path) -> None:
    # asyncua parses any file whose name contains "der"/"pem" (and does not end in .der) as PEM, so a
    # plain "Schneider Root CA [..].crl" would abort TrustStore.load(); the label is defused instead.
    root = _make_cert("Schneider Root CA", None, ca=True)
    leaf = _make_cert("drive-7", root, ca=False)
    content = TrustListContent(trusted_certificates=[root.der], trusted_crls=[_make_crl(root, 1, [leaf])])
    write_pki_folders(_trust(content, 1), tmp_path)
    names = _names(tmp_path / "trusted/crl")
    assert all(n.startswith("Schneid_r Root CA [") for n in names) and len(names) == 2
    assert _asyncua_validates(tmp_path, leaf) == [False]


def test_pki_folders_node_opcua_issuer_folder(pki: Pki, tmp_path: Path) -> None:
    write_pki_folders(_trust(_content_v1(pki), 1), tmp_path, issuer_folder="issuers")
    assert len(_names(tmp_path / "issuers/certs")) == 2
    assert not (tmp_path / "issuer").exists()


# --- Mosquitto ----------------------------------------------------------------------------------------

def _openssl_verify(ca: Path, crl: Path, leaf: Cert, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(leaf.pem)
    return subprocess.run([OPENSSL, "verify", "-CAfile", str(ca), "-CRLfile", str(crl), "-crl_check_all",
                           str(leaf_file)], capture_output=True, text=True, check=False)


def test_mosquitto_bundle_contents(pki: Pki) -> None:
    ca_pem, crl_pem = mosquitto_bundle(_trust(_content_v1(pki), 1))
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
    write_mosquitto_files(_trust(_content_v2(pki), 2), ca, crl)

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
    write_mosquitto_files(_trust(_content_v1(pki), 1), ca, crl)
    inodes = (ca.stat().st_ino, crl.stat().st_ino)
    first = (ca.read_bytes(), crl.read_bytes())

    write_mosquitto_files(_trust(_content_v2(pki), 2), ca, crl)
    assert (ca.stat().st_ino, crl.stat().st_ino) != inodes
    assert inodes[0] != ca.stat().st_ino and inodes[1] != crl.stat().st_ino
    assert (ca.read_bytes(), crl.read_bytes()) == mosquitto_bundle(_trust(_content_v2(pki), 2))
    assert (ca.read_bytes(), crl.read_bytes()) != first
    assert _names(tmp_path) == {"ca.pem", "crl.pem"}

    # A failed replace leaves the previous file whole and no temporary file behind.
    second = ca.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_mosquitto_files(_trust(_content_v1(pki), 1), ca, crl)
    assert ca.read_bytes() == second
    assert _names(tmp_path) == {"ca.pem", "crl.pem"}


# --- JSON ---------------------------------------------------------------------------------------------

def test_json_shape_and_values(pki: Pki) -> None:
    import json

    doc = trustlist_to_json(_trust(_content_v1(pki), 7))
    json.dumps(doc)  # plain JSON types only
    assert doc["group"] == "DefaultApplicationGroup" and doc["version"] == 7
    assert doc["content_hash"] == _content_v1(pki).content_hash()
    assert datetime.fromisoformat(doc["created_at"]) == NOW
    assert doc["specified_lists"] == 15

    root, vendor = doc["trusted_certificates"]
    assert root["subject"] == "CN=Test Root CA,O=otpki test" == root["issuer"]
    assert root["serial"] == format(pki.root.cert.serial_number, "x")
    assert root["sha1"] == _thumb(pki.root.der)
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
    doc = trustlist_to_json(_trust(_content_v1(pki, mask=TrustListMask.TRUSTED_CERTIFICATES), 1))
    assert len(doc["trusted_certificates"]) == 2
    assert doc["trusted_crls"] is None and doc["issuer_certificates"] is None and doc["issuer_crls"] is None


def test_exports_reject_garbage_der(pki: Pki, tmp_path: Path) -> None:
    bad = TrustListContent(trusted_certificates=[b"\x30\x03garbage"])
    with pytest.raises(InvalidInput):
        trustlist_to_json(_trust(bad, 1))
    with pytest.raises(InvalidInput):
        mosquitto_bundle(_trust(bad, 1))
    with pytest.raises(InvalidInput):
        write_pki_folders(_trust(bad, 1), tmp_path)
