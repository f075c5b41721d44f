"""CA keys generated on, and never leaving, a PKCS#11 token (an HSM, or SoftHSM2 in tests).

`load()` returns proxy objects that subclass `cryptography`'s private-key ABCs, so the ordinary certificate
and CRL builders sign with them; only the digest (ECDSA, RSA) or the message (Ed25519) travels to the token.

The module and session registry the backends share (locking, one login per token, PIN rules) is in
`pkcs11_session.py`.
"""

from __future__ import annotations

import hmac
import random
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import pkcs11
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    KeySerializationEncryption,
    PrivateFormat,
)
from cryptography.utils import Buffer
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e

from trustlists.errors import AlreadyExists, InvalidInput, KeyAccessError, NotFound, OtpkiError
from trustlists.keys.pkcs11_session import (
    STALE_OBJECT,
    STALE_SESSION,
    Connection,
    Module,
    close_quietly,
    load_module,
    pin_digest,
    translate,
)
from trustlists.models import KeyFamily, KeyType

__all__ = [
    "Pkcs11EcPrivateKey",
    "Pkcs11Ed25519PrivateKey",
    "Pkcs11KeyBackend",
    "Pkcs11RsaPrivateKey",
]

# DER-encoded named-curve OIDs as they appear in CKA_EC_PARAMS.
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # 1.2.840.10045.3.1.7
_P384_PARAMS = bytes.fromhex("06052b81040022")  # 1.3.132.0.34
_ED25519_PARAMS = bytes.fromhex("06032b6570")  # 1.3.101.112
# PKCS#11 3.0 also allows the curve name as a PrintableString; some HSMs store that form.
_ED25519_PARAMS_NAME = b"\x13\x0cedwards25519"

_EC_SPECS: dict[KeyType, tuple[bytes, ec.EllipticCurve]] = {
    KeyType.EC_P256: (_P256_PARAMS, ec.SECP256R1()),
    KeyType.EC_P384: (_P384_PARAMS, ec.SECP384R1()),
}
_RSA_BITS: dict[KeyType, int] = {KeyType.RSA2048: 2048, KeyType.RSA3072: 3072, KeyType.RSA4096: 4096}

