"""When scheduled backups fall due: exact times for every kind of schedule."""

from __future__ import annotations

import datetime as dt

import pytest

from backup.schedule import Schedule, latest_slot, next_slot, parse_time, parse_weekday
from node.errors import ValidationError

D = dt.datetime


def test_every_n_days_counts_from_the_anchor() -> None:
    s = Schedule(kind="days", every_days=3, at=dt.time(2, 30), anchor=dt.date(2026, 5, 1))
    assert latest_slot(s, D(2026, 5, 1, 2, 29)) is None
    assert latest_slot(s, D(2026, 5, 1, 2, 30)) == D(2026, 5, 1, 2, 30)
    assert latest_slot(s, D(2026, 5, 4, 2, 29)) == D(2026, 5, 1, 2, 30)
    assert latest_slot(s, D(2026, 5, 4, 2, 30)) == D(2026, 5, 4, 2, 30)
    assert next_slot(s, D(2026, 5, 4, 2, 30)) == D(2026, 5, 7, 2, 30)
    assert next_slot(s, D(2026, 4, 20)) == D(2026, 5, 1, 2, 30)


def test_weekly_on_a_day() -> None:
    s = Schedule(kind="weekly", weekday=parse_weekday("Sunday"), at=dt.time(1, 0))
    # 2026-05-03 is a Sunday
    assert latest_slot(s, D(2026, 5, 3, 0, 59)) == D(2026, 4, 26, 1, 0)
    assert latest_slot(s, D(2026, 5, 3, 1, 0)) == D(2026, 5, 3, 1, 0)
    assert latest_slot(s, D(2026, 5, 9, 23, 0)) == D(2026, 5, 3, 1, 0)
    assert next_slot(s, D(2026, 5, 3, 1, 0)) == D(2026, 5, 10, 1, 0)


def test_monthly_on_a_date_across_the_year_end() -> None:
    s = Schedule(kind="monthly", day=28, at=dt.time(23, 15))
    assert latest_slot(s, D(2026, 1, 10)) == D(2025, 12, 28, 23, 15)
    assert latest_slot(s, D(2026, 2, 28, 23, 15)) == D(2026, 2, 28, 23, 15)
    assert next_slot(s, D(2026, 12, 29)) == D(2027, 1, 28, 23, 15)


def test_off_never_fires() -> None:
    assert latest_slot(Schedule(), D(2026, 5, 3)) is None
    assert next_slot(Schedule(), D(2026, 5, 3)) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "days", "every_days": 29}, "between 1 and 28"),
        ({"kind": "days", "every_days": 0}, "between 1 and 28"),
        ({"kind": "monthly", "day": 31}, "day of the month"),
        ({"kind": "hourly"}, "schedule must be one of"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Schedule(**kwargs)  # type: ignore[arg-type]


def test_time_and_weekday_parsing() -> None:
    assert parse_time("07:05") == dt.time(7, 5)
    with pytest.raises(ValidationError, match="HH:MM"):
        parse_time("25:00")
    with pytest.raises(ValidationError, match="unknown weekday"):
        parse_weekday("Funday")
