"""Opening the database: engine set-up for SQLite and PostgreSQL, migrations at start,
and a transaction helper. Dialect-specific statements live in ``node.store.dialect``."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.errors import AUDIT_NOT_WRITTEN, AuditWriteError, StoreError
from node.store.dialect import sqlite_file
from node.store.point_reads import PointReader, PointReads

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
# Group commit: under concurrency (the last batch held more than one work) the committer
# waits up to COMMIT_DELAY seconds, or until COMMIT_BATCH works are queued, before the next
# batch, as PostgreSQL's commit_delay does (measured: docs/benchmarks.md). A lone caller
# is never delayed.
COMMIT_DELAY = 0.001
COMMIT_BATCH = 16
READ_ONLY = "sr_read_only"  # execution option of the engine behind Store.sessions
AUDITED = "sr.audited"  # Session.info key: the transaction holds an audit row (node/audit.py)


def _sqlite_begin(conn: Any) -> None:
    options = conn.get_execution_options()
    conn.exec_driver_sql("BEGIN" if options.get(READ_ONLY, False) else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """The engine for ``url``. Its errors never show the values bound to a statement
    (``hide_parameters``): they are logged, and a value may be a secret's ciphertext, a
    token's hash or what a user typed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # No pool_pre_ping: a SQLite file has no connection to lose, only a SELECT to waste.
        # A pool as large as the node's worker threads: a connection returned beyond
        # pool_size is closed, and opening a new one (with its PRAGMAs) costs more than
        # the query it was for. (An in-memory database keeps SQLAlchemy's own pool.)
        on_disk = sqlite_file(parsed) is not None
        pool: dict[str, Any] = {"pool_size": 20, "max_overflow": 10} if on_disk else {}
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            hide_parameters=True,
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins, so that a
        # write transaction takes its lock at BEGIN (IMMEDIATE) and never upgrades late.
        # Read-only sessions (Store.sessions) begin DEFERRED: in WAL mode they read a
        # snapshot without waiting for, or holding up, the writer.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True
    )


T = TypeVar("T")
_TX_STATE = "sr.tx_state"  # Connection.info key: state of the group commit running on it
_BEFORE_COMMIT = "before_commit"


def transaction_state(conn: Connection) -> dict[str, Any] | None:
    """Per-transaction state of a group commit running on ``conn`` (None outside one), where
    code that appends many small rows may gather them and write them once at the end."""
    state: dict[str, Any] | None = conn.info.get(_TX_STATE)
    return state


def deferred_rows(
    conn: Connection, key: str, write: Callable[[Connection, list[dict[str, Any]]], None]
) -> list[dict[str, Any]]:
    """The list of parameter rows gathered under ``key`` in the group commit running on
    ``conn``: append to it, and ``write(conn, rows)`` runs once, before the COMMIT (in the
    transaction: if it raises, the batch rolls back), with all of them. The writes run in
    the order their keys were first asked for."""
    state = transaction_state(conn)
    if state is None:
        raise StoreError("deferred_rows outside a group commit")
    rows: list[dict[str, Any]] | None = state.get(key)
    if rows is None:
        gathered: list[dict[str, Any]] = []
        state[key] = rows = gathered
        state[_BEFORE_COMMIT].append(lambda c: write(c, gathered))
    return rows


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


WRITER_LOCK_SUFFIX = "-writer.lock"
_FIRST_WAIT = 0.00002  # seconds between looks at a taken writer lock: doubled up to ...
_LAST_WAIT = 0.0005  # ... this


