"""Processes writing one SQLite file take turns on a lock file (node/store/db.py
WriterTurns), not on SQLite's busy handler. The other process is played here by a second
open file description of the lock file: ``flock`` locks belong to those, so it conflicts
with the store's own exactly as another process's would."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from node.store import db as store_db
from node.store.db import WRITER_LOCK_SUFFIX, Store, make_engine


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(make_engine(f"sqlite:///{tmp_path / 'turns.db'}"))
    with store.transaction() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    yield store
    store.dispose()


def _other_process_turn(store: Store) -> int:
    """Take the writer lock as another process would; returns its descriptor."""
    database = store.engine.url.database
    assert database is not None
    fd = os.open(database + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _rows(store: Store) -> list[int]:
    with store.sessions() as s:
        return [int(x) for x in s.execute(text("SELECT x FROM t ORDER BY x")).scalars()]


def _insert_in_thread(store: Store, value: int) -> threading.Thread:
    def write() -> None:
        with store.transaction() as s:
            s.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": value})

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_write_waits_while_another_process_has_the_turn(sqlite_store: Store) -> None:
    other = _other_process_turn(sqlite_store)
    try:
        writer = _insert_in_thread(sqlite_store, 1)
        writer.join(0.5)
        # SQLite's own lock is free: only the turn holds the write back.
        assert writer.is_alive() and _rows(sqlite_store) == []
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    writer.join(10)
    assert not writer.is_alive() and _rows(sqlite_store) == [1]


def test_a_turn_held_too_long_is_not_waited_for_forever(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After SQLITE_BUSY_SECONDS the write goes on to SQLite's own lock (free here)."""
    monkeypatch.setattr(store_db, "SQLITE_BUSY_SECONDS", 0.3)
    other = _other_process_turn(sqlite_store)
    try:
        writer = _insert_in_thread(sqlite_store, 2)
        writer.join(10)
        assert not writer.is_alive() and _rows(sqlite_store) == [2]
    finally:
        os.close(other)


def test_the_turn_is_given_back_after_a_failed_write_and_a_group_commit(
    sqlite_store: Store,
) -> None:
    with pytest.raises(ValueError), sqlite_store.transaction() as s:
        s.execute(text("INSERT INTO t (x) VALUES (3)"))
        raise ValueError("rolled back")
    os.close(_other_process_turn(sqlite_store))  # LOCK_NB: raises if the store kept it
    sqlite_store.group_commit(lambda c: c.execute(text("INSERT INTO t (x) VALUES (4)")))
    os.close(_other_process_turn(sqlite_store))
    assert _rows(sqlite_store) == [4]
