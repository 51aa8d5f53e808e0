"""The only place that knows which database it is talking to."""

from __future__ import annotations

import hashlib
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, create_engine, event, func, select, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

T = TypeVar("T", bound=Any)


def for_update(session: Session, stmt: Select[T]) -> Select[T]:
    """Lock the selected rows until commit. PostgreSQL needs FOR UPDATE; SQLite's write
    transactions (BEGIN IMMEDIATE, see ``db.make_engine``) already hold the database lock."""
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update()
    return stmt


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def serialize_on(session: Session, *key: str) -> None:
    """Make write transactions that name the same ``key`` take turns until they end, so
    that a check followed by a write (a name unique regardless of case, which no index
    here enforces) cannot be passed by two of them at once. PostgreSQL: a transaction-level
    advisory lock on a 64-bit hash of the key. SQLite: nothing to do, its write
    transactions (BEGIN IMMEDIATE) already run one at a time."""
    if not is_postgres(session):
        return
    digest = hashlib.sha256("\x1f".join(key).encode()).digest()
    lock_id = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def unused_id(session: Session, key: Any, *named_by: Any) -> int | None:
    """An id for a new row of ``key``'s table (its primary key column) that no row has had:
    None on PostgreSQL, whose sequences never give an id twice; on SQLite, which gives
    max(id) + 1 again once the highest row is deleted, one above both the table's ids and
    those the columns ``named_by`` hold (the audit trail's, so that its rows about a
    deleted account never become rows about a new one). Each column needs an index."""
    if is_postgres(session):
        return None
    return 1 + max(session.scalar(select(func.max(col))) or 0 for col in (key, *named_by))


# --- read-only access (audit verification, query reports) ----------------------------------


def sqlite_file(url: URL) -> str | None:
    """The absolute path of the SQLite database file ``url`` names, or None when it is not
    one (another dialect, an in-memory database, a URI-form name or URL options)."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:") or url.query:
        return None
    return str(Path(database).absolute())


def sqlite_read_only(path: str) -> sqlite3.Connection:
    """A connection to the SQLite file at ``path`` that cannot write (``mode=ro`` and
    ``PRAGMA query_only``), in autocommit mode: each statement reads its own snapshot unless
    the caller issues BEGIN."""
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
    conn.isolation_level = None
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def read_only_engine(url: str) -> Engine:
    """An engine whose transactions cannot write, each one a consistent snapshot.

    Connections are not pooled (reads here are rare: verification, query reports), so
    nothing stays open between them. SQLite: a separate connection opened with ``mode=ro``
    and ``PRAGMA query_only=ON``;
    a deferred BEGIN takes no write lock, so readers never block the node's writers.
    PostgreSQL: every transaction starts ``REPEATABLE READ READ ONLY``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(parsed)
        if path is None:
            raise ValueError("a read-only view needs a SQLite database file")
        engine = create_engine(
            "sqlite://", creator=lambda: sqlite_read_only(path), poolclass=NullPool
        )
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    engine = create_engine(url, poolclass=NullPool)
    event.listen(
        engine,
        "begin",
        lambda conn: conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        ),
    )
    return engine


@contextmanager
def statement_deadline(conn: Connection, seconds: float) -> Iterator[None]:
    """Abort a statement on ``conn`` (inside a transaction) that runs longer than
    ``seconds``: PostgreSQL's ``statement_timeout``, SQLite's progress handler."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(seconds * 1000)}")
        yield
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    deadline = time.monotonic() + seconds
    raw.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10000)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)


class ReadOnlyStore:
    """Read-only sessions on the same database as a writable engine, opened lazily."""

    def __init__(self, writable: Engine) -> None:
        self._url = writable.url.render_as_string(hide_password=False)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = read_only_engine(self._url)
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one read-only snapshot transaction, rolled back at the end."""
        with Session(self.engine) as session, session.begin():
            yield session
            session.rollback()

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