# Mechanisms a token must offer for each family, checked before generating so that a token without (say)
# EdDSA yields a clear "unsupported" error instead of a half-created key or a raw CKR code.
_REQUIRED_MECHANISMS: dict[KeyFamily, tuple[Mechanism, ...]] = {
    KeyFamily.RSA: (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS),
    KeyFamily.EC: (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    KeyFamily.ED25519: (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
}

# DigestInfo prefixes (RFC 8017 §9.2 note 1): CKM_RSA_PKCS signs DigestInfo || digest, which lets us hash
# on the host like ECDSA. That keeps a multi-megabyte CRL off the wire to a network HSM.
_DIGEST_INFO_PREFIX: dict[str, bytes] = {
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PSS_HASH: dict[str, tuple[Mechanism, pkcs11.MGF]] = {
    "sha224": (Mechanism.SHA224, pkcs11.MGF.SHA224),
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256),
    "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384),
    "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512),
}


# --------------------------------------------------------------------------------------------------------
# Helpers for token attributes
# --------------------------------------------------------------------------------------------------------


def _unwrap_octet_string(value: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING per the spec, but some modules return the bare point."""
    if len(value) >= 2 and value[0] == 0x04:
        length = value[1]
        if length < 0x80 and len(value) == 2 + length:
            return value[2:]
        if length == 0x81 and len(value) >= 3 and len(value) == 3 + value[2]:
            return value[3:]
    return value


def _digest(data: bytes, algorithm: hashes.HashAlgorithm | asym_utils.Prehashed) -> tuple[bytes, str]:
    if isinstance(algorithm, asym_utils.Prehashed):
        if len(data) != algorithm.digest_size:
            raise ValueError(f"prehashed data must be {algorithm.digest_size} bytes, got {len(data)}")
        return bytes(data), algorithm._algorithm.name
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize(), algorithm.name


T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------------------


# SoftHSM2's file store rewrites the token file at every C_Login (the PIN counters live there), and a process
# reading it at that moment gets CKR_GENERAL_ERROR or does not see the token at all: two otpki instances starting
# on one token hit this. Finding the token and logging in (never a PIN refusal, which is final) is therefore
# retried for a short, bounded time before the error is reported.
_OPEN_RETRY_S = 10.0


class _TokenFileBusy(Exception):
    """A failure to open the token that may be another process rewriting it; `error` is what to report."""

    def __init__(self, error: KeyAccessError) -> None:
        super().__init__(str(error))
        self.error = error


class Pkcs11KeyBackend:
    """CA keys on one PKCS#11 token. `key_ref` is both the CKA_LABEL and (UTF-8) the CKA_ID of the pair.

    Nothing touches the token until the first call, so constructing a backend never fails on a wrong PIN
    or an absent token; the first create/load/exists does.
    """

    name = "pkcs11"

    def __init__(self, module_path: str, token_label: str, pin: str) -> None:
        self.module_path = module_path
        self.token_label = token_label
        self._pin = pin
        self._pin_error: KeyAccessError | None = None
        self._conn: Connection | None = None  # the connection this backend is counted in

    def __repr__(self) -> str:
        return f"Pkcs11KeyBackend(module={self.module_path!r}, token={self.token_label!r})"

    def __enter__(self) -> Pkcs11KeyBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- KeyBackend protocol ------------------------------------------------------------------------

    def create(self, key_ref: str, key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
        """Generate a sign-only key pair on the token; the private half is sensitive and non-extractable."""
        _check_key_ref(key_ref)
        try:
            key_type = KeyType(key_type)
        except ValueError:
            raise KeyAccessError(
                f"key type {key_type!r} is not supported on PKCS#11 tokens; use one of "
                + ", ".join(k.value for k in KeyType),
                reason="unsupported_key_type",
            ) from None

        def generate(conn: Connection) -> None:
            if self._find(conn.session, key_ref, None):
                raise AlreadyExists(
                    f"a key labelled {key_ref!r} already exists on token {self.token_label!r}; "
                    "choose another key reference (otpki never overwrites CA keys)"
                )
            self._check_mechanisms(conn.session, key_type)
            self._generate(conn.session, key_ref, key_type)
            conn.keys.pop(key_ref, None)

        self._run(generate, f"creating {key_type.value} key {key_ref!r} on token {self.token_label!r}",
                  unsupported_reason="unsupported_key_type")
        return self.load(key_ref)

    def load(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        _check_key_ref(key_ref)

        def read(conn: Connection) -> CertificateIssuerPrivateKeyTypes:
            private = self._private_object(conn, key_ref)
            public_obj = self._find_one(conn.session, key_ref, ObjectClass.PUBLIC_KEY)
            return self._make_signer(key_ref, private, public_obj)

        return self._run(read, f"loading key {key_ref!r} from token {self.token_label!r}")

    def exists(self, key_ref: str) -> bool:
        _check_key_ref(key_ref)
        return self._run(lambda conn: bool(self._find(conn.session, key_ref, None)),
                         f"looking up key {key_ref!r} on token {self.token_label!r}")

    def discard(self, key_ref: str) -> None:
        _check_key_ref(key_ref)

        def destroy(conn: Connection) -> None:
            conn.keys.pop(key_ref, None)
            for found in self._find(conn.session, key_ref, None):
                found.destroy()

        self._run(destroy, f"removing the unused key {key_ref!r} from token {self.token_label!r}")

    # ---- extras ------------------------------------------------------------------------------------------

    def key_attributes(self, key_ref: str) -> dict[str, bool]:
        """Protection flags of the private key as the token reports them, for audits and `ca show`.

        `local` + `always_sensitive` + `never_extractable` is the token's own statement that the key was
        generated inside it and has never been readable outside it.
        """
        _check_key_ref(key_ref)
        names = {
            "token": Attribute.TOKEN,
            "private": Attribute.PRIVATE,
            "sensitive": Attribute.SENSITIVE,
            "extractable": Attribute.EXTRACTABLE,
            "always_sensitive": Attribute.ALWAYS_SENSITIVE,
            "never_extractable": Attribute.NEVER_EXTRACTABLE,
            "local": Attribute.LOCAL,
            "sign": Attribute.SIGN,
            "decrypt": Attribute.DECRYPT,
        }

        def read(conn: Connection) -> dict[str, bool]:
            private = self._private_object(conn, key_ref)
            result: dict[str, bool] = {}
            for name, attribute in names.items():
                try:
                    result[name] = bool(private[attribute])
                except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive):
                    continue  # a module that does not track this flag simply omits it
            return result

        return self._run(read, f"reading attributes of key {key_ref!r} on token {self.token_label!r}")

    def close(self) -> None:
        """Release this backend's share of the token session; the last user logs out and closes it.

        Signers obtained from this backend stay usable: they reconnect on their next signature.
        """
        try:
            module = load_module(self.module_path)
        except KeyAccessError:
            self._conn = None
            return
        with module.lock:
            conn, self._conn = self._conn, None
            if conn is None or module.connections.get(self.token_label) is not conn:
                return
            conn.users -= 1
            if conn.users <= 0:
                del module.connections[self.token_label]
                close_quietly(conn.session)

    # ---- signing entry points used by the key proxies --------------------------------------------------

    def _sign(self, key_ref: str, data: bytes, mechanism: Mechanism, param: Any = None) -> bytes:
        def sign(conn: Connection) -> bytes:
            private = self._private_object(conn, key_ref)
            return private.sign(data, mechanism=mechanism, mechanism_param=param)

        return self._run(sign, f"signing with key {key_ref!r} on token {self.token_label!r}")

    # ---- internals ----------------------------------------------------------------------------------

    def _run(self, operation: Callable[[Connection], T], doing: str,
             unsupported_reason: str | None = None) -> T:
        """Run `operation` under the module lock with a live session, reconnecting once if it went stale."""
        module = load_module(self.module_path)
        with module.lock:
            for attempt in range(2):
                conn = self._connect(module)
                try:
                    return operation(conn)
                except OtpkiError:
                    raise
                except STALE_SESSION as exc:
                    # Only a session that still exists (merely logged out) is worth closing.
                    self._drop(module, conn, close=isinstance(exc, p11e.UserNotLoggedIn))
                    if attempt == 0:
                        continue
                    raise translate(exc, doing) from None
                except STALE_OBJECT as exc:
                    conn.keys.clear()
                    if attempt == 0:
                        continue
                    raise translate(exc, doing) from None
                except p11e.PKCS11Error as exc:
                    error = translate(exc, doing)
                    if unsupported_reason is None and error.reason == "unsupported_key_type":
                        error.reason = "hsm_error"
                    raise error from None
            raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, module: Module) -> Connection:
        """Return the token's shared logged-in session, opening it if needed. Caller holds module.lock."""
        if self._pin_error is not None:
            # Never retry a rejected PIN: real HSMs lock the user PIN after a handful of failures.
            raise KeyAccessError(self._pin_error.message, reason=self._pin_error.reason)
        if module.needs_reinit:
            try:
                module.lib.reinitialize()
            except p11e.PKCS11Error as exc:
                raise translate(exc, f"re-initializing PKCS#11 module {self.module_path!r}") from None
            module.needs_reinit = False
        conn = module.connections.get(self.token_label)
        if conn is None:
            conn = self._open(module)
            module.connections[self.token_label] = conn
        elif not hmac.compare_digest(conn.pin_digest, pin_digest(self._pin)):
            self._reject_pin()
        if self._conn is not conn:
            conn.users += 1
            self._conn = conn
        return conn

    def _open(self, module: Module) -> Connection:
        """Find the token and log in, riding out the moments another process rewrites a SoftHSM token file."""
        deadline = time.monotonic() + _OPEN_RETRY_S
        attempt = 0
        while True:
            try:
                return self._open_once(module)
            except _TokenFileBusy as busy:
                attempt += 1
                if time.monotonic() >= deadline:
                    raise busy.error from None
                time.sleep(random.uniform(0.01, 0.04) * min(attempt, 10))
                if attempt % 3 == 0:
                    # SoftHSM keeps a token it read half-written (as one with no label) until it is initialized
                    # again: re-read the token files. Every session of this module is dropped, as by
                    # reload_module; the other backends reconnect on their next use.
                    module.connections.clear()
                    try:
                        module.lib.reinitialize()
                    except p11e.PKCS11Error as exc:
                        raise translate(exc, f"re-initializing PKCS#11 module {self.module_path!r}") from None

    def _open_once(self, module: Module) -> Connection:
        where = f"PKCS#11 token {self.token_label!r} in module {self.module_path!r}"
        try:
            token = module.lib.get_token(token_label=self.token_label)
        except p11e.NoSuchToken:
            labels = self._token_labels(module)
            raise _TokenFileBusy(KeyAccessError(
                f"{where} not found (tokens present: {', '.join(map(repr, labels)) or 'none'}); "
                "check that the HSM is connected and the token label in the configuration is right",
                reason="token_unavailable",
            )) from None
        except p11e.GeneralError as exc:
            raise _TokenFileBusy(translate(exc, f"opening {where}")) from None
        except p11e.PKCS11Error as exc:
            raise translate(exc, f"opening {where}") from None
        try:
            session = token.open(rw=True, user_pin=self._pin)
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange):
            self._reject_pin()
        except p11e.UserAlreadyLoggedIn:
            # Someone in this process logged in outside this module, so the token cannot check our PIN.
            raise KeyAccessError(
                f"{where}: another component of this process is already logged in to the token outside "
                "otpki's key backend, so the configured PIN cannot be verified; use one backend per token",
                reason="token_unavailable",
            ) from None
        except (p11e.GeneralError, p11e.UserPinNotInitialized, p11e.TokenNotRecognised) as exc:
            # What SoftHSM answers from a token file read half-written (flags and label still zero).
            raise _TokenFileBusy(translate(exc, f"logging in to {where}")) from None
        except p11e.PKCS11Error as exc:
            raise translate(exc, f"logging in to {where}") from None
        return Connection(session=session, pin_digest=pin_digest(self._pin))

    def _reject_pin(self) -> NoReturn:
        self._pin_error = KeyAccessError(
            f"PKCS#11 token {self.token_label!r} rejected the user PIN. Fix the HSM PIN in the otpki "
            "configuration and restart; otpki does not retry a rejected PIN because HSMs lock the PIN after "
            "a few failed attempts",
            reason="wrong_pin",
        )
        raise KeyAccessError(self._pin_error.message, reason="wrong_pin")

    @staticmethod
    def _token_labels(module: Module) -> list[str]:
        try:
            return [token.label for token in module.lib.get_tokens()]
        except p11e.PKCS11Error:
            return []

    def _drop(self, module: Module, conn: Connection, *, close: bool) -> None:
        if module.connections.get(self.token_label) is conn:
            del module.connections[self.token_label]
        if close:
            close_quietly(conn.session)
        self._conn = None

    @staticmethod
    def _find(session: Any, key_ref: str, object_class: ObjectClass | None) -> list[Any]:
        attrs: dict[Attribute, Any] = {Attribute.LABEL: key_ref}
        if object_class is not None:
            attrs[Attribute.CLASS] = object_class
        # Exhaust the search: an abandoned iterator finalizes the search later, from the garbage collector,
        # outside the module lock.
        return list(session.get_objects(attrs))

    def _find_one(self, session: Any, key_ref: str, object_class: ObjectClass) -> Any:
        found = self._find(session, key_ref, object_class)
        kind = "private" if object_class == ObjectClass.PRIVATE_KEY else "public"
        if not found:
            if object_class == ObjectClass.PRIVATE_KEY:
                raise NotFound(f"no private key labelled {key_ref!r} on PKCS#11 token {self.token_label!r}")
            raise KeyAccessError(
                f"the {kind} key object of {key_ref!r} is missing on token {self.token_label!r}; "
                "import the public key next to the private key (e.g. pkcs11-tool --write-object)",
                reason="key_incomplete",
            )
        if len(found) > 1:
            raise KeyAccessError(
                f"{len(found)} {kind} keys are labelled {key_ref!r} on token {self.token_label!r}; "
                "labels must be unique for otpki to know which key to use",
                reason="ambiguous_key",
            )
        return found[0]

    def _private_object(self, conn: Connection, key_ref: str) -> Any:
        private = conn.keys.get(key_ref)
        if private is None:
            private = self._find_one(conn.session, key_ref, ObjectClass.PRIVATE_KEY)
            conn.keys[key_ref] = private
        return private

    def _check_mechanisms(self, session: Any, key_type: KeyType) -> None:
        available = session.token.slot.get_mechanisms()
        missing = [m.name for m in _REQUIRED_MECHANISMS[key_type.family] if m not in available]
        if missing:
            raise KeyAccessError(
                f"token {self.token_label!r} cannot hold {key_type.value} CA keys: it lacks "
                f"{', '.join('CKM_' + m for m in missing)}; choose another key type or a file-backed key",
                reason="unsupported_key_type",
            )

    def _generate(self, session: Any, key_ref: str, key_type: KeyType) -> None:
        # Sign/verify only: a CA key that can also decrypt or unwrap is a key-confusion risk.
        common: dict[str, Any] = {
            "id": key_ref.encode("utf-8"),
            "label": key_ref,
            "store": True,
            "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
        }
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        }
        public_template: dict[Attribute, Any] = {Attribute.TOKEN: True, Attribute.PRIVATE: False}
        if key_type.family is KeyFamily.RSA:
            session.generate_keypair(P11KeyType.RSA, _RSA_BITS[key_type], **common,
                                     public_template=public_template, private_template=private_template)
        elif key_type.family is KeyFamily.EC:
            public_template[Attribute.EC_PARAMS] = _EC_SPECS[key_type][0]
            session.generate_keypair(P11KeyType.EC, **common, mechanism=Mechanism.EC_KEY_PAIR_GEN,
                                     public_template=public_template, private_template=private_template)
        else:
            public_template[Attribute.EC_PARAMS] = _ED25519_PARAMS
            session.generate_keypair(P11KeyType.EC_EDWARDS, **common,
                                     mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                                     public_template=public_template, private_template=private_template)

    def _make_signer(self, key_ref: str, private: Any, public_obj: Any) -> CertificateIssuerPrivateKeyTypes:
        p11_type = private[Attribute.KEY_TYPE]
        if p11_type == P11KeyType.RSA:
            public_rsa = rsa.RSAPublicNumbers(
                e=int.from_bytes(public_obj[Attribute.PUBLIC_EXPONENT], "big"),
                n=int.from_bytes(public_obj[Attribute.MODULUS], "big"),
            ).public_key()
            return Pkcs11RsaPrivateKey(self, key_ref, public_rsa)
        if p11_type == P11KeyType.EC:
            params = bytes(public_obj[Attribute.EC_PARAMS])
            curve = next((c for p, c in _EC_SPECS.values() if p == params), None)
            if curve is None:
                raise KeyAccessError(
                    f"key {key_ref!r} on token {self.token_label!r} uses an EC curve otpki does not support "
                    f"(EC_PARAMS {params.hex()}); CA keys must be P-256 or P-384",
                    reason="unsupported_key_type",
                )
            point = _unwrap_octet_string(bytes(public_obj[Attribute.EC_POINT]))
            public_ec = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            return Pkcs11EcPrivateKey(self, key_ref, public_ec)
        if p11_type == P11KeyType.EC_EDWARDS:
            params = bytes(public_obj[Attribute.EC_PARAMS])
            if params not in (_ED25519_PARAMS, _ED25519_PARAMS_NAME):
                raise KeyAccessError(
                    f"key {key_ref!r} on token {self.token_label!r} is an Edwards key other than Ed25519",
                    reason="unsupported_key_type",
                )
            point = _unwrap_octet_string(bytes(public_obj[Attribute.EC_POINT]))
            return Pkcs11Ed25519PrivateKey(self, key_ref, ed25519.Ed25519PublicKey.from_public_bytes(point))
        raise KeyAccessError(
            f"key {key_ref!r} on token {self.token_label!r} has PKCS#11 key type {p11_type!r}, "
            "which cannot sign certificates here",
            reason="unsupported_key_type",
        )


def _check_key_ref(key_ref: str) -> None:
    if not isinstance(key_ref, str) or not key_ref or len(key_ref.encode("utf-8")) > 255:
        raise InvalidInput(f"invalid key reference {key_ref!r}: expected 1-255 bytes of text")


# --------------------------------------------------------------------------------------------------------
# Private-key proxies handed to cryptography's builders
# --------------------------------------------------------------------------------------------------------


class _TokenKey:
    """Shared behaviour: identity, no copies, no export."""

    def __init__(self, backend: Pkcs11KeyBackend, key_ref: str) -> None:
        self.backend = backend
        self.key_ref = key_ref

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key_ref!r} on token {self.backend.token_label!r}>"

    # A proxy holds no secret, so a "copy" is the same handle.
    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def _refuse_export(self) -> NoReturn:
        raise KeyAccessError(
            f"the private key {self.key_ref!r} lives on PKCS#11 token {self.backend.token_label!r} and is "
            "marked non-extractable; it cannot be exported",
            reason="not_extractable",
        )


