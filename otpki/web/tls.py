"""The web listener's TLS: its engine-issued server certificate and the SSL context that asks for client certificates.

The certificate is issued at first start for the console's host names (group `[web] group`, owner `otpki-web`),
kept in the inventory like any other, and renewed when a start (or the supervisor's daily check) finds it inside
its renewal window, revoked, or no longer naming the configured hosts. Its key is encrypted at rest with the CA
key passphrase (the same secret `otpki serve` needs for the CA keys anyway); only a deployment whose CA keys live
in an HSM and that has no passphrase keeps it as a 0600 file, like the GDS's own application key.

The context requests but does not require a client certificate: a browser without one must still reach the login
page, while EST (RFC 7030) authenticates a device by the certificate it sends. A certificate that is sent must
chain to one of the engine's CAs or an imported manufacturer CA, or the handshake fails.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from trustlists.engine import Engine
from trustlists.errors import KeyAccessError
from trustlists.models import Owner
from trustlists.safe_files import private_directory, write_public, write_secret
from trustlists.validation import ValidationOptions

log = logging.getLogger(__name__)

OWNER_NAME = "otpki-web"
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class ServerIdentity:
    cert_file: Path  # leaf, then the CAs below the root (PEM)
    key_file: Path  # PKCS#8 PEM, encrypted with `password` when it is set
    password: bytes | None
    names: tuple[str, ...]


def certificate_names(listen_host: str, host_names: list[str]) -> list[str]:
    """The names the certificate carries: the configured ones, the listen address, and for a wildcard listen
    address without configured names this machine's name and loopback (what a browser on it would type)."""
    names = list(dict.fromkeys(host_names))
    if listen_host not in _WILDCARDS:
        names.append(listen_host)
    elif not host_names:
        names += [socket.gethostname(), "localhost", "127.0.0.1"]
    return list(dict.fromkeys(n.lower() for n in names))


def _split(names: list[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for name in names:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return dns, ips


def _owner(engine: Engine, group: str, names: list[str], actor: str) -> Owner:
    dns, ips = _split(names)
    found = engine.registry.find(group, name=OWNER_NAME)
    if found is None:
        return engine.registry.register(group=group, name=OWNER_NAME, dns_names=dns, ip_addresses=ips, actor=actor)
    if set(found.dns_names) != set(dns) or set(found.ip_addresses) != set(ips):
        return engine.registry.update(found.model_copy(update={"dns_names": dns, "ip_addresses": ips}), actor=actor)
    return found


def _ensure_issuing_ca(engine: Engine, group: str, actor: str) -> None:
    """A data directory made before the group existed has no CA for it yet: make it now (audited)."""
    if not any(ca.group == group and ca.active for ca in engine.hierarchy.list()):
        engine.hierarchy.create_issuing_ca(group, None, actor=actor)
        log.info("created the issuing CA of %s for the web listener", group)


def _is_current(engine: Engine, identity: ServerIdentity, owner: Owner, group: str) -> bool:
    if not identity.cert_file.exists() or not identity.key_file.exists():
        return False
    try:
        certs = x509.load_pem_x509_certificates(identity.cert_file.read_bytes())
    except ValueError:
        return False
    now = engine.now()
    chain = [c.public_bytes(Encoding.DER) for c in certs]
    for name in identity.names:
        result = engine.validator(group).validate(chain, ValidationOptions(at=now, required_eku="serverAuth",
                                                                           hostname=name))
        if not result.ok:
            log.info("the web listener's certificate is no longer usable for %s (%s)", name, result.reason)
            return False
    record = engine.inventory.by_fingerprint(certs[0].fingerprint(hashes.SHA256()).hex())
    if record is None or record.owner_id != owner.id:
        return False
    window = timedelta(days=engine.config.group(group).renewal_window_days)
    return certs[0].not_valid_after_utc - window > now


def ensure_server_identity(engine: Engine, directory: Path, *, group: str, names: list[str], actor: str,
                           password: bytes | None) -> tuple[ServerIdentity, bool]:
    """The listener's certificate and key files, (re)issued when missing, revoked, due or for other names.

    Returns the identity and whether it was newly issued. Blocking: call it through run_blocking.
    """
    identity = ServerIdentity(cert_file=directory / "server.crt", key_file=directory / "server.key",
                              password=password, names=tuple(names))
    _ensure_issuing_ca(engine, group, actor)
    owner = _owner(engine, group, names, actor)
    if _is_current(engine, identity, owner, group) and _key_opens(identity):
        return identity, False
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=actor,
                                                 password=password.decode() if password else None)
    assert issued.private_key is not None
    chain = [issued.certificate_der, *(der for der in issued.chain_der
                                       if (c := x509.load_der_x509_certificate(der)).subject != c.issuer)]
    private_directory(directory)
    write_secret(identity.key_file, issued.private_key)
    write_public(identity.cert_file, b"".join(x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM)
                                              for d in chain))
    log.info("issued the web listener a TLS certificate for %s, serial %s", ", ".join(names), issued.record.serial)
    return identity, True


def _key_opens(identity: ServerIdentity) -> bool:
    """The key file opens with today's passphrase (a changed passphrase, or a key written before encryption, means
    a new key)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(identity.key_file.read_bytes(), identity.password)
    except (ValueError, TypeError, OSError):
        return False
    return True


def key_password(passphrase: object) -> bytes | None:
    """The CA key passphrase (a callable raising KeyAccessError when there is none) as the key's password."""
    try:
        value = passphrase() if callable(passphrase) else passphrase
    except KeyAccessError:
        return None
    return value if isinstance(value, bytes) and value else None


def write_root_file(engine: Engine, directory: Path) -> Path:
    """`root-ca.pem` beside the listener's files: the plant root a browser (or curl --cacert) trusts to reach the
    console. Blocking."""
    roots = [ca for ca in engine.hierarchy.list() if ca.parent_id is None and ca.active]
    path = directory / "root-ca.pem"
    pem = b"".join(x509.load_der_x509_certificate(ca.certificate_der).public_bytes(Encoding.PEM) for ca in roots)
    if not path.is_file() or path.read_bytes() != pem:
        write_public(path, pem)
    return path


def client_trust_pem(engine: Engine) -> bytes:
    """Every CA a client certificate may chain to: the engine's CAs and what operators imported into the trust
    lists (manufacturer IDevID CAs), once each."""
    seen: dict[bytes, None] = {}
    for ca in engine.hierarchy.list():
        seen.setdefault(ca.certificate_der)
    for group in engine.config.groups:
        content = engine.trustlists.get(group).content
        for der in (*content.trusted_certificates, *content.issuer_certificates):
            seen.setdefault(der)
    return b"".join(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM) for der in seen)


def server_context(identity: ServerIdentity, client_cas_pem: bytes) -> ssl.SSLContext:
    """TLS 1.2+ server context: our certificate, client certificates requested (CERT_OPTIONAL), never required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(identity.cert_file, identity.key_file, password=identity.password)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    if client_cas_pem:
        ctx.load_verify_locations(cadata=client_cas_pem.decode())
    return ctx
