"""Logins, lockout, browser sessions and the initial administrator.

Password hashing is slow on purpose; web handlers call :meth:`AuthService.authenticate`
and :meth:`AuthService.change_password` from a thread pool, never on the event loop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import unicodedata
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from node.audit import AuditEvent, AuditLog
from node.errors import AccountLockedError, AuthenticationError, ValidationError
from node.inputs import visible
from node.passwords import dummy_hash, hash_password, one_time_password, verify_password
from node.roles import Role
from node.store.db import Store
from node.store.models import LoginSession, User, utcnow

log = logging.getLogger("strongroom.auth")

MIN_LOGIN_PASSWORD = 12
MAX_LOGIN_PASSWORD = 256
INITIAL_ADMIN = "admin"
_TOUCH_EVERY = dt.timedelta(seconds=30)


def normalize_username(raw: str) -> str:
    """The one normal form of a username: NFKC, stripped, case-folded."""
    return unicodedata.normalize("NFKC", raw).strip().casefold()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionUser:
    """Who a request acts as: a snapshot, safe to pass between threads."""

    id: int
    username: str
    role: Role
    super_admin: bool
    must_change_password: bool
    full_name: str = ""


def _snapshot(user: User) -> SessionUser:
    return SessionUser(
        id=user.id,
        username=user.username,
        role=Role(user.role),
        super_admin=user.super_admin,
        must_change_password=user.must_change_password,
        full_name=user.full_name,
    )


def check_login_password_rules(password: str) -> None:
    if len(password) < MIN_LOGIN_PASSWORD:
        raise ValidationError(
            f"the new password must have at least {MIN_LOGIN_PASSWORD} characters"
        )
    if len(password) > MAX_LOGIN_PASSWORD:
        raise ValidationError(f"the new password must have at most {MAX_LOGIN_PASSWORD} characters")


class AuthService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        *,
        lockout_threshold: int = 5,
        lockout_minutes: int = 15,
        idle_timeout_s: int = 900,
    ) -> None:
        self._store = store
        self._audit = audit
        self.lockout_threshold = lockout_threshold
        self.lockout = dt.timedelta(minutes=lockout_minutes)
        self.idle_timeout = dt.timedelta(seconds=idle_timeout_s)
        # A session's last-seen time is written at most this often; the idle timeout is
        # counted from it, so a session may end this much early: a tenth of the timeout
        # at most (at most 30 s).
        self._touch_every = min(_TOUCH_EVERY, self.idle_timeout / 10)

    # logins -----------------------------------------------------------------------------

    @property
    def failure_message(self) -> str:
        minutes = int(self.lockout.total_seconds() // 60)
        return (
            f"Invalid username or password. After {self.lockout_threshold} failed logins in a "
            f"row an account is locked for {minutes} minutes (an administrator can unlock it "
            "by giving a new login password)."
        )

    def authenticate(
        self, username: str, password: str, source_ip: str, now: dt.datetime | None = None
    ) -> SessionUser:
        """Check a username and password. Raises :class:`AuthenticationError` with the same
        message for an unknown user, a wrong password and a locked account (a different
        one for a lock would tell which names exist; the message says how locking works),
        and locks the account after the configured number of failures. Every attempt is
        audited, a locked account's as such."""
        now = now or utcnow()
        name = normalize_username(username)
        with self._store.sessions() as session:
            user = session.scalars(select(User).where(User.username == name)).first()
            encoded = user.password_hash if user and user.password_hash else dummy_hash()
        ok = bool(verify_password(password, encoded) and user is not None and user.password_hash)
        failure: AuthenticationError | None = None
        with self._store.transaction() as session:
            user = session.scalars(select(User).where(User.username == name)).first()
            if user is not None and user.locked_until is not None and user.locked_until > now:
                self._record(session, name, source_ip, "failed login", "account locked")
                failure = AccountLockedError(self.failure_message)
            elif not ok or user is None or user.status != "active" or user.kind != "person":
                if user is not None and user.kind == "person":
                    user.failed_logins += 1
                    if user.failed_logins >= self.lockout_threshold:
                        user.locked_until = now + self.lockout
                        user.failed_logins = 0
                        self._record(
                            session,
                            name,
                            source_ip,
                            "account locked",
                            f"{self.lockout_threshold} failed logins",
                        )
                self._record(session, name, source_ip, "failed login", "")
                failure = AuthenticationError(self.failure_message)
            else:
                user.failed_logins = 0
                user.locked_until = None
                user.last_login_at = now
                self._record(session, name, source_ip, "login", "", result="success")
                snapshot = _snapshot(user)
        # Raised after the commit, so failed attempts and their audit rows are kept.
        if failure is not None:
            raise failure
        return snapshot

    def record_failed_api_login(
        self, token_prefix: str, source_ip: str, left_out: int = 0, elsewhere: int = 0
    ) -> None:
        """Audit a REST API request whose AUTHTOKEN is unknown or revoked (a failed login of
        an application): the token's first characters only, as the node's log has them;
        ``left_out``: how many such failures from ``source_ip`` got no row of their own
        since its last one (the web layer writes at most one every few seconds)."""
        counts = [f"{left_out} more from this address since its last row"] if left_out else []
        if elsewhere:
            counts.append(f"{elsewhere} from other addresses without a row of their own")
        more = f" ({'; '.join(counts)})" if counts else ""
        with self._store.transaction() as session:
            self._record(
                session,
                "",
                source_ip,
                "failed login",
                f"REST API: unknown or revoked AUTHTOKEN {visible(token_prefix)}...{more}",
            )

    def record_refusal(self, username: str, source_ip: str, request: str, why: str) -> None:
        """Audit a request refused for want of permission (HTTP 403): who, from where, what
        they asked for (``request``: method and path, never a query string) and the
        refusal's message (which never holds a secret)."""
        with self._store.transaction() as session:
            self._record(session, username, source_ip, "refused", why, target=request)

    def _record(
        self,
        session: Session,
        name: str,
        ip: str,
        op: str,
        detail: str,
        result: str = "failure",
        *,
        target: str | None = None,
    ) -> None:
        """A user-audit row about ``name`` (the target too, unless given); a failed login's
        name is whatever was typed, so it is recorded :func:`visible`."""
        shown = visible(name)
        self._audit.append(
            session,
            AuditEvent(
                operation=op,
                username=shown,
                source_ip=ip,
                target=shown if target is None else visible(target),
                category="user",
                result=result,
                detail=detail,
            ),
        )

    # sessions ---------------------------------------------------------------------------

    def create_session(self, user_id: int, source_ip: str, replaces: str | None = None) -> str:
        """A new session of ``user_id``; ``replaces``: the token the browser held before,
        whose session (whoever's it was) ends."""
        token = secrets.token_urlsafe(32)
        with self._store.transaction() as session:
            if replaces:
                session.execute(
                    delete(LoginSession).where(LoginSession.token_hash == token_hash(replaces))
                )
            session.add(
                LoginSession(
                    token_hash=token_hash(token), user_id=user_id, source_ip=source_ip[:64]
                )
            )
        return token

    def session_user(self, token: str, now: dt.datetime | None = None) -> SessionUser | None:
        """The user of a live session, or None. Ends sessions idle for too long. Runs on
        every request, so it only reads, and writes only to end a session or to move its
        last-seen time (at most every 30 s)."""
        now = now or utcnow()
        with self._store.sessions() as session:
            found = session.execute(
                select(LoginSession.id, LoginSession.last_seen_at, User)
                .join(User, User.id == LoginSession.user_id)
                .where(LoginSession.token_hash == token_hash(token))
            ).first()
        if found is None:
            return None
        session_id, last_seen, user = found
        if now - last_seen > self.idle_timeout or user.status != "active":
            with self._store.transaction() as session:
                session.execute(delete(LoginSession).where(LoginSession.id == session_id))
            return None
        if now - last_seen > self._touch_every:
            with self._store.transaction() as session:
                session.execute(
                    update(LoginSession)
                    .where(LoginSession.id == session_id)
                    .values(last_seen_at=now)
                )
        return _snapshot(user)

    def logout(self, token: str, username: str, source_ip: str) -> None:
        with self._store.transaction() as session:
            session.execute(
                delete(LoginSession).where(LoginSession.token_hash == token_hash(token))
            )
            self._record(session, username, source_ip, "logout", "", result="success")

    def end_sessions_of(self, user_id: int) -> None:
        with self._store.transaction() as session:
            session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))

    # passwords --------------------------------------------------------------------------

    def change_password(self, user_id: int, current: str, new: str, source_ip: str) -> str:
        """Change one's own login password; the current one must be given. Every session
        of the user ends (one opened with the old password, or a one-time password someone
        else saw, no longer works); returns the token of a new session for the caller.

        A wrong current password counts as a failed login (audited; at the lockout
        threshold the account locks and its sessions end), so that someone holding a
        session cannot guess the password behind it at leisure."""
        check_login_password_rules(new)
        if new == current:
            raise ValidationError("the new password must differ from the current one")
        with self._store.sessions() as session:
            user = session.get(User, user_id)
            encoded = user.password_hash if user and user.password_hash else dummy_hash()
        if user is None or not verify_password(current, encoded):
            self._wrong_current_password(user_id, source_ip)
            raise ValidationError("the current password is not correct")
        new_hash = hash_password(new)
        token = secrets.token_urlsafe(32)
        with self._store.transaction() as session:
            user = session.get(User, user_id)
            assert user is not None
            user.password_hash = new_hash
            user.must_change_password = False
            user.password_changed_at = utcnow()
            user.failed_logins = 0
            session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
            session.add(
                LoginSession(
                    token_hash=token_hash(token), user_id=user.id, source_ip=source_ip[:64]
                )
            )
            self._record(
                session,
                user.username,
                source_ip,
                "change login password",
                "other sessions ended",
                result="success",
            )
        return token

    def _wrong_current_password(self, user_id: int, source_ip: str) -> None:
        now = utcnow()
        with self._store.transaction() as session:
            user = session.get(User, user_id)
            if user is None:
                return
            user.failed_logins += 1
            self._record(
                session,
                user.username,
                source_ip,
                "change login password",
                "the current password given was wrong",
            )
            if user.failed_logins >= self.lockout_threshold:
                user.locked_until = now + self.lockout
                user.failed_logins = 0
                session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
                self._record(
                    session,
                    user.username,
                    source_ip,
                    "account locked",
                    f"{self.lockout_threshold} wrong passwords; its sessions ended",
                )

    def reset_password(self, username: str, actor: str, source_ip: str) -> str:
        """Give ``username`` a new one-time password (must be changed at next login) and
        lift any lockout. Returns the one-time password; it is never stored in clear."""
        name = normalize_username(username)
        otp = one_time_password()
        new_hash = hash_password(otp)
        with self._store.transaction() as session:
            user = session.scalars(select(User).where(User.username == name)).first()
            if user is None:
                raise ValidationError(f"no user named '{name}'")
            if user.kind != "person":
                raise ValidationError(
                    f"'{name}' is an API user: it has no login password (revoke its token "
                    "and add it again for a new one)"
                )
            user.password_hash = new_hash
            user.must_change_password = True
            user.failed_logins = 0
            user.locked_until = None
            session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
            self._audit.append(
                session,
                AuditEvent(
                    operation="reset login password",
                    username=actor,
                    source_ip=source_ip,
                    target=name,
                    category="user",
                ),
            )
        return otp

    # first start ------------------------------------------------------------------------

    def bootstrap_admin(self) -> str | None:
        """On an empty vault, create ``admin`` with a one-time password and return it.
        Returns None when any user exists already."""
        with self._store.sessions() as session:
            if session.scalars(select(User.id).limit(1)).first() is not None:
                return None
        otp = one_time_password()
        new_hash = hash_password(otp)
        with self._store.transaction() as session:
            session.add(
                User(
                    username=INITIAL_ADMIN,
                    full_name="Administrator",
                    role=Role.ADMINISTRATOR,
                    super_admin=True,
                    password_hash=new_hash,
                    must_change_password=True,
                )
            )
            self._audit.append(
                session,
                AuditEvent(
                    operation="add user",
                    username="system",
                    source_ip="local",
                    target=INITIAL_ADMIN,
                    category="user",
                    detail="initial administrator",
                ),
            )
        return otp
