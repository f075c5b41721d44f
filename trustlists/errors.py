"""Typed errors raised by the engine.

Each error carries a stable machine-readable `reason` so that fronts (the CLI, the OPC UA GDS, the MQTT
side) can translate it into their own words (an exit code, a StatusCode, a reason code) without parsing
messages.
"""

from __future__ import annotations


class OtpkiError(Exception):
    """Base of every error the engine raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class InvalidInput(OtpkiError):
    """Malformed input: garbage or truncated DER/PEM, wrong types."""

    reason = "invalid_input"


class InvalidName(InvalidInput):
    """A name that breaks a naming rule: an owner name, a subject attribute, a URI, a DNS name, an IP address.

    `reason` names the rule (name_too_long, name_control_character, uri_invalid, dns_name_invalid, ...); the
    message names the field and shows the value with control characters escaped.
    """

    reason = "invalid_name"


class NameReserved(InvalidName):
    """A name a service uses (the enrollment service, the broker admin, a broker) claimed by anyone else."""

    reason = "name_reserved"


class CsrRejected(OtpkiError):
    """A well-formed CSR that policy or registration forbids (reason says which rule)."""

    reason = "csr_rejected"


class PolicyViolation(CsrRejected):
    reason = "policy_violation"


class UriMismatch(CsrRejected):
    """The CSR's SAN URI is not the ApplicationUri registered for the requester."""

    reason = "uri_mismatch"


class NotFound(OtpkiError):
    reason = "not_found"


class AlreadyExists(OtpkiError):
    reason = "already_exists"


class IssuerUnusable(OtpkiError):
    """The issuing CA is expired, not yet valid, revoked or retired."""

    reason = "issuer_unusable"


class InvalidState(OtpkiError):
    """The operation is not allowed in the current state (e.g. revoking a revoked certificate)."""

    reason = "invalid_state"


class BootstrapRefused(InvalidState):
    """A bootstrap certificate (IDevID, factory certificate) may not enroll this device.

    reason: bootstrap_not_allowed (no registration lists it, or more than one does), bootstrap_pinned (the
    device enrolled with another bootstrap certificate; `otpki owners rearm` releases it), bootstrap_role (a
    service identity, which is never enrolled with a bootstrap certificate).
    """

    reason = "bootstrap_refused"


class KeyAccessError(OtpkiError):
    """A CA key cannot be used: wrong passphrase, wrong HSM PIN, missing key or token."""

    reason = "key_access"


class WrongPassphrase(KeyAccessError):
    reason = "wrong_passphrase"


class StoreError(OtpkiError):
    reason = "store_error"


class StoreBusy(StoreError):
    """The database is locked by another writer for longer than the busy timeout."""

    reason = "store_busy"


class SchemaMismatch(StoreError):
    """The store's schema is older (reason schema_outdated: `otpki db upgrade`) or newer (schema_too_new) than
    this otpki works with."""

    reason = "schema_mismatch"


class NotInitialized(OtpkiError):
    """The data directory does not exist or holds no CA hierarchy."""

    reason = "not_initialized"


class AuditTampered(OtpkiError):
    reason = "audit_tampered"


class RequestNotFound(NotFound):
    """No certificate request with that id for this requester.

    Also raised when the request exists but belongs to another owner, with the same message, so an owner
    cannot probe for other owners' request ids.
    """

    reason = "unknown_request"


class RequestNotComplete(OtpkiError):
    """The certificate request is waiting for an administrator's approval; ask again later."""

    reason = "request_not_complete"


class RequestRejected(InvalidState):
    """An administrator rejected the certificate request; the message carries the given reason."""

    reason = "request_rejected"


class RequestAlreadyDecided(InvalidState):
    """An approval or rejection of a certificate request another administrator (or process) decided first: the
    message says how it was decided (approved, issued, rejected, expired) and by whom."""

    reason = "request_already_decided"


class RequestExpired(InvalidState):
    """The certificate request can no longer be completed; submit a new one."""

    reason = "request_expired"


class RequestNotAdmitted(OtpkiError):
    """A front's request refused by the replay memory or the rate limit (`request_guard`): reason "replay" or
    "rate_limited"."""

    reason = "replay"
