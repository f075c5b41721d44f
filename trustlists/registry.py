"""Who certificates may be issued to: registered applications, devices and users."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from trustlists import audit, names
from trustlists.bootstrap_allowlist import checked_attributes
from trustlists.clock import from_epoch, to_epoch
from trustlists.context import EngineContext
from trustlists.csr_checks import expected_uri
from trustlists.errors import AlreadyExists, InvalidInput, InvalidState, NotFound
from trustlists.models import RESERVED_ATTRIBUTES, ROLE_ATTRIBUTE, Owner, OwnerKind, OwnerPage, OwnerRole
from trustlists.policy import GroupPolicy
from trustlists.store.base import StoreWriter

MAX_PAGE = 1000


def issuable_owner(ctx: EngineContext, owner_id: str) -> Owner:
    """The owner, if certificates may still be issued to it: an unregistered owner is kept for history only."""
    with ctx.store.read() as tx:
        owner = tx.get_owner(owner_id)
    if owner.unregistered_at is not None:
        raise NotFound(f"{owner.name} was unregistered on {owner.unregistered_at.isoformat()}",
                       reason="unknown_owner")
    return owner


def end_registration(tx: StoreWriter, owner_id: str, *, actor: str, at: datetime) -> Owner:
    """Mark the owner unregistered inside the caller's transaction (audited); the owner and its history stay."""
    owner = tx.get_owner(owner_id)
    if owner.unregistered:
        raise InvalidState(f"owner {owner_id} is already unregistered")
    owner = owner.model_copy(update={"unregistered_at": at})
    tx.update_owner(owner)
    audit.append(tx, actor=actor, action="owner.unregister", subject=owner.id, at=at,
                 details={"group": owner.group, "name": owner.name, "application_uri": owner.application_uri})
    return owner


