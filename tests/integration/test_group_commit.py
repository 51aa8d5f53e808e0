"""Group commit (node/store/group_commit.py) on SQLite and PostgreSQL: units waiting at the
same time share one commit; a unit's result is released only after its writes committed; a
failing unit is rolled back alone; a failing commit fails every unit of its batch and keeps
none of their writes (fail closed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from node.errors import AuditWriteError, ValidationError
from node.store.db import Store, open_store
from node.store.group_commit import GroupCommitter
from node.store.models import AppSetting


def keys(store: Store) -> set[str]:
    with store.sessions() as s:
        return set(s.scalars(select(AppSetting.key)))


def keys_outside(store: Store) -> set[str]:
    """What another connection sees now, without waiting for any lock (plain DB-API)."""
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT key FROM app_settings")
        return {row[0] for row in cur.fetchall()}
    finally:
        raw.close()


def count_commits(store: Store) -> list[int]:
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    return commits


def writer(key: str, fail: bool = False) -> Any:
    def unit(session: Session) -> str:
        session.add(AppSetting(key=key, value=1))
        session.flush()
        if fail:
            raise ValidationError(f"unit {key} refused")
        return key

    return unit


def test_units_waiting_together_share_one_commit(store: Store) -> None:
    committer = GroupCommitter(store)
    release = threading.Event()
    started = threading.Event()

    def first(session: Session) -> str:
        started.set()
        release.wait(10)  # the others queue up meanwhile
        return writer("gc-first")(session)

    commits = count_commits(store)
    with ThreadPoolExecutor(max_workers=12) as pool:
        head = pool.submit(committer.run, first)
        assert started.wait(10)
        others = [pool.submit(committer.run, writer(f"gc-{i}")) for i in range(10)]
        failing = pool.submit(committer.run, writer("gc-bad", fail=True))
        while committer._queue.qsize() < 11:  # noqa: SLF001 - wait until all are queued
            threading.Event().wait(0.01)
        release.set()
        assert head.result(10) == "gc-first"
        assert sorted(f.result(10) for f in others) == sorted(f"gc-{i}" for i in range(10))
        with pytest.raises(ValidationError, match="gc-bad refused"):
            failing.result(10)
    assert len(commits) == 2  # the first unit's batch, then everyone who waited
    assert keys(store) >= {"gc-first", *(f"gc-{i}" for i in range(10))}
    assert "gc-bad" not in keys(store)


def test_result_is_released_only_after_the_commit(store: Store) -> None:
    committer = GroupCommitter(store)
    seen_by_others: list[bool] = []

    def unit(session: Session) -> str:
        session.add(AppSetting(key="gc-visible", value=1))
        session.flush()
        seen_by_others.append("gc-visible" in keys_outside(store))
        return "done"

    assert committer.run(unit) == "done"
    assert seen_by_others == [False]  # not yet visible while the unit ran
    assert "gc-visible" in keys(store)  # visible to everyone once run() returned


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    s = open_store(pg_url)
    yield s
    s.dispose()


def test_a_failing_commit_fails_every_unit_and_keeps_nothing(pg_store: Store) -> None:
    """PostgreSQL only: the commit-time failure is a deferred constraint trigger."""
    store = pg_store
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION gc_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.key = 'gc-poison' THEN RAISE EXCEPTION 'refused at commit'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER gc_refuse AFTER INSERT ON app_settings "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION gc_refuse()"
            )
        )
    committer = GroupCommitter(store)
    release = threading.Event()
    started = threading.Event()

    def blocker(session: Session) -> str:
        started.set()
        release.wait(10)  # the next batch queues up meanwhile
        return writer("gc-blocker")(session)

    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(committer.run, blocker)
        assert started.wait(10)
        batch = [
            pool.submit(committer.run, writer("gc-poison")),
            pool.submit(committer.run, writer("gc-fine-1")),
            pool.submit(committer.run, writer("gc-fine-2")),
        ]
        while committer._queue.qsize() < 3:  # noqa: SLF001 - wait until all are queued
            threading.Event().wait(0.01)
        release.set()
        assert first.result(10) == "gc-blocker"
        for future in batch:
            with pytest.raises(AuditWriteError):
                future.result(10)
    assert {"gc-fine-1", "gc-fine-2"}.isdisjoint(keys(store))
    assert "gc-poison" not in keys(store)
    # the committer keeps working after a failed batch
    assert committer.run(writer("gc-after")) == "gc-after"
    assert "gc-after" in keys(store)
