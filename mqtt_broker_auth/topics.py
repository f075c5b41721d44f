"""Topic templates filled for one device, and MQTT topic-filter matching (MQTT 3.1.1 section 4.7)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mqtt_broker_auth.policy import MqttAccessPolicy


class DeviceTopics(BaseModel):
    """The topic filters one identity may publish to and subscribe to, and its enrollment topics."""

    model_config = ConfigDict(frozen=True)

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    enrollment_request: str  # the device publishes its requests here
    enrollment_replies: str  # ... and subscribes here for accepted/rejected


def _safe_level(value: str) -> str:
    # A name with a wildcard or separator would widen the filter it is put into.
    if not value or any(c in value for c in "/+#\x00"):
        raise ValueError(f"{value!r} cannot be used in a topic: it is empty or contains '/', '+', '#' or NUL")
    return value


def device_topics(policy: MqttAccessPolicy, *, device: str, site: str | None, group: str) -> DeviceTopics:
    values = {"device": _safe_level(device), "site": _safe_level(site or "default"), "group": _safe_level(group)}
    base = f"{policy.enrollment_prefix}/{values['device']}"
    return DeviceTopics(
        publish=tuple(t.format(**values) for t in policy.publish),
        subscribe=tuple(t.format(**values) for t in policy.subscribe),
        enrollment_request=f"{base}/csr",
        enrollment_replies=f"{base}/+",
    )


def filter_matches(topic_filter: str, topic: str) -> bool:
    """True when a concrete topic name matches a filter with '+' and '#' wildcards."""
    if topic.startswith("$") and not topic_filter.startswith("$"):
        return False  # 4.7.2: wildcards at the first level do not match $-topics
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def filter_within(requested: str, allowed: str) -> bool:
    """True when every topic the requested filter can match is matched by the allowed filter."""
    r_levels = requested.split("/")
    a_levels = allowed.split("/")
    for i, a in enumerate(a_levels):
        if a == "#":
            return True
        if i >= len(r_levels):
            return False
        r = r_levels[i]
        if r == "#":
            return False
        if a == "+":
            continue
        if r == "+" or r != a:
            return False
    return len(r_levels) == len(a_levels)


def publish_allowed(topics: DeviceTopics, topic: str) -> bool:
    if any(c in topic for c in "+#"):
        return False
    return any(filter_matches(f, topic) for f in (*topics.publish, topics.enrollment_request))


def subscribe_allowed(topics: DeviceTopics, topic_filter: str) -> bool:
    return any(filter_within(topic_filter, f) for f in (*topics.subscribe, topics.enrollment_replies))
