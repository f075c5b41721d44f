"""The interface every CA key backend implements.

A backend creates CA key pairs and hands back objects that `cryptography`'s certificate and CRL builders
accept as signing keys. For the encrypted-file backend that is the real private key, decrypted in memory
only; for the PKCS#11 backend it is a proxy whose `sign()` runs on the token, so the key never leaves it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from trustlists.models import KeyType


@runtime_checkable
class KeyBackend(Protocol):
    name: str  # "file" or "pkcs11": stored with the CA so the right backend is used later

    def create(self, key_ref: str, key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
        """Create a new CA key under `key_ref` and return a signer for it. Refuses to overwrite."""
        ...

    def load(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        """Return a signer for an existing key; raises KeyAccessError (or a subclass) if unusable."""
        ...

    def exists(self, key_ref: str) -> bool: ...

    def discard(self, key_ref: str) -> None:
        """Remove a key this process just created for a CA whose record never committed (a failed ceremony).

        Only `KeyRing.provisional` calls it, and only for keys made inside its block: never for a key a stored CA
        names. A key that is already gone is not an error."""
        ...
