"""web.base.FailureThrottle: one audit row per address every few seconds, counting the rest."""

from __future__ import annotations

from web.base import FailureThrottle


def test_one_row_per_address_per_interval_with_the_count_left_out() -> None:
    t = FailureThrottle(every=10.0)
    assert t.admit("10.0.0.1", now=100.0) == 0  # the first at once
    assert t.admit("10.0.0.1", now=101.0) is None
    assert t.admit("10.0.0.1", now=109.9) is None
    assert t.admit("10.0.0.2", now=105.0) == 0  # another address: its own count
    assert t.admit("10.0.0.1", now=110.0) == 2  # the next row says two were left out
    assert t.admit("10.0.0.1", now=111.0) is None
    assert t.admit("10.0.0.1", now=130.0) == 1


def test_the_addresses_it_remembers_are_bounded() -> None:
    t = FailureThrottle(every=10.0)
    t.MAX_ADDRESSES = 3
    for n in range(5):
        assert t.admit(f"10.0.0.{n}", now=1.0) == 0
    assert len(t._seen) == 3
    assert t.admit("10.0.0.4", now=2.0) is None  # still remembered
