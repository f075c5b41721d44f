"""Names are judged before anything is stored or signed: registry, CSR issuance, requests, server keygen, batch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from trustlists.authority import CsrIssueRequest
from trustlists.batch import sign_directory
from trustlists.engine import Engine
from trustlists.errors import InvalidName, NameReserved
from trustlists.models import KeyType, Owner, OwnerRole
from trustlists.policy import PkiConfig, ReservedName, load_default_config
from trustlists.testing import Clock, initialized_engine, make_csr, make_engine, make_subject_csr, store_snapshot

RESERVED = [
    ReservedName(name="otpki-enrollment", group="mqtt-device", role=OwnerRole.ENROLLMENT_SERVICE,
                 purpose="the MQTT enrollment service"),
    ReservedName(name="otpki-admin", group=None, purpose="the Mosquitto dynsec admin user"),
    ReservedName(name="broker-127.0.0.1", group="mqtt-broker", purpose="the embedded broker"),
]
GROUPS = list(load_default_config().groups)


def config(reserved: list[ReservedName] | None = None) -> PkiConfig:
    base = load_default_config()
    return base.model_copy(update={"root": base.root.model_copy(update={"key_type": KeyType.RSA2048}),
                                   "reserved_names": reserved if reserved is not None else RESERVED})


@pytest.fixture
def engine(tmp_path: Path, clock: Clock) -> Iterator[Engine]:
    eng = initialized_engine(tmp_path / "pki", clock=clock, config=config(), actor="tester")
    yield eng
    eng.close()


def owner_for(engine: Engine, group: str, name: str = "holder-1") -> Owner:
    """A valid registration in any default group."""
    kwargs: dict[str, object] = {}
    if group == "opcua-application":
        kwargs["application_uri"] = f"urn:plant:{name}"
    if group == "mqtt-broker":
        kwargs["ip_addresses"] = ["10.0.0.9"]
    return engine.registry.register(group=group, name=name, actor="t", **kwargs)  # type: ignore[arg-type]


# -- registration -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("group, kwargs, reason", [
    ("mqtt-device", {"name": "p" * 65}, "name_too_long"),
    ("opcua-application", {"name": "S" * 65, "application_uri": "urn:plant:s"}, "name_too_long"),
    ("mqtt-device", {"name": "pump+7"}, "name_forbidden_character"),
    ("mqtt-device", {"name": "pump/7"}, "name_forbidden_character"),
    ("mqtt-device", {"name": "pump#"}, "name_forbidden_character"),
    ("mqtt-device", {"name": "pump\x007"}, "name_control_character"),
    ("mqtt-device", {"name": "pump-7", "site": "north/#"}, "name_forbidden_character"),
    ("mqtt-device", {"name": "pump 7"}, "name_not_uri_safe"),  # its certificate URI would not be a URI
    ("opcua-user", {"name": "jürgen"}, "name_not_uri_safe"),
    ("opcua-application", {"name": "exe\u202egnp", "application_uri": "urn:plant:x"}, "name_format_character"),
    ("opcua-application", {"name": "Line\u2066 3", "application_uri": "urn:plant:x"}, "name_format_character"),
    ("opcua-application", {"name": " SCADA", "application_uri": "urn:plant:x"}, "name_surrounding_space"),
    ("opcua-application", {"name": "SCADA", "application_uri": "urn:plant:scada 1"}, "uri_invalid"),
    ("opcua-application", {"name": "SCADA", "application_uri": "plant-scada"}, "uri_invalid"),
    ("opcua-application", {"name": "SCADA", "application_uri": "urn:plant:süd"}, "uri_invalid"),
    ("opcua-application", {"name": "SCADA", "application_uri": "urn:x", "dns_names": ["scada_1.plant"]},
     "dns_name_invalid"),
    ("opcua-application", {"name": "SCADA", "application_uri": "urn:x", "dns_names": ["*.plant"]},
     "dns_name_invalid"),
    ("opcua-application", {"name": "SCADA", "application_uri": "urn:x", "ip_addresses": ["10.0.0.300"]},
     "ip_address_invalid"),
    ("mqtt-device", {"name": "pump-7", "attributes": {"role": "superuser"}}, "role_unknown"),
])
def test_registry_refuses_bad_names_and_stores_nothing(engine: Engine, group: str, kwargs: dict[str, object],
                                                        reason: str) -> None:
    before = store_snapshot(engine)
    with pytest.raises(InvalidName) as err:
        engine.registry.register(group=group, actor="t", **kwargs)  # type: ignore[arg-type]
    assert err.value.reason == reason
    assert store_snapshot(engine) == before


def test_update_judges_what_changed(engine: Engine) -> None:
    app = owner_for(engine, "opcua-application", "scada-1")
    before = store_snapshot(engine)
    for change, reason in [({"name": "x" * 65}, "name_too_long"), ({"dns_names": ["bad_host"]}, "dns_name_invalid"),
                           ({"name": "otpki-admin"}, "name_reserved"),
                           ({"attributes": {"role": "root"}}, "role_unknown")]:
        with pytest.raises(InvalidName) as err:
            engine.registry.update(app.model_copy(update=change), actor="t")
        assert err.value.reason == reason
    assert store_snapshot(engine) == before
    updated = engine.registry.update(app.model_copy(update={"dns_names": ["Büro.Plant"]}), actor="t")
    assert updated.dns_names == engine.registry.get(app.id).dns_names == ["xn--bro-hoa.plant"]


# -- IDNA: converted at registration, the same string certified -----------------------------------------------------

def test_a_u_label_is_registered_and_certified_as_its_a_label(engine: Engine) -> None:
    app = engine.registry.register(group="opcua-application", name="Prüfstand", application_uri="urn:plant:pruef",
                                   dns_names=["Prüfstand.Werk.example"], actor="t")
    assert app.dns_names == ["xn--prfstand-75a.werk.example"]
    # Server-generated key: the registered name, and the same name asked for in either spelling.
    for asked in (None, ["prüfstand.werk.example"], ["xn--prfstand-75a.werk.example"]):
        issued = engine.authority.issue_with_new_key(owner_id=app.id, actor="t", dns_names=asked)
        cert = x509.load_der_x509_certificate(issued.certificate_der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["xn--prfstand-75a.werk.example"]
    # A device's own CSR names the A-label: it matches the registration.
    csr = make_csr("Prüfstand", uris=["urn:plant:pruef"], dns=["xn--prfstand-75a.werk.example"])
    assert engine.authority.issue_from_csr(csr, owner_id=app.id, actor="t")


# -- issuance ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attributes, reason", [
    ([(NameOID.COMMON_NAME, "S" * 65)], "name_too_long"),
    ([(NameOID.COMMON_NAME, "scada-1"), (NameOID.ORGANIZATION_NAME, "O" * 65)], "name_too_long"),
    ([(NameOID.COMMON_NAME, "scada-1"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "U" * 65)], "name_too_long"),
    ([(NameOID.COMMON_NAME, "scada-1"), (NameOID.LOCALITY_NAME, "L" * 129)], "name_too_long"),
    ([(NameOID.COMMON_NAME, "scada-1"), (NameOID.COUNTRY_NAME, "DEU")], "name_too_long"),
    ([(NameOID.COMMON_NAME, "scada\u202e1")], "name_format_character"),
    ([(NameOID.COMMON_NAME, "scada-1 ")], "name_surrounding_space"),
    ([(NameOID.COMMON_NAME, "scada-1"), (NameOID.ORGANIZATION_NAME, "ACME\x00")], "name_control_character"),
    ([(NameOID.COMMON_NAME, "scada-1"), (NameOID.COMMON_NAME, "scada-2")], "subject_cn_repeated"),
    ([(NameOID.COMMON_NAME, "scada-1"), (NameOID.BUSINESS_CATEGORY, "x")], "subject_attribute_unsupported"),
])
def test_csr_subjects_are_judged_on_every_path_and_nothing_is_stored(
        engine: Engine, tmp_path: Path, attributes: list[tuple[x509.ObjectIdentifier, str]], reason: str) -> None:
    scada = engine.registry.register(group="opcua-application", name="scada-1", application_uri="urn:plant:scada-1",
                                     actor="t")
    csr = make_subject_csr(attributes, uris=["urn:plant:scada-1"])
    before = store_snapshot(engine)
    for submit in (lambda: engine.authority.issue_from_csr(csr, owner_id=scada.id, actor="t"),
                   lambda: engine.requests.submit_csr(scada.id, csr, actor="t")):
        with pytest.raises(InvalidName) as err:
            submit()
        assert err.value.reason == reason
    (result,) = engine.authority.issue_many([CsrIssueRequest(csr=csr, owner_id=scada.id)], actor="t")
    assert isinstance(result, InvalidName) and result.reason == reason
    assert store_snapshot(engine) == before
    assert engine.requests.list() == []


@pytest.mark.parametrize("uris, dns, reason", [
    (["urn:plant:scada 1"], [], "uri_invalid"),
    (["urn:plant:scada-1"], ["bad_host.plant"], "dns_name_invalid"),
    (["urn:plant:scada-1"], ["-x.plant"], "dns_name_invalid"),
])
def test_csr_san_syntax_is_judged(engine: Engine, uris: list[str], dns: list[str], reason: str) -> None:
    scada = engine.registry.register(group="opcua-application", name="scada-1", application_uri="urn:plant:scada-1",
                                     actor="t")
    before = store_snapshot(engine)
    with pytest.raises(InvalidName) as err:
        engine.authority.issue_from_csr(make_subject_csr([(NameOID.COMMON_NAME, "scada-1")], uris=uris, dns=dns),
                                        owner_id=scada.id, actor="t")
    assert err.value.reason == reason
    assert store_snapshot(engine) == before


def test_server_generated_keys_get_the_same_judgement(engine: Engine) -> None:
    app = owner_for(engine, "opcua-application", "scada-1")
    before = store_snapshot(engine)
    for kwargs, reason in [({"subject_name": "S" * 65}, "name_too_long"),
                           ({"subject_name": "scada\u20661"}, "name_format_character"),
                           ({"dns_names": ["scada_1.plant"]}, "dns_name_invalid"),
                           ({"ip_addresses": ["fe80::1%eth0"]}, "ip_address_invalid")]:
        with pytest.raises(InvalidName) as err:
            engine.authority.issue_with_new_key(owner_id=app.id, actor="t", **kwargs)  # type: ignore[arg-type]
        assert err.value.reason == reason
        with pytest.raises(InvalidName):
            engine.requests.submit_new_key(app.id, actor="t", **kwargs)  # type: ignore[arg-type]
    assert store_snapshot(engine) == before
    # RFC 5280 counts characters: 64 of them in a non-Latin script is a valid CN (128 bytes of UTF-8).
    issued = engine.authority.issue_with_new_key(owner_id=app.id, actor="t", subject_name="ü" * 64)
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ü" * 64


def test_batch_refuses_bad_names_and_registers_nobody(engine: Engine, tmp_path: Path) -> None:
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    (in_dir / "good.csr").write_bytes(make_csr("line3-dev-1"))
    (in_dir / "long.csr").write_bytes(make_subject_csr([(NameOID.COMMON_NAME, "d" * 65)]))
    (in_dir / "wild.csr").write_bytes(make_csr("line3+dev"))
    (in_dir / "bidi.csr").write_bytes(make_csr("line3\u202edev"))
    (in_dir / "admin.csr").write_bytes(make_csr("otpki-admin"))
    owners = len(engine.registry.list())
    report = sign_directory(engine, in_dir, tmp_path / "out", group="mqtt-device", actor="line3")
    assert {i.file: i.reason for i in report.items if not i.ok} == {
        "long.csr": "name_too_long", "wild.csr": "name_forbidden_character", "bidi.csr": "name_format_character",
        "admin.csr": "name_reserved"}
    assert report.issued == 1 and len(engine.registry.list()) == owners + 1


# -- reserved names ----------------------------------------------------------------------------------------------

def test_the_enrollment_service_name_is_held_only_by_the_enrollment_service(engine: Engine) -> None:
    before = store_snapshot(engine)
    for kwargs in ({"group": "mqtt-device"},  # a plain device
                   {"group": "mqtt-device", "attributes": {"role": None}},
                   {"group": "opcua-user"},
                   {"group": "mqtt-broker", "ip_addresses": ["10.0.0.1"]}):
        for name in ("otpki-enrollment", "OTPKI-Enrollment"):
            with pytest.raises(NameReserved):
                engine.registry.register(name=name, actor="t", **kwargs)  # type: ignore[arg-type]
    assert store_snapshot(engine) == before
    service = engine.registry.register(group="mqtt-device", name="otpki-enrollment", actor="t",
                                       role=OwnerRole.ENROLLMENT_SERVICE)
    assert service.role is OwnerRole.ENROLLMENT_SERVICE and service.attributes["role"] == "enrollment-service"
    issued = engine.authority.issue_with_new_key(owner_id=service.id, actor="t")
    assert "CN=otpki-enrollment" in issued.record.subject


@pytest.mark.parametrize("group", GROUPS)
def test_the_admin_name_is_registered_in_no_group(engine: Engine, group: str) -> None:
    before = store_snapshot(engine)
    with pytest.raises(NameReserved):
        owner_for(engine, group, "otpki-admin")
    assert store_snapshot(engine) == before


@pytest.mark.parametrize("group", GROUPS)
def test_no_certificate_names_the_admin_in_any_group(engine: Engine, group: str) -> None:
    holder = owner_for(engine, group)
    uris = ["urn:plant:holder-1"] if group == "opcua-application" else []
    csr = make_subject_csr([(NameOID.COMMON_NAME, "otpki-admin")], uris=uris, dns=["holder-1.plant"])
    before = store_snapshot(engine)
    with pytest.raises(NameReserved):
        engine.authority.issue_from_csr(csr, owner_id=holder.id, actor="t")
    with pytest.raises(NameReserved):
        engine.requests.submit_csr(holder.id, csr, actor="t")
    assert store_snapshot(engine) == before


def test_reserved_names_in_uris_and_asked_subjects_are_refused(engine: Engine) -> None:
    app = owner_for(engine, "opcua-application", "scada-1")
    before = store_snapshot(engine)
    with pytest.raises(NameReserved):  # the MQTT front may take a SAN URI's last segment as the identity
        engine.registry.register(group="opcua-application", name="scada-9", application_uri="urn:plant:otpki-admin",
                                 actor="t")
    with pytest.raises(NameReserved):
        engine.authority.issue_with_new_key(owner_id=app.id, actor="t", subject_name="otpki-enrollment")
    with pytest.raises(NameReserved):
        engine.authority.issue_from_csr(make_subject_csr([(NameOID.COMMON_NAME, "scada-1")],
                                                 uris=["urn:plant:scada-1", "urn:x:broker-127.0.0.1"]),
                                        owner_id=app.id, actor="t")
    assert store_snapshot(engine) == before


def test_an_owner_registered_before_the_reservation_gets_no_certificate(tmp_path: Path, clock: Clock) -> None:
    """A data directory from before: `otpki-admin` was registered as a device and has a certificate."""
    old = initialized_engine(tmp_path / "pki", clock=clock, config=config(reserved=[]), actor="t")
    squatter = old.registry.register(group="mqtt-device", name="otpki-admin", actor="t")
    cert = old.authority.issue_from_csr(make_csr("otpki-admin"), owner_id=squatter.id, actor="t")
    old.close()
    eng = make_engine(tmp_path / "pki", clock=clock, config=config())
    try:
        before = store_snapshot(eng)
        for attempt in (lambda: eng.authority.issue_from_csr(make_csr("otpki-admin"), owner_id=squatter.id, actor="t"),
                        lambda: eng.authority.issue_with_new_key(owner_id=squatter.id, actor="t"),
                        lambda: eng.authority.renew(cert.record.serial, actor="t")):
            with pytest.raises(NameReserved):
                attempt()
        assert store_snapshot(eng) == before
    finally:
        eng.close()
