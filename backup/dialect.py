"""The backup package's only dialect-aware code: a consistent read snapshot for export,
dropping everything for ``restore --force``, PostgreSQL's COPY for loading, and putting its
id sequences past the restored rows. Everything else in backup/
is portable SQLAlchemy Core."""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Integer,
    MetaData,
    Select,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url


def reset_sequences(conn: Connection, tables: list[Table]) -> None:
    """After rows were inserted with explicit ids, make PostgreSQL's serial sequences hand
    out ids above them (SQLite needs nothing: it uses max(rowid) + 1)."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer):
            continue
        column = pk[0]
        seq = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
        ).scalar()
        if seq is None:
            continue
        top = conn.execute(select(func.max(column))).scalar()
        conn.execute(
            text("SELECT setval(CAST(:s AS regclass), :v, :called)"),
            {"s": seq, "v": int(top) if top is not None else 1, "called": top is not None},
        )


def drop_everything(conn: Connection) -> None:
    """Drop every view and table of the database ``conn`` is in (``restore --force``)."""
    quote = conn.dialect.identifier_preparer.quote
    for view in inspect(conn).get_view_names():
        conn.execute(text(f"DROP VIEW IF EXISTS {quote(view)}"))
    existing = MetaData()
    existing.reflect(conn)
    existing.drop_all(conn)


def _sqlite_reader(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, check_same_thread=False, timeout=30
    )
    conn.isolation_level = None  # the "begin" listener issues a deferred BEGIN
    conn.execute("PRAGMA query_only=ON")
    return conn


def snapshot_engine(url: str) -> Engine:
    """An engine whose transactions each read one consistent snapshot and never block the
    node's writers: on SQLite a separate read-only connection with a deferred BEGIN (WAL
    readers see the database as of their first read); on PostgreSQL REPEATABLE READ, READ
    ONLY."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = str(Path(parsed.database or "").absolute())
        engine = create_engine("sqlite://", creator=lambda: _sqlite_reader(path))
        event.listen(engine, "begin", lambda c: c.exec_driver_sql("BEGIN DEFERRED"))
        return engine
    engine = create_engine(url, pool_size=1, max_overflow=0)
    event.listen(
        engine,
        "begin",
        lambda c: c.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
    )
    return engine


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(text) else text


def _copy_bool(value: Any) -> str:
    return "t" if value else "f"


def _copy_bytes(value: Any) -> str:
    return "\\\\x" + base64.b64decode(value).hex()


def _copy_json(value: Any) -> str:
    return _copy_text(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _copy_field(kind: str, column: tuple[Any, ...]) -> Callable[[Any], str]:
    if kind == "bytes":
        return _copy_bytes
    if kind == "json":
        return _copy_json
    sample = next((v for v in column if v is not None), None)
    if isinstance(sample, bool):
        return _copy_bool
    if isinstance(sample, int | float):
        return str
    return _copy_text


def copy_rows(
    conn: Connection, table: Table, columns: list[str], kinds: list[str], rows: list[list[Any]]
) -> None:
    """PostgreSQL's fast path: load rows (values as they travel in an archive's JSON) with
    COPY ... FROM STDIN in text format, the way pg_restore loads data. Works column by
    column, choosing each column's formatter once per batch."""
    out: list[list[str]] = []
    for kind, column in zip(kinds, zip(*rows, strict=True), strict=True):
        fn = _copy_field(kind, column)
        out.append(["\\N" if v is None else fn(v) for v in column])
    buf = io.StringIO("\n".join(map("\t".join, zip(*out, strict=True))) + "\n")
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cur: Any = raw.cursor()
    try:
        cur.copy_expert(sql, buf)
    finally:
        cur.close()


def stream_rows(conn: Connection, stmt: Select[Any], batch: int) -> Iterator[list[Any]]:
    """The raw DBAPI rows of ``stmt`` (no bound parameters) in lists of ``batch``, read
    through a server-side cursor on PostgreSQL so memory stays bounded; SQLite's cursor
    streams by itself."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    sql = str(stmt.compile(dialect=conn.dialect))
    cur: Any
    if conn.dialect.name == "postgresql":
        cur = raw.cursor(name=f"sr_backup_{secrets.token_hex(6)}")
        cur.itersize = batch
    else:
        cur = raw.cursor()
    try:
        cur.execute(sql)
        while part := cur.fetchmany(batch):
            yield part
    finally:
        cur.close()


def insert_rows(conn: Connection, table: Table, columns: list[str], rows: list[list[Any]]) -> None:
    """Load decoded rows through the DBAPI's executemany with SQLAlchemy's own bind
    processors for each column type (what ``conn.execute(insert, dicts)`` does, without
    building a dict and compiling parameters for every row)."""
    dialect = conn.dialect
    steps = []
    for i, name in enumerate(columns):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            steps.append((i, process))
    for values in rows:
        for i, fn in steps:
            values[i] = fn(values[i])
    stmt = table.insert().compile(dialect=dialect, column_keys=columns)
    params = compiled_positions(stmt, columns)
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cur: Any = raw.cursor()
    try:
        cur.executemany(str(stmt), [tuple(v[i] for i in params) for v in rows])
    finally:
        cur.close()


def compiled_positions(stmt: Any, columns: list[str]) -> list[int]:
    """The index in ``columns`` of each positional parameter of a compiled INSERT."""
    order = list(stmt.positiontup or []) if stmt.positional else list(columns)
    return [columns.index(name) for name in order]
