"""How otpki opens asyncua client sessions to servers it manages (PLCs, the GDS).

Two things differ from asyncua's defaults, both measured on a fleet push:
- asyncua runs a health probe on every client: each `watchdog_intervall` (default 1 s) it reads
  ServerStatus.State with a timeout of min(session timeout / 2, watchdog_intervall). A PLC that is busy for
  just over a second (a key generation, fifty simulated PLCs sharing one core) fails that probe and the
  client marks itself disconnected, so the next call of a push fails with "client is disconnected" though
  the server is fine. otpki's sessions are short administrative conversations in which every request has
  its own timeout, so the probe gets the request timeout too.
- `Client.set_security` reads and parses the client's private key from disk for every session; parsing an
  RSA key includes cryptography's consistency check (about 30 ms of CPU), two thirds of otpki's CPU per
  push. `ClientIdentity` parses it once and `secure()` builds the security policy from the parsed objects and
  hands it to the client (`_asyncua_compat.use_security_policy`), which is what `set_security` does after loading.

A server that refuses the SecureChannel says why in a StatusCode that asyncua's client drops for some servers
(node-opcua's ERR layout, a ServiceFault answering OpenSecureChannel); `admin_client` has it kept
(`_asyncua_compat.read_channel_refusals`), so a refused push names the server's status and reason.

And one thing asyncua does not do at all: decide whether the server is the one we mean. `set_security` takes
the certificate GetEndpoints returns, whatever it is, and ActivateSession then encrypts the user's password to
it. `secure()` hands that certificate to the caller's `ServerCheck` first; the channel and the session are
then bound to it (asyncua verifies the OpenSecureChannel and CreateSession signatures with its key and refuses
a CreateSession that names another certificate), so nothing is sent to a server that failed the check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from opcua_gds._asyncua_compat import read_channel_refusals, use_security_policy
from opcua_gds.certificate_chain import split_chain

# Called with the certificate chain a server's endpoint presents (leaf first, DER) before any secure channel is
# opened; raises to refuse the server.
ServerCheck = Callable[[list[bytes]], Awaitable[None]]


def admin_client(url: str, *, timeout_s: float) -> Client:
    read_channel_refusals()  # a refused SecureChannel fails with the server's status, not "connection lost"
    return Client(url, timeout=timeout_s, watchdog_intervall=timeout_s)


@dataclass(frozen=True)
class ClientIdentity:
    """The application certificate and key otpki presents on SecureChannels, parsed once."""

    certificate: x509.Certificate
    private_key: PrivateKeyTypes
    # The CAs between the certificate and the root, sent after it on the SecureChannel (OPC 10000-6 6.2.3), so
    # a server that trusts only the root can build the path: from a certificate file that holds a chain
    # (a PEM bundle or concatenated DER, leaf first).
    issuers: tuple[x509.Certificate, ...] = ()

    @staticmethod
    def load(cert_path: Path, key_path: Path) -> ClientIdentity:
        return _load(Path(cert_path).resolve(), Path(key_path).resolve(), Path(key_path).stat().st_mtime_ns)


@cache
def _load(cert_path: Path, key_path: Path, _mtime: int) -> ClientIdentity:
    data = cert_path.read_bytes()
    certs = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
             else [x509.load_der_x509_certificate(der) for der in split_chain(data)])
    if not certs:
        raise ValueError(f"{cert_path} holds no certificate")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return ClientIdentity(certs[0], key, tuple(certs[1:]))


async def secure(client: Client, identity: ClientIdentity, *, mode: ua.MessageSecurityMode, check: ServerCheck,
                 policy: type[security_policies.SecurityPolicy] = SecurityPolicyBasic256Sha256) -> bytes:
    """`Client.set_security` with an already parsed identity and a checked server certificate.

    Asks the endpoints for the server certificate, lets `check` accept or refuse it, and binds the client's
    security policy to it. Returns the accepted certificate (DER).
    """
    use_security_policy(client, security_policies.SecurityPolicyNone())
    endpoints = await client.connect_and_get_server_endpoints()
    endpoint = Client.find_endpoint(endpoints, mode, policy.URI)
    chain = split_chain(endpoint.ServerCertificate or b"")
    # Parsed before the check: a blob that is no certificate must not be pinned or looked up.
    server_cert = x509.load_der_x509_certificate(chain[0] if chain else b"")
    await check(chain)
    use_security_policy(client, policy(server_cert, identity.certificate, identity.private_key, mode,
                                       host_cert_chain=list(identity.issuers)))
    return chain[0]
