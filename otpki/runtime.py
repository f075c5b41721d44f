"""Opening an engine from settings: the store, the key backend and the key pool."""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from otpki.config import Settings
from trustlists.engine import Engine
from trustlists.keys.base import KeyBackend
from trustlists.keys.files import EncryptedFileKeyBackend
from trustlists.keys.keyring import KeyRing
from trustlists.keys.pool import KeyPool
from trustlists.models import KeyType
from trustlists.secret_box import KEY_FILE as SECRETS_KEY_FILE
from trustlists.store import Store
from trustlists.store import open_store as open_store_url


class _Deferred:
    """Resolves the secret (passphrase, PIN) on first use: listing certificates needs no CA key."""

    def __init__(self, name: str, make: Callable[[], KeyBackend]) -> None:
        self.name = name
        self._make = make
        self._backend: KeyBackend | None = None

    def _get(self) -> KeyBackend:
        if self._backend is None:
            self._backend = self._make()
        return self._backend

    def create(self, key_ref: str, key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
        return self._get().create(key_ref, key_type)

    def load(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        return self._get().load(key_ref)

    def exists(self, key_ref: str) -> bool:
        return self._get().exists(key_ref)

    def discard(self, key_ref: str) -> None:
        self._get().discard(key_ref)


def key_backends(settings: Settings) -> list[KeyBackend]:
    def file_backend() -> KeyBackend:
        return EncryptedFileKeyBackend(settings.keys_dir, settings.passphrase())

    def pkcs11_backend() -> KeyBackend:
        from trustlists.keys.pkcs11 import Pkcs11KeyBackend

        p11 = settings.file.keys.pkcs11
        return Pkcs11KeyBackend(p11.module, p11.token_label, settings.hsm_pin())

    backends: list[KeyBackend] = [_Deferred("file", file_backend), _Deferred("pkcs11", pkcs11_backend)]
    if settings.file.keys.backend == "pkcs11":
        backends.reverse()  # the first backend is where new CA keys are created
    return backends


def open_store(settings: Settings, *, check_schema: bool = True) -> Store:
    """The store of the settings. `check_schema`: refuse one whose schema is not this otpki's (SchemaMismatch);
    off only to show or upgrade the schema."""
    return open_store_url(settings.store_url, busy_timeout_s=settings.file.store.busy_timeout_s,
                          check_schema=check_schema)


def open_engine(settings: Settings, *, key_pool: bool = False) -> Engine:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings)
    try:
        keys = KeyRing(key_backends(settings))
    except BaseException:
        store.close()
        raise
    pool = KeyPool({KeyType(k): v for k, v in settings.file.keys.pool_sizes.items()}) if key_pool else None
    engine = Engine(store=store, config=settings.pki, keys=keys, key_pool=pool,
                    secrets_key_file=settings.data_dir / SECRETS_KEY_FILE)
    if pool is not None:
        pool.start()
    return engine
