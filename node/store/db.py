"""Opening the database: engine set-up for SQLite and PostgreSQL, migrations at start,
and a transaction helper. Dialect-specific statements live in ``node.store.dialect``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.errors import StoreError

log = logging.getLogger("strongroom.store")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()
    # Let SQLAlchemy, not pysqlite, decide when a transaction begins (see make_engine).
    dbapi_conn.isolation_level = None


SQLITE_BUSY_SECONDS = 10  # as busy_timeout: how long a writer waits for SQLite's lock
READ_ONLY = "sr_read_only"  # execution option of the engine behind Store.sessions


def _sqlite_begin(conn: Any) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # No pool_pre_ping: a SQLite file has no connection to lose, only a SELECT to waste.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins, so that a
        # write transaction takes its lock at BEGIN (IMMEDIATE) and never upgrades late.
        # Read-only sessions (Store.sessions) begin DEFERRED: in WAL mode they read a
        # snapshot without waiting for, or holding up, the writer.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config(create_engine("sqlite://")))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def describe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


class Store:
    """The database of one node: an engine and a session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # ``sessions()`` is for reading (nothing in it is ever committed); ``transaction()``
        # is for writing. On SQLite the first begins DEFERRED, the second IMMEDIATE.
        self.sessions = sessionmaker(
            engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self._writer = sessionmaker(engine, expire_on_commit=False)
        self._write_lock = threading.RLock() if engine.dialect.name == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        if self._write_lock is None:
            with self._writer() as session, session.begin():
                yield session
            return
        # SQLite has one writer at a time. This node's writers queue on a lock, which hands
        # over as soon as a transaction ends, instead of on SQLite's busy handler, which
        # polls with sleeps of up to 100 ms and lets a waiter starve for seconds under load.
        # After SQLITE_BUSY_SECONDS without the lock, go on to BEGIN IMMEDIATE anyway: the
        # same wait and error as before, never a hang.
        locked = self._write_lock.acquire(timeout=SQLITE_BUSY_SECONDS)
        try:
            with self._writer() as session, session.begin():
                yield session
        finally:
            if locked:
                self._write_lock.release()

    def has_data(self) -> bool:
        return "keyring_meta" in inspect(self.engine).get_table_names()

    def migrate(self, revision: str = "head") -> None:
        command.upgrade(alembic_config(self.engine), revision)

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database at ``url``. Any failure becomes one
    :class:`StoreError` line naming the database, never its password."""
    where = describe_url(url)
    try:
        engine = make_engine(url)
        store = Store(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            if store.dialect == "sqlite":
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master")
        if migrate:
            store.migrate()
    except DatabaseError as exc:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        if "not a database" in text or "malformed" in text:
            raise StoreError(
                f"{where} is not a SQLite database (file is damaged or foreign)"
            ) from None
        if isinstance(exc, OperationalError):
            first = text.strip().splitlines()[0] if text.strip() else "connection failed"
            raise StoreError(f"cannot open database {where}: {first}") from None
        raise StoreError(f"database {where} failed: {text.splitlines()[0]}") from None
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open database {where}: {type(exc).__name__}") from None
    return store