def _entering(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes as a caller hands them in: keys only the engine writes are refused, the allow-list checked."""
    reserved = sorted(RESERVED_ATTRIBUTES & attributes.keys())
    if reserved:
        raise InvalidInput(f"the attribute {reserved[0]!r} is the engine's own (set by unregistering), not an "
                           "input", reason="reserved_attribute")
    return checked_attributes(attributes)


class Registry:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def register(self, *, group: str, name: str, actor: str, site: str | None = None,
                 application_uri: str | None = None, dns_names: list[str] | None = None,
                 ip_addresses: list[str] | None = None, attributes: dict[str, object] | None = None,
                 role: OwnerRole | None = None, owner_id: str | None = None) -> Owner:
        """Register an owner after every naming rule (trustlists.names) passed; nothing is stored otherwise.

        DNS names are stored as A-labels (a U-label is converted), IP addresses in canonical text. `role` is
        stored as `attributes["role"]`; a role given in `attributes` is checked the same way.
        """
        owner = self.new_owner(group=group, name=name, site=site, application_uri=application_uri,
                               dns_names=dns_names, ip_addresses=ip_addresses, attributes=attributes, role=role,
                               owner_id=owner_id)
        with self._ctx.store.transaction() as tx:
            self._insert(tx, owner)
            audit.append(tx, actor=actor, action="owner.register", subject=owner.id, details=_register_details(owner))
        return owner

    def new_owner(self, *, group: str, name: str, site: str | None = None, application_uri: str | None = None,
                  dns_names: list[str] | None = None, ip_addresses: list[str] | None = None,
                  attributes: dict[str, object] | None = None, role: OwnerRole | None = None,
                  owner_id: str | None = None) -> Owner:
        """The owner `register` would store, after every naming rule passed; nothing is stored. Whether the
        name or ApplicationUri is free is decided when it is stored (`register`, `register_many`)."""
        policy = self._ctx.config.group(group)
        attributes = dict(attributes or {})
        if role is not None:
            attributes[ROLE_ATTRIBUTE] = role.value
        names.check_owner_name(name, policy.names, group)
        if site is not None:
            if self._ctx.config.sites and site not in self._ctx.config.sites:
                raise InvalidInput(f"unknown site {names.shown(site)} (configured sites: "
                                   f"{', '.join(self._ctx.config.sites)})", reason="unknown_site")
            names.check_site(site, policy.names, group)
        typed_role = names.owner_role(attributes.get(ROLE_ATTRIBUTE))
        names.check_reserved_registration(self._ctx.config.reserved_names, name=name, group=group, role=typed_role,
                                          uris=[application_uri])
        if application_uri is not None:
            names.check_uri(application_uri, "the ApplicationUri")
        if policy.san.uri_source == "owner_application_uri" and policy.san.uri == "required" \
                and not application_uri:
            raise InvalidInput(f"group {group} needs an ApplicationUri for every application")
        owner = Owner(id=owner_id or str(uuid.uuid4()), kind=OwnerKind(policy.owner_kind), name=name,
                      group=group, site=site, application_uri=application_uri,
                      dns_names=_dns_names(dns_names or []), ip_addresses=_ip_addresses(ip_addresses or []),
                      attributes=_entering(attributes), created_at=self._ctx.clock())
        _check_template_uri(policy, owner)
        return owner

    def register_many(self, tx: StoreWriter, owners: list[Owner], *, actor: str) -> None:
        """Store owners made by `new_owner`, inside the caller's transaction: one look-up of the names, one
        multi-row insert, and their audit records appended in one statement (a factory batch registers a hundred
        devices per chunk). AlreadyExists, and nothing stored, if a name or ApplicationUri is taken."""
        if not owners:
            return
        by_group: dict[str, list[Owner]] = {}
        for owner in owners:
            by_group.setdefault(owner.group, []).append(owner)
        for group, members in by_group.items():
            taken = tx.find_owners(group, [o.name for o in members])
            if taken:
                raise AlreadyExists(f"{next(iter(taken))!r} is already registered in group {group}")
            for owner in members:
                if owner.application_uri and tx.find_owner(group, application_uri=owner.application_uri) is not None:
                    raise AlreadyExists(f"ApplicationUri {owner.application_uri} is already registered in group "
                                        f"{group}")
        tx.insert_owners(owners)
        audit.append_many(tx, [(actor, "owner.register", o.id, _register_details(o), o.created_at) for o in owners])

    @staticmethod
    def _insert(tx: StoreWriter, owner: Owner) -> None:
        if tx.find_owner(owner.group, name=owner.name) is not None:
            raise AlreadyExists(f"{owner.name!r} is already registered in group {owner.group}")
        if owner.application_uri and tx.find_owner(owner.group, application_uri=owner.application_uri) is not None:
            raise AlreadyExists(f"ApplicationUri {owner.application_uri} is already registered in group "
                                f"{owner.group}")
        tx.insert_owner(owner)

    def update(self, owner: Owner, *, actor: str) -> Owner:
        """Store a changed registration; what changed passes the naming rules as at registration.

        Fields that did not change are not judged again, so a registration stored before a rule existed can
        still be updated in its other fields. Whether the registration has ended is not an update: that is
        `unregister` (or `Engine.decommission`) and `reregister`.
        """
        return self._store_changes(owner, actor=actor, reregister=False)

    def reregister(self, owner: Owner, *, actor: str) -> Owner:
        """Start an ended registration again with the changes in `owner` (same id: its history stays with it)."""
        return self._store_changes(owner, actor=actor, reregister=True)

    def _store_changes(self, owner: Owner, *, actor: str, reregister: bool) -> Owner:
        owner = owner.model_copy(update={"attributes": _entering(owner.attributes)})
        policy = self._ctx.config.group(owner.group)
        with self._ctx.store.transaction() as tx:
            current = tx.get_owner(owner.id)
            if reregister and not current.unregistered:
                raise InvalidState(f"{current.name} is registered: nothing to register again")
            if not reregister and owner.unregistered_at != current.unregistered_at:
                raise InvalidInput("an update does not end or restart a registration: unregister or reregister",
                                   reason="reserved_attribute")
            changes: dict[str, object] = {"unregistered_at": None if reregister else current.unregistered_at}
            if owner.name != current.name:
                names.check_owner_name(owner.name, policy.names, owner.group)
            if owner.site != current.site and owner.site is not None:
                names.check_site(owner.site, policy.names, owner.group)
            if owner.name != current.name or owner.application_uri != current.application_uri \
                    or owner.attributes.get(ROLE_ATTRIBUTE) != current.attributes.get(ROLE_ATTRIBUTE):
                role = names.owner_role(owner.attributes.get(ROLE_ATTRIBUTE))
                names.check_reserved_registration(self._ctx.config.reserved_names, name=owner.name,
                                                  group=owner.group, role=role, uris=[owner.application_uri])
            if owner.application_uri != current.application_uri and owner.application_uri is not None:
                names.check_uri(owner.application_uri, "the ApplicationUri")
            if owner.dns_names != current.dns_names:
                changes["dns_names"] = _dns_names(owner.dns_names)
            if owner.ip_addresses != current.ip_addresses:
                changes["ip_addresses"] = _ip_addresses(owner.ip_addresses)
            owner = owner.model_copy(update=changes)
            if (owner.name, owner.site) != (current.name, current.site):
                _check_template_uri(policy, owner)
            tx.update_owner(owner)
            audit.append(tx, actor=actor, action="owner.reregister" if reregister else "owner.update",
                         subject=owner.id,
                         details=owner.model_dump(mode="json", exclude={"created_at", "unregistered_at"}))
        return owner

    def unregister(self, owner_id: str, *, actor: str) -> Owner:
        """End a registration without deleting it: marks the owner unregistered (audited).

        Certificates are not touched here: `Engine.decommission` revokes them and unregisters in one transaction.
        """
        with self._ctx.store.transaction() as tx:
            return end_registration(tx, owner_id, actor=actor, at=self._ctx.clock())

    def get(self, owner_id: str) -> Owner:
        with self._ctx.store.read() as tx:
            return tx.get_owner(owner_id)

    def find(self, group: str, *, name: str | None = None, application_uri: str | None = None) -> Owner | None:
        with self._ctx.store.read() as tx:
            return tx.find_owner(group, name=name, application_uri=application_uri)

    def list(self, group: str | None = None) -> list[Owner]:
        with self._ctx.store.read() as tx:
            return tx.list_owners(group)

    def page(self, group: str, *, offset: int = 0, limit: int = 50) -> OwnerPage:
        """A page of the group's owners by name, each with its newest certificate and when it was last seen on a
        broker (the console's Devices page): one query for the page, however many owners the group has."""
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidInput(f"a page has 1 to {MAX_PAGE} lines from offset 0 or more", reason="bad_page")
        self._ctx.config.group(group)
        with self._ctx.store.read() as tx:
            return OwnerPage(tx.owner_lines(group, now=self._ctx.clock(), offset=offset, limit=limit),
                             tx.count_owners(group))

    def record_last_seen(self, group: str, seen: dict[str, datetime]) -> None:
        """When devices of `group` were seen on a broker (connect, disconnect, or still connected): kept for the
        Devices page across restarts and instances. An observation, like a rate-limit bucket, not a change of the
        engine's records: not audited (a plant's devices would fill the audit log every minute)."""
        if seen:
            with self._ctx.store.transaction() as tx:
                tx.record_last_seen(group, [(device, to_epoch(at)) for device, at in seen.items()])

    def last_seen(self, group: str, devices: Sequence[str]) -> dict[str, datetime]:
        with self._ctx.store.read() as tx:
            return {d: from_epoch(at) for d, at in tx.last_seen(group, devices).items()}


def _register_details(owner: Owner) -> dict[str, object]:
    return {"group": owner.group, "name": owner.name, "site": owner.site, "application_uri": owner.application_uri}


def _dns_names(values: list[str]) -> list[str]:
    checked: list[str] = []
    for value in values:
        name = names.dns_name(value, "the DNS name")
        if name not in checked:
            checked.append(name)
    return checked


def _ip_addresses(values: list[str]) -> list[str]:
    checked: list[str] = []
    for value in values:
        ip = names.ip_address(value, "the IP address")
        if ip not in checked:
            checked.append(ip)
    return checked


def _check_template_uri(policy: GroupPolicy, owner: Owner) -> None:
    """A group that makes its certificate URI from the registration: the URI must come out valid."""
    if policy.san.uri_source != "template" or policy.san.uri == "forbidden":
        return
    names.check_uri_segment(owner.name, "the name")
    if owner.site is not None:
        names.check_uri_segment(owner.site, "the site")
    uri = expected_uri(policy, owner.group, owner)
    if uri is not None:
        names.check_uri(uri, f"the certificate URI made from the template {policy.san.uri_template!r}")
