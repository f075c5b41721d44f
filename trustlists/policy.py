"""Certificate-group policies: what may be issued, to whom, with which extensions.

Groups are configuration: `PkiConfig` is loaded from TOML (the embedded defaults in
`trustlists/profiles/default.toml`, overridden by the operator's file), never hard-coded.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from importlib import resources
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trustlists.errors import NotFound
from trustlists.models import KeyFamily, KeyType, OwnerRole


class KeyUsageName(StrEnum):
    DIGITAL_SIGNATURE = "digitalSignature"
    NON_REPUDIATION = "nonRepudiation"
    KEY_ENCIPHERMENT = "keyEncipherment"
    DATA_ENCIPHERMENT = "dataEncipherment"
    KEY_AGREEMENT = "keyAgreement"
    KEY_CERT_SIGN = "keyCertSign"
    CRL_SIGN = "cRLSign"


class ExtendedKeyUsageName(StrEnum):
    SERVER_AUTH = "serverAuth"
    CLIENT_AUTH = "clientAuth"


Presence = Literal["required", "optional", "forbidden"]
HashName = Literal["sha256", "sha384", "sha512"]


class SanRules(BaseModel):
    """Rules for the subjectAltName of leaf certificates."""

    model_config = ConfigDict(extra="forbid")

    uri: Presence = "optional"
    # Where the URI comes from: the owner's registered ApplicationUri (OPC UA Part 6), a template
    # filled from the owner (devices), or whatever the CSR asks (only for groups without owners).
    uri_source: Literal["owner_application_uri", "template", "csr"] = "owner_application_uri"
    uri_template: str = "urn:otpki:{group}:{site}:{name}"
    host_names: Presence = "optional"  # dNSName / iPAddress entries
    host_names_must_be_registered: bool = True


class NameRules(BaseModel):
    """Characters a front cannot carry in the names of a group (owner name, site, certificate subject CN).

    The engine knows no protocol: a device group whose names become MQTT client ids, usernames and topic
    levels lists the MQTT wildcards and separators here, and registration refuses them before anything is issued.
    """

    model_config = ConfigDict(extra="forbid")

    forbidden_characters: list[str] = Field(
        default_factory=list, description="Characters refused in owner names, sites and subject CNs of the group "
                                          "(single characters, e.g. the MQTT topic wildcards)")

    @field_validator("forbidden_characters")
    @classmethod
    def _single_characters(cls, chars: list[str]) -> list[str]:
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"forbidden_characters takes single characters, not {c!r}")
        return chars


class GroupPolicy(BaseModel):
    """The policy of one certificate group (for example opcua-application or mqtt-device)."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    owner_kind: Literal["application", "device", "user"]
    ca_key_type: KeyType
    allowed_key_types: list[KeyType]
    signature_hash: HashName = "sha256"
    leaf_lifetime_days: int = Field(365, ge=1, le=36500)
    renewal_window_days: int = Field(60, ge=0)
    ca_lifetime_days: int = Field(3650, ge=1, le=36500)
    ca_path_length: int = Field(0, ge=0, le=8)  # pathLenConstraint of the group's issuing CA
    key_usage: dict[KeyFamily, list[KeyUsageName]]
    extended_key_usage: list[ExtendedKeyUsageName]
    subject_cn: Literal["any", "owner_name"] = "any"
    san: SanRules = Field(default_factory=SanRules)
    names: NameRules = Field(default_factory=NameRules)
    per_site: bool = False
    auto_approve: bool = True
    crl_lifetime_days: int = Field(7, ge=1)
    crl_refresh_margin_days: int = Field(2, ge=0)
    server_keygen_type: KeyType | None = None  # default key type when the server makes the key
    # Where relying parties check the group's certificates, written into every leaf issued from then on
    # (`[pki.publication] base_url` must be set): the OCSP responder (authorityInfoAccess, RFC 5280 4.2.2.1) and
    # the issuing CA's CRL over plain HTTP (cRLDistributionPoints, 4.2.1.13). Off by default: a device that
    # cannot reach the URL may refuse a certificate that names one.
    ocsp_url_in_certificates: bool = Field(
        False, description="Write the OCSP responder's URL (base_url + /ocsp) into the group's leaves "
                           "(authorityInfoAccess)")
    crl_url_in_certificates: bool = Field(
        False, description="Write the issuing CA's CRL URL (base_url + /crl/CA-ID.crl) into the "
                           "group's leaves (cRLDistributionPoints)")
    # Settings that belong to a front (for example the MQTT topic templates of a device group). The engine
    # stores them and never reads them; each front validates its own table with its own model.
    fronts: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> GroupPolicy:
        if not self.allowed_key_types:
            raise ValueError("allowed_key_types must not be empty")
        if self.crl_refresh_margin_days >= self.crl_lifetime_days:
            raise ValueError("crl_refresh_margin_days must be smaller than crl_lifetime_days")
        for key_type in self.allowed_key_types:
            if key_type.family not in self.key_usage:
                raise ValueError(f"key_usage has no entry for {key_type.family} keys")
        if self.owner_kind != "device" and KeyType.ED25519 in (*self.allowed_key_types, self.ca_key_type):
            # OPC UA (applications and user tokens) defines no Ed25519 security policy.
            raise ValueError("ed25519 keys are only allowed in device groups")
        if self.server_keygen_type is not None and self.server_keygen_type not in self.allowed_key_types:
            raise ValueError("server_keygen_type must be one of allowed_key_types")
        return self

    @property
    def default_keygen_type(self) -> KeyType:
        return self.server_keygen_type or self.allowed_key_types[0]


class RootPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_type: KeyType = KeyType.RSA4096
    signature_hash: HashName = "sha256"
    lifetime_days: int = Field(7300, ge=1, le=36500)
    crl_lifetime_days: int = Field(180, ge=1)
    crl_refresh_margin_days: int = Field(30, ge=0)


class OcspPolicy(BaseModel):
    """`[pki.ocsp]`: the delegated OCSP signers (trustlists/ocsp_signer.py) and the responses they sign."""

    model_config = ConfigDict(extra="forbid")

    # Short-lived: an OCSP signing certificate carries id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1), so nobody checks
    # whether it was revoked; its validity is what bounds a stolen signer key. 30 days, renewed 10 days before
    # its end, leaves the leader of the maintenance work days to recover from an outage.
    signer_lifetime_days: int = Field(30, ge=1, le=366, description="Validity of a CA's delegated OCSP signing "
                                                                     "certificate")
    signer_renew_before_days: int = Field(10, ge=0, description="The maintenance leader renews a signer this many "
                                                                 "days before it expires")
    # thisUpdate..nextUpdate of a response: how long a client or an HTTP cache may reuse it (RFC 5019 max-age).
    # A revocation is answered at once by this responder; a response cached elsewhere lives at most this long.
    response_validity_s: int = Field(3600, ge=60, le=7 * 86400, description="thisUpdate..nextUpdate of an OCSP "
                                                                             "response: how long caches may keep it")

    @model_validator(mode="after")
    def _renew_inside_lifetime(self) -> OcspPolicy:
        if self.signer_renew_before_days >= self.signer_lifetime_days:
            raise ValueError("signer_renew_before_days must be smaller than signer_lifetime_days")
        return self


