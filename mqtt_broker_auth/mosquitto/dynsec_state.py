"""What Mosquitto's dynamic-security state must be, what it is, and every difference between the two.

The sync (sync.py) turns the differences into dynsec commands; `otpki doctor` reports them from the dynsec
file Mosquitto saves after every change. One definition of "desired" serves both, so the doctor never judges
by other rules than the sync enforces.

Desired, and nothing else:
- the admin user (`MosquittoSettings.admin_username`, a password user) holding exactly the admin role, which
  holds exactly the `$CONTROL/dynamic-security/#` ACLs;
- per registered device of the group (and the enrollment service) a client named by its certificate CN
  holding exactly its own role `otpki-<name>`, which holds exactly that identity's ACLs;
- no groups, no anonymous group, default ACL access deny (unsubscribe allowed).
Anything else was not put there by the engine. A client or role named after an identity the engine once
managed (an unregistered device) is ordinary clean-up; everything else is *foreign*: someone with admin
access to the broker (or a former hole) made it, and it is reported as such.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mqtt_broker_auth.mosquitto import dynsec as ds

ADMIN_ROLE = "otpki-dynsec-admin"
DEFAULT_ACL_ACCESS: dict[str, bool] = {"publishClientSend": False, "publishClientReceive": False,
                                       "subscribe": False, "unsubscribe": True}

# An empty group of ours that holds the anonymous-group slot once a foreign anonymous group was set (dynsec
# cannot unset it, and deleting it crashes Mosquitto 2.0.11).
PARKING_GROUP = "otpki-no-anonymous-access"

DriftKind = Literal["client", "client_role", "client_group", "role", "acl", "missing_acl", "missing_client",
                    "missing_role", "group", "group_role", "anonymous_group", "default_acl"]


class ClientEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()


class DynsecState(BaseModel):
    """The parts of a dynsec configuration that decide who may do what."""

    clients: dict[str, ClientEntry] = Field(default_factory=dict)
    roles: dict[str, frozenset[ds.Acl]] = Field(default_factory=dict)
    groups: dict[str, frozenset[str]] = Field(default_factory=dict)  # group -> its roles
    anonymous_group: str | None = None
    default_acl: dict[str, bool] = Field(default_factory=lambda: dict(DEFAULT_ACL_ACCESS))

    @classmethod
    def from_file(cls, data: dict[str, Any]) -> DynsecState:
        """Parse the JSON file the plugin saves (`textName`, ACL `priority` omitted when 0)."""
        anonymous = data.get("anonymousGroup")
        return cls(clients=_clients(data.get("clients")), roles=_roles(data.get("roles")),
                   groups=_groups(data.get("groups")),
                   anonymous_group=anonymous if isinstance(anonymous, str) and anonymous else None,
                   default_acl=_default_acl(data.get("defaultACLAccess")))

    @classmethod
    def from_responses(cls, clients: dict[str, Any], roles: dict[str, Any], groups: dict[str, Any],
                       anonymous: dict[str, Any], default_acl: dict[str, Any]) -> DynsecState:
        """Parse the answers to listClients/listRoles/listGroups (verbose), getAnonymousGroup,
        getDefaultACLAccess."""
        group = _data(anonymous).get("group")
        name = group.get("groupname") if isinstance(group, dict) else None
        acls = {a["acltype"]: bool(a.get("allow")) for a in _list(_data(default_acl).get("acls"))
                if isinstance(a, dict) and isinstance(a.get("acltype"), str)}
        return cls(clients=_clients(_data(clients).get("clients")), roles=_roles(_data(roles).get("roles")),
                   groups=_groups(_data(groups).get("groups")),
                   anonymous_group=name or None, default_acl={**DEFAULT_ACL_ACCESS, **acls})


def state_queries() -> list[dict[str, Any]]:
    """The commands whose responses `DynsecState.from_responses` takes, in that order."""
    return [{"command": "listClients", "verbose": True}, {"command": "listRoles", "verbose": True},
            {"command": "listGroups", "verbose": True}, {"command": "getAnonymousGroup"},
            {"command": "getDefaultACLAccess"}]


class Drift(BaseModel):
    """One difference between what the broker holds and what the engine wants."""

    model_config = ConfigDict(frozen=True)

    kind: DriftKind
    name: str  # client, role or group name
    detail: str
    foreign: bool  # True: something the engine never put there (reported); False: ordinary upkeep
    acl: ds.Acl | None = None
    other: str | None = None  # the role or group of a client_role / client_group drift


def desired_state(admin_username: str, identities: dict[str, list[ds.Acl]]) -> DynsecState:
    """The state the engine wants: the admin, then each identity (client name -> ACLs of its own role)."""
    clients = {admin_username: ClientEntry(roles=frozenset({ADMIN_ROLE}))}
    roles: dict[str, frozenset[ds.Acl]] = {ADMIN_ROLE: frozenset(ds.admin_acls())}
    for name, acls in identities.items():
        clients[name] = ClientEntry(roles=frozenset({ds.role_name(name)}))
        roles[ds.role_name(name)] = frozenset(acls)
    return DynsecState(clients=clients, roles=roles)


def drift(current: DynsecState, desired: DynsecState, *, once_managed: set[str]) -> list[Drift]:
    """Every difference, foreign ones marked; `once_managed` = every name the engine ever made a client for."""
    out: list[Drift] = []
    managed_roles = {ds.role_name(n) for n in once_managed} | {ADMIN_ROLE}
    for name, entry in sorted(current.clients.items()):
        want = desired.clients.get(name)
        if want is None:
            ours = name in once_managed
            out.append(Drift(kind="client", name=name, foreign=not ours,
                             detail="no longer registered" if ours else "a client the engine never created"))
            continue
        for role in sorted(entry.roles - want.roles):
            out.append(Drift(kind="client_role", name=name, other=role, foreign=True,
                             detail=f"holds role {role!r}, which the engine never gave it"))
        for group in sorted(entry.groups):
            out.append(Drift(kind="client_group", name=name, other=group, foreign=True,
                             detail=f"is a member of group {group!r}"))
    for name in sorted(set(desired.clients) - set(current.clients)):
        out.append(Drift(kind="missing_client", name=name, foreign=False, detail="not on the broker yet"))
    for name, want_entry in sorted(desired.clients.items()):
        have = current.clients.get(name)
        if have is not None:
            for role in sorted(want_entry.roles - have.roles):
                out.append(Drift(kind="missing_role", name=name, other=role, foreign=False,
                                 detail=f"lacks its role {role!r}"))
    for role, acls in sorted(current.roles.items()):
        want_acls = desired.roles.get(role)
        if want_acls is None:
            ours = role in managed_roles
            out.append(Drift(kind="role", name=role, foreign=not ours,
                             detail="role of an identity no longer registered" if ours
                             else "a role the engine never created"))
            continue
        for acl in sorted(acls - want_acls, key=_acl_key):
            out.append(Drift(kind="acl", name=role, acl=acl, foreign=True,
                             detail=f"{'allows' if acl.allow else 'denies'} {acl.acltype} {acl.topic!r}, which the "
                                    "engine never granted"))
        for acl in sorted(want_acls - acls, key=_acl_key):
            out.append(Drift(kind="missing_acl", name=role, acl=acl, foreign=False,
                             detail=f"lacks {acl.acltype} {acl.topic!r}"))
    for role in sorted(set(desired.roles) - set(current.roles)):
        for acl in sorted(desired.roles[role], key=_acl_key):
            out.append(Drift(kind="missing_acl", name=role, acl=acl, foreign=False,
                             detail=f"role missing: needs {acl.acltype} {acl.topic!r}"))
    for group, group_roles in sorted(current.groups.items()):
        if group != PARKING_GROUP:
            out.append(Drift(kind="group", name=group, foreign=True, detail="a group the engine never created"))
            continue
        for role in sorted(group_roles):
            out.append(Drift(kind="group_role", name=group, other=role, foreign=True,
                             detail=f"holds role {role!r}, which the engine never gave it"))
    if current.anonymous_group not in (None, PARKING_GROUP):
        out.append(Drift(kind="anonymous_group", name=str(current.anonymous_group), foreign=True,
                         detail="set as the anonymous group"))
    if current.default_acl != DEFAULT_ACL_ACCESS:
        wider = sorted(k for k, v in current.default_acl.items() if v and not DEFAULT_ACL_ACCESS.get(k, False))
        out.append(Drift(kind="default_acl", name="defaultACLAccess", foreign=bool(wider),
                         detail=f"default access allows {', '.join(wider)}" if wider else "default access differs"))
    return out


def repair_commands(drifts: list[Drift], current: DynsecState, desired: DynsecState,
                    admin_username: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """dynsec commands that turn `current` into `desired`: (first batch, admin batch).

    dynsec disconnects every client whose roles or groups a command changes, the admin's own connection
    included; the commands that touch the admin, a role it holds or a group it is in go in a second batch, sent
    last, after which the caller reconnects.
    """
    commands: list[dict[str, Any]] = []
    foreign_groups = [d.name for d in drifts if d.kind == "group"]
    if current.anonymous_group is not None and current.anonymous_group != PARKING_GROUP:
        # Deleting the group that is the anonymous group crashes Mosquitto 2.0.11 (seen: segfault), and dynsec
        # cannot unset it: park the anonymous role on an empty group of ours first, then delete the foreign one.
        if PARKING_GROUP not in current.groups:
            commands.append({"command": "createGroup", "groupname": PARKING_GROUP, "textname": MANAGED_TEXT})
        commands.append({"command": "setAnonymousGroup", "groupname": PARKING_GROUP})
    for d in drifts:
        if d.kind == "client":
            commands.append(ds.delete_client(d.name))  # also disconnects its sessions
        elif d.kind == "client_role" and d.other is not None:
            commands.append({"command": "removeClientRole", "username": d.name, "rolename": d.other})
        elif d.kind == "client_group" and d.other is not None and d.other not in foreign_groups:
            commands.append({"command": "removeGroupClient", "groupname": d.other, "username": d.name})
        elif d.kind == "group_role" and d.other is not None:
            commands.append({"command": "removeGroupRole", "groupname": d.name, "rolename": d.other})
        elif d.kind == "role":
            commands.append(ds.delete_role(d.name))
        elif d.kind == "acl" and d.acl is not None:
            commands.append(ds.remove_role_acl(d.name, d.acl))
        elif d.kind == "group":
            commands.append({"command": "deleteGroup", "groupname": d.name})
        elif d.kind == "default_acl":
            commands.append(ds.set_default_acl_access())
    for role in sorted(set(desired.roles) - set(current.roles)):
        commands.append(ds.create_role(role, text=MANAGED_TEXT))
    for d in drifts:
        if d.kind == "missing_acl" and d.acl is not None:
            commands.append(ds.add_role_acl(d.name, d.acl))
    for d in drifts:
        if d.kind == "missing_client":
            commands.append(ds.create_client(d.name, roles=sorted(desired.clients[d.name].roles), text=MANAGED_TEXT))
        elif d.kind == "missing_role" and d.other is not None:
            commands.append(ds.add_client_role(d.name, d.other))
    admin = current.clients.get(admin_username, ClientEntry())
    first: list[dict[str, Any]] = []
    last: list[dict[str, Any]] = []
    for command in commands:
        touches_admin = (command.get("username") == admin_username or command.get("rolename") in admin.roles
                         or command.get("groupname") in admin.groups)
        (last if touches_admin else first).append(command)
    return first, last


MANAGED_TEXT = "managed by otpki"


def _acl_key(acl: ds.Acl) -> tuple[str, str, bool, int]:
    return (acl.acltype, acl.topic, acl.allow, acl.priority)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _data(response: dict[str, Any]) -> dict[str, Any]:
    data = response.get("data")
    return data if isinstance(data, dict) else {}


def _clients(raw: object) -> dict[str, ClientEntry]:
    clients: dict[str, ClientEntry] = {}
    for c in _list(raw):
        if not isinstance(c, dict) or not isinstance(c.get("username"), str):
            continue
        clients[c["username"]] = ClientEntry(
            roles=frozenset(r.get("rolename", "") for r in _list(c.get("roles")) if isinstance(r, dict)),
            groups=frozenset(g.get("groupname", "") for g in _list(c.get("groups")) if isinstance(g, dict)))
    return clients


def _roles(raw: object) -> dict[str, frozenset[ds.Acl]]:
    roles: dict[str, frozenset[ds.Acl]] = {}
    for r in _list(raw):
        if not isinstance(r, dict) or not isinstance(r.get("rolename"), str):
            continue
        acls: set[ds.Acl] = set()
        for a in _list(r.get("acls")):
            if not isinstance(a, dict):
                continue
            try:
                acls.add(ds.Acl.model_validate({"acltype": a.get("acltype"), "topic": a.get("topic"),
                                                "allow": bool(a.get("allow", False)),
                                                "priority": int(a.get("priority", 0))}))
            except (ValueError, TypeError):
                # An ACL type this code does not know still grants something: keep it visible as foreign
                # (unvalidated, so its acltype may be one the model does not list).
                foreign: dict[str, Any] = {"acltype": str(a.get("acltype")), "topic": str(a.get("topic")),
                                           "allow": bool(a.get("allow", False)), "priority": 0}
                acls.add(ds.Acl.model_construct(**foreign))
        roles[r["rolename"]] = frozenset(acls)
    return roles


def _groups(raw: object) -> dict[str, frozenset[str]]:
    return {g["groupname"]: frozenset(r.get("rolename", "") for r in _list(g.get("roles")) if isinstance(r, dict))
            for g in _list(raw) if isinstance(g, dict) and isinstance(g.get("groupname"), str)}


def _default_acl(raw: object) -> dict[str, bool]:
    if not isinstance(raw, dict):
        return dict(DEFAULT_ACL_ACCESS)
    return {**DEFAULT_ACL_ACCESS, **{k: bool(v) for k, v in raw.items() if isinstance(k, str)}}
