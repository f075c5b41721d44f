"""Who certificates may be issued to: registered applications, devices and users."""

from __future__ import annotations

import ipaddress
import uuid

from trustlists import audit
from trustlists.bootstrap_allowlist import checked_attributes
from trustlists.context import EngineContext
from trustlists.errors import AlreadyExists, InvalidInput, InvalidState, NotFound
from trustlists.models import Owner, OwnerKind

# Owner.attributes key set by `Registry.unregister`: the owner stays in the store (the inventory and the
# audit log keep pointing at it) but the registration is over.
UNREGISTERED_AT = "unregistered_at"


def is_unregistered(owner: Owner) -> bool:
    return UNREGISTERED_AT in owner.attributes


def issuable_owner(ctx: EngineContext, owner_id: str) -> Owner:
    """The owner, if certificates may still be issued to it: an unregistered owner is kept for history only."""
    with ctx.store.read() as tx:
        owner = tx.get_owner(owner_id)
    if is_unregistered(owner):
        raise NotFound(f"{owner.name} was unregistered on {owner.attributes[UNREGISTERED_AT]}",
                       reason="unknown_owner")
    return owner


class Registry:
    def __init__(self, ctx: EngineContext) -> None:
        self._ctx = ctx

    def register(self, *, group: str, name: str, actor: str, site: str | None = None,
                 application_uri: str | None = None, dns_names: list[str] | None = None,
                 ip_addresses: list[str] | None = None, attributes: dict[str, object] | None = None,
                 owner_id: str | None = None) -> Owner:
        policy = self._ctx.config.group(group)
        if not name or len(name) > 200:
            raise InvalidInput("a name of 1 to 200 characters is required")
        if site is not None and self._ctx.config.sites and site not in self._ctx.config.sites:
            raise InvalidInput(f"unknown site {site!r} (configured sites: {', '.join(self._ctx.config.sites)})",
                               reason="unknown_site")
        if policy.san.uri_source == "owner_application_uri" and policy.san.uri == "required" \
                and not application_uri:
            raise InvalidInput(f"group {group} needs an ApplicationUri for every application")
        ips = []
        for ip in ip_addresses or []:
            try:
                ips.append(str(ipaddress.ip_address(ip)))
            except ValueError:
                raise InvalidInput(f"{ip!r} is not an IP address") from None
        owner = Owner(id=owner_id or str(uuid.uuid4()), kind=OwnerKind(policy.owner_kind), name=name,
                      group=group, site=site, application_uri=application_uri,
                      dns_names=list(dns_names or []), ip_addresses=ips,
                      attributes=checked_attributes(dict(attributes or {})),
                      created_at=self._ctx.clock())
        with self._ctx.store.transaction() as tx:
            if tx.find_owner(group, name=name) is not None:
                raise AlreadyExists(f"{name!r} is already registered in group {group}")
            if application_uri and tx.find_owner(group, application_uri=application_uri) is not None:
                raise AlreadyExists(f"ApplicationUri {application_uri} is already registered in group {group}")
            tx.insert_owner(owner)
            audit.append(tx, actor=actor, action="owner.register", subject=owner.id,
                         details={"group": group, "name": name, "site": site,
                                  "application_uri": application_uri})
        return owner

    def update(self, owner: Owner, *, actor: str) -> Owner:
        owner = owner.model_copy(update={"attributes": checked_attributes(owner.attributes)})
        with self._ctx.store.transaction() as tx:
            tx.get_owner(owner.id)
            tx.update_owner(owner)
            audit.append(tx, actor=actor, action="owner.update", subject=owner.id,
                         details=owner.model_dump(mode="json", exclude={"created_at"}))
        return owner

    def unregister(self, owner_id: str, *, actor: str) -> Owner:
        """End a registration without deleting it: marks the owner unregistered (audited).

        Certificates are not touched here; revoke them first (the GDS does) if the application is gone.
        """
        now = self._ctx.clock()
        with self._ctx.store.transaction() as tx:
            owner = tx.get_owner(owner_id)
            if is_unregistered(owner):
                raise InvalidState(f"owner {owner_id} is already unregistered")
            owner = owner.model_copy(update={"attributes": {**owner.attributes, UNREGISTERED_AT: now.isoformat()}})
            tx.update_owner(owner)
            audit.append(tx, actor=actor, action="owner.unregister", subject=owner.id, at=now,
                         details={"group": owner.group, "name": owner.name,
                                  "application_uri": owner.application_uri})
        return owner

    def get(self, owner_id: str) -> Owner:
        with self._ctx.store.read() as tx:
            return tx.get_owner(owner_id)

    def find(self, group: str, *, name: str | None = None, application_uri: str | None = None) -> Owner | None:
        with self._ctx.store.read() as tx:
            return tx.find_owner(group, name=name, application_uri=application_uri)

    def list(self, group: str | None = None) -> list[Owner]:
        with self._ctx.store.read() as tx:
            return tx.list_owners(group)
