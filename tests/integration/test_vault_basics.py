"""Resources, accounts, passwords and the trash through the vault services, on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import pytest
from sqlalchemy import select, text

from node.access import Access
from node.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from node.roles import Role
from node.services import Services
from node.store.models import Account, AuditRow, PasswordHistory, PasswordPolicy, ResourceType
from node.vault import NewAccount, NewResource, ResourceChanges
from tests.integration.vault_helpers import IP, initial_admin, make_user

XSS = "<script>alert('x')</script>\"'&"


def _builtins_are_seeded_once(services: Services) -> None:
    from node.seed import seed_builtins

    assert seed_builtins(services.store) == 0  # build_services already seeded
    with services.store.sessions() as s:
        types = set(s.scalars(select(ResourceType.name).where(ResourceType.builtin)))
        policies = set(s.scalars(select(PasswordPolicy.name).where(PasswordPolicy.builtin)))
    assert {
        "Linux",
        "Windows",
        "Windows Domain",
        "MySQL",
        "PostgreSQL",
        "Oracle",
        "MS SQL",
        "Cisco IOS",
        "Generic",
    } == types
    assert policies == {"Low", "Medium", "Strong", "Offline Password"}


def _create_view_change_and_history(services: Services) -> None:
    admin = initial_admin(services)
    made = services.vault.create_resource(
        admin,
        IP,
        NewResource(name="web01", dns_name="10.1.1.1", resource_type="linux"),
        NewAccount(username="root", password="first-Pass1"),
    )
    assert made.account_id is not None
    with services.store.sessions() as s:
        row = s.get(Account, made.account_id)
        assert row is not None and row.password_ct is not None
        assert b"first-Pass1" not in row.password_ct
    detail = services.vault.get_resource(admin, made.resource_id)
    assert detail.resource.resource_type == "Linux"
    assert [a.username for a in detail.accounts] == ["root"]
    assert detail.accounts[0].access == Access.OWNER
    assert services.vault.view_password(admin, IP, made.account_id) == "first-Pass1"
    services.vault.change_password(admin, IP, made.account_id, "second-Pass2", reason="rotate")
    assert services.vault.copy_password(admin, IP, made.account_id) == "second-Pass2"
    history = services.vault.password_history(admin, made.account_id)
    assert [h.changed_by for h in history] == ["admin", "admin"]
    with services.store.sessions() as s:
        ops = list(s.scalars(select(AuditRow.operation).order_by(AuditRow.id)))
        blobs = list(s.scalars(select(PasswordHistory.password_ct)))
    assert ops[-5:] == [
        "add resource",
        "add account",
        "view password",
        "change password",
        "copy password",
    ]
    assert all(b"Pass" not in b for b in blobs)
    assert services.vault.resource_id_by_name(admin, "web01") == made.resource_id
    assert services.vault.account_id_by_name(admin, "web01", "root") == (
        made.resource_id,
        made.account_id,
    )


def test_duplicates_and_bad_input_change_nothing(services: Services) -> None:
    admin = initial_admin(services)
    rid = services.vault.create_resource(admin, IP, NewResource(name="db1")).resource_id
    with pytest.raises(ConflictError):
        services.vault.create_resource(admin, IP, NewResource(name="db1"))
    services.vault.add_account(admin, IP, rid, NewAccount("sa", "pw-1234"))
    with pytest.raises(ConflictError):
        services.vault.add_account(admin, IP, rid, NewAccount("sa", "other-99"))
    with pytest.raises(ValidationError, match="too long"):
        services.vault.create_resource(admin, IP, NewResource(name="x" * 257))
    with pytest.raises(ValidationError, match="description is too long"):
        services.vault.create_resource(admin, IP, NewResource(name="y", description="d" * 5000))
    with pytest.raises(ValidationError, match="unknown resource type"):
        services.vault.create_resource(admin, IP, NewResource(name="z", resource_type="Toaster"))
    with pytest.raises(ValidationError, match="control"):
        services.vault.add_account(admin, IP, rid, NewAccount("bad\nname", "pw-1234"))
    with pytest.raises(ValidationError, match="password"):
        services.vault.add_account(admin, IP, rid, NewAccount("n", "x" * 300))
    with pytest.raises(ValidationError, match="notes is too long"):
        services.vault.add_account(admin, IP, rid, NewAccount("n", "pw-1234", notes="n" * 4097))
    with pytest.raises(ValidationError, match="account name is too long"):
        services.vault.add_account(admin, IP, rid, NewAccount("n" * 257, "pw-1234"))
    with pytest.raises(ValidationError, match="must not be empty"):
        services.vault.add_account(admin, IP, rid, NewAccount("n", ""))
    for bad_id in (0, -1, 2**31, 10**30):
        with pytest.raises(NotFoundError):
            services.vault.get_resource(admin, bad_id)
        with pytest.raises(NotFoundError):
            services.vault.view_password(admin, IP, bad_id)
        for call in (
            lambda b=bad_id: services.users.get_user(admin, b),
            lambda b=bad_id: services.sharing.share_resource(
                admin, IP, b, "view", user_id=admin.id
            ),
            lambda b=bad_id: services.sharing.share_resource(admin, IP, rid, "view", user_id=b),
            lambda b=bad_id: services.resource_groups.get_group(admin, b),
            lambda b=bad_id: services.policies.get_policy(admin, b),
            lambda b=bad_id: services.vault.restore_resource(admin, IP, b),
        ):
            with pytest.raises(NotFoundError):
                call()
    # administrators adding the same name at once (in any case): one wins, the others get
    # a conflict
    outcomes = _race(
        lambda name=name: services.vault.create_resource(admin, IP, NewResource(name=name))
        for name in ("raced", "RACED", "Raced", "rAcEd")
    )
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "done"]
    names = [r.name for r in services.vault.list_resources(admin).items]
    assert names[0] == "db1" and names[1].lower() == "raced" and len(names) == 2
    assert len(services.vault.get_resource(admin, rid).accounts) == 1


def _race(calls: Iterable[Callable[[], object]]) -> list[str]:
    """Run ``calls`` in threads that start together: "done" or "conflict" for each."""
    todo = list(calls)
    barrier = threading.Barrier(len(todo))
    outcomes: list[str] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
            outcomes.append("done")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=run, args=(c,)) for c in todo]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return outcomes


def test_resource_names_are_unique_regardless_of_case(services: Services) -> None:
    admin = initial_admin(services)
    vault = services.vault
    web = vault.create_resource(admin, IP, NewResource(name="web-01")).resource_id
    vault.add_account(admin, IP, web, NewAccount("root", "pw-1234"))
    vault.add_account(admin, IP, web, NewAccount("Root", "pw-5678"))  # accounts keep case
    with pytest.raises(ConflictError, match="'web-01' exists already.*regardless of case"):
        vault.create_resource(admin, IP, NewResource(name="WEB-01"))
    other = vault.create_resource(admin, IP, NewResource(name="db-01")).resource_id
    with pytest.raises(ConflictError, match="'web-01'"):
        vault.edit_resource(admin, IP, other, ResourceChanges(name="Web-01"))
    vault.edit_resource(admin, IP, web, ResourceChanges(name="WEB-01"))  # its own name
    assert vault.get_resource(admin, web).resource.name == "WEB-01"
    # found by name in any case; account names only as written
    assert vault.resource_id_by_name(admin, "web-01") == web
    rid, root = vault.account_id_by_name(admin, "Web-01", "root")
    assert rid == web and vault.account_id_by_name(admin, "web-01", "Root")[1] != root
    with pytest.raises(NotFoundError):
        vault.account_id_by_name(admin, "web-01", "ROOT")
    vault.delete_resource(admin, IP, other)
    with pytest.raises(
        ConflictError,
        match="'db-01' exists already \\(names are unique regardless of case\\): it is in the"
        " trash, where an Administrator with the Super Administrator scope, or its owner if"
        " their role is Administrator, can restore or purge it",
    ):
        vault.create_resource(admin, IP, NewResource(name="DB-01"))


def test_renames_to_names_that_differ_only_in_case_at_once_leave_one(services: Services) -> None:
    admin = initial_admin(services)
    ids = [
        services.vault.create_resource(admin, IP, NewResource(name=f"box-{i}")).resource_id
        for i in range(4)
    ]
    spellings = ("shared", "SHARED", "Shared", "sHaReD")
    outcomes = _race(
        lambda rid=rid, name=name: services.vault.edit_resource(
            admin, IP, rid, ResourceChanges(name=name)
        )
        for rid, name in zip(ids, spellings, strict=True)
    )
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "done"]
    names = [r.name for r in services.vault.list_resources(admin).items]
    assert sum(n.lower() == "shared" for n in names) == 1


def test_names_that_differ_only_in_case_from_before_are_found_as_written(
    services: Services,
) -> None:
    """Two resources whose names differ only in case can exist from an older version: the
    exact name finds each, a third spelling finds neither (it could mean either)."""
    admin = initial_admin(services)
    first = services.vault.create_resource(admin, IP, NewResource(name="mail")).resource_id
    second = services.vault.create_resource(admin, IP, NewResource(name="other")).resource_id
    with services.store.transaction() as s:  # as an older version let it be written
        s.execute(text("UPDATE resources SET name = 'MAIL' WHERE id = :id"), {"id": second})
    assert services.vault.resource_id_by_name(admin, "mail") == first
    assert services.vault.resource_id_by_name(admin, "MAIL") == second
    with pytest.raises(NotFoundError):
        services.vault.resource_id_by_name(admin, "Mail")


def _xss_strings_are_stored_verbatim(services: Services) -> None:
    admin = initial_admin(services)
    made = services.vault.create_resource(
        admin,
        IP,
        NewResource(
            name=XSS,
            description=XSS,
            department=XSS,
            location=XSS,
            url="https://example.org/" + XSS,
            domain_name=XSS,
        ),
        NewAccount(username=XSS, password=XSS, notes=XSS),
    )
    assert made.account_id is not None
    view = services.vault.get_resource(admin, made.resource_id)
    r = view.resource
    assert (r.name, r.description, r.department, r.location, r.domain_name) == (XSS,) * 5
    assert r.url == "https://example.org/" + XSS
    assert (view.accounts[0].username, view.accounts[0].notes) == (XSS, XSS)
    assert services.vault.view_password(admin, IP, made.account_id) == XSS


def _trash_restore_and_purge(services: Services) -> None:
    admin = initial_admin(services)
    made = services.vault.create_resource(
        admin, IP, NewResource(name="old-box"), NewAccount("root", "pw-abcd")
    )
    assert made.account_id is not None
    services.vault.delete_resource(admin, IP, made.resource_id)
    assert services.vault.list_resources(admin).total == 0
    with pytest.raises(NotFoundError):
        services.vault.get_resource(admin, made.resource_id)
    with pytest.raises(NotFoundError):
        services.vault.view_password(admin, IP, made.account_id)
    with pytest.raises(ConflictError, match="trash"):
        services.vault.create_resource(admin, IP, NewResource(name="old-box"))
    assert [t.name for t in services.vault.list_trash(admin)] == ["old-box"]
    services.vault.restore_resource(admin, IP, made.resource_id)
    assert services.vault.view_password(admin, IP, made.account_id) == "pw-abcd"
    services.vault.delete_resource(admin, IP, made.resource_id)
    services.vault.purge_resource(admin, IP, made.resource_id)
    assert services.vault.list_trash(admin) == []
    with services.store.sessions() as s:
        assert s.get(Account, made.account_id) is None
    with pytest.raises(NotFoundError):
        services.vault.restore_resource(admin, IP, made.resource_id)


def _trash_is_for_admins_and_owners(services: Services) -> None:
    admin = initial_admin(services)
    pa = make_user(services, admin, "pa", Role.PASSWORD_ADMINISTRATOR)
    other = make_user(services, admin, "other-admin", Role.ADMINISTRATOR)
    rid = services.vault.create_resource(pa, IP, NewResource(name="pa-box")).resource_id
    with pytest.raises(NotFoundError):
        services.vault.delete_resource(other, IP, rid)  # not theirs, not shared
    services.vault.delete_resource(pa, IP, rid)
    with pytest.raises(PermissionDeniedError):
        services.vault.list_trash(pa)  # the role has no trash
    assert services.vault.list_trash(other) == []  # not theirs
    assert [t.name for t in services.vault.list_trash(admin)] == ["pa-box"]  # super admin
    # the name stays taken: the refusal says who can restore or purge it (not "an
    # administrator": neither pa nor other-admin can)
    for who in (pa, other):
        with pytest.raises(
            ConflictError,
            match="it is in the trash, where an Administrator with the Super Administrator"
            " scope, or its owner if their role is Administrator, can restore or purge it",
        ):
            services.vault.create_resource(who, IP, NewResource(name="pa-box"))


def _edit_resource_and_types(services: Services) -> None:
    admin = initial_admin(services)
    services.vault.add_resource_type(admin, IP, "Juniper JunOS")
    rid = services.vault.create_resource(
        admin, IP, NewResource(name="fw1", resource_type="Juniper JunOS")
    ).resource_id
    with pytest.raises(ConflictError):
        services.vault.delete_resource_type(admin, IP, "Juniper JunOS")
    with pytest.raises(ConflictError):
        services.vault.delete_resource_type(admin, IP, "Linux")
    services.vault.edit_resource(admin, IP, rid, ResourceChanges(name="fw-1", location="DC2"))
    r = services.vault.get_resource(admin, rid).resource
    assert (r.name, r.location, r.resource_type) == ("fw-1", "DC2", "Juniper JunOS")


def _custom_attributes(services: Services) -> None:
    admin = initial_admin(services)
    services.users.define_field(admin, IP, "resource", "Rack", "text")
    services.users.define_field(admin, IP, "account", "Expires", "date")
    made = services.vault.create_resource(
        admin,
        IP,
        NewResource(name="r1", custom_attributes={"Rack": "A7"}),
        NewAccount("svc", "pw-abcd", custom_attributes={"Expires": "2027-01-31"}),
    )
    assert made.account_id is not None
    assert services.vault.get_resource(admin, made.resource_id).resource.custom_attributes == {
        "Rack": "A7"
    }
    assert services.vault.get_account(admin, made.account_id).custom_attributes == {
        "Expires": "2027-01-31"
    }
    with pytest.raises(ValidationError, match="unknown custom attribute 'Colour' for a resource"):
        services.vault.create_resource(
            admin, IP, NewResource(name="r2", custom_attributes={"Colour": "red"})
        )
    with pytest.raises(ValidationError, match="date"):
        services.vault.add_account(
            admin,
            IP,
            made.resource_id,
            NewAccount("b", "pw-abcd", custom_attributes={"Expires": "soon"}),
        )


def _sql_like_input_is_just_text(services: Services) -> None:
    admin = initial_admin(services)
    name = "x'; DROP TABLE resources; --"
    rid = services.vault.create_resource(admin, IP, NewResource(name=name)).resource_id
    assert services.vault.list_resources(admin, search="drop table").items[0].id == rid
    assert services.vault.list_resources(admin, search="%").total == 0
    assert services.vault.list_resources(admin, offset=10**30).items == []
    assert services.vault.list_resources(admin, limit=10**30).total == 2
    with services.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM resources")).scalar() == 2


def test_seeding_create_view_change(services: Services) -> None:
    """Built-ins are seeded; a resource and account go through their life."""
    _builtins_are_seeded_once(services)
    _create_view_change_and_history(services)


def test_free_text_is_stored_verbatim(services: Services) -> None:
    """Markup and SQL-looking input are kept as typed, nothing more."""
    _xss_strings_are_stored_verbatim(services)
    _sql_like_input_is_just_text(services)


def test_trash(services: Services) -> None:
    """Trash, restore and purge, and who sees the trash."""
    _trash_restore_and_purge(services)
    _trash_is_for_admins_and_owners(services)


def test_edits_types_and_attributes(services: Services) -> None:
    """Editing resources, admin-defined types and custom attributes."""
    _edit_resource_and_types(services)
    _custom_attributes(services)


def test_typed_attributes_are_written_as_the_edit_form_reads_them(services: Services) -> None:
    """A date is YYYY-MM-DD (what <input type="date"> shows), a number plain decimal: other
    spellings Python reads would show blank, or as nonsense, and be wiped by the next save."""
    admin = initial_admin(services)
    services.users.define_field(admin, IP, "resource", "Bought", "date")
    services.users.define_field(admin, IP, "resource", "Cost", "number")
    made = services.vault.create_resource(
        admin,
        IP,
        NewResource(name="typed", custom_attributes={"Bought": "2024-01-31", "Cost": "-12.50"}),
    )
    for value in ("20240101", "2024-W01-1", "2024-1-01", "２０２４-01-01", "2024-02-30"):
        with pytest.raises(ValidationError, match="'Bought' must be a date written YYYY-MM-DD"):
            services.vault.edit_resource(
                admin, IP, made.resource_id, ResourceChanges(custom_attributes={"Bought": value})
            )
    for value in ("nan", "inf", "-Infinity", "1_000", "1e999", "1e3", "١٢", "+5", ".5", "5."):
        with pytest.raises(ValidationError, match="'Cost' must be a number written in the digits"):
            services.vault.edit_resource(
                admin, IP, made.resource_id, ResourceChanges(custom_attributes={"Cost": value})
            )
    with pytest.raises(ValidationError, match="'Cost' must be a number"):
        services.vault.edit_resource(
            admin, IP, made.resource_id, ResourceChanges(custom_attributes={"Cost": "9" * 400})
        )
    services.vault.edit_resource(
        admin,
        IP,
        made.resource_id,
        ResourceChanges(custom_attributes={"Cost": "1000", "Bought": ""}),
    )
    assert services.vault.get_resource(admin, made.resource_id).resource.custom_attributes == {
        "Bought": "",
        "Cost": "1000",
    }


def test_dns_name_and_url_of_a_resource_are_checked(services: Services) -> None:
    admin = initial_admin(services)
    good_hosts = (
        "",
        "10.1.1.1",
        "2001:db8::1",
        "db01",
        "db-01.example.org",
        "db01.example.org.",
        "MS_SQL01.corp.example",
        "a" * 63 + ".example",
    )
    for i, host in enumerate(good_hosts):
        services.vault.create_resource(admin, IP, NewResource(name=f"host-{i}", dns_name=host))
    bad_hosts = (
        "not a host!!",
        "<script>",
        "999.999.999.999",
        "exa mple.com",
        "http://foo/",
        "-db.example",
        "db-.example",
        "db..example",
        "a" * 64 + ".example",
        ("a" * 61 + ".") * 4 + "exampl",  # 254 characters
    )
    for host in bad_hosts:
        with pytest.raises(ValidationError, match="DNS name or IP must be an IP address or a host"):
            services.vault.create_resource(admin, IP, NewResource(name="bad", dns_name=host))
    rid = services.vault.resource_id_by_name(admin, "host-0")
    with pytest.raises(ValidationError, match="DNS name or IP"):
        services.vault.edit_resource(admin, IP, rid, ResourceChanges(dns_name="exa mple.com"))

    for url in ("https://db01/", "HTTPS://DB01/x", "ssh://root@db01", "rdp://db01", "ftp://f/"):
        services.vault.edit_resource(admin, IP, rid, ResourceChanges(url=url))
        assert services.vault.get_resource(admin, rid).resource.url == url
    for url in (
        "javascript:alert(1)",
        "JavaScript://%0aalert(1)",
        "data:text/html,<b>",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "db01.example.org",
        "https://exa mple.com/",
    ):
        with pytest.raises(ValidationError, match="URL must start with one of http://, https://"):
            services.vault.edit_resource(admin, IP, rid, ResourceChanges(url=url))
    with pytest.raises(ValidationError, match="URL must start with"):
        services.vault.create_resource(admin, IP, NewResource(name="u", url="javascript:x"))
