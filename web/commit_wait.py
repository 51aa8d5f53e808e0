"""Awaiting the reveals' group commit from the event loop with one wake-up per batch.

``asyncio.wrap_future`` wakes the event loop once per future (with the in-process writer, a
write to the loop's self-pipe from the committer thread, and a loop iteration to read it).
A batch holds many audited password fetches; :class:`CommitWaiter` keeps the futures the
loop waits for and, when the writer says a batch is done (``on_batch_done`` of
node/reveal_writer.py's writers), resolves every finished one in a single pass: on the
loop at once when the loop itself read the writer process's answer, else in one loop
callback (measured: bench/retrieval.py, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class BatchSource(Protocol):
    """What says when a batch's futures are set: :meth:`node.store.db.Store.on_batch_done`,
    or a reveal writer's (node/reveal_writer.py)."""

    def on_batch_done(self, listener: Callable[[], None]) -> None: ...


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class CommitWaiter:
    """Futures resolved by the batches of a reveal writer (node/reveal_writer.py: the
    store's group commit, or a writer process) awaited on one event loop: the loop it is
    first used on."""

    def __init__(self, writer: BatchSource) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[Future[Any], asyncio.Future[Any]]] = []
        writer.on_batch_done(self._batch_done)

    def wait(self, future: Future[T]) -> asyncio.Future[T]:
        """An awaitable for ``future``, which a batch of the store's group commit resolves
        (its result or its exception). Cancelling the awaitable cancels ``future``."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = self._loop.create_future()
        waiter.add_done_callback(lambda w: future.cancel() if w.cancelled() else None)
        self._pending.append((future, waiter))
        if future.done():  # resolved before we began to wait: no batch will say so again
            self._sweep()
        return waiter

    def _batch_done(self) -> None:  # on the committer's thread, or on the loop
        loop = self._loop
        if loop is None or not self._pending or loop.is_closed():
            return
        if _running_loop() is loop:
            self._sweep()  # a writer process's answers, read by this loop
        else:
            loop.call_soon_threadsafe(self._sweep)

    def _sweep(self) -> None:
        waiting = []
        for future, waiter in self._pending:
            if not future.done():
                waiting.append((future, waiter))
            elif waiter.done():
                continue  # cancelled meanwhile
            elif future.cancelled():
                waiter.cancel()
            elif (error := future.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(future.result())
        self._pending = waiting
