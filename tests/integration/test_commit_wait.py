"""Awaiting the group commit from an event loop (web/commit_wait.py) on a real store: every
waiter gets its own result or error, however the batches fall, and one listener call per
batch is what wakes the loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import pytest
from sqlalchemy import Connection, select

from node.store.db import Store
from node.store.models import AppSetting
from tests.integration.group_commit_helpers import HeldBatch, add_setting
from web.commit_wait import CommitWaiter


def _fail(conn: Connection) -> None:
    raise ValueError("this work refuses")


def test_every_waiter_gets_its_own_result_or_error(store: Store) -> None:
    waiter = CommitWaiter(store)

    async def main() -> list[object]:
        awaited = []
        for i in range(40):
            work = _fail if i % 10 == 7 else add_setting(f"cw-{i}")
            awaited.append(waiter.wait(store.submit(work)))
            if i % 8 == 0:
                await asyncio.sleep(0)  # let some batches fall between submissions
        return await asyncio.wait_for(asyncio.gather(*awaited, return_exceptions=True), 30)

    got = asyncio.run(main())
    for i, outcome in enumerate(got):
        if i % 10 == 7:
            assert isinstance(outcome, ValueError) and "refuses" in str(outcome)
        else:
            assert outcome == f"cw-{i}"
    with store.sessions() as s:
        keys = set(s.scalars(select(AppSetting.key).where(AppSetting.key.like("cw-%"))))
    assert keys == {f"cw-{i}" for i in range(40) if i % 10 != 7}


def test_a_future_done_before_the_wait_and_a_cancelled_wait(store: Store) -> None:
    waiter = CommitWaiter(store)
    done: Future[str] = Future()
    done.set_result("already")

    async def main() -> None:
        assert await asyncio.wait_for(waiter.wait(done), 5) == "already"
        held = HeldBatch(store)  # the next batch cannot start yet
        queued: Future[str] = store.submit(add_setting("cw-cancelled"))
        task = waiter.wait(queued)
        task.cancel()
        await asyncio.sleep(0)  # the loop runs the waiter's done callbacks
        assert queued.cancelled()  # cancelling the wait cancelled the future
        held.finish()

    asyncio.run(main())


def test_one_listener_call_per_batch_and_a_failing_listener_is_survived(store: Store) -> None:
    calls: list[int] = []
    store.on_batch_done(lambda: calls.append(1))

    def broken() -> None:
        raise RuntimeError("listener bug")

    store.on_batch_done(broken)
    adds = [lambda i=i: store.group_commit(add_setting(f"lb-{i}")) for i in range(6)]
    HeldBatch(store).run_behind(adds, calls.clear)  # type: ignore[arg-type]
    assert calls == [1, 1]  # the held batch, then the six together
    assert store.group_commit(add_setting("lb-after")) == "lb-after"  # the committer lives on


@pytest.fixture(autouse=True)
def _quiet_listener_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="strongroom.store")
