"""The broker-independent decision: who a presented certificate chain is, and which topics that identity may use.

`DeviceGate.authenticate` turns a chain (leaf first, DER) and the MQTT client id into a `DeviceIdentity` or a
`Refusal` with a machine-readable reason; `authorize` answers per topic and action from the identity alone
(pure string work, so it can run for every PUBLISH and every delivered message); `still_valid` is the O(1)
question a broker asks about its live sessions after a revocation.

Who a chain is (operational or bootstrap identity, the allow-list and the pin) is the engine's rule,
`trustlists.device_auth.DeviceAuthenticator`, which EST shares; this module adds what MQTT makes of it: the
client-id comparison and the topics.
A registered device with the role `OwnerRole.ENROLLMENT_SERVICE` is the enrollment service: it may
subscribe to every device's CSR topic and publish every device's accepted/rejected replies, nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mqtt_broker_auth.policy import MqttAccessPolicy, mqtt_policy
from mqtt_broker_auth.topics import (
    DeviceTopics,
    device_topics,
    filter_matches,
    filter_within,
    publish_allowed,
    subscribe_allowed,
)
from trustlists.device_auth import AuthenticatedDevice, DeviceAuthenticator, Kind, Refusal, RefusalReason
from trustlists.engine import Engine
from trustlists.models import OwnerRole

__all__ = ["ENROLLMENT_SERVICE_ROLE", "DeviceGate", "DeviceIdentity", "Refusal", "RefusalReason"]

_log = logging.getLogger(__name__)

ENROLLMENT_SERVICE_ROLE = OwnerRole.ENROLLMENT_SERVICE


class DeviceIdentity(BaseModel):
    """Who is on the broker: the registered device, the certificate that proved it, and its topics."""

    model_config = ConfigDict(frozen=True)

    device: str
    site: str | None
    group: str
    owner_id: str
    serial: int
    issuer_ca_id: str | None  # the engine CA that issued the leaf (None for bootstrap certificates)
    kind: Kind
    role: OwnerRole | None = None  # the owner's typed role (the enrollment service's own identity)
    topics: DeviceTopics
    not_after: datetime  # the earliest notAfter on the path: the session ends then
    fingerprint: str  # SHA-256 hex of the leaf


class DeviceGate:
    """authenticate / authorize / still_valid for one MQTT device group, answered from one engine."""

    def __init__(self, engine: Engine, group: str = "mqtt-device", *, validator_ttl: float = 1.0) -> None:
        self._engine = engine
        self.group = group
        self.policy: MqttAccessPolicy = mqtt_policy(engine.config, group)
        self.authenticator = DeviceAuthenticator(engine, group, identity_source=self.policy.identity_source,
                                                 validator_ttl=validator_ttl)

    @property
    def validator_ttl(self) -> float:
        return self.authenticator.validator_ttl

    @validator_ttl.setter
    def validator_ttl(self, value: float) -> None:
        self.authenticator.validator_ttl = value

    # -- authenticate -------------------------------------------------------------------------------------------

    def authenticate(self, chain: Sequence[bytes], client_id: str | None) -> DeviceIdentity | Refusal:
        """Validate `chain` (leaf first) and map it to a registered device; never raises on bad input.

        `client_id` is compared with the identity when the group's policy says so; None skips the comparison
        (callers that have no client id, such as an enrollment request checked outside a connection).
        """
        outcome = self.authenticator.authenticate(chain)
        if isinstance(outcome, Refusal):
            return outcome
        identity = self._identity(outcome)
        if isinstance(identity, Refusal):
            return identity
        if self.policy.client_id_must_match and client_id is not None and client_id != identity.device:
            return Refusal(reason="client_id_mismatch",
                           detail=f"client id {client_id!r} is not the certificate's identity {identity.device!r}")
        return identity

    def _identity(self, device: AuthenticatedDevice) -> DeviceIdentity | Refusal:
        owner = device.owner
        try:
            topics = device_topics(self.policy, device=owner.name, site=owner.site, group=self.group)
        except ValueError as exc:
            return Refusal(reason="identity_mismatch", detail=str(exc))
        return DeviceIdentity(device=owner.name, site=owner.site, group=self.group, owner_id=owner.id,
                              serial=device.serial, issuer_ca_id=device.issuer_ca_id, kind=device.kind,
                              role=device.role, topics=topics, not_after=device.not_after,
                              fingerprint=device.fingerprint)

    # -- authorize ----------------------------------------------------------------------------------------------

    def authorize(self, identity: DeviceIdentity, topic: str,
                  action: Literal["publish", "subscribe", "receive"]) -> bool:
        """Deny by default. `topic` is a topic name for publish/receive and a topic filter for subscribe."""
        if not topic or "\x00" in topic:
            return False
        topics = identity.topics
        if identity.role == ENROLLMENT_SERVICE_ROLE and identity.kind == "operational":
            prefix = self.policy.enrollment_prefix
            if action == "publish":
                return "+" not in topic and "#" not in topic and (
                    filter_matches(f"{prefix}/+/accepted", topic) or filter_matches(f"{prefix}/+/rejected", topic))
            if action == "subscribe":
                return filter_within(topic, f"{prefix}/+/csr")
            if action == "receive":
                return filter_matches(f"{prefix}/+/csr", topic)
            return False
        if identity.kind == "bootstrap":
            if action == "publish":
                return topic == topics.enrollment_request
            if action == "subscribe":
                return filter_within(topic, topics.enrollment_replies)
            if action == "receive":
                return filter_matches(topics.enrollment_replies, topic)
            return False
        if action == "publish":
            return publish_allowed(topics, topic)
        if action == "subscribe":
            return subscribe_allowed(topics, topic)
        if action == "receive":
            # The subscription was checked when it was made; checking the delivered topic again means no
            # filter that slipped through (or a policy change since) can leak another device's messages.
            return "+" not in topic and "#" not in topic and any(
                filter_matches(f, topic) for f in (*topics.subscribe, topics.enrollment_replies))
        return False

    # -- live sessions ------------------------------------------------------------------------------------------

    def still_valid(self, identity: DeviceIdentity, at: datetime | None = None) -> bool:
        """Not expired, neither the leaf nor any engine CA above it revoked, and a bootstrap certificate not
        displaced by its device's pin: dict lookups only."""
        return self.authenticator.still_valid(kind=identity.kind, owner_id=identity.owner_id,
                                              fingerprint=identity.fingerprint,
                                              issuer_ca_id=identity.issuer_ca_id, serial=identity.serial,
                                              not_after=identity.not_after, at=at)
