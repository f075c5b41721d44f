"""The rules every name passes before anything is stored or signed.

One module, used by the registry (register and update), the CSR checks (every subject attribute and every
subjectAltName), the subject of server-generated keys and, through those, by batches and every front. A name
that passes here at registration also passes at issuance: the same function judges it both times.

Text (owner names, sites, subject attribute values)
    Not empty; no control characters (Unicode Cc, line and paragraph separators, surrogates, private-use and
    unassigned code points); no format characters (Cf: the bidirectional overrides and isolates U+202A-U+202E,
    U+2066-U+2069, zero-width characters), which make a name read differently from what it is; no leading or
    trailing white space; Unicode NFC, so two names that look the same are the same string.
Lengths
    RFC 5280 Appendix A.1 upper bounds per subject attribute (CN, O, OU, title, serialNumber 64; L, ST,
    pseudonym 128; ...). Attribute types without a known bound are refused. An owner name becomes a CN
    (server-generated keys; groups whose CN is the owner name), so it obeys ub-common-name as well.
Front characters
    A group's `names.forbidden_characters` (MQTT devices: the topic wildcards, the level separator, NUL) in owner
    names, sites and subject CNs: refused at registration, not after a certificate was issued.
URIs
    RFC 3986 syntax, ASCII only. A non-ASCII URI (an IRI) is refused, not converted: an ApplicationUri is an
    identity compared as a string, and the CSR an application makes carries its own spelling; converting ours
    would make the registered URI and the certificate's differ.
DNS names
    RFC 1123 host names. U-labels are converted to A-labels (IDNA 2008 with the UTS #46 mapping, `idna`):
    operators and DiscoveryUrls spell host names in their own script, a certificate's dNSName must hold A-labels
    (RFC 5280 7.2), and converting at this one entry (registration and the names asked for a server-generated key)
    keeps what is stored, compared and certified the same string. A CSR's dNSName is the requester's encoding and
    is never rewritten: it must already be ASCII.
IP addresses
    `ipaddress`, canonical text; no IPv6 zone index (it has no place in a certificate).
Reserved names
    `PkiConfig.reserved_names`: the names services identify themselves by. Nobody else is registered under one,
    and no certificate names one (as a subject CN, or as the last segment of a SAN URI, which a front may take
    as the identity) unless its owner holds it.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import idna
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from trustlists.errors import InvalidName, NameReserved
from trustlists.models import Owner, OwnerRole
from trustlists.policy import NameRules, ReservedName

if TYPE_CHECKING:
    from rfc3986.validators import Validator

# RFC 5280 Appendix A.1 upper bounds.
UB_NAME = 32768
UB_COMMON_NAME = 64
UB_LOCALITY_NAME = 128
UB_STATE_NAME = 128
UB_ORGANIZATION_NAME = 64
UB_ORGANIZATIONAL_UNIT_NAME = 64
UB_TITLE = 64
UB_SERIAL_NUMBER = 64
UB_PSEUDONYM = 128
UB_EMAILADDRESS_LENGTH = 255

MAX_SITE_LENGTH = 64  # a site is part of CA names and certificate URIs; ours, no RFC bound
MAX_URI_LENGTH = 1000  # ours (RFC 3986 sets none); the GDS refuses longer ApplicationUris too
MAX_DNS_NAME_LENGTH = 253  # RFC 1035 2.3.4: 255 octets on the wire, 253 characters as text
MAX_DNS_LABEL_LENGTH = 63


@dataclass(frozen=True)
class _Attribute:
    label: str
    max_length: int
    ascii_only: bool = False


# The subject attributes otpki signs, with their bounds: RFC 5280 A.1, and for those it does not bound X.520
# (street, postalCode), RFC 1274 (uid) and RFC 1035 (domainComponent, which OPC UA fills with a host name).
SUBJECT_ATTRIBUTES: dict[ObjectIdentifier, _Attribute] = {
    NameOID.COMMON_NAME: _Attribute("CN", UB_COMMON_NAME),
    NameOID.SURNAME: _Attribute("SN", UB_NAME),
    NameOID.SERIAL_NUMBER: _Attribute("serialNumber", UB_SERIAL_NUMBER, ascii_only=True),
    NameOID.COUNTRY_NAME: _Attribute("C", 2, ascii_only=True),
    NameOID.LOCALITY_NAME: _Attribute("L", UB_LOCALITY_NAME),
    NameOID.STATE_OR_PROVINCE_NAME: _Attribute("ST", UB_STATE_NAME),
    NameOID.STREET_ADDRESS: _Attribute("street", 128),
    NameOID.ORGANIZATION_NAME: _Attribute("O", UB_ORGANIZATION_NAME),
    NameOID.ORGANIZATIONAL_UNIT_NAME: _Attribute("OU", UB_ORGANIZATIONAL_UNIT_NAME),
    NameOID.TITLE: _Attribute("title", UB_TITLE),
    NameOID.POSTAL_CODE: _Attribute("postalCode", 40),
    NameOID.GIVEN_NAME: _Attribute("givenName", UB_NAME),
    NameOID.INITIALS: _Attribute("initials", UB_NAME),
    NameOID.GENERATION_QUALIFIER: _Attribute("generationQualifier", UB_NAME),
    NameOID.PSEUDONYM: _Attribute("pseudonym", UB_PSEUDONYM),
    NameOID.DOMAIN_COMPONENT: _Attribute("DC", MAX_DNS_NAME_LENGTH, ascii_only=True),
    NameOID.USER_ID: _Attribute("UID", 256),
    NameOID.EMAIL_ADDRESS: _Attribute("emailAddress", UB_EMAILADDRESS_LENGTH, ascii_only=True),
}

_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CONTROL_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
# RFC 3986 2.2/2.3: the characters a URI may hold (plus '%' for a percent-encoded octet).
_URI_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
# RFC 3986 3.3 pchar without pct-encoded: what a name may hold to be put into a URI as it is.
_SEGMENT_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@")
_LDH = frozenset(string.ascii_lowercase + string.digits + "-")


def shown(value: str) -> str:
    """`value` quoted for a message, every non-printable character escaped (a bidi override stays inert)."""
    return repr(value)


def _escaped(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _character(c: str) -> str:
    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X}" + (f" ({name.lower()})" if name else "")


# -- text ---------------------------------------------------------------------------------------------------------

def check_text(value: object, what: str, *, max_length: int) -> str:
    """A name's text: the rules of the module docstring. Returns it unchanged."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be text", reason="name_not_text")
    if not value:
        raise InvalidName(f"{what} is empty", reason="name_empty")
    if value.isascii() and value.isprintable():
        # U+0020..U+007E: no control or format character, and NFC as it is; only the space and length rules left.
        if value != value.strip():
            raise InvalidName(f"{what} {shown(value)} has leading or trailing white space",
                              reason="name_surrounding_space")
        if len(value) > max_length:
            raise InvalidName(f"{what} is {len(value)} characters long; at most {max_length} are allowed",
                              reason="name_too_long")
        return value
    for c in value:
        category = unicodedata.category(c)
        if category == "Cf":
            kind = "a bidirectional control" if c in _BIDI_CONTROLS else "an invisible format character"
            raise InvalidName(f"{what} {shown(value)} contains {_character(c)}, {kind}: a name must read as it is",
                              reason="name_format_character")
        if category in _CONTROL_CATEGORIES:
            raise InvalidName(f"{what} {shown(value)} contains the control character {_character(c)}",
                              reason="name_control_character")
    if value != value.strip():
        raise InvalidName(f"{what} {shown(value)} has leading or trailing white space", reason="name_surrounding_space")
    if not unicodedata.is_normalized("NFC", value):
        # ascii(): the two spellings look alike; their code points do not.
        raise InvalidName(f"{what} {value!a} is not in Unicode normalization form C (NFC): write it as "
                          f"{unicodedata.normalize('NFC', value)!a}", reason="name_not_normalized")
    if len(value) > max_length:
        raise InvalidName(f"{what} is {len(value)} characters long; at most {max_length} are allowed",
                          reason="name_too_long")
    return value


