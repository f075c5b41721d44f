"""The dynamic-security plugin's JSON file as otpki first gives it to Mosquitto: one admin user, default deny.

otpki writes the file itself instead of running `mosquitto_ctrl dynsec init`, because that tool creates it
with the caller's umask (world-readable under the usual 022) and hashes the admin password with 101
PBKDF2 iterations. Here the file is 0600 from its first byte (trustlists.safe_files) and the hash uses
OWASP's iteration count for PBKDF2-HMAC-SHA512.

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
from trustlists.errors import OtpkiError
from trustlists.safe_files import private_directory, write_secret

ADMIN_ROLE = "otpki-dynsec-admin"
# OWASP Password Storage Cheat Sheet, PBKDF2-HMAC-SHA512; the admin logs in once per sync connection.
PBKDF2_ITERATIONS = 210_000
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
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
    }


def write_dynsec_file(settings: MosquittoSettings) -> None:
    """(Re)create the dynsec file, replacing any earlier one atomically (0600, parent 0700 if we create it)."""
    password = settings.admin_password.get_secret_value()
    if not password:
        raise DynsecFileError("settings.admin_password is empty", reason="no_admin_password")
    data = dynsec_config(settings.admin_username, password)
    private_directory(settings.dynsec_file.parent)
    write_secret(settings.dynsec_file, json.dumps(data, indent=1).encode())
