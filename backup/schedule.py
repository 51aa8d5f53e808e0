"""When scheduled backups run: every N days (1-28), weekly on a day, or monthly on a date,
at a time of day in UTC. Pure functions of the schedule and a clock reading, so they are
tested exactly."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from node.errors import ValidationError

KINDS = ("off", "days", "weekly", "monthly")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Schedule:
    """``kind`` is off, days (every ``every_days`` days counted from ``anchor``), weekly (on
    ``weekday``, 0 = Monday) or monthly (on ``day`` 1-28); always at ``at`` UTC."""

    kind: str = "off"
    every_days: int = 1
    weekday: int = 6
    day: int = 1
    at: dt.time = dt.time(2, 0)
    anchor: dt.date = dt.date(2026, 1, 1)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationError(f"schedule must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 1 <= self.every_days <= 28:
            raise ValidationError("'every N days' must be between 1 and 28")
        if not 0 <= self.weekday <= 6:
            raise ValidationError("the weekday must be Monday to Sunday")
        if not 1 <= self.day <= 28:
            raise ValidationError("the day of the month must be between 1 and 28")

    def describe(self) -> str:
        at = self.at.strftime("%H:%M")
        if self.kind == "days":
            every = "every day" if self.every_days == 1 else f"every {self.every_days} days"
            return f"{every} at {at} UTC"
        if self.kind == "weekly":
            return f"every {WEEKDAYS[self.weekday]} at {at} UTC"
        if self.kind == "monthly":
            return f"on day {self.day} of every month at {at} UTC"
        return "no scheduled backups"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "every_days": self.every_days,
            "weekday": self.weekday,
            "day": self.day,
            "at": self.at.strftime("%H:%M"),
            "anchor": self.anchor.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        try:
            return cls(
                kind=str(data.get("kind", "off")),
                every_days=int(data.get("every_days", 1)),
                weekday=int(data.get("weekday", 6)),
                day=int(data.get("day", 1)),
                at=parse_time(str(data.get("at", "02:00"))),
                anchor=dt.date.fromisoformat(str(data.get("anchor", "2026-01-01"))),
            )
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"stored backup schedule is damaged: {exc}") from None


def parse_time(text: str) -> dt.time:
    try:
        return dt.datetime.strptime(text.strip(), "%H:%M").time()
    except ValueError:
        raise ValidationError(f"time of day must be HH:MM (24-hour, UTC), not {text!r}") from None


def parse_weekday(text: str) -> int:
    key = text.strip().lower()
    for i, name in enumerate(WEEKDAYS):
        if name.lower().startswith(key[:3]) and len(key) >= 3:
            return i
    raise ValidationError(f"unknown weekday {text!r} (Monday to Sunday)")


def _at(day: dt.date, at: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, at)


def _month_back(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def latest_slot(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The latest time at or before ``now`` (naive UTC) when a backup was due."""
    if schedule.kind == "days":
        days = (now.date() - schedule.anchor).days
        k = days // schedule.every_days
        slot = _at(schedule.anchor + dt.timedelta(days=k * schedule.every_days), schedule.at)
        if slot > now:
            k -= 1
            slot -= dt.timedelta(days=schedule.every_days)
        return slot if k >= 0 else None
    if schedule.kind == "weekly":
        back = (now.weekday() - schedule.weekday) % 7
        slot = _at(now.date() - dt.timedelta(days=back), schedule.at)
        return slot if slot <= now else slot - dt.timedelta(days=7)
    if schedule.kind == "monthly":
        slot = _at(dt.date(now.year, now.month, schedule.day), schedule.at)
        if slot > now:
            year, month = _month_back(now.year, now.month)
            slot = _at(dt.date(year, month, schedule.day), schedule.at)
        return slot
    return None


def next_slot(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The first time strictly after ``now`` when a backup is due."""
    if schedule.kind == "days":
        if now < _at(schedule.anchor, schedule.at):
            return _at(schedule.anchor, schedule.at)
        last = latest_slot(schedule, now)
        assert last is not None
        return last + dt.timedelta(days=schedule.every_days)
    if schedule.kind == "weekly":
        last = latest_slot(schedule, now)
        assert last is not None
        return last + dt.timedelta(days=7)
    if schedule.kind == "monthly":
        last = latest_slot(schedule, now)
        assert last is not None
        year, month = (last.year + 1, 1) if last.month == 12 else (last.year, last.month + 1)
        return _at(dt.date(year, month, schedule.day), schedule.at)
    return None
