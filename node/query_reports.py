"""Query reports: administrators run their own read-only SQL against the report views.

Four walls, each enough on its own for the common attacks, together for the rest:

1. The text must parse (sqlglot, in the store's dialect) as exactly one SELECT (a UNION of
   SELECTs counts); no other statement, no data-changing clause anywhere (a CTE that writes,
   ``SELECT INTO``, ``FOR UPDATE``), no parameters.
2. Every table it names is one of the documented report views (:data:`REPORT_VIEWS`, made
   by migration 0002, docs/query-reports.md) or a CTE of the query itself; never a base
   table, never a schema-qualified name, never a table function.
3. Every function is on an allow-list of ordinary SQL functions, so nothing like
   ``pg_read_file``, ``query_to_xml`` or ``load_extension`` can run.
4. What runs is the statement as sqlglot re-wrote it (what was checked is what runs), in a
   read-only transaction on a separate connection (PostgreSQL ``READ ONLY``; SQLite
   ``mode=ro`` with ``query_only``), under a time limit, and at most :data:`MAX_ROWS` rows
   are returned.

Each run, refused or not, is audited (user audit, ``run query report``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlalchemy.exc import SQLAlchemyError
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.optimizer.scope import traverse_scope

from node.audit import QUERY_REPORT_OPERATION, AuditEvent, AuditLog
from node.auth import SessionUser
from node.errors import PermissionDeniedError, ValidationError
from node.export import Table
from node.licence import Feature
from node.licence_service import LicenceService
from node.permissions import Action, allowed
from node.store.db import Store
from node.store.dialect import ReadOnlyStore, statement_deadline
from node.store.models import Base, utcnow

log = logging.getLogger("strongroom.query_reports")

MAX_SQL = 10_000
MAX_ROWS = 10_000
MAX_RESULT_CHARS = 20_000_000  # what one run may bring back, its values as text
# SQLite: the longest string or blob a query may build (SQLite's own default is 1e9 bytes,
# made in single steps that the time limit cannot interrupt)
MAX_VALUE_BYTES = 4 * MAX_RESULT_CHARS
_FETCH = 500
TIME_LIMIT_S = 10.0

REPORT_VIEWS: tuple[str, ...] = (
    "report_resources",
    "report_accounts",
    "report_password_changes",
    "report_users",
    "report_user_groups",
    "report_user_group_members",
    "report_resource_groups",
    "report_resource_group_members",
    "report_shares",
    "report_password_policies",
    "report_resource_types",
    "report_audit",
)

_ALLOWED_FUNCS: tuple[type[exp.Func], ...] = (
    exp.And,
    exp.Or,
    exp.Abs,
    exp.Avg,
    exp.Case,
    exp.Cast,
    exp.TryCast,
    exp.Ceil,
    exp.Floor,
    exp.Coalesce,
    exp.Concat,
    exp.ConcatWs,
    exp.Count,
    exp.CountIf,
    exp.CurrentDate,
    exp.CurrentTime,
    exp.CurrentTimestamp,
    exp.Date,
    exp.Datetime,
    exp.DateTrunc,
    exp.TimestampTrunc,
    exp.DateAdd,
    exp.DateSub,
    exp.DateDiff,
    exp.Day,
    exp.Month,
    exp.Year,
    exp.Extract,
    exp.Exists,
    exp.GroupConcat,
    exp.Greatest,
    exp.Least,
    exp.If,
    exp.Initcap,
    exp.Left,
    exp.Right,
    exp.Length,
    exp.Lower,
    exp.Upper,
    exp.Max,
    exp.Min,
    exp.Nullif,
    exp.Pad,
    exp.Replace,
    exp.Round,
    exp.RowNumber,
    exp.Rank,
    exp.DenseRank,
    exp.Lag,
    exp.Lead,
    exp.FirstValue,
    exp.LastValue,
    exp.Ntile,
    exp.Sign,
    exp.StrPosition,
    exp.Substring,
    exp.Sum,
    exp.TimeToStr,
    exp.ToChar,
    exp.TsOrDsToDate,
    exp.TsOrDsToTimestamp,
    exp.StrToTime,
    exp.StrToDate,
    exp.Trim,
    exp.Timestamp,
)
# Functions sqlglot does not model, but which are harmless date helpers.
_ALLOWED_ANONYMOUS = frozenset(
    {"strftime", "julianday", "datetime", "date", "time", "now", "age", "date_part", "ifnull"}
)
# Nodes that have no place in a read-only query, wherever they appear.
_FORBIDDEN: tuple[type[Any], ...] = (
    exp.DML,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Into,
    exp.Lock,
    exp.Placeholder,
    exp.Parameter,
    exp.Set,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Use,
    exp.Copy,
    exp.TruncateTable,
)
_UNREADABLE = "only a single SELECT is allowed; this could not be read as one"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class QueryRefusedError(ValidationError):
    """The text is not a single read-only SELECT on the report views."""


@dataclass(frozen=True)
class CheckedQuery:
    sql: str  # what will run: the statement as re-written from its syntax tree
    views: tuple[str, ...]


def _dialect(name: str) -> str:
    return "postgres" if name == "postgresql" else "sqlite"


def check_query(text: str, dialect: str) -> CheckedQuery:
    """Parse ``text`` and return the statement to run, or raise :class:`QueryRefusedError`
    naming why it is refused. ``dialect`` is SQLAlchemy's name: sqlite or postgresql."""
    text = text.strip()
    if not text:
        raise QueryRefusedError("enter a SELECT query")
    if len(text) > MAX_SQL:
        raise QueryRefusedError(f"the query is longer than {MAX_SQL} characters")
    read = _dialect(dialect)
    try:
        statements = [s for s in sqlglot.parse(text, read=read) if s is not None]
    except ParseError as exc:
        where = ""
        if exc.errors:
            first = exc.errors[0]
            where = f" (line {first.get('line')}, column {first.get('col')})"
        raise QueryRefusedError(
            f"only a single SELECT is allowed; this could not be read as one{where}"
        ) from None
    except SqlglotError:
        raise QueryRefusedError(
            "only a single SELECT is allowed; this could not be read as one"
        ) from None
    if len(statements) != 1:
        raise QueryRefusedError(
            f"only a single SELECT is allowed; found {len(statements)} statements"
        )
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.SetOperation):
        kind = tree.key.upper() if isinstance(tree, exp.Expression) else "statement"
        raise QueryRefusedError(f"only a single SELECT is allowed, not {kind}")
    forbidden = next((n for n in tree.walk() if isinstance(n, _FORBIDDEN)), None)
    if forbidden is not None:
        raise QueryRefusedError(
            f"only a read-only SELECT is allowed; the query contains {forbidden.key.upper()}"
        )
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    clash = sorted(n for n in ctes if _is_relation_name(n))
    if clash:
        raise QueryRefusedError(f"'{clash[0]}' names a table; give the WITH query another name")
    real = _real_tables(tree)
    views: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.In) and node.args.get("field") is not None:
            # SQLite reads "x IN name" as a test against a whole table: no report view
            # check would see that name (it is parsed as a column)
            raise QueryRefusedError(
                "'IN' followed by a name is not allowed: write IN (SELECT ... FROM a view)"
            )
        if isinstance(node, exp.Table):
            _check_table(node, id(node) in real, ctes, views)
        elif isinstance(node, exp.Anonymous):
            name = str(node.name).lower()
            if name not in _ALLOWED_ANONYMOUS:
                raise QueryRefusedError(f"the function {name}() is not allowed in query reports")
        elif isinstance(node, exp.Func) and type(node) not in _ALLOWED_FUNCS:
            raise QueryRefusedError(
                f"the function {_as_written(node, read)}() is not allowed in query reports"
            )
    if not views:
        raise QueryRefusedError(
            "the query must read at least one report view (see the list of views)"
        )
    try:
        sql = tree.sql(dialect=read, comments=False)
    except SqlglotError:
        raise QueryRefusedError("the query could not be prepared to run") from None
    return CheckedQuery(sql=sql, views=tuple(sorted(views)))


