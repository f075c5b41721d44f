"""Mosquitto dynamic-security administration over MQTT (`$CONTROL/dynamic-security/v1`) with paho-mqtt 2.x.

Commands go out in batches; every command carries a `correlationData` that the plugin echoes in its
response, so replies are matched to requests even with several callers sharing one connection. A command
the plugin refuses raises `DynsecCommandError` with the plugin's error text; no reply within the timeout
raises `DynsecTimeout`. The client is thread-safe (paho runs its own network thread) and has async
wrappers that do not block the event loop.

Device clients have no password: they are certificate clients (username = certificate CN), and Mosquitto
skips dynsec authentication for them under `use_identity_as_username`, so dynsec gives them ACLs only.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ConfigDict

from mqtt_broker_auth.policy import MqttAccessPolicy
from mqtt_broker_auth.topics import DeviceTopics
from trustlists.errors import OtpkiError

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
ROLE_PREFIX = "otpki-"

AclType = Literal["publishClientSend", "publishClientReceive", "subscribeLiteral", "subscribePattern",
                  "unsubscribeLiteral", "unsubscribePattern"]


class DynsecError(OtpkiError):
    reason = "dynsec_error"


class DynsecCommandError(DynsecError):
    """The plugin refused a command; `command` and `error` are the plugin's words."""

    reason = "dynsec_command_failed"

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"dynsec {command}: {error}")
        self.command = command
        self.error = error


class DynsecTimeout(DynsecError):
    reason = "dynsec_timeout"


class DynsecUnavailable(DynsecError):
    reason = "dynsec_unavailable"


class Acl(BaseModel):
    model_config = ConfigDict(frozen=True)

    acltype: AclType
    topic: str
    allow: bool = True
    priority: int = 0


def role_name(username: str) -> str:
    return f"{ROLE_PREFIX}{username}"


def device_acls(topics: DeviceTopics) -> list[Acl]:
    """What one device may do: its telemetry/command topics and its own enrollment topics, nothing else."""
    acls: list[Acl] = []
    for topic in (*topics.publish, topics.enrollment_request):
        acls.append(Acl(acltype="publishClientSend", topic=topic))
    for topic in (*topics.subscribe, topics.enrollment_replies):
        acls.append(Acl(acltype="subscribePattern", topic=topic))
        acls.append(Acl(acltype="publishClientReceive", topic=topic))
    return _unique(acls)


def enrollment_service_acls(policy: MqttAccessPolicy) -> list[Acl]:
    """The enrollment service reads every device's CSR topic and answers on accepted/rejected."""
    prefix = policy.enrollment_prefix
    return [Acl(acltype="subscribePattern", topic=f"{prefix}/+/csr"),
            Acl(acltype="publishClientReceive", topic=f"{prefix}/+/csr"),
            Acl(acltype="publishClientSend", topic=f"{prefix}/+/accepted"),
            Acl(acltype="publishClientSend", topic=f"{prefix}/+/rejected")]


def admin_acls() -> list[Acl]:
    return [Acl(acltype=t, topic="$CONTROL/dynamic-security/#")
            for t in ("publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern")]


def _unique(acls: list[Acl]) -> list[Acl]:
    return list(dict.fromkeys(acls))


