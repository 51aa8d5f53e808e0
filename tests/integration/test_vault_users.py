"""Users, roles, Super Administrator scope, user groups and custom fields."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from node.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from node.roles import Role
from node.services import Services
from node.store.models import AuditRow
from node.users import UserChanges
from node.vault import NewResource, ResourceChanges
from tests.integration.vault_helpers import IP, initial_admin, make_user, snapshot


def test_add_user_gets_a_one_time_password_and_must_change_it(services: Services) -> None:
    admin = initial_admin(services)
    new = services.users.add_user(
        admin,
        IP,
        "  Alice.Smith ",
        "password user",
        full_name="Alice <b>Smith</b>",
        email="alice@example.org",
    )
    assert new.username == "alice.smith" and new.one_time_password
    user = services.auth.authenticate("ALICE.SMITH", new.one_time_password, IP)
    assert user.must_change_password and user.role == Role.PASSWORD_USER
    view = services.users.get_user(admin, new.id)
    assert view.full_name == "Alice <b>Smith</b>"  # verbatim; escaping is the web's job
    assert services.users.user_id_by_name(admin, "Alice.Smith") == new.id
    with pytest.raises(ConflictError):
        services.users.add_user(admin, IP, "ALICE.smith", Role.PASSWORD_USER)
    for bad in ("", "two words", "x" * 129, "tab\tname"):
        with pytest.raises(ValidationError):
            services.users.add_user(admin, IP, bad, Role.PASSWORD_USER)
    with pytest.raises(ValidationError, match="unknown role"):
        services.users.add_user(admin, IP, "bob", "superuser")
    with pytest.raises(ValidationError, match="e-mail"):
        services.users.add_user(admin, IP, "bob", Role.PASSWORD_USER, email="not-an-address")
    with pytest.raises(ValidationError, match="too long"):
        services.users.add_user(admin, IP, "bob", Role.PASSWORD_USER, full_name="n" * 300)
    with pytest.raises(NotFoundError):
        services.users.user_id_by_name(admin, "bob")
    with services.store.sessions() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.operation == "add user")).all()
    assert [r.target for r in rows] == ["admin", "alice.smith"]
    assert all(new.one_time_password not in (r.detail + r.target) for r in rows)


def _only_admins_manage_users(services: Services) -> None:
    admin = initial_admin(services)
    pa = make_user(services, admin, "pa", Role.PASSWORD_ADMINISTRATOR)
    user = make_user(services, admin, "pu", Role.PASSWORD_USER)
    with pytest.raises(PermissionDeniedError):
        services.users.add_user(pa, IP, "x", Role.PASSWORD_USER)
    assert {u.username for u in services.users.list_users(pa)} == {"admin", "pa", "pu"}
    services.users.edit_user(admin, IP, pa.id, UserChanges(email="pa@example.org"))
    assert services.users.get_user(pa, pa.id).email == "pa@example.org"  # oneself: whole
    # a Password User may pick people to share with (a Full share may be passed on): the
    # directory only, nothing an administrator's view adds
    seen = {u.username: u for u in services.users.list_users(user)}
    assert set(seen) == {"admin", "pa", "pu"}
    assert seen["pa"].email == "" and seen["pa"].role == Role.PASSWORD_ADMINISTRATOR
    assert services.users.get_user(user, pa.id).email == ""
    assert services.users.get_user(admin, pa.id).email == "pa@example.org"
    assert services.users.user_id_by_name(user, "admin") == admin.id
    assert services.users.get_user(user, user.id).username == "pu"  # oneself
    with pytest.raises(PermissionDeniedError):
        services.users.set_enabled(user, IP, pa.id, False)


def _disable_enable_edit_and_role(services: Services) -> None:
    admin = initial_admin(services)
    new = services.users.add_user(admin, IP, "carl", Role.PASSWORD_USER)
    assert new.one_time_password
    services.auth.authenticate("carl", new.one_time_password, IP)
    token = services.auth.create_session(new.id, IP)
    services.users.set_enabled(admin, IP, new.id, False)
    assert services.auth.session_user(token) is None
    with pytest.raises(AuthenticationError):
        services.auth.authenticate("carl", new.one_time_password, IP)
    services.users.set_enabled(admin, IP, new.id, True)
    services.auth.authenticate("carl", new.one_time_password, IP)
    services.users.edit_user(admin, IP, new.id, UserChanges(full_name="Carl", email="c@x.org"))
    services.users.change_role(admin, IP, new.id, Role.PASSWORD_AUDITOR)
    view = services.users.get_user(admin, new.id)
    assert (view.full_name, view.email, view.role) == ("Carl", "c@x.org", Role.PASSWORD_AUDITOR)
    with pytest.raises(ValidationError):
        services.users.change_role(admin, IP, admin.id, Role.PASSWORD_USER)
    with pytest.raises(ValidationError):
        services.users.set_enabled(admin, IP, admin.id, False)
    with pytest.raises(ValidationError):
        services.users.delete_user(admin, IP, admin.id)


def test_the_last_administrator_stays(services: Services) -> None:
    admin = initial_admin(services)
    # without the scope, which only a Super Administrator's changes may touch (below)
    services.users.revoke_super_admin(admin, IP, admin.id)
    # an API user with the Administrator role does not count as a person who can log in
    robot = services.users.add_user(admin, IP, "robot", Role.ADMINISTRATOR, kind="api")
    assert robot.one_time_password is None
    bot = snapshot(services, robot.id)
    for change in (
        lambda: services.users.change_role(bot, IP, admin.id, Role.PASSWORD_USER),
        lambda: services.users.set_enabled(bot, IP, admin.id, False),
        lambda: services.users.delete_user(bot, IP, admin.id),
    ):
        with pytest.raises(ConflictError, match="at least one active Administrator"):
            change()
    second = make_user(services, admin, "second", Role.ADMINISTRATOR)
    services.users.change_role(second, IP, admin.id, Role.PASSWORD_ADMINISTRATOR)
    assert services.users.get_user(second, admin.id).role == Role.PASSWORD_ADMINISTRATOR


def test_delete_user_needs_ownership_transferred_first(services: Services) -> None:
    admin = initial_admin(services)
    leaver = make_user(services, admin, "leaver", Role.PASSWORD_ADMINISTRATOR)
    services.vault.create_resource(leaver, IP, NewResource(name="theirs"))
    with pytest.raises(ConflictError, match="transfer"):
        services.users.delete_user(admin, IP, leaver.id)
    services.sharing.transfer_ownership(admin, IP, leaver.id, admin.id)
    services.users.delete_user(admin, IP, leaver.id)
    with pytest.raises(NotFoundError):
        services.users.get_user(admin, leaver.id)
    assert services.vault.list_resources(admin).items[0].owner_name == "admin"


def test_an_owner_keeps_an_administrator_role_until_ownership_is_transferred(
    services: Services,
) -> None:
    """A Password User sees only what is shared with them: an owner demoted to one would
    keep Owner access (see, reveal, share) to all they own."""
    admin = initial_admin(services)
    boss = make_user(services, admin, "boss", Role.ADMINISTRATOR)
    services.vault.create_resource(boss, IP, NewResource(name="theirs"))
    heir = make_user(services, admin, "heir", Role.PASSWORD_ADMINISTRATOR)
    services.resource_groups.create_group(heir, IP, "heir-group")
    for who, role in ((boss, Role.PASSWORD_USER), (heir, Role.PASSWORD_AUDITOR)):
        with pytest.raises(ConflictError, match="transfer ownership first"):
            services.users.change_role(admin, IP, who.id, role)
        assert services.users.get_user(admin, who.id).role != role
    services.users.change_role(admin, IP, boss.id, Role.PASSWORD_ADMINISTRATOR)  # still owns
    services.sharing.transfer_ownership(admin, IP, boss.id, heir.id)
    services.users.change_role(admin, IP, boss.id, Role.PASSWORD_USER)
    assert services.vault.list_resources(snapshot(services, boss.id)).total == 0


def test_super_admin_scope_is_granted_by_another_admin_only(services: Services) -> None:
    admin = initial_admin(services)  # holds the scope
    a2 = make_user(services, admin, "a2", Role.ADMINISTRATOR)
    pa = make_user(services, admin, "pa", Role.PASSWORD_ADMINISTRATOR)
    pu = make_user(services, admin, "pu", Role.PASSWORD_USER)
    with pytest.raises(PermissionDeniedError, match="yourself"):
        services.users.grant_super_admin(a2, IP, a2.id)
    with pytest.raises(PermissionDeniedError, match="yourself"):
        services.users.grant_super_admin(admin, IP, admin.id)
    with pytest.raises(ValidationError):
        services.users.grant_super_admin(admin, IP, pu.id)  # not admin-type
    with pytest.raises(PermissionDeniedError):
        services.users.grant_super_admin(pa, IP, pa.id)  # role lacks the action
    services.users.grant_super_admin(admin, IP, pa.id)
    assert services.users.get_user(admin, pa.id).super_admin
    services.users.change_role(admin, IP, pa.id, Role.PASSWORD_USER)  # scope goes with the role
    assert not services.users.get_user(admin, pa.id).super_admin
    with services.store.sessions() as s:
        ops = list(s.scalars(select(AuditRow.detail).where(AuditRow.operation == "change role")))
    assert "Super Administrator scope removed" in ops[-1]


def test_only_a_super_administrator_manages_the_scope_and_scoped_accounts(
    services: Services,
) -> None:
    """An administrator without the scope cannot take it through a second administrator
    account of their own, nor revoke it, nor take over or remove a scoped account (a new
    login password, role, disable, delete, edit). A Super Administrator can."""
    admin = initial_admin(services)
    boss = make_user(services, admin, "boss", Role.ADMINISTRATOR)
    services.users.grant_super_admin(admin, IP, boss.id)
    boss = snapshot(services, boss.id)
    assert boss.super_admin
    a2 = make_user(services, admin, "a2", Role.ADMINISTRATOR)
    sock = make_user(services, a2, "sock", Role.ADMINISTRATOR)  # a2's second account
    for grant in (services.users.grant_super_admin, services.users.revoke_super_admin):
        for actor, target in ((sock, a2), (a2, sock), (a2, boss)):
            with pytest.raises(PermissionDeniedError, match="only a Super Administrator may"):
                grant(actor, IP, target.id)
    changes = (
        lambda: services.users.require_may_manage(a2, boss.id),
        lambda: services.users.change_role(a2, IP, boss.id, Role.PASSWORD_USER),
        lambda: services.users.set_enabled(a2, IP, boss.id, False),
        lambda: services.users.delete_user(a2, IP, boss.id),
        lambda: services.users.edit_user(a2, IP, boss.id, UserChanges(email="x@example.org")),
    )
    boss_box = services.vault.create_resource(boss, IP, NewResource(name="boss-box"))
    team = services.users.create_user_group(admin, IP, "team")
    boss_team = services.users.create_user_group(admin, IP, "boss-team")
    services.users.add_group_member(admin, IP, boss_team, boss.id)
    changes += (
        lambda: services.sharing.transfer_ownership(a2, IP, boss.id, a2.id),
        lambda: services.users.add_group_member(a2, IP, team, boss.id),
        lambda: services.users.delete_user_group(a2, IP, boss_team),  # ends his membership
    )
    for change in changes:
        with pytest.raises(PermissionDeniedError, match="boss is a Super Administrator"):
            change()
    assert services.vault.get_resource(boss, boss_box.resource_id).resource.owner_name == "boss"
    with pytest.raises(NotFoundError):
        services.vault.get_resource(a2, boss_box.resource_id)
    view = services.users.get_user(admin, boss.id)
    assert view.super_admin and view.role == Role.ADMINISTRATOR and view.email == ""
    assert not services.users.get_user(admin, a2.id).super_admin
    # a Super Administrator may; and anyone manages an account without the scope
    services.users.require_may_manage(a2, sock.id)
    services.users.grant_super_admin(boss, IP, a2.id)
    services.users.revoke_super_admin(boss, IP, a2.id)
    services.users.edit_user(boss, IP, admin.id, UserChanges(email="admin@example.org"))
    services.users.require_may_manage(boss, admin.id)
    # with no active Super Administrator left, the first grant is any administrator's
    services.users.revoke_super_admin(admin, IP, boss.id)
    services.users.revoke_super_admin(admin, IP, admin.id)
    services.users.grant_super_admin(a2, IP, boss.id)
    assert services.users.get_user(admin, boss.id).super_admin


def test_a_scope_held_only_by_password_administrators_stays_manageable(
    services: Services,
) -> None:
    """A Password Administrator's role cannot manage users: if they were the only holders
    of the scope, its guards would shut every Administrator out for good (a leaver could
    never be disabled). Only Administrators holding it keep the guards closed."""
    admin = initial_admin(services)
    keeper = make_user(services, admin, "keeper", Role.PASSWORD_ADMINISTRATOR)
    other = make_user(services, admin, "other-admin", Role.ADMINISTRATOR)
    services.users.grant_super_admin(admin, IP, keeper.id)
    with pytest.raises(PermissionDeniedError, match="keeper is a Super Administrator"):
        services.users.set_enabled(other, IP, keeper.id, False)  # admin still holds it
    services.users.revoke_super_admin(admin, IP, admin.id)
    services.users.set_enabled(other, IP, keeper.id, False)
    services.users.revoke_super_admin(other, IP, keeper.id)
    assert not services.users.get_user(admin, keeper.id).super_admin


def test_values_of_a_deleted_custom_field_survive_later_edits(services: Services) -> None:
    admin = initial_admin(services)
    team = services.users.define_field(admin, IP, "user", "team", "text")
    services.users.define_field(admin, IP, "user", "desk", "text")
    dora = services.users.add_user(
        admin, IP, "dora", Role.PASSWORD_USER, custom_attributes={"team": "blue", "desk": "4"}
    )
    services.users.delete_field(admin, IP, team)
    # the form no longer shows "team": an edit sends only what is still defined
    services.users.edit_user(
        admin, IP, dora.id, UserChanges(full_name="Dora", custom_attributes={"desk": "5"})
    )
    assert services.users.get_user(admin, dora.id).custom_attributes == {
        "team": "blue",
        "desk": "5",
    }
    rfield = services.users.define_field(admin, IP, "resource", "rack", "text")
    rid = services.vault.create_resource(
        admin, IP, NewResource(name="racked", custom_attributes={"rack": "R42"})
    ).resource_id
    services.users.delete_field(admin, IP, rfield)
    services.vault.edit_resource(
        admin, IP, rid, ResourceChanges(location="DC 1", custom_attributes={})
    )
    assert services.vault.get_resource(admin, rid).resource.custom_attributes == {"rack": "R42"}


def test_user_groups_and_custom_attributes(services: Services) -> None:
    admin = initial_admin(services)
    services.users.define_field(admin, IP, "user", "Employee No", "number")
    with pytest.raises(ConflictError):
        services.users.define_field(admin, IP, "user", "Employee No", "text")
    with pytest.raises(ValidationError):
        services.users.define_field(admin, IP, "printer", "x", "text")
    new = services.users.add_user(
        admin, IP, "dora", Role.PASSWORD_USER, custom_attributes={"Employee No": "1234"}
    )
    with pytest.raises(ValidationError, match="number"):
        services.users.edit_user(
            admin, IP, new.id, UserChanges(custom_attributes={"Employee No": "abc"})
        )
    gid = services.users.create_user_group(admin, IP, "night shift", "on call")
    with pytest.raises(ConflictError):
        services.users.create_user_group(admin, IP, "night shift")
    services.users.add_group_member(admin, IP, gid, new.id)
    view = services.users.get_user(admin, new.id)
    assert view.custom_attributes == {"Employee No": "1234"}
    assert view.groups == ["night shift"]
    groups = services.users.list_user_groups(admin)
    assert [(g.name, g.members) for g in groups] == [("night shift", ["dora"])]
    services.users.remove_group_member(admin, IP, gid, new.id)
    services.users.delete_user_group(admin, IP, gid)
    assert services.users.list_user_groups(admin) == []


def test_who_manages_users_and_their_lifecycle(services: Services) -> None:
    """Only administrators manage users; disable, enable, edit, change role."""
    _only_admins_manage_users(services)
    _disable_enable_edit_and_role(services)


def test_user_group_and_custom_field_names_are_unique_regardless_of_case(
    services: Services,
) -> None:
    admin = initial_admin(services)
    services.users.create_user_group(admin, IP, "Night Shift")
    with pytest.raises(ConflictError, match="'Night Shift' exists already"):
        services.users.create_user_group(admin, IP, "night shift")
    day = services.users.create_user_group(admin, IP, "day")
    with pytest.raises(ConflictError, match="'Night Shift' exists already"):
        services.users.edit_user_group(admin, IP, day, name="NIGHT SHIFT")
    services.users.define_field(admin, IP, "user", "cost_centre", "text")
    with pytest.raises(ConflictError, match="'cost_centre' exists already"):
        services.users.define_field(admin, IP, "user", "Cost_Centre", "text")
    services.users.define_field(admin, IP, "resource", "Cost_Centre", "text")  # another kind


def test_user_changes_are_audited_as_they_happened(services: Services) -> None:
    admin = initial_admin(services)
    pa = make_user(services, admin, "pa-audit", Role.ADMINISTRATOR)
    services.users.edit_user(admin, IP, pa.id, UserChanges(full_name="", email=""))
    services.users.edit_user(admin, IP, pa.id, UserChanges(full_name="Pat", email=""))
    with pytest.raises(ValidationError, match="does not hold"):
        services.users.revoke_super_admin(admin, IP, pa.id)
    services.users.grant_super_admin(admin, IP, pa.id)
    with pytest.raises(ValidationError, match="holds the Super Administrator scope already"):
        services.users.grant_super_admin(admin, IP, pa.id)
    group = services.users.create_user_group(admin, IP, "ops")
    services.users.edit_user_group(admin, IP, group, name="operations")
    services.api_tokens.add_api_user("deployer", Role.ADMINISTRATOR, "admin", IP)
    with services.store.sessions() as s:
        rows = {
            (r.operation, r.detail)
            for r in s.scalars(
                select(AuditRow).where(AuditRow.target.in_(["pa-audit", "operations", "deployer"]))
            )
        }
    assert ("edit user", "no change") in rows and ("edit user", "full_name") in rows
    assert [d for op, d in rows if op == "grant super admin"] == [""]
    assert ("edit user group", "renamed from ops") in rows
    assert any(op == "add api user" and "(role Administrator)" in d for op, d in rows)