def _is_relation_name(name: str) -> bool:
    """A name that is (or may be) a real table or catalog relation of either dialect."""
    return (
        name in Base.metadata.tables
        or name in REPORT_VIEWS
        or name == "alembic_version"
        or name.startswith(("pg_", "sqlite_", "information_schema"))
    )


def _real_tables(tree: exp.Expression) -> set[int]:
    """The ids of the table nodes that name a real relation (not a CTE), resolved scope by
    scope as the database would."""
    try:
        scopes = traverse_scope(tree)
    except SqlglotError:
        raise QueryRefusedError(_UNREADABLE) from None
    return {
        id(source)
        for scope in scopes
        for source in scope.sources.values()
        if isinstance(source, exp.Table)
    }


def _as_written(func: exp.Func, read: str) -> str:
    """A function's name as the query's dialect spells it (sqlglot models SQLite's
    ``sqlite_version()`` as ``CURRENT_VERSION``, which the user never wrote)."""
    try:
        written = func.sql(dialect=read).split("(", 1)[0].strip()
    except SqlglotError:
        written = ""
    return (written or func.sql_name()).lower()


def _check_table(node: exp.Table, real: bool, ctes: set[str], views: set[str]) -> None:
    if not isinstance(node.this, exp.Identifier):
        raise QueryRefusedError("only report views can be read (no table functions)")
    name = node.name.lower()
    if node.args.get("db") or node.args.get("catalog"):
        raise QueryRefusedError(
            f"'{node.sql()}' is not allowed: name a report view without a schema"
        )
    if not real and name in ctes:
        return  # a WITH query of this statement (whose name is no table's, checked above)
    if name not in REPORT_VIEWS:
        raise QueryRefusedError(
            f"'{name}' is not a report view; query reports may read only: "
            + ", ".join(REPORT_VIEWS)
        )
    views.add(name)


