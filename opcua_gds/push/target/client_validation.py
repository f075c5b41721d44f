"""Client application certificates checked against the ACTIVE push trust list (asyncua's validator hook).

asyncua calls the hook (`Server.set_certificate_validator`) at CreateSession, not at OpenSecureChannel, and
answers CreateSession with the status of the ServiceError it raises. `trustlists.validation.CertificateValidator`
runs the Part 4 checks (chain, trust, validity, usage, revocation) with default ValidationOptions. A refused
certificate is remembered for GetRejectedList and CreateSession fails with the wire status of reference 1.8:
TimeInvalid, UseNotAllowed and RevocationUnknown pass through, everything else is Bad_SecurityChecksFailed.

Bootstrapping (trust_on_first_push): a PLC ships with an empty trust list, and nobody could push the first
one if every client were refused. While the active trust list has no trusted certificate at all, any client
certificate is accepted at CreateSession; the push methods still demand SignAndEncrypt and a SecurityAdmin
user (password), so the first push is authenticated by the user, not by the certificate. The first applied
trust list ends that window. Pass trust_on_first_push=False to refuse everything until a trust list is put in
the PKI folder out of band.

Chains: a client may send the CAs above its certificate after it in its OpenSecureChannel (OPC 10000-6 6.2.3),
so that a server whose trust list holds only the plant root (and the CRLs) can build the path. asyncua hands the
hook the certificate alone; the chain comes from `call_context.creating_session_chain()` and is used when its
leaf is that certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from opcua_gds.call_context import creating_session_chain
from opcua_gds.push.target.state import PushState
from opcua_gds.validation_status import status_code, status_name
from trustlists.validation import CertificateValidator, ValidationCode, ValidationOptions

log = logging.getLogger(__name__)
_PASS_THROUGH = {ValidationCode.TIME_INVALID, ValidationCode.USE_NOT_ALLOWED, ValidationCode.REVOCATION_UNKNOWN}


class ClientCertificateCheck:
    def __init__(self, state: PushState, *, trust_on_first_push: bool = True) -> None:
        self.state = state
        self.trust_on_first_push = trust_on_first_push
        self.options = ValidationOptions()
        self._validator = CertificateValidator(state.active_trust)

    def rebuild(self) -> None:
        """After the active trust list changed."""
        self._validator = CertificateValidator(self.state.active_trust)

    def bootstrapping(self) -> bool:
        return self.trust_on_first_push and not self.state.active_trust.trusted_certificates

    def status_for(self, chain: Sequence[bytes]) -> int:
        """The wire status for a client's chain (leaf first, then the CAs it sent)."""
        if self.bootstrapping():
            return ua.StatusCodes.Good
        result = self._validator.validate(list(chain), self.options)
        if result.ok:
            return ua.StatusCodes.Good
        log.warning("refused client certificate: %s (%s)", status_name(result), result.reason)
        return status_code(result) if result.code in _PASS_THROUGH else ua.StatusCodes.BadSecurityChecksFailed

    def accepts(self, chain: Sequence[bytes]) -> bool:
        return self.status_for(chain) == ua.StatusCodes.Good

    async def __call__(self, certificate: x509.Certificate, app_description: Any) -> None:
        der = certificate.public_bytes(Encoding.DER)
        sent = creating_session_chain()
        status = self.status_for(sent if sent and sent[0] == der else (der,))
        if status != ua.StatusCodes.Good:
            self.state.reject(der)
            raise ServiceError(status)
