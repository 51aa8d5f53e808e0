"""API users and their AUTHTOKENs (application-to-application access over the REST API).

An API user is a :class:`User` with ``kind='api'``: it has a role like anyone else, but no
login password, so it can never log in to the console. Its token is shown once, when it is
issued; the database keeps only a short prefix (to find the row and to name the token in
logs and audit rows) and the SHA-256 of the whole token, compared in constant time.

A token checked against the database is then known to this process for at most
KNOWN_FOR seconds, and only until this process next ends a write transaction (the store's
``write_epoch``): a token revoked, or a user disabled, deleted or given another role
through this node (console, REST API or CLI, which talks to the running node) is refused
from the next request on. A change that reaches the database some other way (SQL typed
into it) takes effect within KNOWN_FOR seconds. Only tokens that passed are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from node.audit import AuditEvent, AuditLog
from node.auth import SessionUser, normalize_username
from node.errors import ConflictError, NotFoundError, ValidationError
from node.roles import Role
from node.store.db import Store
from node.store.models import ApiToken, User, utcnow

log = logging.getLogger("strongroom.api_tokens")

PREFIX_LEN = 8
MAX_TOKEN_LEN = 128
MAX_NAME_LEN = 64
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]*$")
KNOWN_FOR = 1.0  # seconds a checked token is trusted without reading it again (at most)
KNOWN_MAX = 1024  # tokens kept; when full, all are forgotten
_TOKENS = cast(Table, ApiToken.__table__)
_USERS = cast(Table, User.__table__)
# Built once, in Core: it runs on every API request.
_BY_PREFIX = (
    select(
        _TOKENS.c.token_hash,
        _USERS.c.id,
        _USERS.c.username,
        _USERS.c.role,
        _USERS.c.status,
        _USERS.c.kind,
        _USERS.c.full_name,
    )
    .join(_USERS, _USERS.c.id == _TOKENS.c.user_id)
    .where(_TOKENS.c.prefix == bindparam("prefix"), _TOKENS.c.revoked_at.is_(None))
)


def new_token() -> str:
    """A fresh AUTHTOKEN: 128 random bits, written like Password Manager Pro's tokens
    (upper-case hex in UUID groups), so clients that check the shape keep working."""
    raw = secrets.token_hex(16).upper()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _digest_of(presented: str) -> str | None:
    """The digest of a presented token (spaces around it ignored), or None when it cannot
    be a token at all (too short or too long)."""
    token = presented.strip()
    if len(token) < PREFIX_LEN + 8 or len(token) > MAX_TOKEN_LEN:
        return None
    return _digest(token)


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued. ``token`` exists only in this object: show it once."""

    user_id: int
    username: str
    role: Role
    token: str

    @property
    def prefix(self) -> str:
        return self.token[:PREFIX_LEN]


@dataclass(frozen=True)
class ApiUserInfo:
    id: int
    username: str
    role: Role
    status: str
    created_at: dt.datetime
    token_prefix: str | None  # the live token's prefix; None when revoked or never issued
    token_created_at: dt.datetime | None


