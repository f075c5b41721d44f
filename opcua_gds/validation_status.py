"""The one table from the engine's validation outcomes to the OPC UA StatusCodes Part 4 §6.1.3 names for them.

The engine's validator (`trustlists.validation`) knows no protocol; every OPC UA answer that reports a certificate
validation (a session's client certificate on a push target, CheckRevocationStatus, the push client's check of a
PLC) goes through here, so a code can only differ between them if this table says so.
"""

from __future__ import annotations

from asyncua import ua

from trustlists.validation import ValidationCode, ValidationResult

__all__ = ["STATUS_CODES", "status_code", "status_name"]

_S = ua.StatusCodes

STATUS_CODES: dict[ValidationCode, int] = {
    ValidationCode.GOOD: _S.Good,
    ValidationCode.CERTIFICATE_INVALID: _S.BadCertificateInvalid,
    ValidationCode.CHAIN_INCOMPLETE: _S.BadCertificateChainIncomplete,
    ValidationCode.POLICY_CHECK_FAILED: _S.BadCertificatePolicyCheckFailed,
    ValidationCode.UNTRUSTED: _S.BadCertificateUntrusted,
    ValidationCode.TIME_INVALID: _S.BadCertificateTimeInvalid,
    ValidationCode.ISSUER_TIME_INVALID: _S.BadCertificateIssuerTimeInvalid,
    ValidationCode.HOST_NAME_INVALID: _S.BadCertificateHostNameInvalid,
    ValidationCode.URI_INVALID: _S.BadCertificateUriInvalid,
    ValidationCode.USE_NOT_ALLOWED: _S.BadCertificateUseNotAllowed,
    ValidationCode.ISSUER_USE_NOT_ALLOWED: _S.BadCertificateIssuerUseNotAllowed,
    ValidationCode.REVOCATION_UNKNOWN: _S.BadCertificateRevocationUnknown,
    ValidationCode.ISSUER_REVOCATION_UNKNOWN: _S.BadCertificateIssuerRevocationUnknown,
    ValidationCode.REVOKED: _S.BadCertificateRevoked,
    ValidationCode.ISSUER_REVOKED: _S.BadCertificateIssuerRevoked,
}


def status_code(result: ValidationResult | ValidationCode) -> int:
    """The StatusCode (as the int OPC UA puts on the wire) of a validation outcome."""
    code = result.code if isinstance(result, ValidationResult) else result
    return STATUS_CODES[code]


def status_name(result: ValidationResult | ValidationCode) -> str:
    """The StatusCode's symbolic name ("BadCertificateRevoked"), as logs and push errors show it."""
    name, _doc = ua.status_codes.get_name_and_doc(status_code(result))
    return name
