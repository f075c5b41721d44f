"""Deployment configuration: `<data dir>/otpki.toml` plus OTPKI_* environment variables.

The certificate groups come from the engine's embedded defaults; the [pki] table of otpki.toml
overrides any key of them (deep merge), so an operator changes a lifetime without restating a group.
Secrets (the CA key passphrase, the HSM PIN) come from a file or the environment, never the command line.
Every table rejects unknown keys, and relative paths are anchored once at load (`otpki.config_paths`): in
otpki.toml against the data directory, in OTPKI_* variables against the working directory.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from http_fronts.crl_settings import CrlSettings
from http_fronts.est.settings import EstSettings
from http_fronts.ocsp.settings import OcspSettings
from mqtt_broker_auth.broker_names import embedded_broker_owner_name, mosquitto_owner_name
from mqtt_broker_auth.embedded.broker_limits import BrokerLimits
from mqtt_broker_auth.enrollment.settings import EnrollmentSettings
from mqtt_broker_auth.policy import MqttAccessPolicy
from opcua_gds.gds.settings import GdsSettings
from opcua_gds.push.settings import PushSettings
from otpki.config_errors import describe_validation_error
from otpki.config_paths import COMMAND, absolute, anchor_paths
from otpki.web.settings import ConsoleSettings
from trustlists.errors import InvalidInput, KeyAccessError, NotInitialized
from trustlists.models import OwnerRole
from trustlists.policy import PkiConfig, ReservedName, default_config_data

CONFIG_FILE = "otpki.toml"
DB_FILE = "otpki.db"
KEYS_DIR = "keys"


class Pkcs11Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: str = Field("/usr/lib/softhsm/libsofthsm2.so", description="PKCS#11 module of the HSM")
    token_label: str = Field("otpki", description="Label of the token that holds the CA keys")
    pin_file: Path | None = Field(None, description="File with the user PIN (else OTPKI_HSM_PIN); relative to the "
                                                    "data directory")


class KeySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["file", "pkcs11"] = Field(
        "file", description="Where new CA keys are made: encrypted PKCS#8 files in the data directory, or an HSM")
    passphrase_file: Path | None = Field(
        None, description="File with the CA key passphrase (else OTPKI_CA_PASSPHRASE or OTPKI_CA_PASSPHRASE_FILE); "
                          "relative to the data directory")
    pkcs11: Pkcs11Settings = Field(default_factory=Pkcs11Settings)
    pool_sizes: dict[str, int] = Field(
        default_factory=lambda: {"rsa2048": 4, "ec-p256": 8},
        description="Keys generated ahead, per key type, for server-side key generation")


STORE_URL_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def _check_store_url(url: str) -> str:
    if not url.startswith(STORE_URL_SCHEMES):
        raise ValueError("must start with sqlite:/// (a file) or postgresql:// (user[:password]@host[:port]/db)")
    return url



class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    busy_timeout_s: float = Field(5.0, ge=0, description="How long a writer waits for another process's lock")
    url: str | None = Field(
        None, description="Where the store is: sqlite:///path/to/otpki.db (relative to the data directory) or "
                          "postgresql://user@host:port/db (password from ~/.pgpass or PGPASSWORD, never in this "
                          "file). Default: sqlite:///otpki.db in the data directory. OTPKI_STORE_URL overrides it")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return None if url is None else _check_store_url(url)


class MosquittoFileSettings(BaseModel):
    """`[mqtt.mosquitto]`: an operator's Mosquitto that otpki configures and keeps in sync."""

    model_config = ConfigDict(extra="forbid")

    workdir: Path | None = Field(
        None, description="Directory of mosquitto.conf, cafile, crlfile, server key and dynsec file; relative "
                          "to the data directory (default: <data dir>/mosquitto)")
    host: str = Field("127.0.0.1", description="Address of the device listener (mTLS); also the server "
                                               "certificate's IP address or DNS name")
    port: int = Field(8883, ge=1, le=65535, description="Port of the device listener (mTLS)")
    bootstrap: bool = Field(
        True, description="Run otpki's bootstrap listener beside Mosquitto (`otpki mqtt sync`): devices make their "
                          "first enrollment there with a manufacturer IDevID or factory certificate. Mosquitto itself "
                          "never trusts an imported CA: it would take any name such a CA put in a certificate")
    bootstrap_host: str = Field("127.0.0.1", description="Address of the bootstrap listener (mTLS)")
    bootstrap_port: int = Field(8884, ge=0, le=65535, description="Port of the bootstrap listener (0: any free port)")
    admin_host: str = Field("127.0.0.1", description="Address of the dynsec admin listener (keep it on loopback)")
    admin_port: int = Field(1884, ge=1, le=65535, description="Port of the dynsec admin listener")
    admin_username: str = Field("otpki-admin", description="Dynsec admin user otpki logs in as")
    admin_password_file: Path | None = Field(
        None, description="File with the dynsec admin password (else OTPKI_MQTT_ADMIN_PASSWORD); never in this "
                          "file; relative to the data directory")
    binary: Annotated[Path, COMMAND] = Field(
        Path("/usr/sbin/mosquitto"), description="The mosquitto executable (a bare name is looked up in PATH)")
    openssl_binary: Annotated[Path, COMMAND] = Field(
        Path("openssl"), description="openssl, the second check of every CRL installed (a bare name is looked up "
                                     "in PATH)")
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


