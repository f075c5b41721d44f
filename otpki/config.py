"""Deployment configuration: `<data dir>/otpki.toml` plus OTPKI_* environment variables.

The certificate groups come from the engine's embedded defaults; the [pki] table of otpki.toml
overrides any key of them (deep merge), so an operator changes a lifetime without restating a group.
Secrets (the CA key passphrase, the HSM PIN) come from a file or the environment, never the command line.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mqtt_broker_auth.broker_limits import BrokerLimits
from mqtt_broker_auth.enrollment import EnrollmentSettings
from opcua_gds.rollout import PushSettings
from opcua_gds.server import GdsSettings
from trustlists.errors import InvalidInput, KeyAccessError, NotInitialized
from trustlists.policy import PkiConfig, default_config_data

CONFIG_FILE = "otpki.toml"
DB_FILE = "otpki.db"
KEYS_DIR = "keys"


class Pkcs11Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: str = Field("/usr/lib/softhsm/libsofthsm2.so", description="PKCS#11 module of the HSM")
    token_label: str = Field("otpki", description="Label of the token that holds the CA keys")
    pin_file: Path | None = Field(None, description="File with the user PIN (else OTPKI_HSM_PIN)")


class KeySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["file", "pkcs11"] = Field(
        "file", description="Where new CA keys are made: encrypted PKCS#8 files in the data directory, or an HSM")
    passphrase_file: Path | None = Field(
        None, description="File with the CA key passphrase (else OTPKI_CA_PASSPHRASE or OTPKI_CA_PASSPHRASE_FILE)")
    pkcs11: Pkcs11Settings = Field(default_factory=Pkcs11Settings)
    pool_sizes: dict[str, int] = Field(
        default_factory=lambda: {"rsa2048": 4, "ec-p256": 8},
        description="Keys generated ahead, per key type, for server-side key generation")


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    busy_timeout_s: float = Field(5.0, ge=0, description="How long a writer waits for another process's lock")


class MosquittoFileSettings(BaseModel):
    """`[mqtt.mosquitto]`: an operator's Mosquitto that otpki configures and keeps in sync."""

    model_config = ConfigDict(extra="forbid")

    workdir: Path | None = Field(
        None, description="Directory of mosquitto.conf, cafile, crlfile, server key and dynsec file "
                          "(default: <data dir>/mosquitto)")
    host: str = Field("127.0.0.1", description="Address of the device listener (mTLS); also the server "
                                               "certificate's IP address or DNS name")
    port: int = Field(8883, ge=1, le=65535, description="Port of the device listener (mTLS)")
    admin_host: str = Field("127.0.0.1", description="Address of the dynsec admin listener (keep it on loopback)")
    admin_port: int = Field(1884, ge=1, le=65535, description="Port of the dynsec admin listener")
    admin_username: str = Field("otpki-admin", description="Dynsec admin user otpki logs in as")
    admin_password_file: Path | None = Field(
        None, description="File with the dynsec admin password (else OTPKI_MQTT_ADMIN_PASSWORD); never in this "
                          "file")
    binary: Path = Field(Path("/usr/sbin/mosquitto"), description="The mosquitto executable")
    ctrl_binary: Path = Field(Path("/usr/bin/mosquitto_ctrl"),
                              description="mosquitto_ctrl, used to hash the admin password into the dynsec file")
    openssl_binary: Path = Field(Path("openssl"), description="openssl, the second check of every CRL installed")
    dynsec_plugin: Path = Field(Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"),
                                description="The dynamic-security plugin of the installed Mosquitto")
    run_as_user: str | None = Field(
        None, description="`user` in mosquitto.conf (default: the user otpki runs as, so no privilege drop "
                          "makes the 0600 key unreadable)")
    crl_min_remaining_s: float = Field(
        3600.0, ge=0, description="A CRL closer than this to its nextUpdate is not installed (Mosquitto locks "
                                  "everyone out when it expires)")
    tls_version: str | None = Field(None, description="`tls_version` of the device listener (unset: Mosquitto's "
                                                      "default, TLS 1.2 and 1.3)")
    sync_interval_s: float = Field(0.25, gt=0, description="Seconds between sync rounds of `otpki mqtt sync`")
    reload_command: list[str] | None = Field(
        None, description="Command that makes Mosquitto reload after new files are installed, e.g. [\"systemctl\", "
                          "\"reload\", \"mosquitto\"] (unset: SIGHUP to the pid in the workdir's mosquitto.pid, "
                          "which Mosquitto writes only when started with -d)")


