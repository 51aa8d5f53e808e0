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
transaction the same way on SQLite, an INSERT's rows going in a few multi-row statements
(each statement is a call into SQLite, for which the thread gives the GIL up and takes it
back: per row, that hand-over slows the event loop's thread more than the insert costs).
On PostgreSQL SQLAlchemy's own path is kept: it too sends multi-row INSERTs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from keyword import iskeyword
from typing import Any, TypeVar

from sqlalchemy import Insert, Select, Update, bindparam
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError

from node.errors import StoreError
from node.store.dialect import sqlite_file, sqlite_read_only

_CACHE_SIZE = 128  # compiled statements kept (the hot paths use a handful)
# Rows per many-row statement (a multi-row INSERT on SQLite, the last-access UPDATE): the
# rows are cut into statements of these sizes (13 rows: 8 + 4 + 1), so each such statement
# is compiled for a few sizes only.
_CHUNK_SIZES = (32, 16, 8, 4, 2, 1)
_Convert = Callable[[Any], Any]
T = TypeVar("T")
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


_compiled: dict[tuple[int, str, tuple[str, ...]], tuple[object, Any]] = {}
_compiled_lock = threading.Lock()


def _cached(statement: object, dialect: Dialect, keys: tuple[str, ...], make: Callable[[], T]) -> T:
    """``make()``'s compiled form of ``statement`` for ``dialect`` (and, for an INSERT, the
    columns ``keys``), made once. The statement is kept with it, so its id() cannot be
    reused by another while cached."""
    key = (id(statement), dialect.name, keys)
    hit = _compiled.get(key)
    if hit is not None and hit[0] is statement:
        made: T = hit[1]
        return made
    made = make()
    with _compiled_lock:
        if len(_compiled) >= _CACHE_SIZE:
            _compiled.clear()
        _compiled[key] = (statement, made)
    return made


@dataclass(frozen=True)
class _Prepared:
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

    __slots__ = ("_cursor", "_dialect")

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def execute(self, statement: AnySelect, params: Mapping[str, Any] | None = None) -> PointResult:
        dialect = self._dialect
        p = _cached(statement, dialect, (), lambda: _prepare(statement, dialect))
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
    """The store's source of :class:`PointReader`: on a SQLite file, one read-only
    connection per thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # resolved now: a relative path means the working directory of the store's opening
        self._path = sqlite_file(engine.url)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[sqlite3.Connection] = []
        self._closed = False

    def _thread_connection(self, path: str) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise StoreError("the database is closed")
                conn = sqlite_read_only(path)
                self._opened.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def reader(self) -> Iterator[PointReader]:
        if self._closed:
            raise StoreError("the database is closed")
        dialect = self._engine.dialect
        cursor: Any
        if self._path is not None:
            cursor = self._thread_connection(self._path).cursor()
            try:
                yield PointReader(cursor, dialect)
            finally:
                cursor.close()
            return
        pooled = self._engine.raw_connection()
        try:
            cursor = pooled.cursor()
            try:
                yield PointReader(cursor, dialect)
            finally:
                cursor.close()
        finally:
            pooled.close()  # back to the pool, which rolls back what the reads began

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


def _prepared_write(statement: Insert | Update, keys: tuple[str, ...], dialect: Dialect) -> _Binds:
    # An INSERT names the columns the rows carry; an UPDATE's parameters are its own binds.
    if isinstance(statement, Insert):
        return _cached(
            statement, dialect, keys, lambda: _binds(statement, dialect, column_keys=list(keys))
        )
    return _cached(statement, dialect, (), lambda: _binds(statement, dialect))


def _prepared_insert(
    statement: Insert, keys: tuple[str, ...], rows: int, dialect: Dialect
) -> _Binds:
    """``statement`` as one INSERT of ``rows`` rows carrying ``keys``; row i's values are
    bound as ``{key}__{i}``."""
    if rows == 1:
        return _prepared_write(statement, keys, dialect)

    def make() -> _Binds:
        columns = statement.table.c
        values = [
            {k: bindparam(f"{k}__{i}", type_=columns[k].type) for k in keys} for i in range(rows)
        ]
        return _binds(statement.values(values), dialect)

    return _cached(statement, dialect, (*keys, f"*{rows} rows"), make)


def numbered(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The parameters of one statement carrying ``rows``: row i's value of ``key`` bound as
    ``{key}__{i}`` (the names :func:`_prepared_insert` and the vault's many-row UPDATE use)."""
    return {f"{k}__{i}": v for i, row in enumerate(rows) for k, v in row.items()}


def in_chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` cut into runs of the sizes a many-row statement is compiled for (32, 16,
    8, 4, 2, 1: 13 items are 8 + 4 + 1), so each such statement has a few shapes only."""
    start = 0
    for size in _CHUNK_SIZES:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


def write_rows(
    conn: Connection, statement: Insert | Update, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run ``statement`` once per parameter row (all rows with the same keys) in ``conn``'s
    transaction. On SQLite it goes straight to the DB-API cursor, compiled once (an INSERT
    as a few multi-row statements); a DB-API error comes out as SQLAlchemy's (an
    OperationalError, ...), like any statement's, its parameters hidden."""
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name != "sqlite":
        conn.execute(statement, list(rows))
        return
    keys = tuple(rows[0].keys())
    cursor = conn.connection.cursor()
    base = dialect.loaded_dbapi.Error
    sql = ""
    try:
        if isinstance(statement, Insert):
            for chunk in in_chunks(rows):
                binds = _prepared_insert(statement, keys, len(chunk), dialect)
                sql = binds.sql
                given = numbered(chunk) if len(chunk) > 1 else chunk[0]
                cursor.execute(sql, binds.args(given))
        else:
            binds = _prepared_write(statement, keys, dialect)
            sql = binds.sql
            args: Any = [binds.args(row) for row in rows]
            cursor.executemany(sql, args)
    except base as exc:
        raise DBAPIError.instance(
            sql, None, exc, base, hide_parameters=True, dialect=dialect
        ) from exc
    finally:
        cursor.close()
