"""web.base.FailureThrottle: audit rows for failures anyone can send, per source and in all."""

from __future__ import annotations

import threading

from web.base import Background, FailureThrottle


def test_one_row_per_source_per_interval_with_the_count_left_out() -> None:
    t = FailureThrottle(every=10.0, per_second=100.0)
    assert t.admit("10.0.0.1", now=100.0) == (0, 0)  # the first at once
    assert t.admit("10.0.0.1", now=101.0) is None
    assert t.admit("10.0.0.2", now=105.0) == (0, 0)  # another address: its own count
    assert t.admit("10.0.0.1", now=109.9) is None
    assert t.admit("10.0.0.1", now=110.0) == (2, 0)  # the next row says two were left out
    assert t.admit("10.0.0.1", now=111.0) is None
    assert t.admit("10.0.0.1", now=130.0) == (1, 0)
    assert t.admit("::ffff:10.0.0.1", now=131.0) is None  # the same address, as IPv6


def test_an_ipv6_client_is_one_source_per_64() -> None:
    t = FailureThrottle(every=10.0, per_second=100.0)
    assert t.admit("2001:db8:1:2::1", now=1.0) == (0, 0)
    assert t.admit("2001:db8:1:2:ffff::9", now=2.0) is None  # the same /64
    assert t.admit("2001:db8:1:3::1", now=2.0) == (0, 0)  # another /64


def test_rows_from_many_sources_are_capped_and_counted() -> None:
    t = FailureThrottle(every=10.0, per_second=2.0)
    admitted = [t.admit(f"10.1.{n // 250}.{n % 250}", now=50.0) for n in range(100)]
    rows = [a for a in admitted if a is not None]
    assert len(rows) == 2  # the budget of one second
    later = t.admit("10.9.9.9", now=51.0)  # the budget refilled: the next row counts them
    assert later == (0, 98)
    assert t.admit("10.9.9.8", now=51.0) == (0, 0)  # the second of this second
    assert t.admit("10.9.9.7", now=51.0) is None  # and no third
    assert t.admit("10.9.9.6", now=51.6) == (0, 1)


def test_the_sources_it_remembers_are_bounded_least_recent_first() -> None:
    t = FailureThrottle(every=10.0, per_second=100.0)
    t.MAX_SOURCES = 3
    for n in range(3):
        assert t.admit(f"10.0.0.{n}", now=1.0) == (0, 0)
    assert t.admit("10.0.0.0", now=2.0) is None  # heard from again: now the most recent
    assert t.admit("10.0.0.3", now=2.0) == (0, 0)  # forgets 10.0.0.1, the least recent
    assert len(t._seen) == 3 and "10.0.0.1" not in t._seen and "10.0.0.0" in t._seen


def test_the_background_lane_drops_past_its_bound_and_after_close() -> None:
    gate = threading.Event()
    written: list[int] = []

    def write(n: int) -> None:
        gate.wait(5)
        written.append(n)

    lane = Background(max_pending=2)
    assert lane.submit("x", write, 1) and lane.submit("x", write, 2)
    assert not lane.submit("x", write, 3)  # two already wait: dropped
    gate.set()
    lane.close()  # waits for what was taken
    assert written == [1, 2]
    assert not lane.submit("x", write, 4)  # stopping: dropped, not raised
