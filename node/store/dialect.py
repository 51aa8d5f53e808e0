"""The only place that knows which database it is talking to."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

T = TypeVar("T", bound=Any)


def for_update(session: Session, stmt: Select[T]) -> Select[T]:
    """Lock the selected rows until commit. PostgreSQL needs FOR UPDATE; SQLite's write
    transactions (BEGIN IMMEDIATE, see ``db.make_engine``) already hold the database lock."""
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update()
    return stmt


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