def check_front_characters(value: str, what: str, rules: NameRules, group: str) -> None:
    for c in value:
        if c in rules.forbidden_characters:
            raise InvalidName(f"{what} {shown(value)} contains {_character(c)}, which names in group {group} cannot "
                              f"carry (forbidden: {' '.join(shown(f) for f in rules.forbidden_characters)})",
                              reason="name_forbidden_character")


def check_owner_name(name: object, rules: NameRules, group: str) -> str:
    """A registered name: it becomes a certificate's CN and, in some groups, a front's identity."""
    text = check_text(name, "the name", max_length=UB_COMMON_NAME)
    check_front_characters(text, "the name", rules, group)
    return text


def check_site(site: object, rules: NameRules, group: str) -> str:
    text = check_text(site, "the site", max_length=MAX_SITE_LENGTH)
    check_front_characters(text, "the site", rules, group)
    return text


def check_uri_segment(value: str, what: str) -> None:
    """A name that a URI template puts into a certificate URI as it is (RFC 3986 pchar, no percent-encoding)."""
    for c in value:
        if c not in _SEGMENT_CHARACTERS:
            raise InvalidName(f"{what} {shown(value)} becomes part of the certificate URI and cannot contain "
                              f"{_character(c)}: use letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @",
                              reason="name_not_uri_safe")


