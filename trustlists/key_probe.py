"""Does a CA key still sign? A health check that signs a fixed message and verifies it with the CA certificate.

Used by `otpki doctor` through `Engine.probe_ca_key`: a key on a token that was swapped, a key file encrypted
with another passphrase, or a certificate that no longer matches its key all show up here before issuance fails.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

PROBE = b"otpki doctor: can this key sign for its certificate?"


def sign_and_verify(key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate) -> None:
    """Raises (InvalidSignature, the backend's own error, ValueError) unless `key` signs for `cert`."""
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey) and isinstance(key, rsa.RSAPrivateKey):
        public.verify(key.sign(PROBE, padding.PKCS1v15(), hashes.SHA256()), PROBE, padding.PKCS1v15(),
                      hashes.SHA256())
    elif isinstance(public, ec.EllipticCurvePublicKey) and isinstance(key, ec.EllipticCurvePrivateKey):
        public.verify(key.sign(PROBE, ec.ECDSA(hashes.SHA256())), PROBE, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) \
            and isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        public.verify(key.sign(PROBE), PROBE)  # a mixed pair (Ed25519 key, Ed448 certificate) fails to verify
    else:
        raise ValueError(f"a {type(key).__name__} cannot sign for a {type(public).__name__} certificate")
