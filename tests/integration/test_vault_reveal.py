"""Viewing and copying passwords: reasons, tickets, audit rows and failing closed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from node.audit_query import AuditFilter
from node.errors import AuditWriteError, PermissionDeniedError, ValidationError
from node.keyring import KeyRing
from node.roles import Role
from node.services import Services, build_services
from node.settings import Settings
from node.store.db import Store, make_engine, open_store
from node.store.models import Account, AuditRow
from node.vault import AccountChanges, NewAccount, NewResource, VaultService
from tests.integration.vault_helpers import IP, audit_head_missing, initial_admin, make_user

SECRET = "Sekrit-Needle-4711"


def _audit_rows(services: Services) -> list[AuditRow]:
    with services.store.sessions() as s:
        return list(s.scalars(select(AuditRow).order_by(AuditRow.id)))


def _account(services: Services, name: str = "srv") -> int:
    admin = initial_admin(services)
    made = services.vault.create_resource(
        admin, IP, NewResource(name=name), NewAccount("root", SECRET)
    )
    assert made.account_id is not None
    return made.account_id


def test_view_and_copy_are_audited_without_the_secret(services: Services) -> None:
    aid = _account(services)
    admin = initial_admin(services)
    assert services.vault.view_password(admin, "203.0.113.5", aid, reason="patching") == SECRET
    assert services.vault.copy_password(admin, "203.0.113.6", aid) == SECRET
    rows = _audit_rows(services)
    view, copy = rows[-2], rows[-1]
    assert (view.operation, view.source_ip, view.reason, view.target, view.account_id) == (
        "view password",
        "203.0.113.5",
        "patching",
        "srv/root",
        aid,
    )
    assert (copy.operation, copy.source_ip, copy.reason) == ("copy password", "203.0.113.6", "")
    for row in rows:
        assert SECRET not in " ".join(str(v) for v in vars(row).values())
    assert services.vault.get_account(admin, aid).last_accessed_at is not None


def _reason_required_by_the_vault_setting(services: Services) -> None:
    aid = _account(services)
    admin = initial_admin(services)
    pa = make_user(services, admin, "pa", Role.PASSWORD_ADMINISTRATOR)
    with pytest.raises(PermissionDeniedError):
        services.vault.set_password_reason(pa, IP, "required")
    with pytest.raises(ValidationError):
        services.vault.set_password_reason(admin, IP, "sometimes")
    services.vault.set_password_reason(admin, IP, "required")
    assert services.vault.get_settings(admin).password_reason == "required"
    [changed] = services.audit_query.search(admin, AuditFilter(operation="settings")).entries
    assert (changed.category, changed.target, changed.detail) == (
        "user",  # a settings change is in the user audit, with rebranding and the rest
        "password_reason",
        "required",
    )
    before = len(_audit_rows(services))
    for op in (services.vault.view_password, services.vault.copy_password):
        with pytest.raises(ValidationError, match="reason is required"):
            op(admin, IP, aid)
        with pytest.raises(ValidationError, match="reason is required"):
            op(admin, IP, aid, reason="   ")
    refused = _audit_rows(services)[before:]
    assert [(r.operation, r.result) for r in refused] == [
        ("view password", "failure"),
        ("view password", "failure"),
        ("copy password", "failure"),
        ("copy password", "failure"),
    ]
    assert all("reason is required" in r.detail for r in refused)
    assert services.vault.view_password(admin, IP, aid, reason="incident 42") == SECRET
    with pytest.raises(ValidationError, match="reason is too long"):
        services.vault.view_password(admin, IP, aid, reason="r" * 1025)
    services.vault.set_password_reason(admin, IP, "optional")
    assert services.vault.view_password(admin, IP, aid) == SECRET


def _reason_and_ticket_required_by_the_account(services: Services) -> None:
    aid = _account(services, "srv-2")
    admin = initial_admin(services)
    services.vault.edit_account(
        admin, IP, aid, AccountChanges(reason_required=True, ticket_required=True)
    )
    with pytest.raises(ValidationError, match="reason"):
        services.vault.view_password(admin, IP, aid, ticket="CHG-1")
    with pytest.raises(ValidationError, match="ticket"):
        services.vault.copy_password(admin, IP, aid, reason="why not")
    assert services.vault.copy_password(admin, IP, aid, reason="deploy", ticket="CHG-1") == SECRET
    last = _audit_rows(services)[-1]
    assert (last.reason, last.detail) == ("deploy", "ticket CHG-1")


def _prepare(services: Services) -> int:
    aid = _account(services)
    admin = initial_admin(services)
    services.vault.view_password(admin, IP, aid)  # the audit works before
    return aid


def test_fail_closed_no_password_without_an_audit_row(services: Services) -> None:
    aid = _prepare(services)
    admin = initial_admin(services)
    with services.store.sessions() as s:
        before = s.get(Account, aid)
        assert before is not None
        accessed, changed = before.last_accessed_at, before.last_changed_at
        audit_count = s.scalar(select(func.count()).select_from(AuditRow))
    with audit_head_missing(services):
        for op in (services.vault.view_password, services.vault.copy_password):
            with pytest.raises(AuditWriteError) as err:
                op(admin, IP, aid)
            assert SECRET not in str(err.value)
        with pytest.raises(AuditWriteError):
            services.vault.change_password(admin, IP, aid, "another-one")
        with pytest.raises(AuditWriteError):
            services.vault.create_resource(admin, IP, NewResource(name="not-made"))
    with services.store.sessions() as s:
        after = s.get(Account, aid)
        assert after is not None
        assert (after.last_accessed_at, after.last_changed_at) == (accessed, changed)
        assert s.scalar(select(func.count()).select_from(AuditRow)) == audit_count
    assert services.vault.view_password(admin, IP, aid) == SECRET  # not changed
    assert services.vault.list_resources(admin).total == 1


def test_fail_closed_when_insert_is_revoked_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL only (GRANT/REVOKE): the node's database user may read and update but
    not insert, so the audit row cannot be written and no password comes back."""
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url)
    store = open_store(settings.db_url)
    try:
        services = build_services(settings, store, KeyRing.open(store, settings.key_path))
        aid = _prepare(services)
        admin = initial_admin(services)
        db = store.engine.url.database
        role = f"sr_noinsert_{os.getpid()}"
        with store.engine.begin() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-reader'"))
            conn.execute(text(f'GRANT CONNECT ON DATABASE "{db}" TO {role}'))
            conn.execute(text(f"GRANT SELECT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}"))
        url = store.engine.url.set(username=role, password="pw-reader")
        limited = Store(make_engine(url.render_as_string(hide_password=False)))
        try:
            vault = VaultService(limited, services.keyring, services.audit, services.licence)
            with pytest.raises(AuditWriteError):
                vault.view_password(admin, IP, aid)
            with pytest.raises(AuditWriteError):
                vault.copy_password(admin, IP, aid)
        finally:
            limited.dispose()
            with store.engine.begin() as conn:
                conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
                conn.execute(text(f'REVOKE ALL ON DATABASE "{db}" FROM {role}'))
                conn.execute(text(f"DROP ROLE {role}"))
        views = [r for r in _audit_rows(services) if r.operation == "view password"]
        assert len(views) == 1  # only the one made before the revoke
    finally:
        store.dispose()


