"""Password policies, the generator and password history, on both dialects."""

from __future__ import annotations

import pytest

from node.errors import ConflictError, PermissionDeniedError, ValidationError
from node.policies import BUILTIN_POLICIES, PolicySpec, check_password, generate_password
from node.roles import Role
from node.services import Services
from node.vault import AccountChanges, NewAccount, NewResource
from tests.integration.vault_helpers import IP, initial_admin, make_user


def _policy_id(services: Services, name: str) -> int:
    admin = initial_admin(services)
    return next(p.id for p in services.policies.list_policies(admin) if p.name == name)


def _builtin_policies_cannot_be_changed(services: Services) -> None:
    admin = initial_admin(services)
    for spec in services.policies.list_policies(admin):
        assert spec.builtin
        with pytest.raises(ConflictError, match="cannot be edited"):
            services.policies.update_policy(admin, IP, spec.id, PolicySpec(name=spec.name))
        with pytest.raises(ConflictError, match="cannot be deleted"):
            services.policies.delete_policy(admin, IP, spec.id)
    pa = make_user(services, admin, "pa", Role.PASSWORD_ADMINISTRATOR)
    with pytest.raises(PermissionDeniedError):
        services.policies.create_policy(pa, IP, PolicySpec(name="mine"))


def test_generator_obeys_every_policy(services: Services) -> None:
    admin = initial_admin(services)
    custom = services.policies.create_policy(
        admin,
        IP,
        PolicySpec(
            name="Digits and specials",
            min_length=6,
            max_length=6,
            require_lower=False,
            require_digit=True,
            require_special=True,
        ),
    )
    for spec in services.policies.list_policies(admin):
        for _ in range(40):
            pw = services.policies.generate(admin, spec.id)
            check_password(spec, pw)
            assert spec.min_length <= len(pw) <= spec.max_length
    six = services.policies.get_policy(admin, custom)
    assert len(services.policies.generate(admin, six.id)) == 6


def _inconsistent_policies_are_refused(services: Services) -> None:
    admin = initial_admin(services)
    bad = [
        PolicySpec(name="a", min_length=0),
        PolicySpec(name="b", min_length=10, max_length=5),
        PolicySpec(
            name="c", min_length=2, require_lower=True, require_upper=True, require_digit=True
        ),
        PolicySpec(name="d", no_reuse_last=99),
        PolicySpec(name="e", max_age_days=0),
        PolicySpec(name="x" * 129),
    ]
    for spec in bad:
        with pytest.raises(ValidationError):
            services.policies.create_policy(admin, IP, spec)
    assert len(services.policies.list_policies(admin)) == len(BUILTIN_POLICIES)
    with pytest.raises(ConflictError):
        services.policies.create_policy(admin, IP, PolicySpec(name="Strong"))


def test_saving_a_password_that_breaks_the_policy_names_the_rule(services: Services) -> None:
    admin = initial_admin(services)
    strong = _policy_id(services, "Strong")
    made = services.vault.create_resource(
        admin,
        IP,
        NewResource(name="r", password_policy_id=strong),
        NewAccount("root", "Str0ng!Passw0rd"),
    )
    assert made.account_id is not None
    aid = made.account_id
    cases = [
        ("Sh0rt!a", "at least 12 characters"),
        ("alllowercase1!", "upper-case letter"),
        ("ALLUPPERCASE1!", "lower-case letter"),
        ("NoDigitsHere!!", "a digit"),
        ("NoSpecials1234", "special character"),
        ("Str0ng!Passw0rd", "last 4 passwords"),
    ]
    for pw, rule in cases:
        with pytest.raises(ValidationError, match=rule) as err:
            services.vault.change_password(admin, IP, aid, pw)
        assert pw not in str(err.value)
        assert "Strong" in str(err.value)
    assert services.vault.view_password(admin, IP, aid) == "Str0ng!Passw0rd"
    with pytest.raises(ValidationError, match="at least 12"):
        services.vault.add_account(admin, IP, made.resource_id, NewAccount("u2", "weak"))
    # the account's own policy wins over the resource's
    low = _policy_id(services, "Low")
    services.vault.edit_account(admin, IP, aid, AccountChanges(password_policy_id=low))
    services.vault.change_password(admin, IP, aid, "easy")
    assert services.vault.get_account(admin, aid).policy_name == "Low"
    services.vault.edit_account(admin, IP, aid, AccountChanges(password_policy_id=0))
    assert services.vault.get_account(admin, aid).policy_name == "Strong"  # the resource's


def test_no_reuse_of_the_last_n(services: Services) -> None:
    admin = initial_admin(services)
    pid = services.policies.create_policy(
        admin, IP, PolicySpec(name="Three", min_length=4, require_lower=True, no_reuse_last=3)
    )
    made = services.vault.create_resource(
        admin, IP, NewResource(name="r"), NewAccount("u", "pass-a", password_policy_id=pid)
    )
    assert made.account_id is not None
    aid = made.account_id
    services.vault.change_password(admin, IP, aid, "pass-b")
    services.vault.change_password(admin, IP, aid, "pass-c")
    for old in ("pass-a", "pass-b", "pass-c"):
        with pytest.raises(ValidationError, match="last 3 passwords"):
            services.vault.change_password(admin, IP, aid, old)
    services.vault.change_password(admin, IP, aid, "pass-d")
    services.vault.change_password(admin, IP, aid, "pass-a")  # four back: allowed again
    assert services.vault.view_password(admin, IP, aid) == "pass-a"
    assert len(services.vault.password_history(admin, aid)) == 5
    generated = services.vault.generate_for_account(admin, aid)
    services.vault.change_password(admin, IP, aid, generated)