class Pkcs11EcPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """ECDSA on the token. The host hashes; the token signs the digest with CKM_ECDSA."""

    def __init__(self, backend: Pkcs11KeyBackend, key_ref: str, public: ec.EllipticCurvePublicKey) -> None:
        super().__init__(backend, key_ref)
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm(f"{signature_algorithm!r} is not ECDSA")
        if getattr(signature_algorithm, "deterministic_signing", False):
            raise UnsupportedAlgorithm("deterministic (RFC 6979) ECDSA is not available through PKCS#11")
        digest, _ = _digest(bytes(data), signature_algorithm.algorithm)
        # ECDSA uses the leftmost bits of a longer hash; P-256/P-384 orders are whole bytes, so truncating
        # bytes is exact, and it spares tokens that reject over-long CKM_ECDSA input.
        digest = digest[: (self.key_size + 7) // 8]
        raw = self.backend._sign(self.key_ref, digest, Mechanism.ECDSA)
        half = len(raw) // 2
        return asym_utils.encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise UnsupportedAlgorithm("CA keys on the token are sign-only; ECDH is not offered")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._refuse_export()

    def private_bytes(self, encoding: Encoding, format: PrivateFormat,
                      encryption_algorithm: KeySerializationEncryption) -> bytes:
        self._refuse_export()


class Pkcs11RsaPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """RSA on the token: PKCS#1 v1.5 or PSS over a digest computed on the host."""

    def __init__(self, backend: Pkcs11KeyBackend, key_ref: str, public: rsa.RSAPublicKey) -> None:
        super().__init__(backend, key_ref)
        self._public = public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    # Parameter names follow the ABC so keyword calls behave as with a software key.
    # NoDigestInfo (cryptography 47+) is named only in the annotation, which is not evaluated, so older releases
    # in our range still import this module.
    def sign(self, data: Buffer, padding: asym_padding.AsymmetricPadding,
             algorithm: hashes.HashAlgorithm | asym_utils.Prehashed | asym_utils.NoDigestInfo) -> bytes:
        if not isinstance(algorithm, hashes.HashAlgorithm | asym_utils.Prehashed):
            raise UnsupportedAlgorithm("RSA CA signatures without a DigestInfo are not supported")
        digest, hash_name = _digest(bytes(data), algorithm)
        if isinstance(padding, asym_padding.PKCS1v15):
            prefix = _DIGEST_INFO_PREFIX.get(hash_name)
            if prefix is None:
                raise UnsupportedAlgorithm(f"RSA CA signatures with {hash_name} are not supported")
            return self.backend._sign(self.key_ref, prefix + digest, Mechanism.RSA_PKCS)
        if isinstance(padding, asym_padding.PSS):
            return self._sign_pss(digest, hash_name, padding)
        raise UnsupportedAlgorithm(f"RSA padding {padding.name} is not supported for signing")

    def _sign_pss(self, digest: bytes, hash_name: str, pss: asym_padding.PSS) -> bytes:
        mgf = pss.mgf
        if not isinstance(mgf, asym_padding.MGF1) or mgf._algorithm.name != hash_name:
            raise UnsupportedAlgorithm("PSS on the token needs MGF1 with the same hash as the signature")
        if hash_name not in _PSS_HASH:
            raise UnsupportedAlgorithm(f"RSA-PSS with {hash_name} is not supported")
        salt = pss._salt_length
        if isinstance(salt, asym_padding._DigestLength):
            salt_len = len(digest)
        elif isinstance(salt, asym_padding._MaxLength):
            salt_len = (self.key_size + 7) // 8 - len(digest) - 2
        elif isinstance(salt, int):
            salt_len = salt
        else:
            raise UnsupportedAlgorithm("PSS salt length AUTO only applies to verification")
        hash_mech, mgf_id = _PSS_HASH[hash_name]
        return self.backend._sign(self.key_ref, digest, Mechanism.RSA_PKCS_PSS, (hash_mech, mgf_id, salt_len))

    def decrypt(self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding) -> bytes:
        raise UnsupportedAlgorithm("CA keys on the token are sign-only; decryption is not offered")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        self._refuse_export()

    def private_bytes(self, encoding: Encoding, format: PrivateFormat,
                      encryption_algorithm: KeySerializationEncryption) -> bytes:
        self._refuse_export()


class Pkcs11Ed25519PrivateKey(_TokenKey, ed25519.Ed25519PrivateKey):
    """Pure Ed25519 (CKM_EDDSA): the whole message goes to the token, as EdDSA hashes internally."""

    def __init__(self, backend: Pkcs11KeyBackend, key_ref: str, public: ed25519.Ed25519PublicKey) -> None:
        super().__init__(backend, key_ref)
        self._public = public

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def sign(self, data: Buffer) -> bytes:
        return self.backend._sign(self.key_ref, bytes(data), Mechanism.EDDSA)

    def private_bytes(self, encoding: Encoding, format: PrivateFormat,
                      encryption_algorithm: KeySerializationEncryption) -> bytes:
        self._refuse_export()

    def private_bytes_raw(self) -> bytes:
        self._refuse_export()
