"""Settings errors in TOML terms: table, key, and the nearest known key (pure logic on the real models)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from opcua_gds.access import hash_password
from otpki.config import FileSettings, deep_merge
from otpki.config_errors import describe_validation_error
from trustlists.policy import PkiConfig, default_config_data


def file_error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        FileSettings.model_validate(data)
    return describe_validation_error(info.value, FileSettings)


HASH = hash_password("a password")


def pki_error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        PkiConfig.model_validate(deep_merge(default_config_data(), data))
    return describe_validation_error(info.value, PkiConfig, ("pki",))


def test_locations_read_like_the_file() -> None:
    assert file_error({"gds": {"endpiont": "x"}}) == "[gds] endpiont: unknown key (did you mean endpoint?)"
    assert file_error({"mqtt": {"mosquitto": {"port": 70000}}}) == (
        "[mqtt.mosquitto] port: Input should be less than or equal to 65535")
    assert file_error({"gds": {"access": {"users": [{"name": "a", "password_hash": HASH, "roles": ["Root"]}]}}}
                      ).startswith("[[gds.access.users]] #1 roles[1]: Input should be ")
    assert file_error({"push": {"credentials": {"a.b": {"username": "u", "pasword_env": "X"}}}}) == (
        '[push.credentials."a.b"] pasword_env: unknown key (did you mean password_env?)')


def test_a_misspelt_key_is_reported_before_the_missing_one_it_explains() -> None:
    assert file_error({"push": {"credentials": {"plc": {"usernme": "u"}}}}) == (
        "[push.credentials.plc] usernme: unknown key (did you mean username?) (and 1 more problem)")


def test_validator_messages_lose_pydantic_prefixes() -> None:
    assert file_error({"gds": {"endpoint": "http://h:1/"}}).startswith(
        "[gds] endpoint: endpoint 'http://h:1/' has http://")
    assert pki_error({"groups": {"mqtt-device": {"crl_refresh_margin_days": 30}}}) == (
        "[pki.groups.mqtt-device]: crl_refresh_margin_days must be smaller than crl_lifetime_days")


def test_unknown_keys_without_a_close_match_list_or_point_to_the_reference() -> None:
    assert file_error({"store": {"zzz": 1}}) == "[store] zzz: unknown key (known keys: busy_timeout_s, url)"
    assert pki_error({"groups": {"mqtt-device": {"qqqq": 1}}}) == (
        "[pki.groups.mqtt-device] qqqq: unknown key (see `otpki config reference` for the known keys)")
