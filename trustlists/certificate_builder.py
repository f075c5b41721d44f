"""Turning an approved request into a certificate: the extensions each profile demands."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from trustlists.csr_checks import ApprovedRequest
from trustlists.keys.algorithms import signature_hash
from trustlists.models import KeyType
from trustlists.policy import ExtendedKeyUsageName, GroupPolicy, HashName, KeyUsageName

# Clocks on plant floors drift; a certificate that starts "now" is refused by a PLC running a minute behind.
BACKDATE = timedelta(minutes=10)

_EKU_OIDS = {
    ExtendedKeyUsageName.SERVER_AUTH: ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageName.CLIENT_AUTH: ExtendedKeyUsageOID.CLIENT_AUTH,
}


def key_usage(names: set[KeyUsageName]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=KeyUsageName.DIGITAL_SIGNATURE in names,
        content_commitment=KeyUsageName.NON_REPUDIATION in names,
        key_encipherment=KeyUsageName.KEY_ENCIPHERMENT in names,
        data_encipherment=KeyUsageName.DATA_ENCIPHERMENT in names,
        key_agreement=KeyUsageName.KEY_AGREEMENT in names,
        key_cert_sign=KeyUsageName.KEY_CERT_SIGN in names,
        crl_sign=KeyUsageName.CRL_SIGN in names,
        encipher_only=False,
        decipher_only=False,
    )


# Extension values are immutable and identical for every leaf of a CA and policy: build them once. They go into the
# builder as ready Extension objects (CertificateBuilder.add_extension re-checks type and duplicates on every call:
# six calls cost a leaf ~30 us, more than its SKI and SAN together).
@functools.lru_cache(maxsize=64)
def _leaf_key_usage(names: tuple[KeyUsageName, ...]) -> x509.Extension[x509.KeyUsage]:
    return x509.Extension(x509.ExtensionOID.KEY_USAGE, True, key_usage(set(names)))


@functools.lru_cache(maxsize=64)
def _extended_key_usage(names: tuple[ExtendedKeyUsageName, ...]) -> x509.Extension[x509.ExtendedKeyUsage]:
    return x509.Extension(x509.ExtensionOID.EXTENDED_KEY_USAGE, False,
                          x509.ExtendedKeyUsage([_EKU_OIDS[e] for e in names]))


_NOT_A_CA = x509.Extension(x509.ExtensionOID.BASIC_CONSTRAINTS, True, x509.BasicConstraints(ca=False, path_length=None))


@dataclass(frozen=True)
class _IssuerParts:
    """What every leaf takes from its issuer's certificate (cryptography parses the subject anew on every access)."""

    subject: x509.Name
    not_after: datetime
    authority_key_id: x509.Extension[x509.AuthorityKeyIdentifier]


@functools.lru_cache(maxsize=64)
def _issuer_parts(issuer_cert: x509.Certificate) -> _IssuerParts:
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    return _IssuerParts(issuer_cert.subject, issuer_cert.not_valid_after_utc,
                        x509.Extension(x509.ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, aki))


# A leaf's signature is no weaker than its own key (NIST SP 800-57 Part 1 Table 3): a P-384 key (192-bit
# strength) is signed with SHA-384 at least, as OPC 10000-7's ECC_nistP384 policy pairs that curve with SHA-384.
_HASH_STRENGTH: tuple[HashName, ...] = ("sha256", "sha384", "sha512")
_MIN_LEAF_HASH: dict[KeyType, HashName] = {KeyType.EC_P384: "sha384"}


def leaf_signature_hash(policy_hash: HashName, leaf_key_type: KeyType) -> HashName:
    """The hash a leaf is signed with: the group's, raised to what the leaf's key needs."""
    minimum = _MIN_LEAF_HASH.get(leaf_key_type)
    if minimum is None or _HASH_STRENGTH.index(policy_hash) >= _HASH_STRENGTH.index(minimum):
        return policy_hash
    return minimum


def _validity(now: datetime, lifetime_days: int, issuer: x509.Certificate | None) -> tuple[datetime, datetime]:
    not_before = now - BACKDATE
    not_after = now + timedelta(days=lifetime_days)
    if issuer is not None:
        # A certificate must not outlive its issuer: validators would reject it at the issuer's expiry anyway.
        not_after = min(not_after, issuer.not_valid_after_utc)
    return not_before, not_after


@functools.lru_cache(maxsize=64)
def _ocsp_access(url: str) -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess([
        x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))])


@functools.lru_cache(maxsize=64)
def _crl_distribution_point(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([
        x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None,
                               crl_issuer=None)])


@dataclass(frozen=True, eq=False)
class LeafProfile:
    """What every leaf of an issuer and a policy carries: the issuer's name and every extension but the two that
    depend on the request (subjectKeyIdentifier, subjectAltName), in the order a leaf carries them: `before_ski`,
    the SKI, `before_san`, the SAN, `after_san`. One object per combination (cached), so that it can key the
    issuer's template (trustlists.leaf_encoding) by identity."""

    issuer_name: x509.Name
    issuer_not_after: datetime
    before_ski: tuple[x509.Extension[x509.ExtensionType], ...]
    before_san: tuple[x509.Extension[x509.ExtensionType], ...]
    after_san: tuple[x509.Extension[x509.ExtensionType], ...]


class LeafFields(NamedTuple):
    """What a leaf certificate for a request says besides its key and names: the values it is signed with and
    recorded by. (A tuple: made for every certificate, and a frozen dataclass costs ~1 us more to make.)"""

    profile: LeafProfile
    serial: int
    not_before: datetime  # whole seconds, UTC: as the certificate states them
    not_after: datetime


