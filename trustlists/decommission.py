"""Decommissioning an owner: revoke every certificate it still holds and end its registration, as one transaction.

Done as two steps (revoke, then unregister) a failure in between leaves an application whose certificates are
revoked but which is still registered (or, the other way round, an unregistered one whose certificates still
work). Here both commit together or neither does: the revocations, the CRL of every issuer involved, the
trust-list versions and the unregistration, with their audit records.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from trustlists import audit
from trustlists.context import EngineContext
from trustlists.errors import InvalidState
from trustlists.hierarchy import crl_policy, publish_crl
from trustlists.models import CertificateRecord, CertificateStatus, Decommissioned, RevocationReason
from trustlists.registry import end_registration
from trustlists.trustlist import TrustListManager

_DEAD = (CertificateStatus.REVOKED, CertificateStatus.EXPIRED)


class Decommissioning:
    def __init__(self, ctx: EngineContext, trustlists: TrustListManager) -> None:
        self._ctx = ctx
        self._trustlists = trustlists

    def run(self, owner_id: str, *, actor: str,
            reason: RevocationReason = RevocationReason.CESSATION_OF_OPERATION) -> Decommissioned:
        now = self._ctx.clock()
        with self._ctx.store.read() as tx:
            owner = tx.get_owner(owner_id)  # NotFound for an unknown id
            planned = self._live(tx.query_certificates(now=now, owner_id=owner_id), now)
        if owner.unregistered:
            raise InvalidState(f"owner {owner_id} is already unregistered")
        # Every issuer key is loaded before anything is written: an unusable key refuses the whole use case.
        keys = {ca_id: self._key(ca_id) for ca_id in {r.issuer_ca_id for r in planned}}
        indexed: list[tuple[str, int]] = []
        try:
            with self._ctx.store.transaction() as tx:
                # Read again under the write lock: another process may have revoked or issued meanwhile.
                live = self._live(tx.query_certificates(now=now, owner_id=owner_id), now)
                for record in live:
                    tx.mark_revoked(record.serial, now, reason)
                    tx.insert_revocation(record.serial, record.issuer_ca_id, now, reason, record.not_after)
                    audit.append(tx, actor=actor, action="certificate.revoke", subject=record.serial, at=now,
                                 details={"reason": reason.name.lower(), "issuer": record.issuer_ca_id,
                                          "decommission": owner_id})
                    # In the index at once (as `revoke` does): a validation racing the commit fails closed.
                    self._ctx.index.add(record.issuer_ca_id, int(record.serial, 16), int(reason))
                    indexed.append((record.issuer_ca_id, int(record.serial, 16)))
                for ca_id in dict.fromkeys(r.issuer_ca_id for r in live):
                    issuer = self._ctx.ca(ca_id)
                    key = keys[ca_id] if ca_id in keys else self._key(ca_id)  # a certificate issued meanwhile
                    crl_days, hash_name = crl_policy(self._ctx.config, issuer)
                    publish_crl(self._ctx, tx, issuer, key, crl_days=crl_days, hash_name=hash_name, actor=actor)
                if live:
                    self._trustlists.record_versions(tx, sorted({r.group for r in live}),
                                                     f"decommissioned {owner.name}")
                ended = end_registration(tx, owner_id, actor=actor, at=now)
        except BaseException:
            # The store rolled back: nothing was revoked, so the index must not say otherwise.
            for ca_id, serial in indexed:
                self._ctx.index.discard(ca_id, serial)
            raise
        with self._ctx.store.read() as tx:
            revoked = [tx.get_certificate(r.serial, with_der=False) for r in live]
        return Decommissioned(owner=ended, revoked=revoked)

    @staticmethod
    def _live(records: list[CertificateRecord], now: datetime) -> list[CertificateRecord]:
        """What still works or could be put to work: neither revoked nor expired (superseded and undelivered
        certificates included)."""
        return [r for r in records if r.status_at(now) not in _DEAD]

    def _key(self, ca_id: str) -> CertificateIssuerPrivateKeyTypes:
        return self._ctx.keys.signer(self._ctx.ca(ca_id))
