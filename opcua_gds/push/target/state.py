"""The push target's certificate and trust-list state: active, staged (one transaction) and on disk.

Staging: CreateSigningRequest(RegeneratePrivateKey) keeps the new key in memory (`pending_key`);
UpdateCertificate stages a certificate with its key; CloseAndUpdate/AddCertificate/RemoveCertificate stage
a trust list. ApplyChanges makes all staged parts active at once and persists them; CancelChanges drops them.
A restart before ApplyChanges loses what was staged (the spec's transactions do not survive a restart).

Certificate types: the RSA application certificate (`active_identity`) is the one the SecureChannels use.
ECC application certificates (EccNistP256/EccNistP384, one per type) are managed the same way (CSR, update,
apply, stored in own/) but no channel uses them: asyncua has no ECC SecurityPolicies.

On disk (`pki_dir`, the UA-.NET PKI folder layout written by `write_pki_folders`): own/certs, own/private
(0600), trusted/certs, trusted/crl, issuer/certs, issuer/crl. `load` reads them back, so a restarted server
comes up with what was last applied. Files an operator drops into the folders are read as well.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import ua
from cryptography import x509

from opcua_gds.certificate_chain import issuer_chain, split_chain
from opcua_gds.certificate_types import ecc_type_of
from opcua_gds.push.target.certs import (
    AnyKey,
    EccKey,
    PrivateKey,
    key_from_pem,
    key_matches,
    key_to_pem,
    parse_certificate,
)
from trustlists.exports import write_pki_folders
from trustlists.models import TrustList, TrustListContent, TrustListMask
from trustlists.safe_files import write_public

log = logging.getLogger(__name__)
MAX_REJECTED = 128
ISSUERS_FILE = "own/issuers.der"  # the active certificate's IssuerCertificates, concatenated DER


@dataclass(frozen=True)
class Identity:
    cert_der: bytes
    key: PrivateKey
    # UpdateCertificate's IssuerCertificates: the CAs the certificate is presented with (kept in own/issuers.der,
    # so a later trust list without the issuing CA does not cut the chain the server presents).
    issuers: tuple[bytes, ...] = ()

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert_der)


@dataclass(frozen=True)
class EccIdentity:
    """An ECC application certificate of one CertificateTypeId and its key (stored, reported, not on channels)."""

    type_id: int
    cert_der: bytes
    key: EccKey

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert_der)


@dataclass
class Applied:
    """What ApplyChanges changed."""

    old_identity: Identity
    identity_changed: bool
    trust_changed: bool
    ecc_changed: tuple[int, ...] = ()  # the ECC CertificateTypeIds that got a new certificate


@dataclass
class PushState:
    pki_dir: Path
    active_identity: Identity
    active_trust: TrustListContent = field(default_factory=TrustListContent)
    staged_identity: Identity | None = None
    staged_trust: TrustListContent | None = None
    pending_key: PrivateKey | None = None  # from CreateSigningRequest(RegeneratePrivateKey=True)
    transaction_session: ua.NodeId | None = None  # the session that staged something
    rejected: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    version: int = 0
    # ECC certificate types (CertificateTypeId -> ...): active, staged by UpdateCertificate, new keys of CSRs.
    active_ecc: dict[int, EccIdentity] = field(default_factory=dict)
    staged_ecc: dict[int, EccIdentity] = field(default_factory=dict)
    pending_ecc_keys: dict[int, EccKey] = field(default_factory=dict)

    # -- views ------------------------------------------------------------------------------------
    def effective_trust(self) -> TrustListContent:
        """The trust list as it will be after ApplyChanges: staged if any, else active."""
        return self.staged_trust if self.staged_trust is not None else self.active_trust

    def has_staged(self) -> bool:
        return self.staged_identity is not None or self.staged_trust is not None or bool(self.staged_ecc)

    def known_ca_certificates(self) -> list[bytes]:
        """Certificates in the staged and the active trust list (trusted and issuer lists)."""
        seen: dict[bytes, None] = {}
        for content in (self.staged_trust, self.active_trust):
            if content is None:
                continue
            for der in (*content.trusted_certificates, *content.issuer_certificates):
                seen[der] = None
        return list(seen)

    def presented_issuers(self) -> list[bytes]:
        """The CAs the server presents after its active certificate: its path towards the root, from the
        IssuerCertificates it was given with it and the active trust list."""
        trust = self.active_trust
        return issuer_chain(self.active_identity.cert_der,
                            (*self.active_identity.issuers, *trust.trusted_certificates, *trust.issuer_certificates))

    # -- transaction ------------------------------------------------------------------------------
    def begin(self, session_id: ua.NodeId | None) -> None:
        """Stage on behalf of `session_id`; another session's open transaction refuses."""
        if self.has_staged() and self.transaction_session is not None and session_id != self.transaction_session:
            from opcua_gds.access import MethodError

            raise MethodError(ua.StatusCodes.BadTransactionPending, "another session has staged changes")
        self.transaction_session = session_id

    def cancel(self) -> None:
        self.staged_identity = None
        self.staged_trust = None
        self.staged_ecc = {}
        self.pending_key = None
        self.pending_ecc_keys = {}
        self.transaction_session = None

    def commit(self) -> Applied:
        """Make the staged parts active (memory only; `save` persists)."""
        old = self.active_identity
        applied = Applied(old_identity=old, identity_changed=self.staged_identity is not None,
                          trust_changed=self.staged_trust is not None, ecc_changed=tuple(self.staged_ecc))
        for type_id, ecc in self.staged_ecc.items():
            self.active_ecc[type_id] = ecc
            pending = self.pending_ecc_keys.get(type_id)
            if pending is not None and key_matches(ecc.certificate, pending):
                del self.pending_ecc_keys[type_id]
        self.staged_ecc = {}
        if self.staged_identity is not None:
            self.active_identity = self.staged_identity
        if self.staged_trust is not None:
            self.active_trust = self.staged_trust.model_copy(update={"specified_lists": int(TrustListMask.ALL)})
        if applied.identity_changed and self.pending_key is not None and \
                key_matches(self.active_identity.certificate, self.pending_key):
            self.pending_key = None
        self.staged_identity = None
        self.staged_trust = None
        self.transaction_session = None
        self.version += 1
        return applied

    def reject(self, der: bytes) -> None:
        self.rejected.pop(der, None)
        self.rejected[der] = None
        while len(self.rejected) > MAX_REJECTED:
            self.rejected.popitem(last=False)

    # -- disk -------------------------------------------------------------------------------------
    def next_active(self) -> tuple[Identity, TrustListContent, dict[int, EccIdentity]]:
        """The identity, trust list and ECC certificates that ApplyChanges would make active."""
        return (self.staged_identity or self.active_identity, self.effective_trust(),
                {**self.active_ecc, **self.staged_ecc})

    def save(self, identity: Identity | None = None, trust_content: TrustListContent | None = None,
             ecc: dict[int, EccIdentity] | None = None) -> None:
        """Write an identity, trust list and ECC certificates (default: the active ones) to the PKI folders
        (blocking).

        ApplyChanges saves `next_active()` BEFORE `commit()`, so a failed write leaves memory and disk as
        they were and the staged changes still staged.
        """
        identity = identity or self.active_identity
        content = (trust_content or self.active_trust).model_copy(
            update={"specified_lists": int(TrustListMask.ALL)})
        trust = TrustList(group="push-target", version=self.version, content_hash=content.content_hash(),
                          created_at=dt.datetime.now(dt.UTC), content=content)
        ecc = self.active_ecc if ecc is None else ecc
        write_pki_folders(trust, self.pki_dir, own_certificate_der=identity.cert_der,
                          own_private_key_pem=key_to_pem(identity.key),
                          more_own=[(e.cert_der, key_to_pem(e.key)) for e in ecc.values()])
        issuers_file = self.pki_dir / ISSUERS_FILE
        if identity.issuers:
            write_public(issuers_file, b"".join(identity.issuers))
        else:
            issuers_file.unlink(missing_ok=True)

    @classmethod
    def load(cls, pki_dir: Path) -> PushState | None:
        """The state last saved in `pki_dir`, or None when it holds no usable own certificate and key."""
        identity, ecc = _load_identities(pki_dir)
        if identity is None:
            return None
        issuers_file = pki_dir / ISSUERS_FILE
        if issuers_file.is_file():
            # Only CAs on the certificate's own path: a file left from an earlier certificate adds nothing.
            issuers = issuer_chain(identity.cert_der, split_chain(issuers_file.read_bytes()))
            identity = Identity(identity.cert_der, identity.key, tuple(issuers))
        return cls(pki_dir=pki_dir, active_identity=identity, active_trust=load_trust(pki_dir), active_ecc=ecc)