class _TimeUp(Exception):
    pass


def _fetch(cursor: Any, deadline: float) -> list[tuple[Any, ...]]:
    """At most MAX_ROWS + 1 rows (one more says there were more), and at most about
    MAX_RESULT_CHARS characters of values in all (else a ValidationError: the answer, as
    a page, a CSV or an XML file, would be larger still)."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    while len(rows) <= MAX_ROWS:
        batch = cursor.fetchmany(min(_FETCH, MAX_ROWS + 1 - len(rows)))
        if not batch:
            break
        if time.monotonic() > deadline:  # a server-side cursor's time limit is per fetch
            raise _TimeUp
        for row in batch:
            size += sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)
        if size > MAX_RESULT_CHARS:
            raise ValidationError(
                f"the result is larger than {MAX_RESULT_CHARS // 1_000_000} million "
                "characters: select fewer rows or shorter values"
            )
        rows.extend(tuple(r) for r in batch)
    return rows


@contextmanager
def _value_limit(raw: Any, sqlite: bool) -> Iterator[None]:
    """On SQLite, no string or blob longer than MAX_VALUE_BYTES while the query runs (the
    connection's own limit is put back for its other readers)."""
    if not sqlite:
        yield
        return
    before = raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    try:
        yield
    finally:
        raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, before)