def check_api_username(raw: str) -> str:
    name = normalize_username(raw)
    if not name:
        raise ValidationError("the API user needs a name")
    if len(name) > MAX_NAME_LEN:
        raise ValidationError(f"the API user's name must have at most {MAX_NAME_LEN} characters")
    if not _NAME_RE.match(name):
        raise ValidationError(
            "the API user's name may contain only letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    return name


class ApiTokenService:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit
        # token digest -> (store write epoch when read, monotonic deadline, its user)
        self._known: dict[str, tuple[int, float, SessionUser]] = {}

    # administration ---------------------------------------------------------------------

    def add_api_user(self, name: str, role: Role, actor: str, source_ip: str) -> IssuedToken:
        """Create an API user with ``role`` and issue its first token."""
        username = check_api_username(name)
        with self._store.transaction() as session:
            taken = session.scalars(select(User.id).where(User.username == username)).first()
            if taken is not None:
                raise ConflictError(f"a user named '{username}' already exists")
            user = User(username=username, full_name=username, role=role, kind="api")
            session.add(user)
            session.flush()
            issued = self._issue(session, user)
            self._record(
                session,
                "add api user",
                actor,
                source_ip,
                username,
                f"{issued.prefix} (role {issued.role.label})",
            )
        log.info("API user added", extra={"user": username, "prefix": issued.prefix})
        return issued

    def regenerate(self, name: str, actor: str, source_ip: str) -> IssuedToken:
        """Revoke the API user's tokens and issue a new one. A disabled API user stays
        disabled (enabling is the user page's, audited as such): the token works once the
        user is enabled again."""
        with self._store.transaction() as session:
            user = self._api_user(session, name)
            self._revoke_all(session, user.id)
            issued = self._issue(session, user)
            self._record(session, "new api token", actor, source_ip, user.username, issued.prefix)
        log.info("API token issued", extra={"user": user.username, "prefix": issued.prefix})
        return issued

    def revoke(self, name: str, actor: str, source_ip: str) -> int:
        """Revoke every live token of the API user; returns how many were live."""
        with self._store.transaction() as session:
            user = self._api_user(session, name)
            count = self._revoke_all(session, user.id)
            self._record(
                session, "revoke api token", actor, source_ip, user.username, f"{count} revoked"
            )
        log.info("API tokens revoked", extra={"user": user.username, "count": count})
        return count

    def list_api_users(self) -> list[ApiUserInfo]:
        with self._store.sessions() as session:
            users = session.scalars(
                select(User).where(User.kind == "api").order_by(User.username)
            ).all()
            live = {
                t.user_id: t
                for t in session.scalars(
                    select(ApiToken).where(ApiToken.revoked_at.is_(None)).order_by(ApiToken.id)
                ).all()
            }
            return [
                ApiUserInfo(
                    id=u.id,
                    username=u.username,
                    role=Role(u.role),
                    status=u.status,
                    created_at=u.created_at,
                    token_prefix=live[u.id].prefix if u.id in live else None,
                    token_created_at=live[u.id].created_at if u.id in live else None,
                )
                for u in users
            ]

    # authentication ---------------------------------------------------------------------

    def known(self, token: str) -> SessionUser | None:
        """The API user of a token this process checked less than KNOWN_FOR seconds ago
        with no write of its own since, without touching the database; else None (which
        says nothing: :meth:`authenticate` decides)."""
        digest = _digest_of(token)
        return None if digest is None else self._recall(digest, self._store.write_epoch)

    def _recall(self, digest: str, epoch: int) -> SessionUser | None:
        known = self._known.get(digest)
        if known is not None and known[0] == epoch and time.monotonic() < known[1]:
            return known[2]
        return None

    def authenticate(self, token: str) -> SessionUser | None:
        """The API user a token belongs to, or None for a missing, malformed, revoked or
        unknown token, or one whose user is disabled."""
        digest = _digest_of(token)
        if digest is None:
            return None
        token = token.strip()
        epoch, now = self._store.write_epoch, time.monotonic()  # both before the read
        user = self._recall(digest, epoch)
        if user is not None:
            return user
        with self._store.reading() as conn:
            rows = conn.execute(_BY_PREFIX, {"prefix": token[:PREFIX_LEN]}).all()
        match = None
        for row in rows:
            # Compare every candidate, so timing says nothing about which one matched.
            if hmac.compare_digest(row.token_hash, digest):
                match = row
        if match is None or match.status != "active" or match.kind != "api":
            return None
        user = SessionUser(
            id=match.id,
            username=match.username,
            role=Role(match.role),
            super_admin=False,
            must_change_password=False,
            full_name=match.full_name,
        )
        if len(self._known) >= KNOWN_MAX:
            self._known.clear()
        self._known[digest] = (epoch, now + KNOWN_FOR, user)
        return user

    # internals --------------------------------------------------------------------------

    def _api_user(self, session: Session, name: str) -> User:
        username = normalize_username(name)
        user = session.scalars(
            select(User).where(User.username == username, User.kind == "api")
        ).first()
        if user is None:
            raise NotFoundError(f"no API user named '{username[:MAX_NAME_LEN]}'")
        return user

    def _issue(self, session: Session, user: User) -> IssuedToken:
        token = new_token()
        session.add(ApiToken(user_id=user.id, prefix=token[:PREFIX_LEN], token_hash=_digest(token)))
        return IssuedToken(
            user_id=user.id, username=user.username, role=Role(user.role), token=token
        )

    def _revoke_all(self, session: Session, user_id: int) -> int:
        result = session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def _record(
        self, session: Session, op: str, actor: str, ip: str, target: str, detail: str
    ) -> None:
        self._audit.append(
            session,
            AuditEvent(
                operation=op,
                username=actor,
                source_ip=ip,
                target=target,
                category="user",
                detail=f"token {detail}" if op != "revoke api token" else detail,
            ),
        )