# -- certificate subjects -----------------------------------------------------------------------------------------

def check_subject(subject: x509.Name, rules: NameRules, group: str) -> None:
    """Every attribute of a certificate subject: a known type, within its bound, clean text; one CN at most."""
    common_names = 0
    for attribute in subject:
        spec = SUBJECT_ATTRIBUTES.get(attribute.oid)
        if spec is None:
            known = ", ".join(a.label for a in SUBJECT_ATTRIBUTES.values())
            raise InvalidName(f"the subject attribute {attribute.oid.dotted_string} "
                              f"({_escaped(attribute.rfc4514_attribute_name)}) is not one otpki signs "
                              f"(known: {known})", reason="subject_attribute_unsupported")
        what = f"the subject {spec.label}"
        value = check_text(attribute.value, what, max_length=spec.max_length)
        if spec.ascii_only and not value.isascii():
            raise InvalidName(f"{what} {shown(value)} must be ASCII", reason="name_not_ascii")
        if attribute.oid == NameOID.COUNTRY_NAME and not (len(value) == 2 and value.isalpha()):
            raise InvalidName(f"{what} {shown(value)} must be a two-letter ISO 3166 country code",
                              reason="country_invalid")
        if attribute.oid == NameOID.COMMON_NAME:
            common_names += 1
            check_front_characters(value, what, rules, group)
    if common_names > 1:
        # Consumers disagree on which CN is the identity (the first, the last, any): a subject has one.
        raise InvalidName(f"the subject has {common_names} CNs; it may have one", reason="subject_cn_repeated")


# -- URIs, DNS names, IP addresses --------------------------------------------------------------------------------

@functools.cache
def _uri_validator() -> Validator:
    """Made once (every CSR's URI runs through it; it keeps no state). rfc3986 is imported on first use: its
    regular expressions cost every engine start 12 ms, and listing or revoking never checks a URI."""
    from rfc3986 import validators

    return (validators.Validator().require_presence_of("scheme")
            .check_validity_of("scheme", "userinfo", "host", "port", "path", "query", "fragment"))


# RFC 3986 3: scheme ":" and a path of pchar and "/" that does not start with "//" (no authority), no query and no
# fragment. A string of this shape is an absolute URI on its face; it is the shape of nearly every URI otpki sees
# (urn:..., the certificate URI templates); every other one goes through rfc3986, which takes ~12 us per URI (more
# than all other name checks of a CSR together). tests/trustlists/test_names.py checks that the shortcut accepts
# nothing the full check refuses.
_PLAIN_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?!//)(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})+")


def is_plain_absolute_uri(value: str) -> bool:
    """`value` has the shape `_PLAIN_ABSOLUTE_URI` (so `check_uri` accepts it without asking rfc3986)."""
    return _PLAIN_ABSOLUTE_URI.fullmatch(value) is not None


def check_uri(value: object, what: str) -> str:
    """An absolute URI by RFC 3986 (ASCII; a non-ASCII character must be percent-encoded by its owner)."""
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} is empty", reason="uri_invalid")
    if len(value) > MAX_URI_LENGTH:
        raise InvalidName(f"{what} is {len(value)} characters long; at most {MAX_URI_LENGTH} are allowed",
                          reason="uri_invalid")
    if is_plain_absolute_uri(value):
        return value
    return check_uri_syntax(value, what)


