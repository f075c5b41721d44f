"""Checking what a requester asks for against the group policy and the owner's registration.

Nothing is signed until `check_request` has turned the CSR (or a server-side key request) into an
`ApprovedRequest`: the exact subject, SAN and key the certificate will carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from trustlists import names
from trustlists.der import common_name
from trustlists.errors import CsrRejected, InvalidInput, PolicyViolation, UriMismatch
from trustlists.keys.algorithms import key_type_of
from trustlists.models import KeyType, Owner
from trustlists.policy import GroupPolicy, ReservedName


@dataclass(frozen=True)
class ApprovedRequest:
    """What the certificate will say, after every rule was checked."""

    subject: x509.Name
    public_key: CertificatePublicKeyTypes
    key_type: KeyType
    san_uri: str | None
    dns_names: list[str] = field(default_factory=list)
    ip_addresses: list[str] = field(default_factory=list)


def verify_csr_signature(csr: x509.CertificateSigningRequest) -> None:
    try:
        ok = csr.is_signature_valid
    except Exception as exc:  # unsupported algorithms surface here, not at load time
        raise CsrRejected(f"the CSR signature cannot be checked: {exc}", reason="bad_signature") from None
    if not ok:
        raise CsrRejected("the CSR signature does not verify with the CSR's own public key "
                          "(the request was altered or damaged)", reason="bad_signature")


def check_key(policy: GroupPolicy, group: str, public_key: CertificatePublicKeyTypes) -> KeyType:
    key_type = key_type_of(public_key)
    if key_type not in policy.allowed_key_types:
        allowed = ", ".join(k.value for k in policy.allowed_key_types)
        reason = "key_size_forbidden" if key_type.family.value == "rsa" else "key_type_forbidden"
        raise PolicyViolation(f"key type {key_type.value} is not allowed in group {group} (allowed: {allowed})",
                              reason=reason)
    return key_type


def expected_uri(policy: GroupPolicy, group: str, owner: Owner) -> str | None:
    if policy.san.uri == "forbidden":
        return None
    if policy.san.uri_source == "owner_application_uri":
        return owner.application_uri
    if policy.san.uri_source == "template":
        return policy.san.uri_template.format(group=group, site=owner.site or "default", name=owner.name,
                                              id=owner.id)
    return None


def _requested_extensions(csr: x509.CertificateSigningRequest
                          ) -> tuple[x509.BasicConstraints | None, x509.SubjectAlternativeName | None]:
    """The two requested extensions the rules look at, found in one pass (a lookup that misses raises, which
    costs more than the pass; cryptography refuses a CSR that repeats an extension)."""
    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise InvalidInput(f"the CSR's requested extensions cannot be read: {exc}", reason="csr_malformed") from None
    basic_constraints = san = None
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints):
            basic_constraints = value
        elif isinstance(value, x509.SubjectAlternativeName):
            san = value
    return basic_constraints, san


def _san_values(san: x509.SubjectAlternativeName | None) -> tuple[list[str], list[str], list[str]]:
    if san is None:
        return [], [], []
    uris: list[str] = []
    dns: list[str] = []
    ips: list[str] = []
    for name in san:  # one pass (get_values_for_type walks the whole SAN once per type)
        if isinstance(name, x509.UniformResourceIdentifier):
            uris.append(name.value)
        elif isinstance(name, x509.DNSName):
            dns.append(name.value)
        elif isinstance(name, x509.IPAddress):
            ips.append(str(name.value))
    return uris, dns, ips


def _check_host_names(policy: GroupPolicy, owner: Owner, dns: list[str], ips: list[str]) -> None:
    if policy.san.host_names == "forbidden" and (dns or ips):
        raise PolicyViolation("this group's certificates carry no DNS names or IP addresses",
                              reason="host_names_forbidden")
    if policy.san.host_names == "required" and not (dns or ips):
        raise PolicyViolation("a DNS name or IP address is required in the subjectAltName",
                              reason="host_name_missing")
    if policy.san.host_names_must_be_registered and (owner.dns_names or owner.ip_addresses):
        registered_dns = {d.lower() for d in owner.dns_names}
        registered_ips = {ipaddress.ip_address(i) for i in owner.ip_addresses}
        for name in dns:
            if name.lower() not in registered_dns:
                raise CsrRejected(f"DNS name {name!r} is not registered for {owner.name}",
                                  reason="host_name_not_registered")
        for ip in ips:
            if ipaddress.ip_address(ip) not in registered_ips:
                raise CsrRejected(f"IP address {ip} is not registered for {owner.name}",
                                  reason="host_name_not_registered")


def _check_subject(policy: GroupPolicy, owner: Owner, subject: x509.Name) -> None:
    cn = common_name(subject)
    if not cn:
        raise PolicyViolation("the subject must contain a common name (CN)", reason="subject_cn_missing")
    if policy.subject_cn == "owner_name" and cn != owner.name:
        raise CsrRejected(f"the subject CN {cn!r} is not the registered name {owner.name!r}",
                          reason="subject_mismatch")


def _check_san_syntax(uris: list[str], dns: list[str]) -> None:
    for uri in uris:
        names.check_uri(uri, "the subjectAltName URI")
    for name in dns:
        names.dns_name(name, "the subjectAltName DNS name", convert=False)


def check_csr(csr: x509.CertificateSigningRequest, policy: GroupPolicy, group: str, owner: Owner, *,
              reserved: Sequence[ReservedName]) -> ApprovedRequest:
    """Every rule a CSR must pass, in the order that gives the most useful error first.

    `reserved`: the configuration's reserved names (`PkiConfig.reserved_names`).
    """
    verify_csr_signature(csr)
    return check_verified_csr(csr, policy, group, owner, reserved=reserved)


def check_verified_csr(csr: x509.CertificateSigningRequest, policy: GroupPolicy, group: str, owner: Owner, *,
                       reserved: Sequence[ReservedName]) -> ApprovedRequest:
    """`check_csr` after its first rule: only for a CSR that `verify_csr_signature` has accepted (a batch checks
    all its signatures first, then all the other rules)."""
    basic_constraints, san = _requested_extensions(csr)
    if basic_constraints is not None and basic_constraints.ca:
        raise PolicyViolation("the CSR asks for a CA certificate (basicConstraints CA:true); "
                              "CA certificates are only made by `otpki ca`", reason="ca_requested")
    public_key = csr.public_key()
    key_type = check_key(policy, group, public_key)
    try:
        subject = csr.subject  # parsed anew on every access
    except ValueError as exc:  # a string attribute that is not what its type says (UTF8String not UTF-8, ...)
        raise InvalidInput(f"the CSR's subject cannot be read: {exc}", reason="csr_malformed") from None
    names.check_subject(subject, policy.names, group)
    uris, dns, ips = _san_values(san)
    _check_san_syntax(uris, dns)
    names.check_reserved_certificate(reserved, owner, subject, uris)
    _check_subject(policy, owner, subject)
    uri = _check_uri(policy, group, owner, uris)
    _check_host_names(policy, owner, dns, ips)
    if not dns and not ips and policy.san.host_names != "forbidden":
        dns, ips = list(owner.dns_names), list(owner.ip_addresses)
    return ApprovedRequest(subject=subject, public_key=public_key, key_type=key_type,
                           san_uri=uri, dns_names=dns, ip_addresses=ips)


def _check_uri(policy: GroupPolicy, group: str, owner: Owner, uris: list[str]) -> str | None:
    want = expected_uri(policy, group, owner)
    if policy.san.uri == "forbidden":
        if uris:
            raise PolicyViolation("this group's certificates carry no URI", reason="uri_forbidden")
        return None
    if len(uris) > 1:
        raise UriMismatch(f"the CSR carries {len(uris)} URIs; exactly one is allowed", reason="uri_mismatch")
    if policy.san.uri_source == "owner_application_uri":
        if want is None:
            raise UriMismatch(f"{owner.name} has no registered ApplicationUri", reason="uri_not_registered")
        if not uris:
            raise UriMismatch(f"the CSR has no subjectAltName URI; it must be the registered "
                              f"ApplicationUri {want}", reason="uri_missing")
        if uris[0] != want:
            raise UriMismatch(f"the CSR's URI {uris[0]} is not the ApplicationUri registered for "
                              f"{owner.name} ({want})", reason="uri_mismatch")
        return want
    if policy.san.uri_source == "template":
        if uris and uris[0] != want:
            raise UriMismatch(f"the CSR's URI {uris[0]} is not the identity of {owner.name} ({want})",
                              reason="uri_mismatch")
        return want
    if policy.san.uri == "required" and not uris:
        raise UriMismatch("the CSR has no subjectAltName URI", reason="uri_missing")
    return uris[0] if uris else None


def _attribute(oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    # cryptography bounds a CN by 64 UTF-8 *bytes* (a warning with _validate=False); RFC 5280 A.1 and OpenSSL count
    # characters, and trustlists.names judges the whole subject by the RFC before anything is signed.
    return x509.NameAttribute(oid, value, _validate=False)


def build_server_keygen_request(policy: GroupPolicy, group: str, owner: Owner, organization: str,
                                public_key: CertificatePublicKeyTypes, *, subject_name: str | None,
                                dns_names: list[str] | None, ip_addresses: list[str] | None,
                                reserved: Sequence[ReservedName]) -> ApprovedRequest:
    """The same rules for a key the server made: the caller only chooses names, within policy.

    Names asked for are judged as at registration: a DNS name given as U-labels is certified as A-labels.
    """
    key_type = check_key(policy, group, public_key)
    cn = subject_name or owner.name
    subject = x509.Name([_attribute(NameOID.COMMON_NAME, cn), _attribute(NameOID.ORGANIZATION_NAME, organization)])
    names.check_subject(subject, policy.names, group)
    _check_subject(policy, owner, subject)
    dns = ([names.dns_name(d, "the DNS name") for d in dns_names] if dns_names is not None
           else list(owner.dns_names))
    ips = ([names.ip_address(i, "the IP address") for i in ip_addresses] if ip_addresses is not None
           else list(owner.ip_addresses))
    if policy.san.host_names == "forbidden":
        dns, ips = ([], []) if dns_names is None and ip_addresses is None else (dns, ips)
    _check_host_names(policy, owner, dns, ips)
    uri = expected_uri(policy, group, owner)
    if policy.san.uri == "required" and uri is None:
        raise UriMismatch(f"{owner.name} has no registered ApplicationUri", reason="uri_not_registered")
    names.check_reserved_certificate(reserved, owner, subject, [uri])
    return ApprovedRequest(subject=subject, public_key=public_key, key_type=key_type, san_uri=uri,
                           dns_names=dns, ip_addresses=ips)
