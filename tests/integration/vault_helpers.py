"""Helpers for the vault service tests: acting users made through the real services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, text

from node.auth import SessionUser
from node.roles import Role
from node.services import Services
from node.store.models import User

IP = "192.0.2.10"


def snapshot(services: Services, user_id: int) -> SessionUser:
    """The SessionUser a login would produce, read fresh from the database."""
    with services.store.sessions() as s:
        u = s.get(User, user_id)
        assert u is not None
        return SessionUser(
            id=u.id,
            username=u.username,
            role=Role(u.role),
            super_admin=u.super_admin,
            must_change_password=u.must_change_password,
        )


def initial_admin(services: Services) -> SessionUser:
    """The bootstrap administrator (a Super Administrator)."""
    services.auth.bootstrap_admin()
    with services.store.sessions() as s:
        uid = s.scalars(select(User.id).where(User.username == "admin")).one()
    return snapshot(services, uid)


def make_user(services: Services, admin: SessionUser, name: str, role: Role) -> SessionUser:
    new = services.users.add_user(admin, IP, name, role)
    return snapshot(services, new.id)


@contextmanager
def audit_head_missing(services: Services) -> Iterator[None]:
    """The audit chain's head table renamed away for the block: no audit row can be
    written (every audited operation must fail closed), then put back."""
    with services.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_head RENAME TO audit_head_away"))
    try:
        yield
    finally:
        with services.store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_head_away RENAME TO audit_head"))
