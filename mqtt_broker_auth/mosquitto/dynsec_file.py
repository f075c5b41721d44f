"""The dynamic-security plugin's JSON file as otpki first gives it to Mosquitto: one admin user, default deny.

otpki writes the file itself instead of running `mosquitto_ctrl dynsec init`, because that tool creates it
with the caller's umask (world-readable under the usual 022) and hashes the admin password with 101
PBKDF2 iterations. Here the file is 0600 from its first byte (trustlists.safe_files) and the hash uses
PBKDF2_ITERATIONS, chosen between two attacks:
- offline, someone holding a copy of the file (a backup of the workdir) guesses the password: more
  iterations slow each guess;
- online, Mosquitto checks a login on its only thread, so every attempt on the admin listener stalls every
  device for one hash. At OWASP's 210,000 iterations one attempt cost about 0.2 s here (Mosquitto 2.0.11):
  five attempts a second would stall the broker. 10,000 iterations cost under 10 ms, the order of a TLS
  handshake the device listener already does for anyone, and are 100 times Mosquitto's own 101.
Against the offline attack the real defence is a long random admin password (`otpki demo` makes one);
the file sits next to the password source anyway (OTPKI_MQTT_ADMIN_PASSWORD or its file).

The password format is the one Mosquitto 2.0's plugin reads for every client: `password` is the base64 of
PBKDF2-HMAC-SHA512(password, salt, iterations) with a 64-byte output, `salt` the base64 of 12 random
bytes, `iterations` the count. Mosquitto keeps the file's mode when it saves changes made over
`$CONTROL/dynamic-security` (it rewrites the file in place), so the file stays 0600 afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from mqtt_broker_auth.mosquitto.config import MosquittoSettings
from mqtt_broker_auth.mosquitto.dynsec import admin_acls
from mqtt_broker_auth.mosquitto.dynsec_state import ADMIN_ROLE, DEFAULT_ACL_ACCESS
from trustlists.errors import OtpkiError
from trustlists.safe_files import private_directory, write_secret

# See the module docstring: the admin logs in once per sync connection, an attacker on every attempt.
PBKDF2_ITERATIONS = 10_000
_SALT_BYTES = 12  # what Mosquitto itself uses
_HASH_BYTES = 64  # SHA-512 output, what the plugin compares


class DynsecFileError(OtpkiError):
    reason = "dynsec_file"


def dynsec_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> dict[str, Any]:
    """The `password`, `salt` and `iterations` fields of a dynsec client for `password`."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def dynsec_config(username: str, password: str) -> dict[str, Any]:
    """otpki's admin user with only `$CONTROL/dynamic-security/#`; everything no role grants is denied."""
    return {
        "clients": [{"username": username, "textName": "otpki dynsec administration",
                     **dynsec_password(password), "roles": [{"rolename": ADMIN_ROLE}]}],
        "groups": [],
        "roles": [{"rolename": ADMIN_ROLE, "textname": "otpki dynsec administration only",
                   "acls": [acl.model_dump() | {"allow": True} for acl in admin_acls()]}],
        # Deny what no role grants, receiving included: a device gets messages only on topics its role lists.
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
    }


def write_dynsec_file(settings: MosquittoSettings) -> None:
    """(Re)create the dynsec file, replacing any earlier one atomically (0600, parent 0700 if we create it)."""
    password = settings.admin_password.get_secret_value()
    if not password:
        raise DynsecFileError("settings.admin_password is empty", reason="no_admin_password")
    data = dynsec_config(settings.admin_username, password)
    private_directory(settings.dynsec_file.parent)
    write_secret(settings.dynsec_file, json.dumps(data, indent=1).encode())
