"""Parsing what Mosquitto's dynsec plugin answers (pure logic: the live broker runs in the trust-boundary tests)."""

from __future__ import annotations

from typing import Any

from mqtt_broker_auth.mosquitto import dynsec_state as ds_state


def _responses(default_acls: list[Any]) -> tuple[dict[str, Any], ...]:
    return ({"data": {"clients": []}}, {"data": {"roles": []}}, {"data": {"groups": []}}, {"data": {}},
            {"data": {"acls": default_acls}})


def test_default_acl_entry_without_a_type_is_skipped_as_in_the_saved_file() -> None:
    """A default-ACL entry with no text acltype cannot name a rule: the responses are read as the saved file is
    (which skips non-text keys), not refused by the model with a ValidationError that stops the sync."""
    state = ds_state.DynsecState.from_responses(*_responses([
        {"allow": True}, {"acltype": 7, "allow": True}, {"acltype": "subscribe", "allow": True}]))
    assert state.default_acl == {**ds_state.DEFAULT_ACL_ACCESS, "subscribe": True}
    from_file = ds_state.DynsecState.from_file({"defaultACLAccess": {"subscribe": True, 7: True}})
    assert from_file.default_acl == state.default_acl