def check_uri_syntax(value: str, what: str) -> str:
    """`check_uri` without its shortcut and its emptiness and length checks: RFC 3986 by rfc3986."""
    for i, c in enumerate(value):
        if c not in _URI_CHARACTERS:
            hint = " (percent-encode it, RFC 3986 2.1)" if not c.isascii() or c == " " else ""
            raise InvalidName(f"{what} {shown(value)} is not a URI: {_character(c)} is not allowed in a URI{hint}",
                              reason="uri_invalid")
        if c == "%" and not (len(value) >= i + 3 and all(h in string.hexdigits for h in value[i + 1:i + 3])):
            raise InvalidName(f"{what} {shown(value)} is not a URI: '%' must start a percent-encoded octet (%XX)",
                              reason="uri_invalid")
    import rfc3986
    from rfc3986 import exceptions as rfc3986_exceptions

    reference = rfc3986.uri_reference(value)
    try:
        _uri_validator().validate(reference)
    except rfc3986_exceptions.MissingComponentError:
        raise InvalidName(f"{what} {shown(value)} is not an absolute URI: it has no scheme (e.g. urn:, opc.tcp:)",
                          reason="uri_invalid") from None
    except rfc3986_exceptions.ValidationError as exc:
        parts = ", ".join(getattr(exc, "components", ()) or ["syntax"])
        raise InvalidName(f"{what} {shown(value)} is not a URI by RFC 3986 (invalid {parts})",
                          reason="uri_invalid") from None
    if not reference.authority and not reference.path:
        raise InvalidName(f"{what} {shown(value)} has nothing after its scheme", reason="uri_invalid")
    return value


