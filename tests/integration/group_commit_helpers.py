"""Helpers for the group-commit tests: a batch held open so that works queue behind it,
and a work that adds one setting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, insert

from node.store.db import Store
from node.store.models import AppSetting


class HeldBatch:
    """A group commit whose one work waits until released, so that the works submitted
    meanwhile queue up for the next batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.started = threading.Event()
        self.release = threading.Event()
        self.future = store.submit(self._slow)
        assert self.started.wait(10), "the first batch did not start"
        self.deadline = time.monotonic() + 10

    def _slow(self, conn: Connection) -> None:
        conn.execute(insert(AppSetting).values(key="held", value=1))
        self.started.set()
        assert self.release.wait(10)

    def wait_queued(self, n: int) -> None:
        while len(self.store._queue) < n:
            assert time.monotonic() < self.deadline, "the works did not queue"
            time.sleep(0.01)

    def finish(self) -> None:
        self.release.set()
        self.future.result(20)

    def run_behind(self, calls: list[Callable[[], object]], before: Callable[[], None]) -> None:
        """Make each call on a thread of its own, wait until all their works queue behind
        the held one, run ``before``, then let the batches go and wait for the calls."""
        threads = [threading.Thread(target=call) for call in calls]
        for t in threads:
            t.start()
        self.wait_queued(len(calls))
        before()
        self.finish()
        for t in threads:
            t.join(20)


def add_setting(key: str) -> Callable[[Connection], str]:
    """A work that adds the setting ``key`` (its value the key too) and returns the key."""

    def work(conn: Connection) -> str:
        conn.execute(insert(AppSetting).values(key=key, value=key))
        return key

    return work
