"""CA keys as encrypted PKCS#8 files: decrypted only in memory, never written in clear."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from trustlists.errors import AlreadyExists, InvalidInput, KeyAccessError, NotFound, WrongPassphrase
from trustlists.keys.algorithms import can_sign_certificates, generate_private_key
from trustlists.models import KeyType
from trustlists.safe_files import create_secret, private_directory

_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MIN_PASSPHRASE_LENGTH = 12


class EncryptedFileKeyBackend:
    """Stores each CA key as `<dir>/<key_ref>.key.pem`, PKCS#8 encrypted with the best available scheme."""

    name = "file"

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        if len(passphrase) < MIN_PASSPHRASE_LENGTH:
            raise KeyAccessError(
                f"the CA key passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters",
                reason="weak_passphrase")
        self._dir = directory
        self._passphrase = passphrase
        self._cache: dict[str, CertificateIssuerPrivateKeyTypes] = {}

    def _path(self, key_ref: str) -> Path:
        if not _SAFE_REF.match(key_ref):
            raise InvalidInput(f"invalid key reference {key_ref!r}")
        return self._dir / f"{key_ref}.key.pem"

    def exists(self, key_ref: str) -> bool:
        return self._path(key_ref).exists()

    def create(self, key_ref: str, key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
        path = self._path(key_ref)
        if path.exists():
            raise AlreadyExists(f"a CA key named {key_ref!r} already exists in {self._dir}")
        key = generate_private_key(key_type)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        try:
            private_directory(self._dir)
            # Never replaces: two ceremonies racing for one name must not overwrite each other's key.
            create_secret(path, pem)
        except FileExistsError:
            raise AlreadyExists(f"a CA key named {key_ref!r} already exists in {self._dir}") from None
        except OSError as exc:
            raise KeyAccessError(f"cannot write CA key file {path}: {exc.strerror}") from None
        self._cache[key_ref] = key
        return key

    def discard(self, key_ref: str) -> None:
        path = self._path(key_ref)
        self._cache.pop(key_ref, None)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise KeyAccessError(f"cannot remove the unused CA key file {path}: {exc.strerror}") from None

    def load(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        cached = self._cache.get(key_ref)
        if cached is not None:
            return cached
        path = self._path(key_ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"CA key file {path} is missing") from None
        except OSError as exc:
            raise KeyAccessError(f"cannot read CA key file {path}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=self._passphrase)
        except (ValueError, TypeError) as exc:
            if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
                raise WrongPassphrase(
                    f"cannot decrypt CA key {key_ref!r}: wrong passphrase "
                    "(check OTPKI_CA_PASSPHRASE or the passphrase file)") from None
            raise KeyAccessError(f"CA key file {path} is damaged: {exc}") from None
        if not can_sign_certificates(key):
            raise KeyAccessError(f"CA key file {path} holds a {type(key).__name__}, which cannot sign certificates")
        self._cache[key_ref] = key
        return key
