"""Reading the audit trail: filters, paging, who sees which rows, and the chain check
after the database was tampered with (edit, delete, reorder), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import delete, update

from node.audit import AuditEvent
from node.audit_query import AuditFilter, parse_time_bound
from node.errors import PermissionDeniedError, ValidationError
from node.services import Services
from node.store.models import AuditHead, AuditRow
from node.vault import NewAccount, NewResource
from tests.integration.report_world import World, build_world
from tests.integration.vault_helpers import IP


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


def test_filters_and_paging(services: Services, world: World) -> None:
    q = services.audit_query
    everything = q.search(world.admin, AuditFilter(), page_size=500)
    assert everything.total == len(everything.entries) > 10
    ids = [e.id for e in everything.entries]
    assert ids == sorted(ids, reverse=True)  # newest first

    views = q.search(world.admin, AuditFilter(operation="view password"))
    assert {e.target for e in views.entries} == {"db-secret-7/dba", "web-01/root"}
    assert all(e.username == "owner" for e in views.entries)

    by_user = q.search(world.admin, AuditFilter(username="  OWNER "))  # normalised
    assert by_user.total > 0 and {e.username for e in by_user.entries} == {"owner"}

    on_db = q.search(world.admin, AuditFilter(resource="SECRET-7"))
    assert on_db.total >= 3 and all("db-secret-7" in e.target for e in on_db.entries)
    by_id = q.search(world.admin, AuditFilter(resource_id=world.db))
    assert {e.id for e in by_id.entries} <= {e.id for e in on_db.entries}

    users = q.search(world.admin, AuditFilter(category="user"), page_size=500)
    assert {e.operation for e in users.entries} >= {"add user"}
    assert all(e.category == "user" for e in users.entries)
    resources = q.search(world.admin, AuditFilter(category="resource"), page_size=500)
    assert users.total + resources.total == everything.total

    first = q.search(world.admin, AuditFilter(), page=1, page_size=3)
    second = q.search(world.admin, AuditFilter(), page=2, page_size=3)
    assert first.total == everything.total and first.pages == -(-everything.total // 3)
    assert [e.id for e in first.entries + second.entries] == ids[:6]

    # a LIKE wildcard in the filter is taken literally
    assert q.search(world.admin, AuditFilter(resource="%")).total == 0


def test_time_range(services: Services, world: World) -> None:
    q = services.audit_query
    then = dt.datetime(2020, 5, 17, 12, 0, 0)
    with services.store.transaction() as s:
        services.audit.append(
            s,
            AuditEvent(operation="login", username="old", source_ip="10.0.0.9", category="user"),
            now=then,
        )
    day = q.search(
        world.admin,
        AuditFilter(
            since=parse_time_bound("2020-05-17"), until=parse_time_bound("2020-05-17", end=True)
        ),
    )
    assert [e.username for e in day.entries] == ["old"]
    after = q.search(world.admin, AuditFilter(since=parse_time_bound("2020-05-17T12:00:01")))
    assert "old" not in {e.username for e in after.entries}
    assert parse_time_bound("2020-05-17T14:00+02:00") == then
    for bad in ("yesterday", "2020-13-01", "x" * 40):
        with pytest.raises(ValidationError):
            parse_time_bound(bad)
    with pytest.raises(ValidationError):
        AuditFilter(since=then, until=then)
    with pytest.raises(ValidationError):
        AuditFilter(category="secret")


def test_auditor_sees_user_audit_and_only_shared_resources(
    services: Services, world: World
) -> None:
    q = services.audit_query
    seen = q.search(world.auditor, AuditFilter(), page_size=500)
    targets = {e.target for e in seen.entries if e.category == "resource"}
    assert "web-01/root" in targets  # a resource shared with the auditor
    assert any(t.startswith("db-secret-7/report") for t in targets)  # an account shared alone
    assert not any("zz-hidden-9" in t for t in targets)
    assert "db-secret-7/dba" not in targets  # another account of that resource
    assert {e.operation for e in seen.entries if e.category == "user"} >= {"add user"}
    # counts leak nothing either
    hidden = q.search(world.auditor, AuditFilter(resource="zz-hidden"))
    assert hidden.total == 0 and hidden.entries == []
    assert q.search(world.admin, AuditFilter(resource="zz-hidden")).total > 0
    # an Administrator without Super Administrator scope reads everything
    assert q.search(world.admin2, AuditFilter()).total == q.search(world.admin, AuditFilter()).total
    with pytest.raises(PermissionDeniedError):
        q.search(world.user, AuditFilter())


def test_auditor_learns_no_count_of_resources_from_an_ownership_transfer(
    services: Services, world: World
) -> None:
    # the owner holds web-01 (shared with the auditor), db-secret-7 and zz-hidden-9
    services.sharing.transfer_ownership(world.admin, IP, world.pwadmin.id, world.admin2.id)
    q = services.audit_query
    moved = AuditFilter(operation="transfer ownership")
    summary = q.search(world.admin, dataclasses.replace(moved, category="user")).entries
    assert [e.detail for e in summary] == ["from owner to admin2: 3 resources, 0 groups"]
    seen = q.search(world.auditor, moved).entries
    # one row for each resource the auditor may see (db-secret-7 through a shared account)
    assert {(e.category, e.target) for e in seen} == {
        ("resource", "web-01"),
        ("resource", "db-secret-7"),
    }
    assert not any("resources" in e.detail for e in seen)
    assert "transfer ownership" in q.operations(world.auditor, "resource")
    assert "transfer ownership" not in q.operations(world.auditor, "user")


def test_a_new_account_or_resource_never_takes_an_id_the_audit_trail_names(
    services: Services, world: World
) -> None:
    """SQLite hands out the highest id again once its row is deleted: an account (or a
    purged resource) gone, the next one would inherit its audit rows, and an auditor shown
    the new one would read rows about the old. Ids are therefore never given twice."""
    q = services.audit_query
    owner = world.pwadmin
    gone = services.vault.create_resource(
        owner, IP, NewResource(name="gone-box"), NewAccount("gone-acct", "Gone-pass-123")
    )
    assert gone.account_id is not None
    services.vault.view_password(owner, IP, gone.account_id)
    services.vault.delete_account(owner, IP, gone.account_id)  # the highest account id
    services.vault.delete_resource(owner, IP, gone.resource_id)
    services.vault.purge_resource(world.admin, IP, gone.resource_id)  # the highest resource id
    new = services.vault.create_resource(
        owner, IP, NewResource(name="new-box"), NewAccount("new-acct", "New-pass-1234")
    )
    assert new.resource_id > gone.resource_id and new.account_id is not None
    assert new.account_id > gone.account_id
    services.sharing.share_resource(owner, IP, new.resource_id, "view", user_id=world.auditor.id)
    seen = {e.target for e in q.search(world.auditor, AuditFilter(), page_size=500).entries}
    assert "new-box" in seen and not [t for t in seen if "gone-" in t]


def test_verify_names_the_first_broken_row(services: Services, world: World) -> None:
    """Intact; then, each time lower in the chain: a deleted tail, two rows swapped, a
    deleted row, an edited row; the check always names the first broken one."""
    state = services.audit_query.verify()
    total = services.audit_query.search(world.admin, AuditFilter()).total
    assert state.report.ok and state.broken_row is None and state.report.rows_checked == total

    with services.store.transaction() as s:
        s.execute(delete(AuditRow).where(AuditRow.id >= total - 1))
    state = services.audit_query.verify()
    assert not state.report.ok and state.report.first_broken_id == total - 1
    assert "deleted" in state.report.problem

    with services.store.transaction() as s:
        s.execute(update(AuditRow).where(AuditRow.id == 8).values(id=100000))
        s.execute(update(AuditRow).where(AuditRow.id == 9).values(id=8))
        s.execute(update(AuditRow).where(AuditRow.id == 100000).values(id=9))
    state = services.audit_query.verify()
    assert not state.report.ok and state.report.first_broken_id == 8
    assert "reordered" in state.report.problem

    with services.store.transaction() as s:
        s.execute(delete(AuditRow).where(AuditRow.id == 6))
    state = services.audit_query.verify()
    assert state.report.first_broken_id == 6 and "missing" in state.report.problem
    assert state.broken_row is None

    with services.store.transaction() as s:
        s.execute(update(AuditRow).where(AuditRow.id == 3).values(source_ip="203.0.113.66"))
    state = services.audit_query.verify()
    assert state.report.first_broken_id == 3 and "altered" in state.report.problem
    assert state.broken_row is not None and state.broken_row.source_ip == "203.0.113.66"
    assert state.report.rows_checked == 2

    with services.store.transaction() as s:  # everything, head included
        s.execute(delete(AuditRow))
        s.execute(delete(AuditHead))
    state = services.audit_query.verify()
    assert not state.report.ok and state.report.first_broken_id == 1
    assert "whole audit trail was deleted" in state.report.problem


def _head(services: Services) -> tuple[int, str, str]:
    with services.store.sessions() as s:
        head = s.get(AuditHead, 1)
        assert head is not None
        return head.last_id, head.last_hmac, head.head_hmac


def _put_head_back(services: Services, saved: tuple[int, str, str]) -> None:
    last_id, last_hmac, head_hmac = saved
    with services.store.transaction() as s:
        s.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(last_id=last_id, last_hmac=last_hmac, head_hmac=head_hmac)
        )


def _append(services: Services, username: str) -> None:
    event = AuditEvent(operation="view password", username=username, source_ip="198.51.100.9")
    with services.store.transaction() as s:
        services.audit.append(s, event)


def test_verify_names_rows_copied_in_from_another_copy_of_the_trail(
    services: Services, world: World
) -> None:
    """Rows whose HMACs are valid and that link up, yet are not the chain the head record
    names: a row copied in after the chain's last row (from a node restored from the same
    backup, so with the same key, or after an earlier head record was put back), and a
    last row replaced by the other copy's. The check names that row, not a row past the
    end as deleted."""
    before = _head(services)
    last = before[0]
    _append(services, "replayed")
    _put_head_back(services, before)
    state = services.audit_query.verify()
    assert not state.report.ok
    assert state.report.first_broken_id == last + 1, state.report
    assert "added outside the chain" in state.report.problem
    assert state.broken_row is not None and state.broken_row.username == "replayed"
    assert state.report.rows_checked == last

    with services.store.transaction() as s:  # as it was, then this copy's own next row
        s.execute(delete(AuditRow).where(AuditRow.id == last + 1))
    assert services.audit_query.verify().report.ok
    _append(services, "this node")
    ours = _head(services)
    with services.store.transaction() as s:  # the other copy's row in its place
        s.execute(delete(AuditRow).where(AuditRow.id == last + 1))
    _put_head_back(services, before)
    _append(services, "other node")
    _put_head_back(services, ours)
    state = services.audit_query.verify()
    assert not state.report.ok
    assert state.report.first_broken_id == last + 1, state.report
    assert "not the row the chain head record names" in state.report.problem
    assert state.broken_row is not None and state.broken_row.username == "other node"