class PublicationPolicy(BaseModel):
    """`[pki.publication]`: where relying parties reach the plain-HTTP listener (`otpki serve --http-listen`)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        None, description="http://host[:port] of the HTTP listener that serves /ocsp and /crl/ (for the URLs a "
                          "group's ocsp_url_in_certificates / crl_url_in_certificates write into certificates)")

    @field_validator("base_url")
    @classmethod
    def _plain_http(cls, url: str | None) -> str | None:
        if url is None:
            return None
        # RFC 5280 4.2.1.13 / RFC 5019 6: OCSP and CRL fetches are plain HTTP (the responses are signed); an https
        # URL would need a revocation check of the listener's own certificate first.
        if not url.startswith("http://") or len(url) <= len("http://"):
            raise ValueError(f"base_url must be a plain http:// URL, not {url!r}")
        if any(c in url for c in " ?#"):
            raise ValueError(f"base_url must be http://host[:port][/path] without query or fragment: {url!r}")
        return url.rstrip("/")


class ReservedName(BaseModel):
    """A name a service identifies itself by; nobody else may be registered under it or get a certificate for it.

    `group` (and `role`, when set) say which registration holds it; `group = None`: nobody, ever (a password-only
    account such as a broker's admin user, that no certificate may name).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The reserved name (compared ignoring case and compatibility forms)")
    group: str | None = Field(None, description="The group whose registration of that name holds it (unset: "
                                                "nobody, ever)")
    role: OwnerRole | None = Field(None, description="The role that registration must have")
    purpose: str = Field("", description="Who uses the name, said in refusals")

    @model_validator(mode="after")
    def _role_needs_group(self) -> ReservedName:
        if self.role is not None and self.group is None:
            raise ValueError(f"reserved name {self.name!r}: a role needs the group that holds it")
        return self


class PkiConfig(BaseModel):
    """Everything the engine needs to know about the hierarchy it manages."""

    model_config = ConfigDict(extra="forbid")

    # The O of every certificate: RFC 5280 ub-organization-name.
    organization: str = Field("otpki", min_length=1, max_length=64)
    root: RootPolicy = Field(default_factory=RootPolicy)
    sites: list[str] = Field(default_factory=list)
    groups: dict[str, GroupPolicy]
    reserved_names: list[ReservedName] = Field(
        default_factory=list, description="Names only their holder may be registered under or named in a "
                                          "certificate by (otpki adds the MQTT services' own names)")
    ocsp: OcspPolicy = Field(default_factory=OcspPolicy, description="The OCSP responder's signers and responses")
    publication: PublicationPolicy = Field(default_factory=PublicationPolicy,
                                           description="Where relying parties fetch OCSP answers and CRLs")

    @model_validator(mode="after")
    def _urls_need_a_base(self) -> PkiConfig:
        if self.publication.base_url is None:
            for name, policy in self.groups.items():
                if policy.ocsp_url_in_certificates or policy.crl_url_in_certificates:
                    raise ValueError(f"group {name} puts OCSP/CRL URLs into certificates: set "
                                     "[pki.publication] base_url (the http:// address of the HTTP listener)")
        return self

    def ocsp_url(self) -> str | None:
        base = self.publication.base_url
        return f"{base}/ocsp" if base else None

    def crl_url(self, ca_id: str) -> str | None:
        """The URL the CA's latest CRL is served at (http_fronts/crl.py)."""
        base = self.publication.base_url
        return f"{base}/crl/{quote(ca_id, safe='@')}.crl" if base else None

    @field_validator("groups")
    @classmethod
    def _names(cls, groups: dict[str, GroupPolicy]) -> dict[str, GroupPolicy]:
        for name in groups:
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"group name {name!r} may only contain letters, digits, '-' and '_'")
        return groups

    def group(self, name: str) -> GroupPolicy:
        try:
            return self.groups[name]
        except KeyError:
            known = ", ".join(sorted(self.groups))
            raise NotFound(f"unknown certificate group {name!r} (configured groups: {known})",
                           reason="unknown_group") from None


def load_default_config() -> PkiConfig:
    return PkiConfig.model_validate(default_config_data())


def default_config_data() -> dict[str, Any]:
    text = resources.files("trustlists.profiles").joinpath("default.toml").read_text()
    return tomllib.loads(text)