class WebSettings(BaseModel):
    """`[web]`: the listeners of `otpki serve` (console, REST API, EST; OCSP and CRLs over plain HTTP)."""

    model_config = ConfigDict(extra="forbid")

    listen: str = Field("127.0.0.1:8443", description="HOST:PORT of the console and API listener (HTTPS unless "
                                                      "`tls = false`; port 0: any free port). Same as --listen")
    tls: bool = Field(True, description="HTTPS with a certificate the engine issues for `host_names`. false (plain "
                                        "HTTP) is accepted only on a loopback address. Same as --insecure-http")
    http_listen: str | None = Field(
        None, description="HOST:PORT of a plain-HTTP listener for OCSP and CRLs only (their RFCs serve them over "
                          "HTTP); off unless set. Same as --http-listen")
    host_names: list[str] = Field(
        default_factory=list, description="DNS names and IP addresses the console is reached by, put into its "
                                          "certificate besides the listen address (e.g. [\"pki.plant.example\"])")
    group: str = Field("web-server", description="Certificate group of the listener's TLS server certificate")
    ocsp_enabled: bool = Field(True, description="Answer OCSP at /ocsp (RFC 6960/5019) on both listeners")
    crl_enabled: bool = Field(True, description="Serve every CA's latest CRL at /crl/<CA id>.crl on both listeners")
    ocsp: OcspSettings = Field(default_factory=OcspSettings)
    crl: CrlSettings = Field(default_factory=CrlSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    est: EstSettings = Field(default_factory=EstSettings, description="EST enrollment (RFC 7030) on the HTTPS "
                                                                      "listener")


class ServeSettings(BaseModel):
    """`[serve]`: which parts `otpki serve` runs, and how it supervises them."""

    model_config = ConfigDict(extra="forbid")

    gds: bool = Field(True, description="Run the OPC UA GDS ([gds] endpoint)")
    push: bool = Field(True, description="Run the push scheduler (certificates and trust lists to the targets)")
    push_interval_s: float = Field(60.0, ge=1, description="Seconds between push rounds")
    maintenance_interval_s: float = Field(300.0, gt=0, description="Seconds between CRL and revocation upkeep "
                                                                   "rounds (the elected leader re-signs CRLs)")
    mqtt: bool = Field(True, description="Run the MQTT side ([mqtt] broker: the embedded broker and enrollment, "
                                         "or the Mosquitto sync)")
    web: bool = Field(True, description="Run the web listener(s) ([web])")
    stop_timeout_s: float = Field(10.0, gt=0, description="How long each part may take to stop on SIGTERM")
    restart_initial_s: float = Field(1.0, gt=0, description="Wait before restarting a crashed part (doubled "
                                                             "after each crash)")
    restart_max_s: float = Field(60.0, gt=0, description="Longest wait before restarting a crashed part")


class FileSettings(BaseModel):
    """What otpki.toml may contain."""

    model_config = ConfigDict(extra="forbid")

    keys: KeySettings = Field(default_factory=KeySettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    gds: GdsSettings = Field(default_factory=GdsSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    pki: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the embedded certificate-group policies (trustlists/profiles/default.toml)")


class EnvSettings(BaseSettings):
    """Environment overrides; secrets only ever come from here or from files."""

    model_config = SettingsConfigDict(env_prefix="OTPKI_", extra="ignore")

    data_dir: Path = Field(Path("otpki-data"), description="Data directory (same as --data-dir); relative to the "
                                                            "working directory")
    ca_passphrase: str | None = Field(None, description="Passphrase of the encrypted CA key files")
    ca_passphrase_file: Path | None = Field(None, description="File holding that passphrase; relative to the "
                                                              "working directory")
    hsm_pin: str | None = Field(None, description="User PIN of the HSM token")
    actor: str | None = Field(None, description="Name recorded in the audit log (default: the OS user)")
    mqtt_admin_password: str | None = Field(
        None, description="Password of the Mosquitto dynsec admin user (or [mqtt.mosquitto] admin_password_file)")
    store_url: str | None = Field(
        None, description="The store (same as [store] url); a relative sqlite:/// path is taken from the working "
                          "directory")

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, url: str | None) -> str | None:
        return None if url is None else _check_store_url(url)


def _absolute_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    return prefix + str(base / Path(url.removeprefix(prefix)))  # an absolute path stays as it is


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
    def store_url(self) -> str:
        """OTPKI_STORE_URL, else [store] url, else the SQLite file in the data directory; sqlite paths absolute."""
        if self.env.store_url is not None:
            return _absolute_sqlite(self.env.store_url, absolute(Path(".")))
        if self.file.store.url is not None:
            return _absolute_sqlite(self.file.store.url, self.data_dir)
        return f"sqlite:///{self.db_path}"

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


FRONT_POLICIES: dict[str, type[BaseModel]] = {"mqtt": MqttAccessPolicy}  # [pki.groups.X.fronts.NAME]


def read_file_settings(path: Path) -> FileSettings:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return FileSettings()
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return validate_file_settings(data, path)


def validate_file_settings(data: dict[str, Any], source: Path) -> FileSettings:
    """otpki.toml's tables as FileSettings; InvalidInput naming the table and key of the first problem."""
    try:
        return FileSettings.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{source}: {describe_validation_error(exc, FileSettings)}") from None


def service_reserved_names(mqtt: MqttSettings) -> list[ReservedName]:
    """The names the services configured here go by, reserved in the engine for them alone.

    Mosquitto takes a certificate's CN as the username: a certificate naming the enrollment service, the dynsec
    admin or a broker, issued to anyone else in any group, would be that service. Derived from the settings so a
    renamed service stays reserved under its new name.
    """
    return [
        ReservedName(name=mqtt.service_name, group=mqtt.group, role=OwnerRole.ENROLLMENT_SERVICE,
                     purpose="the MQTT enrollment service"),
        ReservedName(name=mqtt.mosquitto.admin_username, group=None, purpose="the Mosquitto dynsec admin user"),
        ReservedName(name=embedded_broker_owner_name(mqtt.host), group=mqtt.broker_group,
                     purpose="the embedded MQTT broker's TLS identity"),
        ReservedName(name=mosquitto_owner_name(mqtt.mosquitto.host), group=mqtt.broker_group,
                     purpose="the Mosquitto broker's TLS identity"),
        ReservedName(name=embedded_broker_owner_name(mqtt.mosquitto.bootstrap_host, bootstrap=True),
                     group=mqtt.broker_group, purpose="the bootstrap listener's TLS identity"),
    ]


def build_settings(file: FileSettings, data_dir: Path, env: EnvSettings) -> Settings:
    data_dir = absolute(data_dir)
    source = data_dir / CONFIG_FILE
    try:
        pki = PkiConfig.model_validate(deep_merge(default_config_data(), file.pki))
    except ValidationError as exc:
        raise InvalidInput(f"{source}: {describe_validation_error(exc, PkiConfig, ('pki',))}") from None
    _check_fronts(pki, source)
    pki = pki.model_copy(update={"reserved_names": [*pki.reserved_names, *service_reserved_names(file.mqtt)]})
    env = env.model_copy(update={"data_dir": absolute(env.data_dir), "ca_passphrase_file": (
        absolute(env.ca_passphrase_file) if env.ca_passphrase_file is not None else None)})
    return Settings(data_dir=data_dir, file=anchor_paths(file, data_dir), pki=pki, env=env)


def _check_fronts(pki: PkiConfig, source: Path) -> None:
    """Each group's front tables, checked by their front's model now rather than when the front first reads them."""
    for name, group in pki.groups.items():
        for front, table in group.fronts.items():
            where = ("pki", "groups", name, "fronts")
            model = FRONT_POLICIES.get(front)
            if model is None:
                raise InvalidInput(f"{source}: [{'.'.join(where)}] {front}: unknown front (known: "
                                   f"{', '.join(FRONT_POLICIES)})")
            try:
                model.model_validate(table)
            except ValidationError as exc:
                raise InvalidInput(f"{source}: {describe_validation_error(exc, model, (*where, front))}") from None


def load_settings(data_dir: Path | None = None, *, must_exist: bool = True) -> Settings:
    env = EnvSettings()
    data_dir = absolute(data_dir or env.data_dir)
    if must_exist and not (data_dir / DB_FILE).exists() and not (data_dir / CONFIG_FILE).exists():
        raise NotInitialized(f"no otpki data directory at {data_dir}: run `otpki init --data-dir {data_dir}` "
                             "or set OTPKI_DATA_DIR")
    return build_settings(read_file_settings(data_dir / CONFIG_FILE), data_dir, env)