@contextmanager
def at_audited_commits(store: Store, plpgsql: str) -> Iterator[None]:
    """Run ``plpgsql`` at the commit of every transaction that writes an audit row (a
    deferred constraint trigger on PostgreSQL), until the block ends."""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION sr_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN {plpgsql}; RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER sr_at_commit AFTER INSERT ON audit_log "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sr_at_commit()"
            )
        )
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER sr_at_commit ON audit_log"))
            conn.execute(text("DROP FUNCTION sr_at_commit()"))


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # a deferred trigger
def test_fail_closed_when_the_commit_fails_on_postgres(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk shows at the commit (SQLite in WAL mode writes its pages then): here a
    deferred trigger fails the commit of every transaction that holds an audit row. A
    password change, a view and a copy each fail with the audit trail's error (not a bare
    server error), and nothing of them is kept."""
    aid = _prepare(services)
    admin = initial_admin(services)
    rows_before = len(_audit_rows(services))
    disk_full = "RAISE EXCEPTION 'could not extend file: No space left'"
    with at_audited_commits(services.store, disk_full):
        with pytest.raises(AuditWriteError) as err:
            services.vault.change_password(admin, IP, aid, "Another-Passw0rd-77")
        assert "Another-Passw0rd-77" not in str(err.value)
        assert "an audited transaction could not commit" in caplog.text  # for operators
        assert "Another-Passw0rd-77" not in caplog.text
        for op in (services.vault.view_password, services.vault.copy_password):
            with pytest.raises(AuditWriteError) as err:
                op(admin, IP, aid)
            assert SECRET not in str(err.value)
    assert services.vault.view_password(admin, IP, aid) == SECRET  # not changed
    assert len(_audit_rows(services)) == rows_before + 1  # only that last view


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # a deferred trigger
def test_a_connection_lost_at_the_commit_is_not_called_not_carried_out(
    services: Services,
) -> None:
    """When the connection drops during the commit (the primary fails over, the network
    goes), whether the commit took place is unknown: the error must not claim that the
    operation was not carried out, as AuditWriteError does. Here a deferred trigger ends
    the session's own backend at the commit."""
    aid = _prepare(services)
    admin = initial_admin(services)
    ends_backend = "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(1)"
    with at_audited_commits(services.store, ends_backend):
        with pytest.raises(OperationalError) as err:
            services.vault.change_password(admin, IP, aid, "Another-Passw0rd-78")
        assert err.value.connection_invalidated


