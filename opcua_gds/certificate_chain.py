"""Certificate chains as OPC UA carries them: DER certificates concatenated, leaf first (OPC 10000-6 6.2.3).

A server presents its chain in EndpointDescription.ServerCertificate and in the SenderCertificate of its
OpenSecureChannel response, a client in the SenderCertificate of its OpenSecureChannel request; a peer that
trusts only the plant root builds the path from what it is sent. `issuer_chain` picks, from the CA
certificates an application knows (its trust list, the IssuerCertificates it was given with its
certificate), the ones between its leaf and the root; the self-signed root itself is left out, because a
peer that does not hold it cannot trust the chain anyway.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509

_MAX_DEPTH = 8  # more CAs than any plant hierarchy has; a loop in broken data must end


def first_certificate(chain: bytes) -> bytes:
    """The leaf of a DER certificate or of a concatenated DER chain (its first element)."""
    if len(chain) < 4 or chain[0] != 0x30:
        return chain
    length = chain[1]
    if length < 0x80:
        return chain[: 2 + length]
    n = length & 0x7F
    return chain[: 2 + n + int.from_bytes(chain[2: 2 + n], "big")]


def split_chain(chain: bytes) -> list[bytes]:
    """The certificates of a DER certificate or a concatenated DER chain, in order (leaf first)."""
    certs: list[bytes] = []
    rest = chain
    while rest:
        cert = first_certificate(rest)
        if not cert:
            break
        certs.append(cert)
        rest = rest[len(cert):]
    return certs


def issuer_chain(leaf_der: bytes, candidates: Iterable[bytes]) -> list[bytes]:
    """The CA certificates from `leaf_der`'s issuer up to, not including, a self-signed root (DER, in order).

    Issuers are found among `candidates` by name and verified by signature; candidates that are no
    certificate are skipped. The chain ends where no candidate issued the last certificate (a peer then
    needs that issuer itself), at a self-signed certificate, or at a self-signed leaf (empty chain).
    """
    pool: list[tuple[bytes, x509.Certificate]] = []
    for der in dict.fromkeys(candidates):  # each once, in the order given
        try:
            pool.append((der, x509.load_der_x509_certificate(der)))
        except ValueError:
            continue
    try:
        current = x509.load_der_x509_certificate(leaf_der)
    except ValueError:
        return []
    chain: list[bytes] = []
    for _ in range(_MAX_DEPTH):
        if _self_signed(current):
            break
        issuer = next(((der, cert) for der, cert in pool if der not in chain and _issued(current, cert)), None)
        if issuer is None or _self_signed(issuer[1]):
            break
        chain.append(issuer[0])
        current = issuer[1]
    return chain


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm: not its issuer
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _issued(cert, cert)
