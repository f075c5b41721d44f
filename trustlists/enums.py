"""The engine's enumerations that command-line options take their choices from.

In a module without pydantic or cryptography: the CLI declares its options with them when it starts, and
`otpki --help` loads nothing of the engine. `trustlists.models` and `trustlists.requests` use them as well.
"""

from __future__ import annotations

from enum import StrEnum


class KeyType(StrEnum):
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    ED25519 = "ed25519"

    @property
    def family(self) -> KeyFamily:
        if self.value.startswith("rsa"):
            return KeyFamily.RSA
        if self.value.startswith("ec-"):
            return KeyFamily.EC
        return KeyFamily.ED25519


class KeyFamily(StrEnum):
    RSA = "rsa"
    EC = "ec"
    ED25519 = "ed25519"


class CertificateStatus(StrEnum):
    """Status as the inventory reports it (derived from the stored state and the clock)."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    NOT_DELIVERED = "issued-not-delivered"


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # decided; the certificate is made when the owner collects it (new-key requests)
    REJECTED = "rejected"
    ISSUED = "issued"
    EXPIRED = "expired"  # can no longer be completed (its key password was lost): submit a new request
