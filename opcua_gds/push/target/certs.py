"""Certificate and key helpers of the push target: parse, match, load pushed keys, build CSRs.

Everything here is synchronous and CPU-bound; callers run it with `run_blocking`.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey  # the SecureChannel's key: asyncua's policies are RSA only
EccKey = ec.EllipticCurvePrivateKey  # kept for the ECC certificate types (stored, not used on channels)
AnyKey = PrivateKey | EccKey
# The curves of the ECC application certificate types (OPC 10000-12 7.8.4.11-12) and the hash each CSR is
# signed with (OPC 10000-7 ECC_nistP256 / ECC_nistP384).
ECC_CURVES: dict[str, tuple[type[ec.EllipticCurve], type[hashes.SHA256 | hashes.SHA384]]] = {
    "secp256r1": (ec.SECP256R1, hashes.SHA256),
    "secp384r1": (ec.SECP384R1, hashes.SHA384),
}


class CertError(Exception):
    """A pushed certificate, key or argument is unusable; `code` is the OPC UA status to answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def thumbprint(der: bytes) -> str:
    """OPC UA thumbprint: upper-case hex SHA-1 of the DER."""
    return hashlib.sha1(der).hexdigest().upper()


def parse_certificate(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, TypeError):
        return None


def parse_crl(der: bytes) -> x509.CertificateRevocationList | None:
    try:
        return x509.load_der_x509_crl(der)
    except (ValueError, TypeError):
        return None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # any failure means "not self-signed"
        return False
    return True


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError, TypeError: not its issuer
        return False
    return True


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert: x509.Certificate, key: AnyKey) -> bool:
    return _spki(cert.public_key()) == _spki(key.public_key())


def key_to_pem(key: AnyKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def key_from_pem(pem: bytes) -> AnyKey:
    """An RSA key, or an EC key on a curve of the ECC application certificate types; ValueError otherwise."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey) or (isinstance(key, ec.EllipticCurvePrivateKey)
                                              and key.curve.name in ECC_CURVES):
        return key
    raise ValueError("only RSA keys and EC keys on P-256 or P-384 are supported")


def load_pushed_key(fmt: str, data: bytes) -> AnyKey:
    """The private key of UpdateCertificate: "PEM" (PKCS#8, PEM text or raw DER) or "PFX" (PKCS#12, no password);
    RSA, or EC on P-256 / P-384 (for the ECC certificate types)."""
    fmt = (fmt or "").upper()
    key: object | None = None
    try:
        if fmt == "PEM":
            if data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = serialization.load_der_private_key(data, password=None)
        elif fmt == "PFX":
            for password in (None, b""):
                try:
                    key, _cert, _extra = pkcs12.load_key_and_certificates(data, password)
                    break
                except ValueError:
                    continue
        else:
            raise CertError(ua.StatusCodes.BadNotSupported, f"PrivateKeyFormat {fmt!r}: only PEM and PFX")
    except (ValueError, TypeError) as exc:
        raise CertError(ua.StatusCodes.BadSecurityChecksFailed, f"private key unreadable: {exc}") from exc
    if key is None:
        raise CertError(ua.StatusCodes.BadSecurityChecksFailed, "no private key in the PFX")
    if isinstance(key, rsa.RSAPrivateKey) or (isinstance(key, ec.EllipticCurvePrivateKey)
                                              and key.curve.name in ECC_CURVES):
        return key
    raise CertError(ua.StatusCodes.BadCertificateInvalid, "only RSA keys and EC keys on P-256 or P-384 are supported")


def new_key(bits: int = 2048) -> PrivateKey:
    return rsa.generate_private_key(65537, bits)


def new_ecc_key(curve_name: str) -> EccKey:
    return ec.generate_private_key(ECC_CURVES[curve_name][0]())


def build_csr(key: AnyKey, subject: x509.Name, san: list[x509.GeneralName]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    digest: hashes.SHA256 | hashes.SHA384 = hashes.SHA256()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = ECC_CURVES[key.curve.name][1]()
    return builder.sign(key, digest).public_bytes(serialization.Encoding.DER)


def subject_alt_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def self_signed(name: str, application_uri: str, hosts: list[str], *, organization: str = "factory",
                days: int = 3650) -> tuple[bytes, PrivateKey]:
    """A factory application certificate (Part 6 profile): self-signed, RSA 2048, SAN URI + hosts."""
    import ipaddress

    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, True, True, False, True, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER), key