class MqttSettings(BaseModel):
    """`[mqtt]`: the MQTT device front (`otpki mqtt ...`)."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field("mqtt-device", description="Certificate group of the devices")
    broker_group: str = Field("mqtt-broker", description="Certificate group of the broker's TLS server certificate")
    broker: Literal["embedded", "mosquitto"] = Field(
        "embedded", description="The broker otpki serves: its own amqtt broker (`otpki mqtt serve`) or an "
                                "operator's Mosquitto (`otpki mqtt sync`)")
    host: str = Field("127.0.0.1", description="Address the embedded broker listens on (mTLS)")
    port: int = Field(8883, ge=0, le=65535, description="Port of the embedded broker (0: any free port)")
    revocation_interval_s: float = Field(
        0.2, gt=0, description="How often the embedded broker looks for revocations to drop live sessions")
    service_name: str = Field("otpki-enrollment",
                              description="Registered name (in `group`) of the enrollment service's own identity")
    limits: BrokerLimits = Field(default_factory=BrokerLimits,
                                 description="What the embedded broker's device listener allows before authentication")
    bootstrap_limits: BrokerLimits = Field(
        default_factory=BrokerLimits,
        description="The same for the bootstrap listener (first enrollment with IDevIDs)")
    enrollment: EnrollmentSettings = Field(default_factory=EnrollmentSettings)
    mosquitto: MosquittoFileSettings = Field(default_factory=MosquittoFileSettings)


class FileSettings(BaseModel):
    """What otpki.toml may contain."""

    model_config = ConfigDict(extra="forbid")

    keys: KeySettings = Field(default_factory=KeySettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    gds: GdsSettings = Field(default_factory=GdsSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    pki: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the embedded certificate-group policies (trustlists/profiles/default.toml)")


class EnvSettings(BaseSettings):
    """Environment overrides; secrets only ever come from here or from files."""

    model_config = SettingsConfigDict(env_prefix="OTPKI_", extra="ignore")

    data_dir: Path = Field(Path("otpki-data"), description="Data directory (same as --data-dir)")
    ca_passphrase: str | None = Field(None, description="Passphrase of the encrypted CA key files")
    ca_passphrase_file: Path | None = Field(None, description="File holding that passphrase")
    hsm_pin: str | None = Field(None, description="User PIN of the HSM token")
    actor: str | None = Field(None, description="Name recorded in the audit log (default: the OS user)")
    mqtt_admin_password: str | None = Field(
        None, description="Password of the Mosquitto dynsec admin user (or [mqtt.mosquitto] admin_password_file)")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Settings(BaseModel):
    data_dir: Path
    file: FileSettings
    pki: PkiConfig
    env: EnvSettings

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / KEYS_DIR

    def passphrase(self) -> bytes:
        path = self.file.keys.passphrase_file or self.env.ca_passphrase_file
        if path is not None:
            try:
                return Path(path).read_bytes().strip()
            except OSError as exc:
                raise KeyAccessError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
        if self.env.ca_passphrase:
            return self.env.ca_passphrase.encode()
        raise KeyAccessError("no CA key passphrase: set OTPKI_CA_PASSPHRASE or OTPKI_CA_PASSPHRASE_FILE "
                             "(or keys.passphrase_file in otpki.toml)", reason="no_passphrase")

    def hsm_pin(self) -> str:
        pin_file = self.file.keys.pkcs11.pin_file
        if pin_file is not None:
            try:
                return Path(pin_file).read_text().strip()
            except OSError as exc:
                raise KeyAccessError(f"cannot read the HSM PIN file {pin_file}: {exc.strerror}") from None
        if self.env.hsm_pin:
            return self.env.hsm_pin
        raise KeyAccessError("no HSM PIN: set OTPKI_HSM_PIN or keys.pkcs11.pin_file in otpki.toml",
                             reason="no_pin")

    def mqtt_admin_password(self) -> str:
        path = self.file.mqtt.mosquitto.admin_password_file
        if path is not None:
            try:
                password = Path(path).read_text().strip()
            except OSError as exc:
                raise KeyAccessError(f"cannot read the dynsec admin password file {path}: {exc.strerror}",
                                     reason="no_mqtt_admin_password") from None
        else:
            password = self.env.mqtt_admin_password or ""
        if not password:
            raise KeyAccessError("no Mosquitto dynsec admin password: set OTPKI_MQTT_ADMIN_PASSWORD or "
                                 "[mqtt.mosquitto] admin_password_file in otpki.toml", reason="no_mqtt_admin_password")
        return password

    def mosquitto_workdir(self) -> Path:
        return Path(self.file.mqtt.mosquitto.workdir or self.data_dir / "mosquitto")

    def actor(self) -> str:
        if self.env.actor:
            return self.env.actor
        try:
            return os.getlogin()
        except OSError:
            import getpass

            return getpass.getuser()


def read_file_settings(path: Path) -> FileSettings:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return FileSettings()
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from None
    try:
        return FileSettings.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {_first_error(exc)}") from None


def build_settings(file: FileSettings, data_dir: Path, env: EnvSettings) -> Settings:
    try:
        pki = PkiConfig.model_validate(deep_merge(default_config_data(), file.pki))
    except ValidationError as exc:
        raise InvalidInput(f"{data_dir / CONFIG_FILE} [pki]: {_first_error(exc)}") from None
    return Settings(data_dir=data_dir, file=file, pki=pki, env=env)


def load_settings(data_dir: Path | None = None, *, must_exist: bool = True) -> Settings:
    env = EnvSettings()
    data_dir = Path(data_dir or env.data_dir)
    if must_exist and not (data_dir / DB_FILE).exists():
        raise NotInitialized(f"no otpki data directory at {data_dir}: run `otpki init --data-dir {data_dir}` "
                             "or set OTPKI_DATA_DIR")
    return build_settings(read_file_settings(data_dir / CONFIG_FILE), data_dir, env)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
