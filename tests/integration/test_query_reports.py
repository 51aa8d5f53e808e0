"""Query reports on SQLite and PostgreSQL: a single SELECT on the report views runs; every
other kind of SQL is refused with a clear reason and changes nothing."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from node.audit_query import AuditFilter
from node.errors import PermissionDeniedError, ValidationError
from node.export import to_csv, to_xml
from node.query_reports import REPORT_VIEWS, QueryRefusedError
from node.services import Services
from node.store.models import Account, Resource, User
from tests.integration.report_world import World, build_world

IP = "198.51.100.8"


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


def _state(services: Services) -> tuple[object, ...]:
    """What a refused query must leave exactly as it was."""
    views = tuple(sorted(inspect(services.store.engine).get_view_names()))
    with services.store.sessions() as s:
        return (
            tuple(s.execute(select(Account.id, Account.username, Account.password_ct)).all()),
            tuple(s.scalars(select(Resource.name).order_by(Resource.id)).all()),
            s.scalar(select(func.count()).select_from(User)),
            views,
        )


def test_select_runs_and_exports(services: Services, world: World) -> None:
    insp = inspect(services.store.engine)  # the views exist and hold no secret column
    assert set(REPORT_VIEWS) <= set(insp.get_view_names())
    for view in REPORT_VIEWS:
        names = {c["name"] for c in insp.get_columns(view)}
        assert not {n for n in names if n.endswith("_ct") or "hash" in n or "token" in n}
    table = services.query_reports.run(
        world.admin,
        "SELECT resource_name, count(*) AS accounts, sum(has_password) AS with_password "
        "FROM report_accounts GROUP BY resource_name ORDER BY resource_name",
        IP,
    )
    assert table.columns == ["resource_name", "accounts", "with_password"]
    assert [list(r) for r in table.rows] == [
        ["db-secret-7", 2, 2],
        ["web-01", 2, 2],
        ["zz-hidden-9", 1, 1],
    ]
    joined = services.query_reports.run(
        world.admin,
        "WITH shared AS (SELECT resource_id FROM report_shares WHERE resource_id IS NOT NULL) "
        "SELECT r.name, r.department FROM report_resources r "
        "WHERE r.id IN (SELECT resource_id FROM shared) AND r.name LIKE '%web%'",
        IP,
    )
    assert [list(r) for r in joined.rows] == [["web-01", "=ops"]]
    assert "'=ops" in to_csv(joined) and b'<field name="department">=ops</field>' in to_xml(joined)
    last = services.audit_query.search(world.admin, AuditFilter(operation="run query report"))
    assert last.entries[0].result == "success" and "report_resources" in last.entries[0].target
    # The row holds the SQL, which names resources the auditor may not see: auditors who
    # do not see everything get no query-report rows, not even by filtering on the text.
    for flt in (AuditFilter(operation="run query report"), AuditFilter(resource="web")):
        seen = services.audit_query.search(world.auditor, flt)
        assert all(e.operation != "run query report" for e in seen.entries), flt
    assert services.audit_query.search(world.auditor, AuditFilter(category="user")).total > 0


REFUSED = [
    ("INSERT INTO report_users (username) VALUES ('x')", "single SELECT"),
    ("UPDATE accounts SET username = 'x'", "single SELECT"),
    ("DELETE FROM report_accounts", "single SELECT"),
    ("DROP VIEW report_accounts", "single SELECT"),
    ("DROP TABLE accounts", "single SELECT"),
    ("SELECT 1 FROM report_users; DELETE FROM accounts", "found 2 statements"),
    ("SELECT * FROM report_users; SELECT * FROM report_users", "found 2 statements"),
    (
        "WITH gone AS (DELETE FROM accounts RETURNING id) SELECT * FROM gone",
        "read-only SELECT",
    ),
    ("PRAGMA writable_schema = ON", "SELECT"),
    ("ATTACH DATABASE '/tmp/evil.db' AS evil", "SELECT"),
    ("SELECT password_ct FROM accounts", "'accounts' is not a report view"),
    ("SELECT * FROM report_users u JOIN users x ON x.id = u.id", "'users' is not a report view"),
    ("WITH accounts AS (SELECT * FROM accounts) SELECT * FROM accounts", "names a table"),
    (
        "SELECT * FROM (WITH x AS (SELECT 1 AS a) SELECT * FROM x) y, accounts",
        "'accounts' is not a report view",
    ),
    ("SELECT * FROM report_users u, (SELECT * FROM api_tokens) t", "not a report view"),
    ("SELECT * FROM main.report_users", "without a schema"),
    ("SELECT * FROM public.report_users", "without a schema"),
    ("SELECT * FROM sqlite_master", "not a report view"),
    ("SELECT * FROM pg_catalog.pg_user", "without a schema"),
    ("SELECT * INTO stolen FROM report_users", "read-only SELECT"),
    ("SELECT * FROM report_users FOR UPDATE", "read-only SELECT"),
    ("SELECT pg_read_file('/etc/passwd') FROM report_users", "pg_read_file() is not allowed"),
    ("SELECT query_to_xml('select * from accounts', true, true, '')", "not allowed"),
    ("SELECT load_extension('x') FROM report_users", "not allowed"),
    ("SELECT pg_sleep(30) FROM report_users", "not allowed"),
    # named as written (sqlglot calls it CURRENT_VERSION)
    ("SELECT sqlite_version() FROM report_users", "the function sqlite_version() is not"),
    ("SELECT random() FROM report_users", "the function random() is not allowed"),
    ("SELECT 1", "at least one report view"),
    # SQLite's "x IN table": a whole base table, named where a column could be
    ("SELECT username FROM report_users WHERE '0003' IN alembic_version", "'IN' followed by"),
    ("SELECT 1 FROM report_users WHERE (NULL, 'x') IN accounts", "'IN' followed by"),
    ("SELECT 1 FROM report_users WHERE id IN main.accounts", "'IN' followed by"),
    ("SELECT * FROM report_users WHERE id = ?", "read-only SELECT"),
    ("VACUUM", "SELECT"),
    ("", "enter a SELECT"),
    ("SELEC * FROM report_users", "SELECT"),
]


def test_refused_and_nothing_changed(services: Services, world: World) -> None:
    for sql, why in REFUSED:
        before = _state(services)
        with pytest.raises(QueryRefusedError) as err:
            services.query_reports.run(world.admin, sql, IP)
        assert why in str(err.value), sql
        assert _state(services) == before, sql
        rows = services.audit_query.search(world.admin, AuditFilter(operation="run query report"))
        assert rows.entries[0].result == "failure", sql
        assert rows.total == REFUSED.index((sql, why)) + 1


def test_read_only_connection_clear_errors_admins_only(services: Services, world: World) -> None:
    """The separate connection itself refuses writes (the last wall); a database error is
    one clear line; only administrators may run query reports."""
    from sqlalchemy.exc import DBAPIError

    before = _state(services)
    with pytest.raises(DBAPIError), services.query_reports._reader.session() as s:  # noqa: SLF001
        s.connection().exec_driver_sql("DELETE FROM accounts")
    assert _state(services) == before
    # a database error is one clear line
    with pytest.raises(ValidationError) as err:
        services.query_reports.run(world.admin, "SELECT no_such_column FROM report_users", IP)
    assert str(err.value).startswith("the database refused the query:")
    assert "no_such_column" in str(err.value) and "\n" not in str(err.value)
    # and only administrators run query reports
    for who in (world.auditor, world.pwadmin, world.user):
        with pytest.raises(PermissionDeniedError):
            services.query_reports.run(who, "SELECT * FROM report_users", IP)


def test_endless_query_is_stopped(services: Services, world: World) -> None:
    services.query_reports.time_limit_s = 0.5
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT count(*) FROM n, report_users"
    )
    with pytest.raises(ValidationError) as err:
        services.query_reports.run(world.admin, endless, IP)
    assert "was stopped" in str(err.value)


def test_documented_examples_run(services: Services, world: World) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "query-reports.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 3
    ran = 0
    for sql in blocks:
        if "INTERVAL" in sql and services.store.dialect == "sqlite":
            continue  # the PostgreSQL spelling of date arithmetic
        table = services.query_reports.run(world.admin, sql, IP)
        assert table.columns, sql
        ran += 1
    assert ran >= 2
    documented = set(re.findall(r"^### (report_\w+)", doc, flags=re.M))
    documented |= set(re.findall(r"^### report_\w+, (report_\w+)", doc, flags=re.M))
    assert documented == set(REPORT_VIEWS)


def _last_run(services: Services, world: World) -> tuple[str, str, str]:
    rows = services.audit_query.search(world.admin, AuditFilter(operation="run query report"))
    last = rows.entries[0]
    return last.result, last.target, last.detail


def test_what_a_run_brings_back_is_bounded_and_every_run_is_audited(
    services: Services, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node import query_reports

    monkeypatch.setattr(query_reports, "MAX_RESULT_CHARS", 40)
    with pytest.raises(ValidationError, match="larger than"):
        services.query_reports.run(world.admin, "SELECT username, full_name FROM report_users", IP)
    result, _target, detail = _last_run(services, world)
    assert result == "failure" and "larger than" in detail
    monkeypatch.undo()
    # the audit row holds the query that ran, not comments that could hide it
    hidden = "/* " + "nothing to see here " * 40 + "*/ SELECT username FROM report_users"
    services.query_reports.run(world.admin, hidden, IP)
    result, target, _detail = _last_run(services, world)
    assert result == "success" and "nothing to see" not in target
    assert "username" in target and "report_users" in target
    if services.store.dialect == "postgresql":
        # a value the driver cannot turn into Python: a clear refusal, audited, not a 500
        for sql in (
            "SELECT CAST('10000-01-01' AS date) FROM report_users",
            "SELECT CAST('0001-01-01 BC' AS date) FROM report_users",
        ):
            with pytest.raises(ValidationError, match="cannot be shown"):
                services.query_reports.run(world.admin, sql, IP)
            assert _last_run(services, world)[0] == "failure"


def test_rows_past_the_cap_are_never_fetched(services: Services, world: World) -> None:
    # Row 15,000 fails on PostgreSQL (division by zero); only 10,001 rows may ever leave
    # the database, so the run succeeds with the first 10,000. A driver that pulled the
    # whole result into the node's memory (any number of rows) would meet the error.
    sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "SELECT i, 1 / (i - 15000) AS x FROM n WHERE EXISTS (SELECT 1 FROM report_users)"
    )
    table = services.query_reports.run(world.admin, sql, IP)
    assert len(table.rows) == 10_000 and table.note
    assert table.columns == ["i", "x"]
    assert [row[0] for row in table.rows[:3]] == [1, 2, 3]
    # a result with no row still names its columns
    empty = services.query_reports.run(world.admin, "SELECT id FROM report_users WHERE 1 = 0", IP)
    assert empty.columns == ["id"] and empty.rows == []


# SQLite's own length limit, lowered; PostgreSQL caps a value at 1 GB itself
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_value_cannot_grow_past_the_result_cap(services: Services, world: World) -> None:
    assert services.store.dialect == "sqlite"
    # SQLite would build a string of up to 1e9 bytes in the node's memory, in one step
    # that its time limit cannot interrupt: the read-only connection is limited instead.
    sql = (
        "WITH RECURSIVE r(s, k) AS (SELECT 'x', 0 UNION ALL SELECT s || s, k + 1 FROM r "
        "WHERE k < 27) SELECT max(length(s)) AS n FROM r, report_users"
    )
    with pytest.raises(ValidationError, match="grew longer than"):
        services.query_reports.run(world.admin, sql, IP)
    assert _last_run(services, world)[0] == "failure"
    # the limit is the query report's own: other reads on that connection are as before
    with services.audit_query._reader.session() as session:  # noqa: SLF001
        raw = session.connection().connection.dbapi_connection
        assert raw is not None
        assert raw.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) == 1_000_000_000