def leaf_fields(*, request: ApprovedRequest, policy: GroupPolicy, issuer_cert: x509.Certificate, serial: int,
                now: datetime, ocsp_url: str | None = None, crl_url: str | None = None) -> LeafFields:
    """What a leaf certificate for `request` says besides its key, its key's identifier and its names.
    `ocsp_url` / `crl_url`: where relying parties check it (the group's policy decides whether the caller
    passes them)."""
    profile = _leaf_profile(issuer_cert, tuple(policy.key_usage[request.key_type.family]),
                            tuple(policy.extended_key_usage), ocsp_url, crl_url)
    not_before = _certificate_time(now - BACKDATE)
    # A certificate must not outlive its issuer: validators would reject it at the issuer's expiry anyway.
    not_after = min(_certificate_time(now + timedelta(days=policy.leaf_lifetime_days)), profile.issuer_not_after)
    # The builder's checks that depend on input, with its words (the serial comes from trustlists.serials).
    if serial <= 0 or serial.bit_length() >= 160:
        raise ValueError("The serial number should be positive and not more than 159 bits.")
    if not_before.year < 1950:  # the earliest time UTCTime can say (RFC 5280 4.1.2.5.1)
        raise ValueError("The not valid before date must be on or after 1950 January 1.")
    if not_after < not_before:
        raise ValueError("The not valid after date must be after the not valid before date.")
    return LeafFields(profile, serial, not_before, not_after)


@functools.lru_cache(maxsize=64)
def _leaf_profile(issuer_cert: x509.Certificate, key_usage_names: tuple[KeyUsageName, ...],
                  eku_names: tuple[ExtendedKeyUsageName, ...], ocsp_url: str | None, crl_url: str | None
                  ) -> LeafProfile:
    issuer = _issuer_parts(issuer_cert)
    before_san: list[x509.Extension[x509.ExtensionType]] = [issuer.authority_key_id]
    if eku_names:
        before_san.append(_extended_key_usage(eku_names))
    after_san: list[x509.Extension[x509.ExtensionType]] = []
    if ocsp_url:  # RFC 5280 4.2.2.1: non-critical
        after_san.append(x509.Extension(x509.ExtensionOID.AUTHORITY_INFORMATION_ACCESS, False,
                                        _ocsp_access(ocsp_url)))
    if crl_url:
        after_san.append(x509.Extension(x509.ExtensionOID.CRL_DISTRIBUTION_POINTS, False,
                                        _crl_distribution_point(crl_url)))
    return LeafProfile(issuer.subject, issuer.not_after, (_NOT_A_CA, _leaf_key_usage(key_usage_names)),
                       tuple(before_san), tuple(after_san))


def leaf_builder(*, request: ApprovedRequest, policy: GroupPolicy, issuer_cert: x509.Certificate, serial: int,
                 now: datetime, ocsp_url: str | None = None, crl_url: str | None = None) -> x509.CertificateBuilder:
    """What a leaf certificate for `request` says, unsigned, as cryptography's builder: the caller signs it with
    the issuer's key. The issuer's template (`trustlists.leaf_encoding`) writes the same bytes faster; this is the
    path for what the template does not cover, and the reference it is tested against."""
    fields = leaf_fields(request=request, policy=policy, issuer_cert=issuer_cert, serial=serial, now=now,
                         ocsp_url=ocsp_url, crl_url=crl_url)
    return builder_for(fields, request)


def builder_for(fields: LeafFields, request: ApprovedRequest) -> x509.CertificateBuilder:
    """`fields` with the request's key identifier and alternative names, as cryptography's builder."""
    profile = fields.profile
    extensions = [*profile.before_ski,
                  x509.Extension(x509.ExtensionOID.SUBJECT_KEY_IDENTIFIER, False,
                                 x509.SubjectKeyIdentifier.from_public_key(request.public_key)),
                  *profile.before_san]
    san: list[x509.GeneralName] = []
    if request.san_uri:
        san.append(x509.UniformResourceIdentifier(request.san_uri))
    san += [x509.DNSName(d) for d in request.dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in request.ip_addresses]
    if san:
        # RFC 5280: the SAN is critical when the subject is empty; OPC UA subjects never are.
        extensions.append(x509.Extension(x509.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False,
                                         x509.SubjectAlternativeName(san)))
    extensions += profile.after_san
    # The builder's constructor, not its setters: they would check again what leaf_fields fixed (serial, dates,
    # distinct extensions) and copy the builder for every field.
    return x509.CertificateBuilder(profile.issuer_name, request.subject, request.public_key, fields.serial,
                                   _naive_utc(fields.not_before), _naive_utc(fields.not_after), extensions)


def _certificate_time(value: datetime) -> datetime:
    """A time as a certificate states it and the inventory records it: aware UTC, whole seconds (the builder
    drops the fraction and takes a naive time as UTC)."""
    if value.tzinfo is not UTC:  # the engine's clock gives UTC: the conversion is for any other zone
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=0)


def _naive_utc(value: datetime) -> datetime:
    """The builder's own form of a time: naive, in UTC (what its setters turn an aware time into)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def ca_name(organization: str, common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ])


def build_ca(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer_cert: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    issuer_key_type: KeyType,
    hash_name: str,
    serial: int,
    lifetime_days: int,
    path_length: int | None,
    now: datetime,
) -> x509.Certificate:
    """A root (issuer_cert None: self-signed) or an issuing CA signed by `issuer_cert`."""
    not_before, not_after = _validity(now, lifetime_days, issuer_cert)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer_cert is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        issuer_name = subject
    else:
        issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
        issuer_name = issuer_cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(key_usage({KeyUsageName.DIGITAL_SIGNATURE, KeyUsageName.KEY_CERT_SIGN,
                                  KeyUsageName.CRL_SIGN}), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )
    return builder.sign(issuer_key, signature_hash(issuer_key_type, hash_name))
