"""Secrets the engine must read back (the console users' TOTP secrets), sealed at rest with AES-256-GCM.

The key is 32 random bytes in a file of the data directory (`console-secrets.key`, mode 0600), made the first time
a secret is sealed. Not derived from the CA key passphrase: an HSM-only setup has none, and a passphrase can be
changed while sealed secrets stay; one file works the same with every key backend. What it buys: a copy of the
store (a PostgreSQL dump, the otpki.db file, a backup, a replica) reveals no TOTP secret; whoever also holds the data
directory's key file does. Instances sharing a store need the same key file (like the CA key files).

A sealed value is `v1:<key id>:<base64 nonce + ciphertext>`; the key id (the first bytes of the key's SHA-256) lets
a value sealed under another key file fail with a message that says so. The caller's `context` (the user's name) is
authenticated with it, so a sealed value moved to another row does not open.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
from pathlib import Path

from trustlists.errors import KeyAccessError
from trustlists.safe_files import create_secret

KEY_FILE = "console-secrets.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12  # the GCM nonce size NIST SP 800-38D recommends; random, one key seals few values
_PREFIX = "v1"


class SecretKeyError(KeyAccessError):
    reason = "secrets_key"


class SecretBox:
    def __init__(self, key_file: Path | None) -> None:
        """`key_file` None: an engine without one (a tool that never touches console users) refuses to seal."""
        self.key_file = key_file
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def ensure_key(self) -> Path:
        """Make the key file now if there is none (`otpki init`: it exists before the data directory is copied to
        other instances); its path."""
        self._load(create=True)
        assert self.key_file is not None
        return self.key_file

    def seal(self, plaintext: str, *, context: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._load(create=True)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_PREFIX}:{_key_id(key)}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, value: str, *, context: str) -> str:
        """The plaintext of a sealed value; a value written before secrets were sealed is returned as it is."""
        if not is_sealed(value):
            return value
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        _, key_id, data = value.split(":", 2)
        key = self._load(create=False)
        if key_id != _key_id(key):
            raise SecretKeyError(f"a secret of {context!r} was sealed with another key (id {key_id}) than "
                                 f"{self.key_file} (id {_key_id(key)}): copy the key file of the instance that "
                                 "sealed it, or reset the secret (otpki users reset-totp)")
        raw = base64.b64decode(data)
        try:
            return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except InvalidTag:
            raise SecretKeyError(f"the sealed secret of {context!r} does not open: it was altered, or belongs to "
                                 "another row") from None

    def _load(self, *, create: bool) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._read(create=create)
            return self._key

    def _read(self, *, create: bool) -> bytes:
        if self.key_file is None:
            raise SecretKeyError("this engine was opened without a secrets key file: console users are unavailable")
        if create and not self.key_file.exists():
            self.key_file.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                create_secret(self.key_file, os.urandom(_KEY_BYTES))
        try:
            key = self.key_file.read_bytes()
        except FileNotFoundError:
            raise SecretKeyError(f"{self.key_file} is missing: the console's TOTP secrets cannot be read (copy it "
                                 "from the instance that made them, or reset them: otpki users reset-totp)") from None
        if len(key) != _KEY_BYTES:
            raise SecretKeyError(f"{self.key_file} holds {len(key)} bytes, not a {_KEY_BYTES}-byte key")
        return key


def is_sealed(value: str) -> bool:
    return value.startswith(_PREFIX + ":")


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"otpki secret box key id\0" + key).hexdigest()[:16]
