"""Point reads and batched writes on the DB-API cursor, for the hot paths (a REST API
password fetch and the group commit of its audit row).

A SQLAlchemy Core ``execute`` costs about ten times the SQLite query it runs (execution
context, result metadata, events), and a pooled connection's checkout and return cost as
much again. The few statements on a hot path are still written once, as Core statements
(the one place their rules live); :class:`PointReader` compiles each for the store's
dialect once and then runs it straight on the DB-API cursor, applying the column types'
bind and result conversions itself, so its rows look like SQLAlchemy's (``row.name``).

On a SQLite file each thread keeps one read-only connection of its own (``PRAGMA
query_only``: nothing can be written through it), opened with the store and closed with
it. Elsewhere (PostgreSQL, in-memory SQLite) a reading borrows a pooled connection.

:func:`write_rows` runs an INSERT or UPDATE for many parameter rows in a Core connection's
transaction the same way on SQLite (on PostgreSQL SQLAlchemy's own path is kept: it sends
one multi-row INSERT where the DB-API would make a round trip per row).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from keyword import iskeyword
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, Select, Update
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError

from node.errors import StoreError

_CACHE_SIZE = 128  # statements compiled per store (the hot paths use a handful)
_Convert = Callable[[Any], Any]
AnySelect = Select[*tuple[Any, ...]]
_row_type: Callable[[str, list[str]], type[tuple[Any, ...]]] = namedtuple


@dataclass(frozen=True)
class _Binds:
    """A statement compiled for one dialect: its SQL and how to turn a caller's parameters
    into the DB-API's (values bound in the statement itself, conversions, order)."""

    sql: str
    positions: tuple[str, ...] | None  # parameter names in order (qmark), None if named
    defaults: dict[str, Any]  # values bound in the statement itself
    required: frozenset[str]  # parameters the caller must give
    convert: dict[str, _Convert]

    def args(self, given: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        if self.required and not self.required <= given.keys():
            missing = ", ".join(sorted(self.required - given.keys()))
            raise StoreError(f"a prepared statement is missing its parameters: {missing}")
        values = {**self.defaults, **given}  # a copy: the defaults stay as compiled
        for name, convert in self.convert.items():
            values[name] = convert(values[name])
        return values if self.positions is None else [values[n] for n in self.positions]


def _binds(statement: Any, dialect: Dialect, **compile_kw: Any) -> _Binds:
    compiled = statement.compile(dialect=dialect, **compile_kw)
    if compiled.post_compile_params:
        raise StoreError("a prepared statement cannot take expanding (IN list) parameters")
    prefetch = [c.key for c in (*compiled.insert_prefetch, *compiled.update_prefetch)]
    if prefetch:  # column defaults SQLAlchemy would compute in Python at execution
        raise StoreError(f"a prepared write must give every column it sets: {prefetch}")
    names = compiled.bind_names  # bind -> its name in the SQL and in compiled.params
    convert: dict[str, _Convert] = {}
    for bind, name in names.items():
        proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if proc is not None:
            convert[name] = proc
    positions = compiled.positiontup
    return _Binds(
        sql=compiled.string,
        positions=tuple(positions) if positions is not None else None,
        defaults=dict(compiled.params),
        required=frozenset(name for bind, name in names.items() if bind.required),
        convert=convert,
    )


@dataclass(frozen=True)
class _Prepared:
    statement: AnySelect  # kept so its id() cannot be reused while cached
    binds: _Binds
    row: type[tuple[Any, ...]]
    result_convert: tuple[tuple[int, _Convert], ...]


def _prepare(statement: AnySelect, dialect: Dialect) -> _Prepared:
    if not isinstance(statement, Select):
        raise StoreError("a point read runs SELECT statements only")
    keys = list(statement.selected_columns.keys())
    if not all(k.isidentifier() and not k.startswith("_") and not iskeyword(k) for k in keys):
        raise StoreError(f"a point read needs column names that are identifiers, got {keys}")
    binds = _binds(statement, dialect)
    result_convert = []
    for i, column in enumerate(statement.selected_columns):
        proc = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if proc is not None:
            result_convert.append((i, proc))
    return _Prepared(
        statement=statement,
        binds=binds,
        row=_row_type("Row", keys),
        result_convert=tuple(result_convert),
    )


class PointResult:
    """The rows of one point read (all fetched): the part of SQLAlchemy's Result that the
    hot paths use."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise StoreError(f"expected one row, got {len(self._rows)}")
        return self._rows[0][0]

    def scalars(self) -> list[Any]:
        return [r[0] for r in self._rows]


class PointReader:
    """Runs SELECT statements on one DB-API connection (see the module docstring). Each
    statement reads its own committed snapshot: use it where reads need not agree with
    each other as of one instant (a key lookup, then rows that hang off it)."""

    __slots__ = ("_cursor", "_prepare")

    def __init__(self, cursor: Any, prepare: Callable[[AnySelect], _Prepared]) -> None:
        self._cursor = cursor
        self._prepare = prepare

    def execute(self, statement: AnySelect, params: Mapping[str, Any] | None = None) -> PointResult:
        p = self._prepare(statement)
        cur = self._cursor
        cur.execute(p.binds.sql, p.binds.args(params or {}))
        raw = cur.fetchall()
        if p.result_convert:
            rows = []
            for r in raw:
                out = list(r)
                for i, convert in p.result_convert:
                    out[i] = convert(out[i])
                rows.append(p.row._make(out))  # type: ignore[attr-defined]
        else:
            make = p.row._make  # type: ignore[attr-defined]
            rows = [make(r) for r in raw]
        return PointResult(rows)


class PointReads:
    """The store's source of :class:`PointReader`: compiled statements, and on a SQLite
    file one read-only connection per thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._cache: OrderedDict[int, _Prepared] = OrderedDict()
        self._cache_lock = threading.Lock()
        url = engine.url
        database = url.database or ""
        self._sqlite_file = (
            url.get_backend_name() == "sqlite"
            and database not in ("", ":memory:")
            and not database.startswith("file:")
            and not url.query
        )
        # resolved now: a relative path means the working directory of the store's opening
        self._path = str(Path(database).resolve()) if self._sqlite_file else database
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._closed = False

    def prepared(self, statement: AnySelect) -> _Prepared:
        key = id(statement)
        p = self._cache.get(key)
        if p is not None and p.statement is statement:
            return p
        p = _prepare(statement, self._dialect)
        with self._cache_lock:
            self._cache[key] = p
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return p

    def _thread_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._cache_lock:
                if self._closed:
                    raise StoreError("the database is closed")
                conn = sqlite3.connect(
                    self._path, timeout=10, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA query_only=ON")
                conn.execute("PRAGMA busy_timeout=10000")
                self._opened.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def reader(self) -> Iterator[PointReader]:
        if self._closed:
            raise StoreError("the database is closed")
        cursor: Any
        if self._sqlite_file:
            cursor = self._thread_connection().cursor()
            try:
                yield PointReader(cursor, self.prepared)
            finally:
                cursor.close()
            return
        pooled = self._engine.raw_connection()
        try:
            cursor = pooled.cursor()
            try:
                yield PointReader(cursor, self.prepared)
            finally:
                cursor.close()
        finally:
            pooled.close()  # back to the pool, which rolls back what the reads began

    def close(self) -> None:
        with self._cache_lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


_writes: dict[tuple[int, tuple[str, ...], str], tuple[Insert | Update, _Binds]] = {}
_writes_lock = threading.Lock()


def _prepared_write(statement: Insert | Update, keys: tuple[str, ...], dialect: Dialect) -> _Binds:
    key = (id(statement), keys, dialect.name)
    hit = _writes.get(key)
    if hit is not None and hit[0] is statement:
        return hit[1]
    # An INSERT names the columns the rows carry; an UPDATE's parameters are its own binds.
    extra = {"column_keys": list(keys)} if isinstance(statement, Insert) else {}
    binds = _binds(statement, dialect, **extra)
    with _writes_lock:
        if len(_writes) >= _CACHE_SIZE:
            _writes.clear()
        _writes[key] = (statement, binds)
    return binds


def write_rows(
    conn: Connection, statement: Insert | Update, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run ``statement`` once per parameter row (all rows with the same keys) in ``conn``'s
    transaction. On SQLite it goes straight to the DB-API cursor, compiled once; a DB-API
    error comes out as SQLAlchemy's (an OperationalError, ...), like any statement's, its
    parameters hidden."""
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name != "sqlite":
        conn.execute(statement, list(rows))
        return
    binds = _prepared_write(statement, tuple(rows[0].keys()), dialect)
    args: Any = [binds.args(row) for row in rows]
    cursor = conn.connection.cursor()
    base = dialect.loaded_dbapi.Error
    try:
        cursor.executemany(binds.sql, args)
    except base as exc:
        raise DBAPIError.instance(
            binds.sql, None, exc, base, hide_parameters=True, dialect=dialect
        ) from exc
    finally:
        cursor.close()
