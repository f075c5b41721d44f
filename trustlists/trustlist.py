"""Versioned trust lists per certificate group, including the trust an operator imports.

What a group's members should trust, in the four lists of OPC UA's TrustListDataType:
- trusted certificates: the group's own issuing CAs (not the root: trusting the root would make every
  other group's certificates trusted too) and certificates an operator trusts directly (a vendor's
  self-signed PLC certificate);
- trusted CRLs: the CRLs of those CAs;
- issuer certificates: the root and external CAs needed to build chains (a manufacturer's IDevID CA);
- issuer CRLs: their CRLs.
A new version is recorded whenever the content changes; the version number only grows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from cryptography import x509

from trustlists import audit
from trustlists.context import EngineContext
from trustlists.der import is_ca, load_certificate, load_crl, sha256_hex
from trustlists.errors import AlreadyExists, InvalidInput, NotFound
from trustlists.keys.algorithms import verifying_key
from trustlists.models import TrustList, TrustListContent
from trustlists.store.base import StoreReader, StoreWriter

ListName = Literal["trusted", "issuer"]


class TrustListManager:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    # -- content ----------------------------------------------------------------------------------
    def content(self, tx: StoreReader, group: str, *, imported: bool = True) -> TrustListContent:
        """The group's four lists; `imported=False` leaves out everything an operator imported (manufacturer
        CAs, vendor certificates and their CRLs), keeping only the engine's own CAs and CRLs."""
        self._ctx.config.group(group)
        now = self._ctx.clock()
        trusted_certs: list[bytes] = []
        trusted_crls: list[bytes] = []
        issuer_certs: list[bytes] = []
        issuer_crls: list[bytes] = []
        for ca in tx.list_cas():
            if ca.not_after < now or self._ctx.ca_revoked(ca):
                continue
            crl = tx.latest_crl(ca.id)
            if ca.parent_id is None:
                issuer_certs.append(ca.certificate_der)
                if crl:
                    issuer_crls.append(crl.der)
            elif ca.group == group:
                trusted_certs.append(ca.certificate_der)
                if crl:
                    trusted_crls.append(crl.der)
        for list_name, kind, _fp, der, _note in tx.list_external(group) if imported else ():
            target = {("trusted", "cert"): trusted_certs, ("trusted", "crl"): trusted_crls,
                      ("issuer", "cert"): issuer_certs, ("issuer", "crl"): issuer_crls}[(list_name, kind)]
            target.append(der)
        return TrustListContent(trusted_certificates=trusted_certs, trusted_crls=trusted_crls,
                                issuer_certificates=issuer_certs, issuer_crls=issuer_crls)

    def record_versions(self, tx: StoreWriter, groups: Iterable[str], reason: str) -> dict[str, int]:
        """Bump the version of every listed group whose content changed; returns the new versions."""
        bumped: dict[str, int] = {}
        tx.serialise_appends()  # the version read below stays the latest until this transaction commits
        for group in groups:
            content = self.content(tx, group)
            digest = content.content_hash()
            latest = tx.latest_trust_version(group)
            if latest is not None and latest[1] == digest:
                continue
            version = tx.next_trust_version(group)
            tx.insert_trust_version(group, version, digest, self._ctx.clock(), reason)
            bumped[group] = version
        return bumped

    def get(self, group: str, *, imported: bool = True) -> TrustList:
        """The group's current trust list; records a new version first if the content moved on.

        `imported=False` gives the same version with only the engine's own CAs and CRLs in it: what a system
        that maps certificate names to identities without asking the engine (Mosquitto) may trust, because an
        imported CA (a manufacturer's) can put any name into a certificate.
        """
        trust = self._get(group)
        if imported:
            return trust
        with self._ctx.store.read() as tx:
            own = self.content(tx, group, imported=False)
        return trust.model_copy(update={"content": own, "content_hash": own.content_hash()})

    def _get(self, group: str) -> TrustList:
        with self._ctx.store.read() as tx:
            content = self.content(tx, group)
            latest = tx.latest_trust_version(group)
        if latest is None or latest[1] != content.content_hash():
            with self._ctx.store.transaction() as tx:
                # Content moved on by time alone (a CA expired): still a state change, so audited.
                bumped = self.record_versions(tx, [group], "content changed (expiry)")
                if bumped:
                    audit.append(tx, actor="otpki", action="trustlist.version", subject=group,
                                 details={"version": bumped[group], "reason": "content changed (expiry)"})
                content = self.content(tx, group)
                latest = tx.latest_trust_version(group)
        assert latest is not None
        return TrustList(group=group, version=latest[0], content_hash=latest[1], created_at=latest[2],
                         content=content)

    # -- operator-imported trust ------------------------------------------------------------------
    def import_external(self, group: str, data: bytes, *, list_name: ListName, note: str, actor: str
                        ) -> list[str]:
        """Import certificates (PEM bundle or DER) or a CRL into a group's trust list.

        Returns the SHA-256 fingerprints imported. A CRL is only accepted when its signature verifies
        with a CA that is already in the group's trust list: a CRL from an unknown or wrong key is refused.
        """
        self._ctx.config.group(group)
        if list_name not in ("trusted", "issuer"):
            raise InvalidInput(f"list must be 'trusted' or 'issuer', not {list_name!r}")
        items = self._parse_import(data)
        with self._ctx.store.transaction() as tx:
            current = self.content(tx, group)
            known = {sha256_hex(d) for d in (*current.trusted_certificates, *current.trusted_crls,
                                              *current.issuer_certificates, *current.issuer_crls)}
            fingerprints = []
            for kind, der, obj in items:
                fp = sha256_hex(der)
                if fp in known:
                    raise AlreadyExists(f"{kind} {fp[:16]}… is already in the trust list of {group}")
                if isinstance(obj, x509.CertificateRevocationList):
                    self._check_crl_issuer(obj, current)
                elif list_name == "issuer" and not is_ca(obj):
                    raise InvalidInput("only CA certificates (basicConstraints CA:true) belong in the "
                                       "issuer list; import end-entity certificates as trusted")
                tx.add_external(group, list_name, kind, fp, der, note, self._ctx.clock())
                fingerprints.append(fp)
                known.add(fp)
            audit.append(tx, actor=actor, action="trustlist.import", subject=group,
                         details={"list": list_name, "fingerprints": fingerprints, "note": note})
            self.record_versions(tx, [group], f"import into {list_name}")
        return fingerprints

    def remove_external(self, group: str, fingerprint: str, *, actor: str) -> None:
        self._ctx.config.group(group)
        fingerprint = fingerprint.lower().replace(":", "")
        with self._ctx.store.transaction() as tx:
            if tx.remove_external(group, fingerprint, self._ctx.clock()) == 0:
                raise NotFound(f"no imported certificate or CRL {fingerprint} in group {group}")
            audit.append(tx, actor=actor, action="trustlist.remove", subject=group,
                         details={"fingerprint": fingerprint})
            self.record_versions(tx, [group], "external trust removed")

    @staticmethod
    def _parse_import(data: bytes) -> list[tuple[str, bytes, x509.Certificate | x509.CertificateRevocationList]]:
        from cryptography.hazmat.primitives.serialization import Encoding

        text = data.lstrip()
        if text.startswith(b"-----BEGIN X509 CRL") or (not text.startswith(b"-----") and _looks_like_crl(data)):
            crl = load_crl(data)
            return [("crl", crl.public_bytes(Encoding.DER), crl)]
        from trustlists.der import load_certificates

        certs = load_certificates(data) if text.startswith(b"-----") else [load_certificate(data)]
        if not certs:
            raise InvalidInput("the file holds no certificate or CRL")
        return [("cert", c.public_bytes(Encoding.DER), c) for c in certs]

    @staticmethod
    def _check_crl_issuer(crl: x509.CertificateRevocationList, content: TrustListContent) -> None:
        for der in (*content.trusted_certificates, *content.issuer_certificates):
            ca = x509.load_der_x509_certificate(der)
            if ca.subject != crl.issuer:
                continue
            key = verifying_key(ca)  # None: a key that cannot sign (X25519...)
            if key is not None and crl.is_signature_valid(key):
                return
        raise InvalidInput(f"the CRL issued by {crl.issuer.rfc4514_string()} is not signed by any CA in this "
                           "trust list; import the CA certificate first", reason="crl_issuer_unknown")


def _looks_like_crl(der: bytes) -> bool:
    try:
        x509.load_der_x509_crl(der)
    except ValueError:
        return False
    return True
