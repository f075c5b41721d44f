"""[gds] in otpki.toml: where the GDS listens, who it is, its users, and its CertificateGroups."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opcua_gds.endpoint_url import parse_opc_tcp_url
from opcua_gds.users import AccessConfig

# The CertificateGroups a GDS Directory has (OPC 10000-12 7.8.3), the keys [gds] certificate_groups may use.
CERTIFICATE_GROUPS = ("DefaultApplicationGroup", "DefaultHttpsGroup", "DefaultUserTokenGroup")


class GdsSettings(BaseModel):
    """[gds] in otpki.toml."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field("opc.tcp://127.0.0.1:4840/otpki/gds",
                          description="Where the GDS listens: opc.tcp://HOST:PORT/PATH, HOST an address of this "
                                      "machine (0.0.0.0 for all), PORT 1-65535")
    application_uri: str = Field("urn:otpki:gds", description="The GDS's own ApplicationUri")
    product_uri: str = Field("urn:otpki", description="ProductUri of the GDS")
    name: str = Field("otpki Global Discovery Server", description="ApplicationName of the GDS")
    access: AccessConfig = Field(default_factory=AccessConfig)
    certificate_groups: dict[str, str] = Field(
        default_factory=lambda: {"DefaultApplicationGroup": "opcua-application",
                                 "DefaultUserTokenGroup": "opcua-user"},
        description="GDS CertificateGroup -> engine certificate group")

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, endpoint: str) -> str:
        parse_opc_tcp_url(endpoint)
        return endpoint

    @field_validator("certificate_groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(groups) - set(CERTIFICATE_GROUPS))
        if unknown:
            raise ValueError(f"unknown GDS CertificateGroup {', '.join(unknown)}; OPC 10000-12 defines "
                             f"{', '.join(CERTIFICATE_GROUPS)}")
        return groups
