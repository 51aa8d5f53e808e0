"""Sharing precedence, visibility filtering and ownership transfer, on both dialects."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from sqlalchemy import delete, select

from node.access import Access, account_access_by_id
from node.auth import SessionUser
from node.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from node.roles import Role
from node.services import Services
from node.store.models import AuditRow, Share
from node.vault import AccountChanges, NewAccount, NewResource, ResourceChanges
from tests.integration.vault_helpers import IP, initial_admin, make_user, snapshot


@dataclass
class World:
    admin: SessionUser
    owner: SessionUser
    bob: SessionUser
    carol: SessionUser
    ops: int  # user group with bob
    dba: int  # user group with bob
    rid: int
    a1: int
    a2: int
    gid: int  # resource group holding the resource


@pytest.fixture
def world(services: Services) -> World:
    admin = initial_admin(services)
    owner = make_user(services, admin, "owner", Role.PASSWORD_ADMINISTRATOR)
    bob = make_user(services, admin, "bob", Role.PASSWORD_ADMINISTRATOR)
    carol = make_user(services, admin, "carol", Role.PASSWORD_USER)
    ops = services.users.create_user_group(admin, IP, "ops")
    dba = services.users.create_user_group(admin, IP, "dba")
    services.users.add_group_member(admin, IP, ops, bob.id)
    services.users.add_group_member(admin, IP, dba, bob.id)
    made = services.vault.create_resource(
        owner, IP, NewResource(name="db-prod"), NewAccount("sa", "pw-one-1")
    )
    assert made.account_id is not None
    a2 = services.vault.add_account(owner, IP, made.resource_id, NewAccount("app", "pw-two-2"))
    gid = services.resource_groups.create_group(owner, IP, "databases")
    services.resource_groups.add_resource(owner, IP, gid, made.resource_id)
    return World(admin, owner, bob, carol, ops, dba, made.resource_id, made.account_id, a2, gid)


def _levels(services: Services, w: World) -> tuple[Access, Access]:
    accounts = {a.id: a.access for a in services.vault.get_resource(w.bob, w.rid).accounts}
    return accounts.get(w.a1, Access.NONE), accounts.get(w.a2, Access.NONE)


# Each case: shares (object, principal, level) -> bob's access on (a1, a2).
CASES = [
    ("group only", [("group", "bob", "full")], (Access.FULL, Access.FULL)),
    (
        "resource beats group, even lower",
        [("group", "bob", "full"), ("resource", "bob", "view")],
        (Access.VIEW, Access.VIEW),
    ),
    (
        "account beats resource, upwards",
        [("resource", "bob", "view"), ("a1", "bob", "modify")],
        (Access.MODIFY, Access.VIEW),
    ),
    (
        "account beats resource, downwards",
        [("resource", "bob", "full"), ("a1", "bob", "view")],
        (Access.VIEW, Access.FULL),
    ),
    (
        "user beats user group on an account",
        [("a1", "ops", "full"), ("a1", "bob", "view")],
        (Access.VIEW, Access.NONE),
    ),
    (
        "user beats user group on a resource",
        [("resource", "ops", "view"), ("resource", "bob", "full")],
        (Access.FULL, Access.FULL),
    ),
    (
        "user beats user group on a resource group",
        [("group", "ops", "full"), ("group", "bob", "modify")],
        (Access.MODIFY, Access.MODIFY),
    ),
    (
        "object tier before principal: group's account share beats user's resource share",
        [("a1", "ops", "view"), ("resource", "bob", "full")],
        (Access.VIEW, Access.FULL),
    ),
    (
        "object tier before principal: user group's resource share beats user's group share",
        [("resource", "ops", "modify"), ("group", "bob", "full")],
        (Access.MODIFY, Access.MODIFY),
    ),
    (
        "two user groups at one tier: the more generous",
        [("resource", "ops", "view"), ("resource", "dba", "modify")],
        (Access.MODIFY, Access.MODIFY),
    ),
    (
        "account share alone shows only that account",
        [("a2", "dba", "view")],
        (Access.NONE, Access.VIEW),
    ),
]


def _apply(services: Services, w: World, shares: list[tuple[str, str, str]]) -> None:
    with services.store.transaction() as s:
        s.execute(delete(Share))
    for obj, who, level in shares:
        principal = (
            {"user_id": w.bob.id if who == "bob" else w.carol.id}
            if who in ("bob", "carol")
            else {"user_group_id": w.ops if who == "ops" else w.dba}
        )
        if obj == "group":
            services.sharing.share_group(w.owner, IP, w.gid, level, **principal)
        elif obj == "resource":
            services.sharing.share_resource(w.owner, IP, w.rid, level, **principal)
        else:
            aid = w.a1 if obj == "a1" else w.a2
            services.sharing.share_account(w.owner, IP, aid, level, **principal)


def test_sharing_precedence(services: Services, world: World) -> None:
    for name, shares, expected in CASES:
        _apply(services, world, shares)
        assert _levels(services, world) == expected, name
        for aid, level in zip((world.a1, world.a2), expected, strict=True):
            if level == Access.NONE:
                with pytest.raises(NotFoundError):
                    services.vault.get_account(world.bob, aid)
            else:
                assert services.vault.get_account(world.bob, aid).access == level, name


def test_password_fetch_applies_the_same_precedence(services: Services, world: World) -> None:
    """The password fetch resolves access on its own fast path (Core statements, not the
    ORM): it must agree with the precedence rule in every case, and show a password exactly
    when the account is visible."""
    passwords = {world.a1: "pw-one-1", world.a2: "pw-two-2"}
    for name, shares, expected in CASES:
        _apply(services, world, shares)
        for aid, level in zip((world.a1, world.a2), expected, strict=True):
            with services.store.reading() as conn:
                got = account_access_by_id(conn, world.bob, world.owner.id, world.rid, aid)
            assert got == level, name
            if level == Access.NONE:
                with pytest.raises(NotFoundError):
                    services.vault.view_password(world.bob, IP, aid)
            else:
                assert services.vault.view_password(world.bob, IP, aid) == passwords[aid], name
    # the owner, and a Super Administrator, need no share
    with services.store.reading() as conn:
        assert account_access_by_id(conn, world.owner, world.owner.id, world.rid, world.a1) == (
            Access.OWNER
        )


def test_access_level_decides_what_bob_can_do(services: Services, world: World) -> None:
    w = world
    _apply(services, w, [("resource", "bob", "full"), ("a1", "bob", "view")])
    assert services.vault.view_password(w.bob, IP, w.a1) == "pw-one-1"
    with pytest.raises(PermissionDeniedError, match="View"):
        services.vault.change_password(w.bob, IP, w.a1, "new-pw-1")
    services.vault.change_password(w.bob, IP, w.a2, "new-pw-2")
    assert services.vault.view_password(w.owner, IP, w.a2) == "new-pw-2"
    # Full may re-share; View may not
    services.sharing.share_account(w.bob, IP, w.a2, "view", user_id=w.carol.id)
    assert services.vault.view_password(w.carol, IP, w.a2) == "new-pw-2"
    with pytest.raises(PermissionDeniedError):
        services.sharing.share_account(w.bob, IP, w.a1, "view", user_id=w.carol.id)
    # a Password User re-shares too, with Full only: carol has View on a2 (from bob) ...
    with pytest.raises(PermissionDeniedError, match="Full"):
        services.sharing.share_account(w.carol, IP, w.a2, "view", user_id=w.admin.id)
    # ... and with Full on the resource passes it on (the share is hers to give)
    services.sharing.share_resource(w.owner, IP, w.rid, "full", user_id=w.carol.id)
    services.sharing.share_resource(w.carol, IP, w.rid, "view", user_id=w.admin.id)
    shares = services.sharing.list_shares(w.owner, "resource", w.rid)
    assert ("admin", Access.VIEW, "carol") in {
        (x.principal_name, x.access, x.granted_by) for x in shares
    }
    with pytest.raises(ValidationError):
        services.sharing.share_resource(w.owner, IP, w.rid, "admin", user_id=w.bob.id)
    with pytest.raises(ValidationError):
        services.sharing.share_resource(w.owner, IP, w.rid, "view", user_id=w.owner.id)


def test_password_user_sees_only_shared_and_counts_do_not_leak(
    services: Services, world: World
) -> None:
    w = world
    for i in range(3):
        services.vault.create_resource(
            w.owner, IP, NewResource(name=f"hidden-{i}"), NewAccount("root", "pw-hidden")
        )
    assert services.vault.list_resources(w.carol).total == 0
    services.sharing.share_account(w.owner, IP, w.a2, "view", user_id=w.carol.id)
    page = services.vault.list_resources(w.carol)
    assert page.total == 1 and [r.name for r in page.items] == ["db-prod"]
    assert page.items[0].account_count == 1  # not 2
    assert page.items[0].access == Access.NONE  # sees the resource through one account only
    detail = services.vault.get_resource(w.carol, w.rid)
    assert [a.username for a in detail.accounts] == ["app"]
    # unshared and non-existent look the same
    hidden = services.vault.resource_id_by_name(w.owner, "hidden-0")
    with pytest.raises(NotFoundError) as unshared:
        services.vault.get_resource(w.carol, hidden)
    with pytest.raises(NotFoundError) as missing:
        services.vault.get_resource(w.carol, 987654)
    assert re.sub(r"\d+", "N", str(unshared.value)) == re.sub(r"\d+", "N", str(missing.value))
    with pytest.raises(NotFoundError):
        services.vault.view_password(w.carol, IP, w.a1)
    with pytest.raises(NotFoundError):
        services.vault.resource_id_by_name(w.carol, "hidden-0")
    with pytest.raises(NotFoundError):
        services.vault.account_id_by_name(w.carol, "db-prod", "sa")
    assert services.vault.list_resources(w.carol, search="hidden").total == 0
    assert services.resource_groups.list_groups(w.carol) == []
    # she may pick people to share with (a Full share may be passed on), not manage them
    assert "bob" in {u.username for u in services.users.list_users(w.carol)}
    with pytest.raises(PermissionDeniedError):
        services.users.add_user(w.carol, IP, "newbie", Role.PASSWORD_USER)
    with pytest.raises(PermissionDeniedError):
        services.users.require_may_manage(w.carol, w.bob.id)
    # an Administrator without Super Administrator scope does not see others' resources
    other_admin = make_user(services, w.admin, "admin2", Role.ADMINISTRATOR)
    assert services.vault.list_resources(other_admin).total == 0
    assert services.vault.list_resources(w.admin).total == 4  # the Super Administrator


def test_group_share_counts_only_visible_members(services: Services, world: World) -> None:
    w = world
    services.sharing.share_group(w.owner, IP, w.gid, "view", user_id=w.carol.id)
    groups = services.resource_groups.list_groups(w.carol)
    assert [(g.name, g.resource_count, g.access) for g in groups] == [("databases", 1, Access.VIEW)]
    assert services.vault.view_password(w.carol, IP, w.a1) == "pw-one-1"
    services.resource_groups.remove_resource(w.owner, IP, w.gid, w.rid)
    assert services.vault.list_resources(w.carol).total == 0


def test_unshare(services: Services, world: World) -> None:
    w = world
    services.sharing.share_resource(w.owner, IP, w.rid, "view", user_id=w.carol.id)
    shares = services.sharing.list_shares(w.owner, "resource", w.rid)
    assert [(x.principal_name, x.access) for x in shares] == [("carol", Access.VIEW)]
    services.sharing.unshare_resource(w.owner, IP, w.rid, user_id=w.carol.id)
    assert services.vault.list_resources(w.carol).total == 0
    with pytest.raises(NotFoundError):
        services.sharing.unshare_resource(w.owner, IP, w.rid, user_id=w.carol.id)


def test_transfer_ownership(services: Services, world: World) -> None:
    w = world
    gone = services.vault.create_resource(w.owner, IP, NewResource(name="in-trash")).resource_id
    services.vault.delete_resource(w.owner, IP, gone)
    hr = make_user(services, w.admin, "hr-admin", Role.ADMINISTRATOR)  # not super admin
    heir = make_user(services, w.admin, "heir", Role.PASSWORD_ADMINISTRATOR)
    with pytest.raises(ValidationError):
        services.sharing.transfer_ownership(hr, IP, w.owner.id, w.carol.id)  # not admin-type
    with pytest.raises(PermissionDeniedError):
        services.sharing.transfer_ownership(w.bob, IP, w.owner.id, heir.id)  # role
    bot = services.api_tokens.add_api_user("bot", Role.ADMINISTRATOR, "admin", IP)
    with pytest.raises(ValidationError, match="bot is an API user"):
        services.sharing.transfer_ownership(hr, IP, w.owner.id, bot.user_id)
    result = services.sharing.transfer_ownership(hr, IP, w.owner.id, heir.id)
    assert (result.resources, result.groups) == (2, 1)
    # the heir owns everything, trash included; the old owner and the transferring admin
    # see nothing
    assert [r.name for r in services.vault.list_resources(heir).items] == ["db-prod"]
    assert services.vault.get_account(heir, w.a1).access == Access.OWNER
    assert services.resource_groups.list_groups(heir)[0].access == Access.OWNER
    assert services.vault.list_resources(w.owner).total == 0
    assert services.vault.list_resources(hr).total == 0
    with pytest.raises(NotFoundError):
        services.vault.view_password(hr, IP, w.a1)
    with services.store.sessions() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.operation == "transfer ownership")).all()
    assert {r.target for r in rows} == {"db-prod", "in-trash", "owner"}
    assert all(r.username == "hr-admin" for r in rows)
    # transferring to oneself is how an admin takes it over
    services.sharing.transfer_ownership(hr, IP, heir.id, hr.id)
    assert services.vault.list_resources(hr).total == 1
    # the departing user can now be deleted
    services.users.delete_user(w.admin, IP, w.owner.id)


def test_super_admin_scope_sees_everything(services: Services, world: World) -> None:
    w = world
    boss = make_user(services, w.admin, "boss", Role.ADMINISTRATOR)
    assert services.vault.list_resources(boss).total == 0
    services.users.grant_super_admin(w.admin, IP, boss.id)
    boss = snapshot(services, boss.id)
    assert services.vault.list_resources(boss).total == 1
    assert services.vault.view_password(boss, IP, w.a1) == "pw-one-1"


def test_a_full_holder_passes_on_no_more_than_they_hold(services: Services, world: World) -> None:
    """bob has Full on the resource but only View on its account sa: sharing the resource
    at Modify or Full would give carol more on sa than bob has."""
    w = world
    _apply(services, w, [("resource", "bob", "full"), ("a1", "bob", "view")])
    for level in ("full", "modify"):
        with pytest.raises(PermissionDeniedError, match="View on account db-prod/sa"):
            services.sharing.share_resource(w.bob, IP, w.rid, level, user_id=w.carol.id)
    services.sharing.share_resource(w.bob, IP, w.rid, "view", user_id=w.carol.id)
    assert services.vault.view_password(w.carol, IP, w.a1) == "pw-one-1"
    # the same through a group: Full on the group, View on a resource in it
    services.sharing.unshare_resource(w.owner, IP, w.rid, user_id=w.bob.id)
    _apply(services, w, [("group", "bob", "full"), ("resource", "bob", "view")])
    with pytest.raises(PermissionDeniedError, match="View on resource db-prod"):
        services.sharing.share_group(w.bob, IP, w.gid, "full", user_id=w.carol.id)
    # the owner passes on anything
    services.sharing.share_resource(w.owner, IP, w.rid, "full", user_id=w.carol.id)


def test_a_full_holder_changes_or_removes_only_the_shares_they_granted(
    services: Services, world: World
) -> None:
    w = world
    _apply(services, w, [("resource", "bob", "full"), ("a1", "carol", "view")])
    with pytest.raises(PermissionDeniedError, match="granted by someone else"):
        services.sharing.unshare_account(w.bob, IP, w.a1, user_id=w.carol.id)
    with pytest.raises(PermissionDeniedError, match="granted by someone else"):
        services.sharing.share_account(w.bob, IP, w.a1, "full", user_id=w.carol.id)
    assert account_access_by_id_of(services, w.carol, w.a1) == Access.VIEW
    # bob's own share he changes and takes back; the owner removes anyone's
    services.sharing.share_account(w.bob, IP, w.a2, "view", user_id=w.carol.id)
    services.sharing.share_account(w.bob, IP, w.a2, "modify", user_id=w.carol.id)
    assert account_access_by_id_of(services, w.carol, w.a2) == Access.MODIFY
    services.sharing.unshare_account(w.bob, IP, w.a2, user_id=w.carol.id)
    services.sharing.share_account(w.bob, IP, w.a2, "view", user_id=w.carol.id)
    services.sharing.unshare_account(w.owner, IP, w.a2, user_id=w.carol.id)
    assert account_access_by_id_of(services, w.carol, w.a2) == Access.NONE


def test_a_share_never_reaches_the_one_who_granted_it(services: Services, world: World) -> None:
    """bob may not share with himself; sharing with a user group of his (ops) must not do
    it either: the owner's removal of bob's share, or the transfer of what someone owned,
    would leave them the access they passed to their own group."""
    w = world
    services.users.add_group_member(w.admin, IP, w.ops, w.carol.id)
    _apply(services, w, [("resource", "bob", "full")])
    services.sharing.share_resource(w.bob, IP, w.rid, "full", user_group_id=w.ops)
    # his share to ops, at a more specific tier, leaves his own access as it was
    services.sharing.share_account(w.bob, IP, w.a1, "view", user_group_id=w.ops)
    assert _levels(services, w) == (Access.FULL, Access.FULL)
    assert account_access_by_id_of(services, w.carol, w.a1) == Access.VIEW
    services.sharing.unshare_resource(w.owner, IP, w.rid, user_id=w.bob.id)
    assert services.vault.list_resources(w.bob).total == 0
    for aid in (w.a1, w.a2):
        assert account_access_by_id_of(services, w.bob, aid) == Access.NONE
        with pytest.raises(NotFoundError):
            services.vault.view_password(w.bob, IP, aid)
    with pytest.raises(NotFoundError):
        services.sharing.share_resource(w.bob, IP, w.rid, "view", user_id=w.admin.id)
    assert services.vault.view_password(w.carol, IP, w.a2) == "pw-two-2"  # ops's share stays
    # an owner's share with their own group does not follow them past a transfer
    services.users.add_group_member(w.admin, IP, w.dba, w.owner.id)
    services.sharing.share_resource(w.owner, IP, w.rid, "full", user_group_id=w.dba)
    services.sharing.transfer_ownership(w.admin, IP, w.owner.id, w.admin.id)
    assert services.vault.list_resources(w.owner).total == 0
    with pytest.raises(NotFoundError):
        services.vault.view_password(w.owner, IP, w.a1)


def test_passing_a_share_on_takes_away_nothing_the_others_gave(
    services: Services, world: World
) -> None:
    """An account's share beats its resource's even when lower (and a user's beats their
    group's): bob, with Full on the resource, must not lower, by a share of his own, what
    the owner gave carol; raising it, or lowering what he himself gave, he may."""
    w = world
    services.users.add_group_member(w.admin, IP, w.ops, w.carol.id)
    _apply(services, w, [("resource", "bob", "full"), ("resource", "carol", "modify")])
    for principal in ({"user_id": w.carol.id}, {"user_group_id": w.ops}):
        with pytest.raises(PermissionDeniedError, match="carol holds Modify on account db-prod/sa"):
            services.sharing.share_account(w.bob, IP, w.a1, "view", **principal)
    assert account_access_by_id_of(services, w.carol, w.a1) == Access.MODIFY
    with services.store.sessions() as s:
        assert s.scalars(select(Share).where(Share.granted_by == w.bob.id)).all() == []
    services.sharing.share_account(w.bob, IP, w.a1, "full", user_id=w.carol.id)
    assert account_access_by_id_of(services, w.carol, w.a1) == Access.FULL
    services.sharing.share_account(w.bob, IP, w.a1, "modify", user_id=w.carol.id)
    assert account_access_by_id_of(services, w.carol, w.a1) == Access.MODIFY
    with pytest.raises(PermissionDeniedError, match="would lower it"):
        services.sharing.share_account(w.bob, IP, w.a1, "view", user_id=w.carol.id)
    # the same one tier up: a user's share of the group beats their user group's
    _apply(services, w, [("group", "bob", "full"), ("group", "ops", "full")])
    with pytest.raises(PermissionDeniedError, match="carol holds Full on resource group"):
        services.sharing.share_group(w.bob, IP, w.gid, "view", user_id=w.carol.id)
    assert account_access_by_id_of(services, w.carol, w.a2) == Access.FULL
    # the owner decides as before
    services.sharing.share_group(w.owner, IP, w.gid, "view", user_id=w.carol.id)
    assert account_access_by_id_of(services, w.carol, w.a2) == Access.VIEW


def account_access_by_id_of(services: Services, user: SessionUser, account_id: int) -> Access:
    try:
        return services.vault.get_account(user, account_id).access
    except NotFoundError:
        return Access.NONE


def test_only_the_owner_deletes_an_account_or_changes_what_guards_it(
    services: Services, world: World
) -> None:
    w = world
    _apply(services, w, [("resource", "bob", "full")])
    with pytest.raises(PermissionDeniedError, match="needs Owner"):
        services.vault.delete_account(w.bob, IP, w.a2)
    for changes in (
        AccountChanges(reason_required=True),
        AccountChanges(ticket_required=True),
        AccountChanges(password_policy_id=_policy_id(services, w.owner, "Strong")),
    ):
        with pytest.raises(PermissionDeniedError, match="needs Owner"):
            services.vault.edit_account(w.bob, IP, w.a2, changes)
    with pytest.raises(PermissionDeniedError, match="needs Owner"):
        services.vault.edit_resource(
            w.bob,
            IP,
            w.rid,
            ResourceChanges(password_policy_id=_policy_id(services, w.owner, "Strong")),
        )
    # what does not guard the password, Modify and up may change (the flags as they are too)
    services.vault.edit_account(
        w.bob, IP, w.a2, AccountChanges(notes="rotated monthly", reason_required=False)
    )
    services.vault.edit_resource(w.bob, IP, w.rid, ResourceChanges(location="DC 2"))
    services.vault.edit_account(w.owner, IP, w.a2, AccountChanges(reason_required=True))
    services.vault.delete_account(w.owner, IP, w.a2)
    assert [a.id for a in services.vault.get_resource(w.owner, w.rid).accounts] == [w.a1]


def _policy_id(services: Services, actor: SessionUser, name: str) -> int:
    return next(p.id for p in services.policies.list_policies(actor) if p.name == name)


def test_groups_take_only_the_owner_s_resources_and_hide_the_rest(
    services: Services, world: World
) -> None:
    w = world
    _apply(services, w, [("resource", "bob", "full"), ("group", "bob", "modify")])
    bobs = services.resource_groups.create_group(w.bob, IP, "bob-stash")
    with pytest.raises(PermissionDeniedError, match="only its owner"):
        services.resource_groups.add_resource(w.bob, IP, bobs, w.rid)
    # bob puts his own resource in the owner's group (he may change it): the owner, who
    # cannot see that resource, can neither remove it nor tell it from one not there
    box = services.vault.create_resource(w.bob, IP, NewResource(name="bobs-box")).resource_id
    services.resource_groups.add_resource(w.bob, IP, w.gid, box)
    for probe in (box, 99999):
        with pytest.raises(NotFoundError, match=f"no resource with id {probe} in this group"):
            services.resource_groups.remove_resource(w.owner, IP, w.gid, probe)
    services.resource_groups.remove_resource(w.bob, IP, w.gid, box)


def test_transfer_drops_the_receiver_s_own_shares(services: Services, world: World) -> None:
    w = world
    _apply(services, w, [("resource", "bob", "full"), ("group", "bob", "view")])
    services.sharing.share_account(w.owner, IP, w.a1, "view", user_id=w.bob.id)
    services.sharing.transfer_ownership(w.admin, IP, w.owner.id, w.bob.id)
    with services.store.sessions() as s:
        assert s.scalars(select(Share).where(Share.user_id == w.bob.id)).all() == []
    heir = make_user(services, w.admin, "heir", Role.PASSWORD_ADMINISTRATOR)
    services.sharing.transfer_ownership(w.admin, IP, w.bob.id, heir.id)
    assert services.vault.list_resources(w.bob).total == 0
    with pytest.raises(NotFoundError):
        services.vault.view_password(w.bob, IP, w.a1)


def test_no_share_with_a_disabled_user(services: Services, world: World) -> None:
    w = world
    services.users.set_enabled(w.admin, IP, w.carol.id, False)
    with pytest.raises(ValidationError, match="carol is disabled"):
        services.sharing.share_resource(w.owner, IP, w.rid, "view", user_id=w.carol.id)


def test_resource_group_names_are_unique_regardless_of_case(
    services: Services, world: World
) -> None:
    w = world  # the owner has "databases"
    with pytest.raises(ConflictError, match="'databases' exists already"):
        services.resource_groups.create_group(w.owner, IP, "DataBases")
    other = services.resource_groups.create_group(w.owner, IP, "web")
    with pytest.raises(ConflictError, match="'databases' exists already"):
        services.resource_groups.edit_group(w.owner, IP, other, name="DATABASES")
    services.resource_groups.edit_group(w.owner, IP, other, name="WEB")  # its own name
