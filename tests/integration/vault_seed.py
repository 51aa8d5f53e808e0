"""Vault content for the authorization tests, made through the real services: one resource
shared with every test user, and objects that are shared with nobody of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from node.auth import SessionUser
from node.services import Services
from node.vault import NewAccount, NewResource

IP = "192.0.2.20"


@dataclass
class Unshared:
    resource_id: int
    account_id: int
    names: list[str]


@dataclass
class VaultSeed:
    owner: SessionUser
    shared_name: str
    shared_resource_id: int
    shared_account_id: int
    unshared_ids: list[int] = field(default_factory=list)
    unshared_names: list[str] = field(default_factory=list)


def seed_unshared(services: Services, owner: SessionUser, tag: str) -> Unshared:
    """A resource with an account, owned by ``owner`` and shared with nobody."""
    res_name = f"Hidden-{tag}-Res"
    acct_name = f"hidden-{tag}-acct"
    created = services.vault.create_resource(
        owner,
        IP,
        NewResource(
            name=res_name,
            dns_name=f"{tag}.hidden.example",
            description=f"hidden-{tag}-description",
            department=f"Dept-{tag}",
        ),
        NewAccount(username=acct_name, password=f"Pw-{tag}-123456!", notes=f"notes-{tag}"),
    )
    assert created.account_id is not None
    return Unshared(
        created.resource_id,
        created.account_id,
        [res_name, acct_name, f"{tag}.hidden.example", f"hidden-{tag}-description"],
    )


def seed_vault(services: Services, owner: SessionUser, sharees: list[SessionUser]) -> VaultSeed:
    shared = services.vault.create_resource(
        owner,
        IP,
        NewResource(name="Shared-Box", dns_name="shared.example", resource_type="Linux"),
        NewAccount(username="shared-root", password="Shared-pw-123456!"),
    )
    assert shared.account_id is not None
    for user in sharees:
        services.sharing.share_resource(owner, IP, shared.resource_id, "view", user_id=user.id)
    hidden = seed_unshared(services, owner, "alpha")
    return VaultSeed(
        owner=owner,
        shared_name="Shared-Box",
        shared_resource_id=shared.resource_id,
        shared_account_id=shared.account_id,
        unshared_ids=[hidden.resource_id, hidden.account_id],
        unshared_names=hidden.names,
    )