def test_reason_rules(services: Services) -> None:
    """A reason required by the vault setting or the account, and a ticket id."""
    _reason_required_by_the_vault_setting(services)
    _reason_and_ticket_required_by_the_account(services)


INVISIBLE_REASONS = (
    "\u200e",
    "\u200d\u200f",
    "\u2800",
    "\u3164",
    "\u034f",
    "\U000e0020",
    " \uffa0 ",
)


def test_a_reason_or_ticket_that_shows_nothing_is_not_given(services: Services) -> None:
    """Text-direction marks, joiners, fillers and the blank Braille pattern pass the
    single-line check but show as nothing: they meet no rule that asks for a reason or a
    ticket id, to see a password or to change it, and nothing changes."""
    aid = _account(services)
    admin = initial_admin(services)
    services.vault.set_password_reason(admin, IP, "required")
    for blank in INVISIBLE_REASONS:
        for op in (services.vault.view_password, services.vault.copy_password):
            with pytest.raises(ValidationError, match="reason is required"):
                op(admin, IP, aid, reason=blank)
    assert services.vault.view_password(admin, IP, aid, reason="r\u200eason") == SECRET
    services.vault.set_password_reason(admin, IP, "optional")
    services.vault.edit_account(
        admin, IP, aid, AccountChanges(reason_required=True, ticket_required=True)
    )
    for blank in INVISIBLE_REASONS:
        with pytest.raises(ValidationError, match="ticket id is required"):
            services.vault.view_password(admin, IP, aid, reason="deploy", ticket=blank)
        with pytest.raises(ValidationError, match="reason is required"):
            services.vault.change_password(admin, IP, aid, "New-secret-1", blank, ticket="C-1")
        with pytest.raises(ValidationError, match="ticket id is required"):
            services.vault.change_password(admin, IP, aid, "New-secret-1", "why", ticket=blank)
    assert services.vault.view_password(admin, IP, aid, reason="deploy", ticket="C-1") == SECRET