def _files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix)
                  and not p.name.startswith("."))


def _load_identities(pki_dir: Path) -> tuple[Identity | None, dict[int, EccIdentity]]:
    """The RSA identity (None without one) and the ECC certificates with their keys, from own/."""
    keys: list[AnyKey] = []
    for path in _files(pki_dir / "own" / "private", ".pem"):
        try:
            keys.append(key_from_pem(path.read_bytes()))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable key %s: %s", path, exc)
    identity: Identity | None = None
    ecc: dict[int, EccIdentity] = {}
    for path in _files(pki_dir / "own" / "certs", ".der"):
        der = path.read_bytes()
        cert = parse_certificate(der)
        if cert is None:
            continue
        key = next((k for k in keys if key_matches(cert, k)), None)
        if isinstance(key, PrivateKey) and identity is None:
            identity = Identity(der, key)
        elif isinstance(key, EccKey) and (type_id := ecc_type_of(cert.public_key())) is not None:
            ecc.setdefault(type_id, EccIdentity(type_id, der, key))
    return identity, ecc


def load_trust(pki_dir: Path) -> TrustListContent:
    def blobs(folder: str, suffix: str) -> list[bytes]:
        out: list[bytes] = []
        for path in _files(pki_dir / folder, suffix):
            data = path.read_bytes()
            if data not in out:
                out.append(data)
        return out

    return TrustListContent(specified_lists=int(TrustListMask.ALL),
                            trusted_certificates=blobs("trusted/certs", ".der"),
                            trusted_crls=blobs("trusted/crl", ".crl"),
                            issuer_certificates=blobs("issuer/certs", ".der"),
                            issuer_crls=blobs("issuer/crl", ".crl"))
