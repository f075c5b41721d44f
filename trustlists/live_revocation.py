"""The engine's own revocation answers for validation: the O(1) index instead of CRL scans.

For certificates issued by one of the engine's CAs, a revocation is effective the moment it is committed,
without waiting for anyone to reload a CRL. Certificates of other issuers (imported trust) are left to
the CRLs in the trust list (status None).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from trustlists.context import EngineContext
from trustlists.validation import RevocationStatus


class LiveRevocationSource:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx
        self._ca_by_fingerprint: dict[bytes, str] = {}
        self.reload_cas()

    def reload_cas(self) -> None:
        with self._ctx.store.read() as tx:
            cas = tx.list_cas()
        self._ca_by_fingerprint = {bytes.fromhex(ca.fingerprint_sha256): ca.id for ca in cas}
        self._issuer_ids: dict[x509.Certificate, str | None] = {}

    def _ca_id(self, issuer: x509.Certificate) -> str | None:
        # Issuers are few and the validator hands back its own parsed objects: remember the answer
        # instead of hashing the issuer's DER on every check.
        try:
            return self._issuer_ids[issuer]
        except KeyError:
            ca_id = self._ca_by_fingerprint.get(issuer.fingerprint(hashes.SHA256()))
            if len(self._issuer_ids) < 1024:
                self._issuer_ids[issuer] = ca_id
            return ca_id

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus | None:
        ca_id = self._ca_id(issuer)
        if ca_id is None:
            return None
        if self._ctx.index.is_revoked(ca_id, cert.serial_number):
            return RevocationStatus.REVOKED
        return RevocationStatus.GOOD

