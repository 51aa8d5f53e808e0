"""Sessions and lockout timing with an injected clock, on both dialects."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from node.auth import normalize_username
from node.errors import AccountLockedError, AuthenticationError, ValidationError
from node.services import Services
from node.store.models import AuditRow


def _admin_password(services: Services) -> str:
    otp = services.auth.bootstrap_admin()
    assert otp is not None
    assert services.auth.bootstrap_admin() is None  # only once
    return otp


def test_idle_session_expires(services: Services) -> None:
    otp = _admin_password(services)
    user = services.auth.authenticate("admin", otp, "127.0.0.1")
    token = services.auth.create_session(user.id, "127.0.0.1")
    t0 = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    idle = services.auth.idle_timeout
    assert services.auth.session_user(token, now=t0 + idle - dt.timedelta(seconds=5)) is not None
    # Activity moved last-seen forward, so the session lives on from there...
    assert services.auth.session_user(token, now=t0 + 2 * idle - dt.timedelta(seconds=10))
    # ...and ends once it has been idle for longer than the timeout.
    assert services.auth.session_user(token, now=t0 + 4 * idle) is None
    assert services.auth.session_user(token) is None  # ended for good


def test_lockout_lifts_after_its_time(services: Services) -> None:
    otp = _admin_password(services)
    t0 = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for _ in range(services.auth.lockout_threshold):
        with pytest.raises(AuthenticationError):
            services.auth.authenticate("admin", "nope-nope-nope", "10.1.1.1", now=t0)
    with pytest.raises(AccountLockedError) as locked:
        services.auth.authenticate("admin", otp, "10.1.1.1", now=t0 + dt.timedelta(minutes=1))
    later = t0 + services.auth.lockout + dt.timedelta(seconds=1)
    assert services.auth.authenticate("admin", otp, "10.1.1.1", now=later).username == "admin"
    with services.store.sessions() as s:
        ops = [r.operation for r in s.scalars(select(AuditRow).order_by(AuditRow.id))]
    assert ops.count("failed login") == 6 and "account locked" in ops and ops[-1] == "login"
    # a locked account answers as an unknown name does, ever so many tries (no name leaks)
    for _ in range(services.auth.lockout_threshold + 2):
        with pytest.raises(AuthenticationError) as unknown:
            services.auth.authenticate("nobody-here", "x", "10.1.1.1", now=t0)
        assert type(unknown.value) is AuthenticationError
    assert str(locked.value) == str(unknown.value)
    assert "locked for 15 minutes" in str(locked.value)


def test_usernames_normalised_once() -> None:
    assert normalize_username("  ADMIN ") == "admin"
    assert normalize_username("\uff21dmin") == "admin"  # full-width A (NFKC)


def test_a_failed_login_records_what_was_typed_without_its_controls(services: Services) -> None:
    """The name of a failed login is whatever was typed: its text-direction and control
    characters are written as escapes, so the row cannot read as another user's."""
    with pytest.raises(AuthenticationError):
        services.auth.authenticate("adm\u202enimda", "x", "10.2.2.2")
    with services.store.sessions() as s:
        row = s.scalars(select(AuditRow).order_by(AuditRow.id.desc())).first()
    assert row is not None and row.operation == "failed login"
    assert row.username == row.target == "adm\\u202enimda"


def test_changing_the_login_password_ends_every_other_session(services: Services) -> None:
    otp = _admin_password(services)
    admin = services.auth.authenticate("admin", otp, "127.0.0.1")
    seen_otp = services.auth.create_session(admin.id, "198.51.100.7")  # someone else
    mine = services.auth.create_session(admin.id, "127.0.0.1")
    fresh = services.auth.change_password(admin.id, otp, "A-new-login-pw-1", "127.0.0.1")
    assert services.auth.session_user(seen_otp) is None
    assert services.auth.session_user(mine) is None  # replaced by a new token
    user = services.auth.session_user(fresh)
    assert user is not None and not user.must_change_password


def test_guessing_the_current_password_locks_the_account_and_ends_its_sessions(
    services: Services,
) -> None:
    otp = _admin_password(services)
    admin = services.auth.authenticate("admin", otp, "127.0.0.1")
    stolen = services.auth.create_session(admin.id, "198.51.100.7")
    for n in range(services.auth.lockout_threshold):
        assert services.auth.session_user(stolen) is not None, n
        with pytest.raises(ValidationError, match="current password is not correct"):
            services.auth.change_password(
                admin.id, f"guess-{n}", "A-new-login-pw-1", "198.51.100.7"
            )
    assert services.auth.session_user(stolen) is None
    with pytest.raises(AccountLockedError):
        services.auth.authenticate("admin", otp, "127.0.0.1")
    with services.store.sessions() as s:
        rows = s.scalars(select(AuditRow).order_by(AuditRow.id)).all()
    wrong = [r for r in rows if r.operation == "change login password" and r.result == "failure"]
    assert len(wrong) == services.auth.lockout_threshold
    assert all(r.source_ip == "198.51.100.7" for r in wrong)
    assert any(r.operation == "account locked" and "sessions ended" in r.detail for r in rows)


def test_logging_in_again_ends_the_browser_s_earlier_session(services: Services) -> None:
    otp = _admin_password(services)
    admin = services.auth.authenticate("admin", otp, "127.0.0.1")
    first = services.auth.create_session(admin.id, "127.0.0.1")
    second = services.auth.create_session(admin.id, "127.0.0.1", first)
    assert services.auth.session_user(first) is None
    assert services.auth.session_user(second) is not None


def test_a_short_idle_timeout_is_kept_to_within_a_tenth(services: Services) -> None:
    """The last-seen time is written at most every tenth of the timeout (30 s at most):
    with a 60 s timeout, a request 29 s in keeps the session for 60 s more, less 6 s."""
    from node.auth import AuthService

    otp = _admin_password(services)
    auth = AuthService(services.store, services.audit, idle_timeout_s=60)
    user = auth.authenticate("admin", otp, "127.0.0.1")
    token = auth.create_session(user.id, "127.0.0.1")
    t0 = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    seconds = dt.timedelta(seconds=1)
    assert auth.session_user(token, now=t0 + 29 * seconds) is not None
    assert auth.session_user(token, now=t0 + 83 * seconds) is not None  # 54 s idle
    assert auth.session_user(token, now=t0 + 150 * seconds) is None