def _custom_policy_edit_and_delete(services: Services) -> None:
    admin = initial_admin(services)
    pid = services.policies.create_policy(admin, IP, PolicySpec(name="Team", min_length=10))
    services.policies.update_policy(admin, IP, pid, PolicySpec(name="Team", min_length=14))
    assert services.policies.get_policy(admin, pid).min_length == 14
    rid = services.vault.create_resource(
        admin, IP, NewResource(name="r", password_policy_id=pid)
    ).resource_id
    with pytest.raises(ConflictError, match="used"):
        services.policies.delete_policy(admin, IP, pid)
    services.vault.delete_resource(admin, IP, rid)
    services.vault.purge_resource(admin, IP, rid)
    services.policies.delete_policy(admin, IP, pid)


def test_generate_password_is_random_and_policy_length() -> None:
    spec = PolicySpec(
        name="t",
        min_length=12,
        max_length=12,
        require_upper=True,
        require_digit=True,
        require_special=True,
    )
    seen = {generate_password(spec) for _ in range(50)}
    assert len(seen) == 50 and all(len(p) == 12 for p in seen)


def test_vault_default_policy_applies_where_none_is_set(services: Services) -> None:
    admin = initial_admin(services)
    rid = services.vault.create_resource(admin, IP, NewResource(name="r")).resource_id
    services.vault.add_account(admin, IP, rid, NewAccount("a", "weak"))  # Low by default
    services.vault.set_default_policy(admin, IP, _policy_id(services, "Medium"))
    assert services.vault.get_settings(admin).default_policy == "Medium"
    with pytest.raises(ValidationError, match="password policy 'Medium'"):
        services.vault.add_account(admin, IP, rid, NewAccount("b", "weak"))
    services.vault.add_account(admin, IP, rid, NewAccount("b", "Better1x"))
    names = [a.policy_name for a in services.vault.get_resource(admin, rid).accounts]
    assert names == ["Medium", "Medium"]


def test_policy_administration(services: Services) -> None:
    """Built-in policies are fixed; custom ones are checked, edited and deleted."""
    _builtin_policies_cannot_be_changed(services)
    _inconsistent_policies_are_refused(services)
    _custom_policy_edit_and_delete(services)


def test_policy_names_are_unique_regardless_of_case(services: Services) -> None:
    admin = initial_admin(services)
    with pytest.raises(ConflictError, match="'Low' exists already"):
        services.policies.create_policy(admin, IP, PolicySpec(name="low", min_length=30))
    mine = services.policies.create_policy(admin, IP, PolicySpec(name="Mine"))
    with pytest.raises(ConflictError, match="'Mine' exists already"):
        services.policies.create_policy(admin, IP, PolicySpec(name="MINE"))
    other = services.policies.create_policy(admin, IP, PolicySpec(name="Other"))
    with pytest.raises(ConflictError, match="'Mine' exists already"):
        services.policies.update_policy(admin, IP, other, PolicySpec(name="mine"))
    services.policies.update_policy(admin, IP, mine, PolicySpec(name="MINE"))  # its own name


def test_the_default_policy_follows_a_rename_and_cannot_be_deleted(services: Services) -> None:
    admin = initial_admin(services)
    strict = services.policies.create_policy(admin, IP, PolicySpec(name="Strict", min_length=30))
    services.vault.set_default_policy(admin, IP, strict)
    services.policies.update_policy(admin, IP, strict, PolicySpec(name="Stricter", min_length=30))
    assert services.vault.get_settings(admin).default_policy == "Stricter"
    with pytest.raises(ValidationError, match="at least 30 characters"):
        services.vault.create_resource(
            admin, IP, NewResource(name="still-strict"), NewAccount("root", "abcd")
        )
    with pytest.raises(ConflictError, match="the vault's default"):
        services.policies.delete_policy(admin, IP, strict)
    services.vault.set_default_policy(admin, IP, _policy_id(services, "Low"))
    services.policies.delete_policy(admin, IP, strict)


def test_the_generator_says_when_a_policy_leaves_no_new_password(services: Services) -> None:
    admin = initial_admin(services)
    tiny = services.policies.create_policy(
        admin,
        IP,
        PolicySpec(
            name="Tiny",
            min_length=1,
            max_length=1,
            require_lower=False,
            require_upper=False,
            require_digit=True,
            require_special=False,
            no_reuse_last=24,
        ),
    )
    made = services.vault.create_resource(
        admin, IP, NewResource(name="tiny-box"), NewAccount("pin", "0", password_policy_id=tiny)
    )
    assert made.account_id is not None
    for digit in "123456789":
        services.vault.change_password(admin, IP, made.account_id, digit)
    with pytest.raises(ValidationError, match="allows too few passwords"):
        services.vault.generate_for_account(admin, made.account_id)
