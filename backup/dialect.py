"""The backup package's only dialect-aware code: a consistent read snapshot for export,
dropping everything for ``restore --force``, and putting PostgreSQL's id sequences past the
restored rows. Everything else in backup/
is portable SQLAlchemy Core."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from sqlalchemy import Integer, MetaData, Table, create_engine, event, func, inspect, select, text
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
