"""Sync a trust list into the OPC UA "PKI directory" layout that UA stacks read from disk.

Layout under `root` (UA-.NET DirectoryCertificateStore style; node-opcua calls the issuer folder
`issuers`, so pass issuer_folder="issuers" for it; asyncua takes whatever folders it is given):

    own/certs/<CN> [<SHA1>].der        own certificate (only when given; more_own: one per certificate type)
    own/private/<CN> [<SHA1>].pem      its private key (only when given; folder 0700, file 0600)
    trusted/certs/<CN> [<SHA1>].der    TrustedCertificates
    trusted/crl/<issuer CN> [<SHA1>].crl     TrustedCrls (DER)
    issuer/certs/<CN> [<SHA1>].der     IssuerCertificates
    issuer/crl/<issuer CN> [<SHA1>].crl      IssuerCrls (DER)

SHA1 is the upper-case hex SHA-1 of the file's DER (the OPC UA thumbprint).

asyncua's TrustStore only reads files whose name contains "der" or "pem" and parses anything not ending
in ".der" as PEM, so it never sees "*.crl"; UA-.NET, in turn, only reads "*.crl" in a crl folder. With
asyncua_crl_copies (the default) every CRL is also written as "<issuer CN> [<SHA1>].crl.der", which
asyncua loads and UA-.NET ignores (node-opcua reads both; a CRL seen twice changes nothing). asyncua
also matches "der"/"pem" anywhere in the lower-cased name, so a "Schneider CA [..].crl" would be parsed as
PEM and abort its whole TrustStore.load(); with the copies on, "der"/"pem" in a CRL's label therefore
get their middle letter replaced ("Schneid_r CA [..].crl"). Only the cosmetic label changes.

Ownership rule (what a sync may delete): a file is ours when it is listed, with the SHA-256 of the bytes
we wrote, in the manifest `root/.otpki-manifest.json`, its name has the "<label> [<40 hex>].<ext>"
shape, it lies in one of the folders above, and its content still has that SHA-256. Everything else
(files operators drop in, or our files they edited) is foreign and left alone. A desired file that is
already on disk with exactly the bytes we would write is adopted, so a lost manifest or a crash between
writing files and writing the manifest never leaves files orphaned for good.

Order: new files are written first (atomically each, temp file in `root` so that folder watchers such as
node-opcua's never see half-written or temporary files), then stale files are removed, then the manifest
is replaced. At every moment the folders hold either the old or the new CRL of an issuer, or both.
Folders of lists that specified_lists does not name are left exactly as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, Field, ValidationError

from trustlists.errors import InvalidInput
from trustlists.exports._certinfo import certificate_file_name, crl_file_name, load_certificate
from trustlists.models import TrustList, TrustListMask
from trustlists.safe_files import TEMP_PREFIX, fsync_dir, private_directory, write_public, write_secret

MANIFEST_NAME = ".otpki-manifest.json"
_LOCK_NAME = ".otpki-lock"
_OURS = re.compile(r"^.+ \[[0-9A-F]{40}\]\.(der|crl|crl\.der|pem)$")
# What asyncua's TrustStore looks for anywhere in a lower-cased file name (see the module docstring).
_ASYNCUA_TRIGGER = re.compile(r"der|pem", re.IGNORECASE)
_OWN_CERTS = "own/certs"
_OWN_PRIVATE = "own/private"


class PkiExportSummary(BaseModel):
    """What a sync did; paths are relative to the root, '/'-separated."""

    added: int = 0  # files written (new, or ours with damaged content rewritten)
    removed: int = 0  # stale files of ours deleted
    kept: int = 0  # files already present with the right content
    foreign: int = 0  # files in the managed folders that are not ours (left alone)
    added_files: list[str] = Field(default_factory=list)
    removed_files: list[str] = Field(default_factory=list)
    foreign_files: list[str] = Field(default_factory=list)


class _Manifest(BaseModel):
    group: str | None = None
    version: int | None = None
    content_hash: str | None = None
    written_at: datetime | None = None
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256 of what we wrote


def write_pki_folders(
    trust: TrustList,
    root: Path,
    *,
    own_certificate_der: bytes | None = None,
    own_private_key_pem: bytes | None = None,
    issuer_folder: str = "issuer",
    asyncua_crl_copies: bool = True,
    more_own: Sequence[tuple[bytes, bytes]] = (),
) -> PkiExportSummary:
    """Make the PKI folders under `root` match `trust` (see the module docstring for the rules).

    `more_own`: further own (certificate DER, private key PEM) pairs, for an application with a certificate of
    each type (RSA and ECC); written next to the own certificate, which they need.
    """
    if own_private_key_pem is not None and own_certificate_der is None:
        raise InvalidInput("a private key is only written together with its certificate")
    if more_own and (own_certificate_der is None or own_private_key_pem is None):
        raise InvalidInput("more own certificates are only written together with the own certificate and key")
    if issuer_folder not in ("issuer", "issuers"):
        raise InvalidInput(f"issuer_folder must be 'issuer' or 'issuers', not {issuer_folder!r}")

    root = Path(root)
    folders = _list_folders(issuer_folder)
    desired, managed = _desired_files(trust, folders, asyncua_crl_copies)
    if own_certificate_der is not None:
        own = _own_files(own_certificate_der, own_private_key_pem)
        for cert_der, key_pem in more_own:
            own.update(_own_files(cert_der, key_pem))
        desired.update(own)
        managed.add(_OWN_CERTS)
        if own_private_key_pem is not None:
            managed.add(_OWN_PRIVATE)

    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        _remove_leftover_temps(root)
        for folder in (*folders.values(), _OWN_CERTS):
            (root / folder).mkdir(parents=True, exist_ok=True)
        if _OWN_PRIVATE in managed:
            os.chmod(private_directory(root / _OWN_PRIVATE), 0o700)  # the UA layout's rule, also for old folders

        all_folders = {*folders.values(), _OWN_CERTS, _OWN_PRIVATE}
        old = _read_manifest(root, all_folders)
        summary = PkiExportSummary()
        new_files: dict[str, str] = {}

        # 1. New content first, so nothing a reader relies on disappears before its successor exists.
        for rel, data in sorted(desired.items()):
            target = root / rel
            digest = hashlib.sha256(data).hexdigest()
            if _sha256_of(target) == digest:
                summary.kept += 1
            else:
                write = write_secret if rel.startswith(_OWN_PRIVATE + "/") else write_public
                write(target, data, temp_dir=root)
                summary.added += 1
                summary.added_files.append(rel)
            new_files[rel] = digest

        # 2. Then what we wrote earlier and no longer want, in the folders this sync is responsible for.
        for rel, digest in sorted(old.files.items()):
            if rel in new_files:
                continue
            target = root / rel
            if rel.rsplit("/", 1)[0] not in managed:
                if _sha256_of(target) == digest:  # untouched folder: still ours
                    new_files[rel] = digest
                continue
            if _sha256_of(target) != digest:
                continue  # gone already, or edited by someone else: no longer ours to delete
            target.unlink()
            summary.removed += 1
            summary.removed_files.append(rel)

        for folder in sorted(all_folders):
            if (root / folder).is_dir():
                fsync_dir(root / folder)

        # 3. Finally record what is ours now.
        manifest = _Manifest(group=trust.group, version=trust.version, content_hash=trust.content_hash,
                             written_at=datetime.now(UTC), files=dict(sorted(new_files.items())))
        write_public(root / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode(), temp_dir=root)

        summary.foreign_files = sorted(
            rel for rel in _files_in(root, sorted(managed)) if rel not in new_files)
        summary.foreign = len(summary.foreign_files)
    return summary


def _list_folders(issuer_folder: str) -> dict[TrustListMask, str]:
    return {
        TrustListMask.TRUSTED_CERTIFICATES: "trusted/certs",
        TrustListMask.TRUSTED_CRLS: "trusted/crl",
        TrustListMask.ISSUER_CERTIFICATES: f"{issuer_folder}/certs",
        TrustListMask.ISSUER_CRLS: f"{issuer_folder}/crl",
    }


def _desired_files(trust: TrustList, folders: dict[TrustListMask, str],
                   crl_copies: bool) -> tuple[dict[str, bytes], set[str]]:
    content = trust.content
    lists = {
        TrustListMask.TRUSTED_CERTIFICATES: content.trusted_certificates,
        TrustListMask.TRUSTED_CRLS: content.trusted_crls,
        TrustListMask.ISSUER_CERTIFICATES: content.issuer_certificates,
        TrustListMask.ISSUER_CRLS: content.issuer_crls,
    }
    desired: dict[str, bytes] = {}
    managed: set[str] = set()
    for bit, blobs in lists.items():
        if not content.specified_lists & bit:
            continue
        folder = folders[bit]
        managed.add(folder)
        is_crl = bit in (TrustListMask.TRUSTED_CRLS, TrustListMask.ISSUER_CRLS)
        for der in blobs:
            if is_crl:
                name = crl_file_name(der)
                if crl_copies:
                    name = _ASYNCUA_TRIGGER.sub(lambda m: m[0][0] + "_" + m[0][2], name)
                desired[f"{folder}/{name}"] = der
                if crl_copies:
                    desired[f"{folder}/{name}.der"] = der
            else:
                desired[f"{folder}/{certificate_file_name(der)}"] = der
    return desired, managed


def _own_files(cert_der: bytes, key_pem: bytes | None) -> dict[str, bytes]:
    cert_name = certificate_file_name(cert_der)
    files = {f"{_OWN_CERTS}/{cert_name}": cert_der}
    if key_pem is not None:
        _check_key_matches(cert_der, key_pem)
        # Same base name as the certificate: UA-.NET pairs key and certificate that way.
        files[f"{_OWN_PRIVATE}/{cert_name.removesuffix('.der')}.pem"] = key_pem
    return files


def _check_key_matches(cert_der: bytes, key_pem: bytes) -> None:
    if b"-----BEGIN" not in key_pem:
        raise InvalidInput("own private key must be PEM")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        return  # encrypted: the device holds the passphrase, we cannot (and need not) look inside
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"own private key cannot be read: {exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, spki) != load_certificate(cert_der).public_key().public_bytes(
            enc, spki):
        raise InvalidInput("own private key does not belong to the own certificate")


def _read_manifest(root: Path, folders: set[str]) -> _Manifest:
    """Load the manifest, keeping only entries that could be ours; unreadable means 'nothing is ours'."""
    try:
        manifest = _Manifest.model_validate_json((root / MANIFEST_NAME).read_bytes())
    except (OSError, ValidationError, ValueError):
        return _Manifest()
    # A hand-edited manifest must not be able to point deletion outside our folders or at foreign names.
    files = {rel: digest for rel, digest in manifest.files.items()
             if "/" in rel and rel.rsplit("/", 1)[0] in folders and _OURS.match(rel.rsplit("/", 1)[1])}
    return manifest.model_copy(update={"files": files})


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _files_in(root: Path, folders: list[str]) -> Iterator[str]:
    for folder in folders:
        directory = root / folder
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.is_file():
                    yield f"{folder}/{entry.name}"


def _remove_leftover_temps(root: Path) -> None:
    # Only temp files of a crashed earlier run can exist here: the lock keeps concurrent runs out.
    for entry in root.glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            entry.unlink()


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise syncs of one root (two interleaved syncs would each record only their own files)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; callers run one sync per root
        yield
        return
    fd = os.open(root / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