class DynsecClient:
    """One admin connection to the broker's password listener."""

    def __init__(self, host: str, port: int, username: str, password: str, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._pending: dict[str, tuple[Future[list[dict[str, Any]]], dict[str, dict[str, Any] | None], int]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._connect_error: str | None = None
        # No automatic reconnect: paho would re-send an unanswered command batch on the new connection, and
        # dynsec would run it twice. dynsec drops this very connection when a command changes a role or group
        # the admin holds; the caller reconnects with a new client instead (see `expect_disconnect`).
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"otpki-dynsec-{uuid.uuid4().hex[:12]}",
                                   protocol=mqtt.MQTTv311, clean_session=True, reconnect_on_failure=False)
        self.lost = threading.Event()
        self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._host, self._port = host, port

    # -- lifecycle --------------------------------------------------------------------------------
    def connect(self) -> DynsecClient:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            raise DynsecUnavailable(f"cannot reach the dynsec admin listener {self._host}:{self._port}: {exc}"
                                    ) from None
        self._client.loop_start()
        if not self._ready.wait(self.timeout_s) or self._connect_error or self.lost.is_set():
            self.close()
            why = self._connect_error or ("connection closed" if self.lost.is_set() else "no CONNACK/SUBACK in time")
            raise DynsecUnavailable(f"dynsec admin login to {self._host}:{self._port} failed: {why}")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut, _, _ in pending.values():
            if not fut.done():
                fut.set_exception(DynsecUnavailable("dynsec admin connection closed"))

    def __enter__(self) -> DynsecClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                    properties: object) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            self._ready.set()
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)  # again after every reconnect

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                       properties: object) -> None:
        self.lost.set()
        self._ready.set()
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut, _, _ in pending.values():
            if not fut.done():
                fut.set_exception(DynsecUnavailable(f"the dynsec admin connection was closed ({reason})"))

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list[Any],
                      properties: object) -> None:
        if any(r.is_failure for r in reasons):
            self._connect_error = f"subscription to {RESPONSE_TOPIC} refused"
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        for response in responses if isinstance(responses, list) else []:
            corr = response.get("correlationData") if isinstance(response, dict) else None
            if not isinstance(corr, str):
                continue
            batch_id = corr.split(":", 1)[0]
            with self._lock:
                entry = self._pending.get(batch_id) if batch_id else None
                if entry is None:
                    continue
                fut, slots, _ = entry
                slots[corr] = response
                answered = [v for v in slots.values() if v is not None]
                if len(answered) == len(slots):
                    del self._pending[batch_id]
                    fut.set_result(answered)

    # -- commands ---------------------------------------------------------------------------------
    def submit(self, commands: list[dict[str, Any]]) -> Future[list[dict[str, Any]]]:
        """Publish one batch; the future resolves to the responses in command order."""
        batch_id = uuid.uuid4().hex
        fut: Future[list[dict[str, Any]]] = Future()
        if not commands:
            fut.set_result([])
            return fut
        if self.lost.is_set():
            fut.set_exception(DynsecUnavailable("the dynsec admin connection was closed"))
            return fut
        slots: dict[str, dict[str, Any] | None] = {}
        sent = []
        for i, command in enumerate(commands):
            corr = f"{batch_id}:{i}"
            slots[corr] = None
            sent.append({**command, "correlationData": corr})
        with self._lock:
            self._pending[batch_id] = (fut, slots, len(commands))
        info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": sent}), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._lock:
                ours = self._pending.pop(batch_id, None) is not None
            # Whoever takes a batch out of `_pending` (under the lock) settles it: when the connection dropped as
            # this batch was sent, the network thread's _on_disconnect has failed it already.
            if ours:
                fut.set_exception(DynsecUnavailable(f"publish to {CONTROL_TOPIC} failed: "
                                                    f"{mqtt.error_string(info.rc)}"))
        return fut

    def execute(self, commands: list[dict[str, Any]], *, allow_errors: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Run a batch and wait; raises on the first command the plugin refused (unless its error is allowed)."""
        fut = self.submit(commands)
        try:
            responses = fut.result(self.timeout_s)
        except FutureTimeout:
            self._forget(fut)
            raise DynsecTimeout(f"no dynsec response within {self.timeout_s} s to "
                                f"{[c.get('command') for c in commands]}") from None
        return _check(responses, allow_errors)

    async def aexecute(self, commands: list[dict[str, Any]], *,
                       allow_errors: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        fut = self.submit(commands)
        try:
            responses = await asyncio.wait_for(asyncio.wrap_future(fut), self.timeout_s)
        except TimeoutError:
            self._forget(fut)
            raise DynsecTimeout(f"no dynsec response within {self.timeout_s} s to "
                                f"{[c.get('command') for c in commands]}") from None
        return _check(responses, allow_errors)

    def _forget(self, fut: Future[list[dict[str, Any]]]) -> None:
        with self._lock:
            for key, entry in list(self._pending.items()):
                if entry[0] is fut:
                    del self._pending[key]


def _check(responses: list[dict[str, Any]], allow_errors: tuple[str, ...]) -> list[dict[str, Any]]:
    for response in responses:
        error = response.get("error")
        if error and not any(allowed in error for allowed in allow_errors):
            raise DynsecCommandError(str(response.get("command")), str(error))
    return responses


# -- command builders (plain dicts: the wire format of the dynsec plugin) ----------------------------
def create_role(role: str, *, text: str | None = None) -> dict[str, Any]:
    cmd: dict[str, Any] = {"command": "createRole", "rolename": role}
    if text:
        cmd["textname"] = text
    return cmd


def delete_role(role: str) -> dict[str, Any]:
    return {"command": "deleteRole", "rolename": role}


def get_role(role: str) -> dict[str, Any]:
    return {"command": "getRole", "rolename": role}


def add_role_acl(role: str, acl: Acl) -> dict[str, Any]:
    return {"command": "addRoleACL", "rolename": role, **acl.model_dump()}


def remove_role_acl(role: str, acl: Acl) -> dict[str, Any]:
    return {"command": "removeRoleACL", "rolename": role, "acltype": acl.acltype, "topic": acl.topic}


def create_client(username: str, *, roles: Sequence[str] = (), text: str | None = None,
                  password: str | None = None) -> dict[str, Any]:
    cmd: dict[str, Any] = {"command": "createClient", "username": username,
                           "roles": [{"rolename": r} for r in roles]}
    if password is not None:
        cmd["password"] = password
    if text:
        cmd["textname"] = text
    return cmd


def add_client_role(username: str, role: str) -> dict[str, Any]:
    return {"command": "addClientRole", "username": username, "rolename": role}


def delete_client(username: str) -> dict[str, Any]:
    return {"command": "deleteClient", "username": username}


def disable_client(username: str) -> dict[str, Any]:
    return {"command": "disableClient", "username": username}


def enable_client(username: str) -> dict[str, Any]:
    return {"command": "enableClient", "username": username}


def get_client(username: str) -> dict[str, Any]:
    return {"command": "getClient", "username": username}


def list_clients() -> dict[str, Any]:
    return {"command": "listClients", "verbose": False}


def list_roles() -> dict[str, Any]:
    return {"command": "listRoles", "verbose": False}


def set_default_acl_access(*, publish_send: bool = False, publish_receive: bool = False, subscribe: bool = False,
                           unsubscribe: bool = True) -> dict[str, Any]:
    return {"command": "setDefaultACLAccess", "acls": [
        {"acltype": "publishClientSend", "allow": publish_send},
        {"acltype": "publishClientReceive", "allow": publish_receive},
        {"acltype": "subscribe", "allow": subscribe},
        {"acltype": "unsubscribe", "allow": unsubscribe}]}


def kick(username: str) -> list[dict[str, Any]]:
    """Disconnect every session of `username` now.

    disableClient disconnects the client; enableClient right after restores the record. For certificate
    clients the disabled flag would not stop a reconnect anyway (mosquitto#2999): the CRL, installed and
    HUPed *before* this kick, is what refuses the reconnect.
    """
    return [disable_client(username), enable_client(username)]
