"""otpki's own OPC UA application identities (the GDS, the push client): engine-issued, renewed when due.

The key is an application instance key, not a CA key: like any server's TLS key it lives in a file
readable by this service account only (0600).
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

from asyncua import ua

from opcua_gds.certificate_chain import issuer_chain
from trustlists.engine import Engine
from trustlists.errors import AlreadyExists
from trustlists.models import KeyType, Owner
from trustlists.safe_files import private_directory, write_public, write_secret

GROUP = "opcua-application"


def ensure_identity(engine: Engine, own_dir: Path, *, name: str, application_uri: str, host: str,
                    application_type: ua.ApplicationType = ua.ApplicationType.Client) -> tuple[Path, Path]:
    """(certificate DER path, key PEM path), issuing a new pair when missing, revoked or inside the renewal window.

    application_type is what the GDS Directory reports for this identity (QueryApplications): Client for the
    push client (the default), DiscoveryServer for the GDS. An identity registered with another type (by an
    earlier otpki, which registered the push client as a Server) is corrected, in the audit log.

    Blocking: call it through run_blocking from async code.
    """
    cert_path, key_path = own_dir / f"{name}.der", own_dir / f"{name}.key.pem"
    owner = _owner(engine, name=name, application_uri=application_uri, host=host, application_type=application_type)
    if cert_path.exists() and key_path.exists():
        record = engine.inventory.by_fingerprint(hashlib.sha256(cert_path.read_bytes()).hexdigest())
        window = engine.config.group(GROUP).renewal_window_days
        if (record is not None and record.revoked_at is None and record.owner_id == owner.id
                and (record.not_after - engine.now()).days > window):
            return cert_path, key_path
    issued = engine.authority.issue_with_new_key(owner_id=owner.id, actor=f"otpki:{name}", key_type=KeyType.RSA2048)
    assert issued.private_key is not None
    private_directory(own_dir)
    write_secret(key_path, issued.private_key)
    write_public(cert_path, issued.certificate_der)
    return cert_path, key_path


def chain_file(engine: Engine, cert_path: Path) -> Path:
    """`<name>.chain.der` beside `cert_path`: the certificate, then the CAs above it up to the root (concatenated
    DER, OPC 10000-6 6.2.3), rewritten when it differs. A client that loads it (`ClientIdentity.load`) sends the
    CAs after its certificate, so a server that trusts only the plant root can build the path.

    Blocking: call it through run_blocking from async code.
    """
    leaf = cert_path.read_bytes()
    content = engine.trustlists.get(GROUP).content
    chain = leaf + b"".join(issuer_chain(leaf, (*content.trusted_certificates, *content.issuer_certificates)))
    path = cert_path.with_name(f"{cert_path.stem}.chain.der")
    if not path.is_file() or path.read_bytes() != chain:
        write_public(path, chain)
    return path


def _owner(engine: Engine, *, name: str, application_uri: str, host: str,
           application_type: ua.ApplicationType) -> Owner:
    found = engine.registry.find(GROUP, name=name)
    if found is not None:
        if found.attributes.get("application_type") != int(application_type):
            return engine.registry.update(found.model_copy(update={"attributes": {
                **found.attributes, "application_type": int(application_type)}}), actor=f"otpki:{name}")
        return found
    ips, dns = [], []
    try:
        ipaddress.ip_address(host)
        ips.append(host)
    except ValueError:
        dns.append(host)
    try:
        return engine.registry.register(group=GROUP, name=name, application_uri=application_uri, dns_names=dns,
                                        ip_addresses=ips, actor=f"otpki:{name}",
                                        attributes={"application_type": int(application_type)})
    except AlreadyExists:
        # Another instance on the same store registered it between the lookup and here: it is the same identity.
        raced = engine.registry.find(GROUP, name=name)
        if raced is None:
            raise
        return raced