class QueryReportService:
    def __init__(
        self, store: Store, reader: ReadOnlyStore, audit: AuditLog, licence: LicenceService
    ) -> None:
        self._store = store
        self._reader = reader
        self._audit = audit
        self._licence = licence  # query reports need the Enterprise edition
        self.time_limit_s = TIME_LIMIT_S

    @property
    def dialect(self) -> str:
        return self._store.dialect

    def run(
        self,
        viewer: SessionUser,
        text: str,
        source_ip: str,
        *,
        now: dt.datetime | None = None,
    ) -> Table:
        """Check and run ``text`` as ``viewer``; refusals raise :class:`QueryRefusedError`
        (nothing runs), database errors :class:`ValidationError` with the database's
        one-line reason. Both outcomes are audited."""
        if not allowed(viewer.role, Action.RUN_QUERY_REPORTS):
            raise PermissionDeniedError("your role does not allow query reports")
        self._licence.require(Feature.QUERY_REPORTS)
        now = now or utcnow()
        recorded = text  # until it is checked; then what runs (comments gone)
        try:
            checked = check_query(text, self.dialect)
            recorded = checked.sql
            table = self._execute(checked)
        except ValidationError as exc:
            self._record(viewer, source_ip, recorded, "failure", str(exc), now)
            raise
        table.generated_at = now
        self._record(viewer, source_ip, recorded, "success", f"{len(table.rows)} rows", now)
        return table

    def _execute(self, checked: CheckedQuery) -> Table:
        # The DB-API cursor runs the text as it is: no driver-side parameter interpolation
        # (psycopg2 would otherwise read every "%" in a LIKE pattern as a placeholder).
        try:
            with self._reader.session() as session:
                conn = session.connection()
                driver_error: type[Exception] = conn.dialect.loaded_dbapi.Error
                raw = conn.connection.dbapi_connection
                assert raw is not None
                sqlite = conn.dialect.name == "sqlite"
                deadline = time.monotonic() + self.time_limit_s
                with statement_deadline(conn, self.time_limit_s), _value_limit(raw, sqlite):
                    # PostgreSQL: a server-side cursor, so that only the rows fetched
                    # leave the database (psycopg2's ordinary cursor takes the whole
                    # result into the node's memory first, whatever its size); SQLite's
                    # cursor steps through the result as it is fetched
                    cursor = raw.cursor() if sqlite else raw.cursor(name="query_report")
                    try:
                        cursor.execute(checked.sql)
                        rows = _fetch(cursor, deadline)
                        columns = [str(d[0]) for d in cursor.description or []]
                    except _TimeUp:
                        raise ValidationError(self._stopped()) from None
                    except driver_error as exc:
                        raise ValidationError(self._db_message(exc)) from None
                    except (ValueError, OverflowError) as exc:  # the driver's conversion
                        raise ValidationError(
                            f"the result holds a value that cannot be shown ({exc}); "
                            "cast it to text in the query"
                        ) from None
                    finally:
                        cursor.close()
        except SQLAlchemyError:
            log.exception("query report failed")
            raise ValidationError("the query could not be run") from None
        note = ""
        if len(rows) > MAX_ROWS:
            rows = rows[:MAX_ROWS]
            note = f"only the first {MAX_ROWS} rows are shown"
        return Table("Query report", columns, list(rows), note=note)

    def _stopped(self) -> str:
        return (
            "the database refused the query: the query ran longer than "
            f"{self.time_limit_s:g} seconds and was stopped"
        )

    def _db_message(self, exc: Exception) -> str:
        text = _ANSI.sub("", str(exc).strip())
        first = text.splitlines()[0][:300] if text else "query failed"
        if "interrupted" in first or "statement timeout" in first:
            return self._stopped()
        if "string or blob too big" in first:
            first = f"a value in the query grew longer than {MAX_VALUE_BYTES:,} bytes"
        return f"the database refused the query: {first}"

    def _record(
        self,
        viewer: SessionUser,
        source_ip: str,
        text: str,
        result: str,
        detail: str,
        now: dt.datetime,
    ) -> None:
        with self._store.transaction() as session:
            self._audit.append(
                session,
                AuditEvent(
                    operation=QUERY_REPORT_OPERATION,
                    username=viewer.username,
                    source_ip=source_ip,
                    target=" ".join(text.split())[:500],
                    category="user",
                    result=result,
                    detail=detail,
                ),
                now=now,
            )
