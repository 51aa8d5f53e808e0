"""Group commit: many threads' small write transactions share one commit.

A password fetch is a tiny write (its audit row, the account's last-access time) whose cost
is the commit's flush to disk, and on SQLite every write transaction holds the one database
lock for that long, so concurrent fetches queue behind each other's flushes. Here a single
writer thread takes every unit of work waiting at that moment, runs each in its own SAVEPOINT
inside one transaction, and commits once: one flush for the whole batch.

Guarantees, for each unit passed to :meth:`GroupCommitter.run`:

- its result is returned only after the transaction holding its writes has committed (so a
  password leaves only once its audit row is durable: fail closed);
- if the unit raises, its savepoint is rolled back, its exception is re-raised to its caller,
  and the other units of the batch are not affected (a unit may also return a value that
  tells its caller to raise after the commit, to keep a refused attempt's audit row);
- if the commit itself fails, every unit of the batch fails with :class:`AuditWriteError`
  and none of their writes is kept.

A unit must do all its database work through the session it is given, must not open
another transaction, and should be short (no network calls): the batch waits for it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from node.errors import AuditWriteError
from node.store.db import Store

log = logging.getLogger("strongroom.store")

T = TypeVar("T")
Unit = tuple[Callable[[Session], Any], "Future[Any]"]
MAX_BATCH = 64
IDLE_SECONDS = 30.0


class GroupCommitter:
    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Unit] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in the next batch; block until the batch has committed."""
        future: Future[T] = Future()
        self._queue.put((work, future))
        self._ensure_writer()
        return future.result()

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="sr-group-commit", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                with self._lock:  # exit when idle; run() starts a new writer when needed
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[Unit]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self._store.transaction() as session:
                for work, future in batch:
                    try:
                        with session.begin_nested():
                            result = work(session)
                    except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
                        outcomes.append((future, None, exc))
                    else:
                        outcomes.append((future, result, None))
        except Exception as exc:  # noqa: BLE001 - every unit of the batch fails closed
            log.error(
                "group commit failed", extra={"units": len(batch), "error": type(exc).__name__}
            )
            if not isinstance(exc, SQLAlchemyError | AuditWriteError):
                log.exception("unexpected error in a group commit")
            for _work, future in batch:
                future.set_exception(
                    AuditWriteError(
                        "the audit trail could not be written, so the operation was not carried out"
                    )
                )
            return
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