class WriterTurns:
    """The turn to write a SQLite file, among processes: an exclusive ``flock`` on a file
    beside the database. A node writes from more than one process (its audit writer
    process, its web workers: appliance/web_workers.py); each process's writers already
    queue on the store's thread lock, and the processes take turns here, looking again
    within half a millisecond of the lock's release, where SQLite's busy handler would
    sleep up to 100 ms between looks (under load, the tail of every audited fetch)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self, deadline: float) -> bool:
        """Take the lock, waiting until ``deadline`` at most (then False: SQLite's own
        busy wait follows). A lock file that cannot be opened is never waited for."""
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return False
        wait = _FIRST_WAIT
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(wait)
                wait = min(wait * 2, _LAST_WAIT)
            except OSError:
                return False

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class Store:
    """The database of one node: an engine and a session factory."""

    def __init__(self, engine: Engine, commit_delay: float = COMMIT_DELAY) -> None:
        self.engine = engine
        self.commit_delay = commit_delay
        # ``sessions()`` is for reading (nothing in it is ever committed); ``transaction()``
        # is for writing. On SQLite the first begins DEFERRED, the second IMMEDIATE.
        self.sessions = sessionmaker(
            engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self._writer = sessionmaker(engine, expire_on_commit=False)
        self._point_reads = PointReads(engine)
        self._write_lock = threading.RLock() if engine.dialect.name == "sqlite" else None
        database = sqlite_file(engine.url)
        self._turns = WriterTurns(database + WRITER_LOCK_SUFFIX) if database is not None else None
        # group commit: works waiting for the committer thread (started on first use)
        self._queue: list[tuple[Callable[[Connection], Any], Future[Any]]] = []
        self._queue_cv = threading.Condition()
        self._committer: threading.Thread | None = None
        self._commit_conn: Connection | None = None  # the committer's own, on SQLite
        self._batch_listeners: list[Callable[[], None]] = []
        self._closed = False
        self._write_epoch = 0
        self._epoch_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Wait for this node's turn to write. SQLite has one writer at a time: this node's
        writers queue on a lock, which hands over as soon as a transaction ends, instead of
        on SQLite's busy handler, which polls with sleeps of up to 100 ms and lets a waiter
        starve for seconds under load. After SQLITE_BUSY_SECONDS without the lock, go on to
        BEGIN IMMEDIATE anyway: the same wait and error as before, never a hang.
        PostgreSQL needs no turn."""
        lock = self._write_lock
        deadline = time.monotonic() + SQLITE_BUSY_SECONDS
        locked = lock.acquire(timeout=SQLITE_BUSY_SECONDS) if lock is not None else False
        turns = self._turns if locked else None
        ours = turns is not None and turns.acquire(deadline)
        try:
            yield
        finally:
            if ours and turns is not None:
                turns.release()
            if locked and lock is not None:
                lock.release()

    @property
    def write_epoch(self) -> int:
        """A number that changes each time one of this process's write transactions
        (:meth:`transaction`, a group commit) ends, after its commit or rollback. A cache
        of rows read at epoch E may still be right while the epoch is E: nothing this
        process wrote has landed since. Writes by other processes do not count (the audit
        writer process writes only audit rows and accounts' last access), so such a cache
        also needs an age limit."""
        return self._write_epoch

    def _next_epoch(self) -> None:
        with self._epoch_lock:
            self._write_epoch += 1

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error. When the
        commit of a transaction that holds an audit row is refused by the database (the
        disk is full), AuditWriteError: neither the operation nor its row happened, and
        the caller says so rather than answer a bare server error. A constraint's
        IntegrityError stays as it is (callers turn it into a conflict), and so does a
        connection lost during the commit: whether that commit took place is not known,
        so nothing may say it did not."""
        committing = False
        session: Session | None = None
        try:
            with self._writer_turn(), self._writer() as session, session.begin():
                yield session
                committing = True
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            lost = getattr(exc, "connection_invalidated", False)
            if committing and not lost and session is not None and session.info.get(AUDITED):
                # answered as a refusal (not logged by the web layer): logged here
                log.error("an audited transaction could not commit", exc_info=exc)
                raise AuditWriteError(AUDIT_NOT_WRITTEN) from exc
            raise
        finally:
            self._next_epoch()

    @contextmanager
    def reading(self) -> Iterator[PointReader]:
        """A reader for a few point reads (SELECT statements) on a hot path, where an ORM
        session, or even a Core connection, costs more than the queries it runs
        (:mod:`node.store.point_reads`). Nothing can be written through it. It opens no
        transaction: each statement reads its own committed snapshot, so use it only
        where the reads need not agree with each other as of one instant (a key lookup,
        then rows that hang off it)."""
        with self._point_reads.reader() as reader:
            yield reader

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """The committer's write transaction, queued like :meth:`transaction`. On SQLite
        the committer keeps its connection between batches (a checkout from the pool and
        its return cost more than a small batch's statements; after any failure it is
        closed and the next batch opens another). On PostgreSQL each batch checks a
        connection out of the pool, which first makes sure the server still holds it."""
        try:
            if self.dialect != "sqlite":
                with self.engine.connect() as fresh, fresh.begin():
                    yield fresh
                return
            with self._writer_turn():
                conn = self._commit_conn
                if conn is None:
                    conn = self._commit_conn = self.engine.connect()
                try:
                    with conn.begin():
                        yield conn
                except BaseException:
                    self._close_commit_conn()
                    raise
        finally:
            self._next_epoch()

    def _close_commit_conn(self) -> None:
        conn, self._commit_conn = self._commit_conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:
                log.warning("closing the committer's connection failed", exc_info=True)

    def group_commit(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` in a write transaction shared with the works other
        threads submit meanwhile, and return its result once that transaction has
        committed. See :meth:`submit`."""
        return self.submit(work).result()

    def submit(self, work: Callable[[Connection], T]) -> Future[T]:
        """Queue ``work(connection)`` for the store's committer thread; the future holds
        its result (or exception) once the transaction holding it has committed (or not).

        A commit is the costly part of a small write (an fsync on SQLite; on PostgreSQL a
        WAL flush and the synchronous standby's acknowledgement), so the works queued while
        a batch commits go together in the next one: one transaction, one commit. If a work
        raises, or the commit fails, the batch rolls back and each of its works runs again
        in a transaction of its own, so a failing work fails only itself and the others
        commit. A work must therefore only touch the database (it may run twice), be
        short, and never wait for another work. Async callers await the future without
        holding a thread (``asyncio.wrap_future``).
        """
        future: Future[T] = Future()
        with self._queue_cv:
            if self._closed:
                raise StoreError("the database is closed")
            self._queue.append((work, future))
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._commit_loop, name="sr-group-commit", daemon=True
                )
                self._committer.start()
            # Wake the committer only when it waits for this: for the first work (it
            # sleeps on an empty queue) or for a full batch (it is gathering one); a
            # wake-up per work would pass the GIL back and forth for nothing.
            if len(self._queue) in (1, COMMIT_BATCH):
                self._queue_cv.notify()
        return future

    def on_batch_done(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the committer thread each time a batch's futures have all
        been set: one call per batch, however many works it held (an event loop can wake
        once per batch rather than once per future). It must be quick and thread-safe."""
        with self._queue_cv:
            self._batch_listeners.append(listener)

    def _commit_loop(self) -> None:
        last = 0  # works in the previous batch
        while True:
            with self._queue_cv:
                while not self._queue and not self._closed:
                    self._queue_cv.wait()
                if last > 1:
                    self._gather_more()
                if not self._queue:
                    return  # closed, and nothing left to commit
                batch, self._queue = self._queue, []
                last = len(batch)
            try:
                outcomes = self._commit_batch([work for work, _ in batch])
            except BaseException as exc:  # noqa: BLE001  # no caller may wait forever
                outcomes = [(None, exc)] * len(batch)
            for (_, future), (result, error) in zip(batch, outcomes, strict=True):
                if future.cancelled():
                    continue  # the caller stopped waiting; its work is committed or not
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)
            for listener in list(self._batch_listeners):
                try:
                    listener()
                except Exception:  # noqa: BLE001 - the committer must outlive a listener
                    log.exception("a group-commit listener failed")

    def _gather_more(self) -> None:
        """Wait (holding the queue's condition) up to ``commit_delay`` for the queue to reach
        COMMIT_BATCH works: fewer, larger batches, each commit's cost shared by more."""
        until = time.monotonic() + self.commit_delay
        while len(self._queue) < COMMIT_BATCH and not self._closed:
            left = until - time.monotonic()
            if left <= 0:
                return
            self._queue_cv.wait(left)

    def _commit_batch(
        self, works: list[Callable[[Connection], Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        results: list[Any] = []
        try:
            with self._writing() as conn:
                hooks: list[Callable[[Connection], None]] = []
                conn.info[_TX_STATE] = {_BEFORE_COMMIT: hooks}
                try:
                    for work in works:
                        results.append(work(conn))
                    for hook in hooks:
                        hook(conn)
                finally:
                    # info lives with the pooled DB-API connection: never leave it behind
                    conn.info.pop(_TX_STATE, None)
        except Exception as exc:  # noqa: BLE001  # handed to the callers
            if len(works) == 1:
                return [(None, exc)]
            # Something in the batch failed and the whole transaction rolled back: run
            # each work again in a transaction of its own, so that only the failing ones
            # fail. (Rare, so the common case needs no savepoints.)
            return [outcome for work in works for outcome in self._commit_batch([work])]
        return [(result, None) for result in results]

    def has_data(self) -> bool:
        return "keyring_meta" in inspect(self.engine).get_table_names()

    def migrate(self, revision: str = "head") -> None:
        command.upgrade(alembic_config(self.engine), revision)

    def dispose(self) -> None:
        with self._queue_cv:
            self._closed = True
            self._queue_cv.notify()
        if self._committer is not None:
            self._committer.join(timeout=SQLITE_BUSY_SECONDS + 5)
        self._close_commit_conn()
        self._point_reads.close()
        self.engine.dispose()
        if self._turns is not None:
            self._turns.close()


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