def dns_name(value: object, what: str, *, convert: bool = True) -> str:
    """A host name by RFC 1123, lowercase, with A-labels.

    convert: U-labels become A-labels (IDNA 2008, UTS #46 mapping) and one trailing dot is dropped, for names
    people type. Without it (a CSR's dNSName, which is certified as the requester wrote it) the name must already
    be ASCII and carry no trailing dot.
    """
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} is empty", reason="dns_name_invalid")
    text = value
    if convert and text.endswith("."):
        text = text[:-1]  # the absolute form names the same host
    if not text.isascii():
        if not convert:
            raise InvalidName(f"{what} {shown(value)} is not ASCII: a dNSName holds IDNA A-labels (xn--...), "
                              "RFC 5280 7.2", reason="dns_name_invalid")
        try:
            text = idna.encode(text, uts46=True, transitional=False, std3_rules=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidName(f"{what} {shown(value)} is not a valid internationalized host name: "
                              f"{_escaped(str(exc))}", reason="dns_name_invalid") from None
    text = text.lower()
    # Only digits and dots (IPv4) or a colon (IPv6) can be an address: ip_address's two failures cost more than
    # the rest of the check.
    if ":" in text or text.replace(".", "").isdigit():
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            raise InvalidName(f"{what} {shown(value)} is an IP address; register it as one",
                              reason="dns_name_invalid")
    if len(text) > MAX_DNS_NAME_LENGTH:
        raise InvalidName(f"{what} is {len(text)} characters long; a host name has at most {MAX_DNS_NAME_LENGTH}",
                          reason="dns_name_invalid")
    for label in text.split("."):
        _check_label(label, value, what)
    return text


def _check_label(label: str, value: str, what: str) -> None:
    if not label:
        raise InvalidName(f"{what} {shown(value)} has an empty label", reason="dns_name_invalid")
    if len(label) > MAX_DNS_LABEL_LENGTH:
        raise InvalidName(f"{what} {shown(value)}: the label {label[:20]!r}... is {len(label)} characters long; "
                          f"at most {MAX_DNS_LABEL_LENGTH} are allowed", reason="dns_name_invalid")
    bad = next((c for c in label if c not in _LDH), None)
    if bad is not None:
        raise InvalidName(f"{what} {shown(value)} is not a host name: {_character(bad)} is not allowed (letters, "
                          "digits and '-' only, RFC 1123)", reason="dns_name_invalid")
    if label.startswith("-") or label.endswith("-"):
        raise InvalidName(f"{what} {shown(value)}: a label cannot start or end with '-'", reason="dns_name_invalid")
    if label.startswith("xn--"):
        try:
            idna.decode(label)
        except idna.IDNAError as exc:
            raise InvalidName(f"{what} {shown(value)}: {label!r} is not a valid IDNA A-label ({_escaped(str(exc))})",
                              reason="dns_name_invalid") from None


def ip_address(value: object, what: str) -> str:
    """An IPv4 or IPv6 address in canonical text."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be text", reason="ip_address_invalid")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidName(f"{what} {shown(value)} is not an IP address", reason="ip_address_invalid") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise InvalidName(f"{what} {shown(value)} carries a zone index, which a certificate cannot hold",
                          reason="ip_address_invalid")
    return str(address)


# -- roles and reserved names -------------------------------------------------------------------------------------

def owner_role(value: object) -> OwnerRole | None:
    """The typed role of a registration (`attributes["role"]`); an unknown value is refused."""
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return OwnerRole(value)
    known = ", ".join(r.value for r in OwnerRole)
    raise InvalidName(f"unknown role {shown(str(value))} (known: {known})", reason="role_unknown")


def _folded(name: str) -> str:
    # Case and compatibility forms fold together: a look-alike of a reserved name is as reserved as the name.
    return unicodedata.normalize("NFKC", name).casefold()


def reservation(reserved: Sequence[ReservedName], name: str) -> ReservedName | None:
    folded = _folded(name)
    return next((r for r in reserved if _folded(r.name) == folded), None)


def _for_whom(entry: ReservedName) -> str:
    what = f" for {entry.purpose}" if entry.purpose else ""
    if entry.group is None:
        return f"is reserved{what}; no registration or certificate may carry it"
    role = f" with role {entry.role.value}" if entry.role is not None else ""
    return f"is reserved{what}: only the registration {shown(entry.name)} in group {entry.group}{role} holds it"


def _held_by(entry: ReservedName, *, name: str, group: str, role: OwnerRole | None) -> bool:
    return (entry.group is not None and (group, name) == (entry.group, entry.name)
            and (entry.role is None or role is entry.role))


def holds(entry: ReservedName, owner: Owner) -> bool:
    return _held_by(entry, name=owner.name, group=owner.group, role=owner.role)


def check_reserved_registration(reserved: Sequence[ReservedName], *, name: str, group: str,
                                role: OwnerRole | None, uris: Iterable[str | None] = ()) -> None:
    """A registration under a reserved name, or whose URI ends in one, must be the name's holder."""
    entry = reservation(reserved, name)
    if entry is not None and not _held_by(entry, name=name, group=group, role=role):
        raise NameReserved(f"the name {shown(name)} {_for_whom(entry)}")
    for where, identity in identity_names(x509.Name([]), uris):
        entry = reservation(reserved, identity)
        if entry is not None and not _held_by(entry, name=name, group=group, role=role):
            raise NameReserved(f"{where.replace('SAN URI', 'ApplicationUri')} {shown(identity)} {_for_whom(entry)}")


def identity_names(subject: x509.Name, uris: Iterable[str | None]) -> list[tuple[str, str]]:
    """The names in a certificate a front may take as its holder's identity: each CN, each SAN URI's last segment."""
    found: list[tuple[str, str]] = []
    for attribute in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if isinstance(attribute.value, str):
            found.append(("the subject CN", attribute.value))
    for uri in uris:
        if uri:
            # As the MQTT front reads an identity from a SAN URI (identity_source = "san_uri").
            last = uri.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]
            if last:
                found.append(("the last segment of the SAN URI", last))
    return found


def check_reserved_certificate(reserved: Sequence[ReservedName], owner: Owner, subject: x509.Name,
                               uris: Iterable[str | None]) -> None:
    """No certificate names a reserved name unless its owner holds that name."""
    if not reserved:
        return
    for where, name in identity_names(subject, uris):
        entry = reservation(reserved, name)
        if entry is not None and not holds(entry, owner):
            raise NameReserved(f"{where} {shown(name)} {_for_whom(entry)}; {shown(owner.name)} in {owner.group} "
                               "does not")
