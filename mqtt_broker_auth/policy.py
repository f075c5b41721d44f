"""The MQTT front's settings for a device group: identity mapping and topic templates.

They live in the group policy under `[groups.<group>.fronts.mqtt]` so an operator configures a group in one
place; the engine keeps the table and this model gives it meaning.
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trustlists.errors import InvalidInput
from trustlists.policy import PkiConfig

TEMPLATE_FIELDS = frozenset({"device", "site", "group"})


class MqttAccessPolicy(BaseModel):
    """Who a certificate is on the broker and which topics that identity may use (deny by default)."""

    model_config = ConfigDict(extra="forbid")

    identity_source: Literal["cn", "san_uri"] = "cn"
    client_id_must_match: bool = True
    publish: list[str] = Field(default_factory=list)
    subscribe: list[str] = Field(default_factory=list)
    enrollment_prefix: str = "otpki/enroll"

    @field_validator("publish", "subscribe")
    @classmethod
    def _templates(cls, templates: list[str]) -> list[str]:
        for template in templates:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
            unknown = fields - TEMPLATE_FIELDS
            if unknown:
                raise ValueError(f"topic template {template!r} uses unknown field(s) {sorted(unknown)}; "
                                 f"known: {sorted(TEMPLATE_FIELDS)}")
            if "{device}" not in template:
                # Without the device in the topic every device could read or write every other's data.
                raise ValueError(f"topic template {template!r} must contain {{device}}")
        return templates

    @field_validator("enrollment_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix or any(c in prefix for c in "+#") or prefix.startswith("$") or prefix.endswith("/"):
            raise ValueError("enrollment_prefix must be a plain topic prefix without wildcards or a trailing '/'")
        return prefix


def mqtt_policy(config: PkiConfig, group: str) -> MqttAccessPolicy:
    """The MQTT settings of a group; a group without a [fronts.mqtt] table admits nobody to any topic."""
    policy = config.group(group)
    try:
        return MqttAccessPolicy.model_validate(policy.fronts.get("mqtt", {}))
    except ValueError as exc:
        raise InvalidInput(f"[pki.groups.{group}.fronts.mqtt]: {exc}", reason="bad_mqtt_policy") from None
