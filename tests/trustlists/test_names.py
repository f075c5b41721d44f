"""The naming rules themselves (trustlists.names): pure functions, no engine."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from trustlists import names
from trustlists.clock import utcnow
from trustlists.errors import InvalidName, NameReserved
from trustlists.models import Owner, OwnerKind, OwnerRole
from trustlists.policy import NameRules, ReservedName, load_default_config

MQTT_RULES = load_default_config().group("mqtt-device").names
NO_RULES = NameRules()


def subject(*attributes: tuple[ObjectIdentifier, str]) -> x509.Name:
    # _validate=False: cryptography refuses some over-long values itself; a CSR from elsewhere carries them anyway.
    return x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in attributes])


def reason_of(call, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidName) as info:
        call(*args, **kwargs)
    return info.value.reason


# -- RFC 5280 Appendix A.1 upper bounds -----------------------------------------------------------------------------

@pytest.mark.parametrize("oid, bound", [
    (NameOID.COMMON_NAME, 64),  # ub-common-name
    (NameOID.ORGANIZATION_NAME, 64),  # ub-organization-name
    (NameOID.ORGANIZATIONAL_UNIT_NAME, 64),  # ub-organizational-unit-name
    (NameOID.LOCALITY_NAME, 128),  # ub-locality-name
    (NameOID.STATE_OR_PROVINCE_NAME, 128),  # ub-state-name
    (NameOID.TITLE, 64),  # ub-title
    (NameOID.SERIAL_NUMBER, 64),  # ub-serial-number
    (NameOID.PSEUDONYM, 128),  # ub-pseudonym
    (NameOID.EMAIL_ADDRESS, 255),  # ub-emailaddress-length
    (NameOID.SURNAME, 32768),  # ub-name
    (NameOID.GIVEN_NAME, 32768),
])
def test_each_subject_attribute_has_its_rfc5280_upper_bound(oid: ObjectIdentifier, bound: int) -> None:
    names.check_subject(subject((oid, "a" * bound)), NO_RULES, "g")
    assert reason_of(names.check_subject, subject((oid, "a" * (bound + 1))), NO_RULES, "g") == "name_too_long"


def test_bounds_count_characters_not_bytes() -> None:
    names.check_subject(subject((NameOID.COMMON_NAME, "ü" * 64)), NO_RULES, "g")  # 128 bytes of UTF-8
    assert reason_of(names.check_subject, subject((NameOID.COMMON_NAME, "ü" * 65)), NO_RULES, "g") == "name_too_long"


@pytest.mark.parametrize("value, ok", [("DE", True), ("DEU", False), ("D1", False), ("D", False)])
def test_country_is_two_letters(value: str, ok: bool) -> None:
    name = subject((NameOID.COUNTRY_NAME, value))
    if ok:
        names.check_subject(name, NO_RULES, "g")
    else:
        assert reason_of(names.check_subject, name, NO_RULES, "g") in {"country_invalid", "name_too_long"}


def test_unknown_attribute_types_and_a_second_cn_are_refused() -> None:
    odd = subject((NameOID.COMMON_NAME, "x"), (ObjectIdentifier("1.3.6.1.4.1.99999.1"), "y"))
    assert reason_of(names.check_subject, odd, NO_RULES, "g") == "subject_attribute_unsupported"
    two = subject((NameOID.COMMON_NAME, "pump-7"), (NameOID.COMMON_NAME, "otpki-admin"))
    assert reason_of(names.check_subject, two, NO_RULES, "g") == "subject_cn_repeated"


def test_ascii_only_attributes() -> None:
    assert reason_of(names.check_subject, subject((NameOID.EMAIL_ADDRESS, "jürgen@plant.example")),
                     NO_RULES, "g") == "name_not_ascii"
    assert reason_of(names.check_subject, subject((NameOID.DOMAIN_COMPONENT, "büro")), NO_RULES, "g") \
        == "name_not_ascii"


# -- text ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\n", "\t", "\x7f", "\x85", "\u2028", "\u2029",
                                  "\ue000", "\ud800", "\u0378"])
def test_control_characters_are_refused(char: str) -> None:
    assert reason_of(names.check_owner_name, f"pump{char}7", NO_RULES, "g") == "name_control_character"


def test_every_ascii_character_in_every_position() -> None:
    # check_text judges printable ASCII without its per-character Unicode scan: the verdicts must be the scan's.
    for code in range(128):
        char = chr(code)
        for value in (f"{char}pump", f"pu{char}mp", f"pump{char}"):
            if code < 0x20 or code == 0x7F:
                assert reason_of(names.check_text, value, "the name", max_length=64) == "name_control_character"
            elif char == " " and value != "pu mp":
                assert reason_of(names.check_text, value, "the name", max_length=64) == "name_surrounding_space"
            else:
                assert names.check_text(value, "the name", max_length=64) == value
    assert reason_of(names.check_text, "p" * 65, "the name", max_length=64) == "name_too_long"


@pytest.mark.parametrize("char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
                                  "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u200d", "\ufeff", "\u00ad"])
def test_bidi_and_invisible_format_characters_are_refused(char: str) -> None:
    assert reason_of(names.check_owner_name, f"pump{char}7", NO_RULES, "g") == "name_format_character"
    assert reason_of(names.check_subject, subject((NameOID.ORGANIZATION_NAME, f"ACME{char}")), NO_RULES, "g") \
        == "name_format_character"


def test_messages_show_the_offending_character_escaped() -> None:
    with pytest.raises(InvalidName) as info:
        names.check_owner_name("evil\u202egnp.exe", NO_RULES, "g")
    assert "\u202e" not in info.value.message and "\\u202e" in info.value.message
    assert "U+202E" in info.value.message


@pytest.mark.parametrize("value", [" pump", "pump ", "\u00a0pump", "pump\u3000", "  "])
def test_leading_or_trailing_space_is_refused(value: str) -> None:
    assert reason_of(names.check_owner_name, value, NO_RULES, "g") == "name_surrounding_space"


def test_empty_too_long_and_unnormalized_names() -> None:
    assert reason_of(names.check_owner_name, "", NO_RULES, "g") == "name_empty"
    names.check_owner_name("p" * 64, NO_RULES, "g")
    assert reason_of(names.check_owner_name, "p" * 65, NO_RULES, "g") == "name_too_long"
    assert reason_of(names.check_owner_name, "Pr\u0075\u0308fstand", NO_RULES, "g") == "name_not_normalized"
    assert names.check_owner_name("Prüfstand Süd 3", NO_RULES, "g") == "Prüfstand Süd 3"  # NFC, spaces inside


@pytest.mark.parametrize("value", ["pump+7", "pump#", "line/pump", "pump:7"])
def test_mqtt_device_names_refuse_topic_characters(value: str) -> None:
    assert reason_of(names.check_owner_name, value, MQTT_RULES, "mqtt-device") == "name_forbidden_character"
    assert reason_of(names.check_site, value, MQTT_RULES, "mqtt-device") == "name_forbidden_character"
    assert reason_of(names.check_subject, subject((NameOID.COMMON_NAME, value)), MQTT_RULES, "mqtt-device") \
        == "name_forbidden_character"
    names.check_owner_name(value, NO_RULES, "opcua-application")  # another front, other rules


def test_mqtt_device_rules_list_nul() -> None:
    assert "\x00" in MQTT_RULES.forbidden_characters
    assert reason_of(names.check_front_characters, "a\x00b", "the name", MQTT_RULES, "mqtt-device") \
        == "name_forbidden_character"


def test_name_in_a_uri_template() -> None:
    names.check_uri_segment("pump-7_a.b~c", "the name")
    for value in ("pump 7", "pump?7", "pump%7", "pümp"):
        assert reason_of(names.check_uri_segment, value, "the name") == "name_not_uri_safe"


# -- URIs, DNS names, IP addresses --------------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["urn:otpki:mqtt:north:pump-7", "urn:plant:scada-1", "opc.tcp://plc-1.plant:4840/ua",
                                 "http://[fe80::1]:4840/", "urn:x:%C3%BC", "https://h/p?q=1#f"])
def test_good_uris(uri: str) -> None:
    assert names.check_uri(uri, "the ApplicationUri") == uri


@pytest.mark.parametrize("uri", ["", "plant-scada", "urn:", "urn:plant:scada 1", "urn:plant:süd", "urn:x:%zz",
                                 "urn:x:%4", "http://h:99999/", "urn:a#b#c", "1urn:x", "urn:a\u202eb", "urn:a\nb",
                                 "urn:" + "x" * 1000, "http://[zz]/"])
def test_bad_uris(uri: str) -> None:
    assert reason_of(names.check_uri, uri, "the ApplicationUri") == "uri_invalid"


def test_the_plain_uri_shortcut_accepts_nothing_the_full_check_refuses() -> None:
    # check_uri skips rfc3986 for URIs of the plain shape (scheme, rootless or absolute path, nothing else): every
    # string of that shape must be one the full RFC 3986 check accepts. Random strings over the characters that
    # decide the shape, biased towards URI-like ones; the shortcut must also take the shapes otpki meets most.
    import random

    rng = random.Random(3986)
    pieces = ["urn", "a", "Z9", ":", ":", "/", "//", "%", "%4", "%C3", "%zz", "?", "#", "[", "]", "@", "x", "1",
              "-", ".", "+", "_", "~", "!", "$", "&", "'", "(", ")", "*", ",", ";", "=", " ", "ü", "\\", "^", "|"]
    shortcut = 0
    for _ in range(30_000):
        scheme = rng.choice(["urn:", "a:", "Z9+.-:", "x", ""])  # mostly a scheme, sometimes none or a bad one
        value = scheme + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        if names.is_plain_absolute_uri(value):
            shortcut += 1
            assert names.check_uri_syntax(value, "the URI") == value, value
    assert shortcut > 3000  # the generator reaches the shape often enough to mean something
    for common in ("urn:otpki:mqtt:north:pump-7", "urn:plant:scada-1", "urn:x:%C3%BC", "urn:freeopcua:client"):
        assert names.is_plain_absolute_uri(common)
    for other in ("opc.tcp://plc-1.plant:4840/ua", "urn:a#b", "urn:a?q", "urn:", "1urn:x", "urn:a b", "urn:x:%4"):
        assert not names.is_plain_absolute_uri(other)


@pytest.mark.parametrize("given, stored", [
    ("Bücher.Example", "xn--bcher-kva.example"),  # U-labels become A-labels (IDNA 2008 + UTS #46)
    ("straße.plant", "xn--strae-oqa.plant"),  # non-transitional: ß stays ß
    ("ＰＬＣ-1.plant", "plc-1.plant"),  # full-width forms map to ASCII
    ("PLC-1.Plant.", "plc-1.plant"),  # case and the absolute form's dot
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("3com.plant", "3com.plant"),  # RFC 1123 allows a leading digit
])
def test_dns_names_are_converted_consistently(given: str, stored: str) -> None:
    assert names.dns_name(given, "the DNS name") == stored
    assert names.dns_name(stored, "the DNS name", convert=False) == stored  # what issuance then accepts


@pytest.mark.parametrize("value", ["a_b.plant", "*.plant", "-a.plant", "a-.plant", "a..b", "a" * 64 + ".plant",
                                   ".".join(["a" * 63] * 4), "10.0.0.1", "xn--zz.plant", "exa mple.plant",
                                   "a\u202eb.plant", ""])
def test_bad_dns_names(value: str) -> None:
    assert reason_of(names.dns_name, value, "the DNS name") == "dns_name_invalid"


def test_a_csr_dns_name_must_already_be_ascii() -> None:
    assert reason_of(names.dns_name, "bücher.example", "the DNS name", convert=False) == "dns_name_invalid"
    assert reason_of(names.dns_name, "plc.plant.", "the DNS name", convert=False) == "dns_name_invalid"


@pytest.mark.parametrize("given, stored", [("10.0.0.1", "10.0.0.1"), ("2001:DB8::1", "2001:db8::1"), ("::1", "::1")])
def test_ip_addresses_are_canonical(given: str, stored: str) -> None:
    assert names.ip_address(given, "the IP address") == stored


@pytest.mark.parametrize("value", ["10.0.0.256", "010.0.0.1", "fe80::1%eth0", "plc-1", ""])
def test_bad_ip_addresses(value: str) -> None:
    assert reason_of(names.ip_address, value, "the IP address") == "ip_address_invalid"


# -- roles and reserved names -------------------------------------------------------------------------------------

RESERVED = [
    ReservedName(name="otpki-enrollment", group="mqtt-device", role=OwnerRole.ENROLLMENT_SERVICE),
    ReservedName(name="otpki-admin", group=None, purpose="the Mosquitto dynsec admin user"),
    ReservedName(name="broker-127.0.0.1", group="mqtt-broker"),
]


def owner(name: str, group: str, role: OwnerRole | None = None) -> Owner:
    return Owner(id="o", kind=OwnerKind.DEVICE, name=name, group=group, created_at=utcnow(),
                 attributes={"role": role.value} if role else {})


def test_roles_are_typed() -> None:
    assert names.owner_role("enrollment-service") is OwnerRole.ENROLLMENT_SERVICE
    assert names.owner_role(None) is None
    assert reason_of(names.owner_role, "admin") == "role_unknown"
    assert owner("x", "g", OwnerRole.ENROLLMENT_SERVICE).role is OwnerRole.ENROLLMENT_SERVICE
    # Older data with a value no registration can store now: no role, no rights.
    legacy = owner("x", "g").model_copy(update={"attributes": {"role": "superuser"}})
    assert legacy.role is None


def test_reserved_names_at_registration() -> None:
    check = names.check_reserved_registration
    check(RESERVED, name="otpki-enrollment", group="mqtt-device", role=OwnerRole.ENROLLMENT_SERVICE)
    check(RESERVED, name="broker-127.0.0.1", group="mqtt-broker", role=None)
    check(RESERVED, name="pump-7", group="mqtt-device", role=None)
    refused = [
        dict(name="otpki-enrollment", group="mqtt-device", role=None),  # a plain device
        dict(name="otpki-enrollment", group="opcua-application", role=OwnerRole.ENROLLMENT_SERVICE),
        dict(name="OTPKI-Enrollment", group="mqtt-device", role=OwnerRole.ENROLLMENT_SERVICE),  # look-alike
        dict(name="broker-127.0.0.1", group="mqtt-device", role=None),
    ] + [dict(name=n, group=g, role=None) for n in ("otpki-admin", "OTPKI-ADMIN", "ｏｔｐｋｉ-admin")
         for g in ("mqtt-device", "mqtt-broker", "opcua-application", "opcua-user")]
    for kwargs in refused:
        with pytest.raises(NameReserved):
            check(RESERVED, **kwargs)  # type: ignore[arg-type]


def test_reserved_names_in_certificates() -> None:
    service = owner("otpki-enrollment", "mqtt-device", OwnerRole.ENROLLMENT_SERVICE)
    names.check_reserved_certificate(RESERVED, service, subject((NameOID.COMMON_NAME, "otpki-enrollment")),
                                     ["urn:otpki:mqtt:default:otpki-enrollment"])
    pump = owner("pump-7", "mqtt-device")
    for cn, uri in [("otpki-admin", None), ("Otpki-Enrollment", None), ("pump-7", "urn:otpki:mqtt:x:otpki-admin"),
                    ("pump-7", "urn:plant/otpki-admin/")]:
        with pytest.raises(NameReserved):
            names.check_reserved_certificate(RESERVED, pump, subject((NameOID.COMMON_NAME, cn)), [uri])
    # Not even the holder of one reserved name gets another's.
    with pytest.raises(NameReserved):
        names.check_reserved_certificate(RESERVED, service, subject((NameOID.COMMON_NAME, "otpki-admin")), [None])


def test_a_role_needs_a_group() -> None:
    with pytest.raises(ValueError, match="needs the group"):
        ReservedName(name="x", role=OwnerRole.ENROLLMENT_SERVICE)
