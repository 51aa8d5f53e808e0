"""Vault users, user groups, custom fields, roles and the Super Administrator scope.

Methods of :class:`UserService` take the acting user and source IP and audit every change
(category "user") in the same transaction:

- ``add_user(actor, ip, username, role, ...)`` -> :class:`NewUser` with a one-time login
  password that must be changed at first login (API users get none). Usernames are
  normalised with node.auth.normalize_username. The one place a licence check on the
  number of administrators belongs is the top of its transaction (and ``change_role``).
- ``edit_user``, ``set_enabled`` (disabling ends the user's sessions), ``delete_user``
  (refused while the user owns resources or groups: transfer ownership first),
  ``change_role`` (to Password User or Auditor: refused, like a deletion, while the user
  owns resources or groups), ``grant_super_admin`` / ``revoke_super_admin`` (an administrator-type
  user, by another administrator, never by themself). Once a Super Administrator exists,
  only a Super Administrator grants or revokes the scope, and a Super Administrator's
  account is changed only by another one (``require_may_manage``: also for a new login
  password): else an administrator without the scope could take it, through a second
  administrator account of their own, or take over a scoped account.
- ``list_users``, ``get_user``, ``user_id_by_name``: need MANAGE_USERS or SHARE (people who
  share must pick users; every role may pass on a Full share). Without MANAGE_USERS the
  views are the directory only: id, name, full name, role, kind and status (no e-mail,
  custom attributes, groups or login times).
- user groups: ``create_user_group``, ``edit_user_group``, ``delete_user_group``,
  ``add_group_member``, ``remove_group_member``, ``list_user_groups``.
- custom fields: ``define_field``, ``delete_field``, ``list_fields`` (values are checked by
  node.inputs.clean_attributes wherever attributes are saved).

Errors: ValidationError (bad name, role, e-mail, over-long text; acting on oneself where
that is forbidden), NotFoundError (unknown id), PermissionDeniedError (role lacks the
action), ConflictError (duplicate name; the last active administrator would go; the user
still owns objects), AuditWriteError.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, object_session

from node.audit import AuditLog, user_event
from node.auth import SessionUser, normalize_username
from node.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from node.inputs import (
    FIELD_KINDS,
    FIELD_TYPES,
    clean_attributes,
    conflict_on_duplicate,
    get_row,
    name_clash,
    one_line,
    updated_attributes,
)
from node.licence_service import LicenceService
from node.passwords import hash_password, one_time_password
from node.permissions import Action, allowed, require
from node.roles import Role, parse_role
from node.store.db import Store
from node.store.models import (
    CustomField,
    LoginSession,
    PasswordHistory,
    Resource,
    ResourceGroup,
    Share,
    User,
    UserGroup,
    UserGroupMember,
)

_USERNAME = re.compile(r"^[\w.@+-]+$")
USER_KINDS = ("person", "api")


@dataclass(frozen=True)
class NewUser:
    id: int
    username: str
    one_time_password: str | None  # shown once; None for an API user


@dataclass(frozen=True)
class UserView:
    id: int
    username: str
    full_name: str
    email: str
    role: Role
    super_admin: bool
    kind: str
    status: str
    must_change_password: bool
    last_login_at: dt.datetime | None
    created_at: dt.datetime
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    locked_until: dt.datetime | None = None  # after failed logins (naive UTC), if any


def scope_keepers(session: Session) -> int:
    """How many active Administrators hold the Super Administrator scope: those who can
    manage it and the accounts that hold it. While there is none, the scope's guards are
    open to every Administrator (the first grant; or holders who are all Password
    Administrators, whose role cannot manage users: else nobody could ever disable them)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(
                User.super_admin.is_(True),
                User.status == "active",
                User.role == Role.ADMINISTRATOR.value,
            )
        )
        or 0
    )


def guard_scoped(actor: SessionUser, u: User, what: str) -> None:
    """Refuse ``what`` on the Super Administrator ``u`` to an actor without the scope (their
    account, group memberships, the ownership of their resources: each would hand an
    administrator without the scope what the scope guards), unless no Administrator holds
    the scope (:func:`scope_keepers`)."""
    if not u.super_admin or actor.super_admin or u.id == actor.id:
        return
    session = object_session(u)
    if session is not None and not scope_keepers(session):
        return
    raise PermissionDeniedError(
        f"{u.username} is a Super Administrator: only a Super Administrator may {what}"
    )


def _as_seen_by(actor: SessionUser, view: UserView) -> UserView:
    """``view`` as ``actor`` may see it: whole for those who manage users, else only what
    picking someone to share with needs."""
    if allowed(actor.role, Action.MANAGE_USERS):
        return view
    return replace(
        view,
        email="",
        must_change_password=False,
        last_login_at=None,
        custom_attributes={},
        groups=[],
        locked_until=None,
    )


@dataclass(frozen=True)
class UserChanges:
    """Fields to change; None leaves a field as it is."""

    full_name: str | None = None
    email: str | None = None
    custom_attributes: Mapping[str, object] | None = None


@dataclass(frozen=True)
class UserGroupView:
    id: int
    name: str
    description: str
    members: list[str]


@dataclass(frozen=True)
class FieldView:
    id: int
    applies_to: str
    name: str
    field_type: str


def clean_username(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValidationError("username must be text")
    name = normalize_username(raw)
    if not name:
        raise ValidationError("username is required")
    if len(name) > 128:
        raise ValidationError("username is too long (at most 128 characters)")
    if not _USERNAME.match(name):
        raise ValidationError("username may contain only letters, digits and . _ @ + - (no spaces)")
    return name


def _clean_email(raw: object) -> str:
    text = one_line("e-mail", raw, 256)
    if text and not re.match(r"^[^@\s]+@[^@\s]+$", text):
        raise ValidationError("e-mail is not an e-mail address")
    return text


class UserService:
    def __init__(self, store: Store, audit: AuditLog, licence: LicenceService) -> None:
        self._store = store
        self._audit = audit
        self._licence = licence  # limits the number of administrators

    def _log(
        self, s: Session, actor: SessionUser, ip: str, op: str, target: str, detail: str = ""
    ) -> None:
        self._audit.append(s, user_event(actor, ip, op, target, detail))

    @staticmethod
    def _user(s: Session, user_id: int) -> User:
        u = get_row(s, User, user_id)
        if u is None:
            raise NotFoundError(f"no user with id {user_id}")
        return u

    @staticmethod
    def _guard_scoped(actor: SessionUser, u: User) -> None:
        guard_scoped(actor, u, "change their account")

    @staticmethod
    def _guard_scope_change(s: Session, actor: SessionUser) -> None:
        """Who may grant or revoke the scope: a Super Administrator, or while no active
        Administrator holds it (:func:`scope_keepers`), any administrator allowed to."""
        if actor.super_admin:
            return
        if scope_keepers(s):
            raise PermissionDeniedError(
                "only a Super Administrator may grant or revoke the Super Administrator scope"
            )

    def require_may_manage(self, actor: SessionUser, user_id: int) -> None:
        """Raise PermissionDeniedError unless ``actor`` may manage the account ``user_id``
        (a new login password, say): MANAGE_USERS, and a Super Administrator's account only
        as a Super Administrator."""
        require(actor.role, Action.MANAGE_USERS)
        with self._store.sessions() as s:
            self._guard_scoped(actor, self._user(s, user_id))

    @staticmethod
    def _can_list(actor: SessionUser) -> None:
        if not (allowed(actor.role, Action.MANAGE_USERS) or allowed(actor.role, Action.SHARE)):
            raise PermissionDeniedError(
                f"your role ({actor.role.label}) does not allow: list users"
            )

    @staticmethod
    def _keeps_an_admin(s: Session, leaving: User) -> None:
        """Refuse a change that would leave no active Administrator person."""
        if leaving.role != Role.ADMINISTRATOR or leaving.status != "active":
            return
        others = s.scalar(
            select(func.count())
            .select_from(User)
            .where(
                User.role == Role.ADMINISTRATOR.value,
                User.status == "active",
                User.kind == "person",
                User.id != leaving.id,
            )
        )
        if not others:
            raise ConflictError("the vault must keep at least one active Administrator")

    @staticmethod
    def _owns_nothing(s: Session, u: User, why: str) -> None:
        """Refuse while ``u`` owns resources or resource groups: they go first, by a
        transfer of ownership (``why``: said after that, or "" for a deletion)."""
        owned = (
            s.scalar(select(func.count()).select_from(Resource).where(Resource.owner_id == u.id))
            or 0
        ) + (
            s.scalar(
                select(func.count())
                .select_from(ResourceGroup)
                .where(ResourceGroup.owner_id == u.id)
            )
            or 0
        )
        if owned:
            raise ConflictError(
                f"{u.username} still owns {owned} resources or groups; transfer ownership "
                f"first{why}"
            )

    # users --------------------------------------------------------------------------------

    def add_user(
        self,
        actor: SessionUser,
        ip: str,
        username: str,
        role: Role | str,
        *,
        full_name: str = "",
        email: str = "",
        custom_attributes: Mapping[str, object] | None = None,
        kind: str = "person",
    ) -> NewUser:
        require(actor.role, Action.MANAGE_USERS)
        name = clean_username(username)
        the_role = role if isinstance(role, Role) else parse_role(role)
        if kind not in USER_KINDS:
            raise ValidationError("user kind must be 'person' or 'api'")
        full = one_line("full name", full_name, 256)
        mail = _clean_email(email)
        otp = one_time_password() if kind == "person" else None
        encoded = hash_password(otp) if otp is not None else None
        with (
            conflict_on_duplicate(f"a user named '{name}' exists already"),
            self._store.transaction() as s,
        ):
            if s.scalars(select(User.id).where(User.username == name)).first() is not None:
                raise ConflictError(f"a user named '{name}' exists already")
            if the_role.is_admin_type and kind == "person":
                self._licence.check_add_administrator(s)
            user = User(
                username=name,
                full_name=full,
                email=mail,
                role=the_role.value,
                kind=kind,
                status="active",
                password_hash=encoded,
                must_change_password=otp is not None,
                custom_attributes=clean_attributes(s, "user", custom_attributes),
            )
            s.add(user)
            s.flush()
            self._log(s, actor, ip, "add user", name, f"role {the_role.label}, {kind}")
            return NewUser(user.id, name, otp)

    def edit_user(self, actor: SessionUser, ip: str, user_id: int, changes: UserChanges) -> None:
        require(actor.role, Action.MANAGE_USERS)
        with self._store.transaction() as s:
            u = self._user(s, user_id)
            self._guard_scoped(actor, u)
            before = (u.full_name, u.email, dict(u.custom_attributes or {}))
            if changes.full_name is not None:
                u.full_name = one_line("full name", changes.full_name, 256)
            if changes.email is not None:
                u.email = _clean_email(changes.email)
            if changes.custom_attributes is not None:
                u.custom_attributes = updated_attributes(
                    s, "user", u.custom_attributes, changes.custom_attributes
                )
            after = (u.full_name, u.email, dict(u.custom_attributes or {}))
            names = ("full_name", "email", "custom_attributes")
            changed = [n for n, old, new in zip(names, before, after, strict=True) if old != new]
            self._log(s, actor, ip, "edit user", u.username, ",".join(changed) or "no change")

    def set_enabled(self, actor: SessionUser, ip: str, user_id: int, enabled: bool) -> None:
        require(actor.role, Action.MANAGE_USERS)
        if user_id == actor.id and not enabled:
            raise ValidationError("you cannot disable yourself")
        with self._store.transaction() as s:
            u = self._user(s, user_id)
            self._guard_scoped(actor, u)
            if not enabled:
                self._keeps_an_admin(s, u)
                s.execute(delete(LoginSession).where(LoginSession.user_id == u.id))
            u.status = "active" if enabled else "disabled"
            self._log(s, actor, ip, "enable user" if enabled else "disable user", u.username)

    def delete_user(self, actor: SessionUser, ip: str, user_id: int) -> None:
        require(actor.role, Action.MANAGE_USERS)
        if user_id == actor.id:
            raise ValidationError("you cannot delete yourself")
        with self._store.transaction() as s:
            u = self._user(s, user_id)
            self._guard_scoped(actor, u)
            self._keeps_an_admin(s, u)
            self._owns_nothing(s, u, "")
            # keep history rows, forget who they point at
            s.execute(
                update(PasswordHistory)
                .where(PasswordHistory.changed_by == u.id)
                .values(changed_by=None)
            )
            s.execute(update(Share).where(Share.granted_by == u.id).values(granted_by=None))
            s.execute(update(Resource).where(Resource.deleted_by == u.id).values(deleted_by=None))
            s.execute(
                update(User)
                .where(User.super_admin_granted_by == u.id)
                .values(super_admin_granted_by=None)
            )
            self._log(s, actor, ip, "delete user", u.username)
            s.execute(delete(User).where(User.id == u.id))

    def change_role(self, actor: SessionUser, ip: str, user_id: int, role: Role | str) -> None:
        require(actor.role, Action.MANAGE_USERS)
        the_role = role if isinstance(role, Role) else parse_role(role)
        if user_id == actor.id:
            raise ValidationError("you cannot change your own role")
        with self._store.transaction() as s:
            u = self._user(s, user_id)
            self._guard_scoped(actor, u)
            old = Role(u.role)
            if old == the_role:
                return
            if the_role != Role.ADMINISTRATOR:
                self._keeps_an_admin(s, u)
            if the_role.is_admin_type and not old.is_admin_type and u.kind == "person":
                self._licence.check_add_administrator(s)
            if not the_role.is_admin_type:
                # An owner has Owner access to what they own, whatever their role: a
                # Password User or Auditor would keep seeing and sharing all of it. Owners
                # are administrators (a transfer goes only to one).
                self._owns_nothing(s, u, f" (a {the_role.label} owns nothing)")
            u.role = the_role.value
            detail = f"{old.label} -> {the_role.label}"
            if u.super_admin and not the_role.is_admin_type:
                u.super_admin = False
                u.super_admin_granted_by = None
                detail += "; Super Administrator scope removed"
            self._log(s, actor, ip, "change role", u.username, detail)

    def grant_super_admin(self, actor: SessionUser, ip: str, user_id: int) -> None:
        require(actor.role, Action.GRANT_SUPER_ADMIN)
        if user_id == actor.id:
            raise PermissionDeniedError(
                "you cannot grant the Super Administrator scope to yourself"
            )
        with self._store.transaction() as s:
            self._guard_scope_change(s, actor)
            u = self._user(s, user_id)
            if not Role(u.role).is_admin_type:
                raise ValidationError(
                    "only an Administrator or Password Administrator can be a Super Administrator"
                )
            if u.kind != "person":
                raise ValidationError("an API user cannot be a Super Administrator")
            if u.super_admin:
                raise ValidationError(f"{u.username} holds the Super Administrator scope already")
            u.super_admin = True
            u.super_admin_granted_by = actor.id
            self._log(s, actor, ip, "grant super admin", u.username)

    def revoke_super_admin(self, actor: SessionUser, ip: str, user_id: int) -> None:
        require(actor.role, Action.GRANT_SUPER_ADMIN)
        with self._store.transaction() as s:
            self._guard_scope_change(s, actor)
            u = self._user(s, user_id)
            if not u.super_admin:
                raise ValidationError(f"{u.username} does not hold the Super Administrator scope")
            u.super_admin = False
            u.super_admin_granted_by = None
            self._log(s, actor, ip, "revoke super admin", u.username)

    def _views(self, s: Session, rows: list[User]) -> list[UserView]:
        ids = [u.id for u in rows]
        groups: dict[int, list[str]] = {}
        if ids:
            for uid, gname in s.execute(
                select(UserGroupMember.user_id, UserGroup.name)
                .join(UserGroup, UserGroup.id == UserGroupMember.group_id)
                .where(UserGroupMember.user_id.in_(ids))
                .order_by(UserGroup.name)
            ).all():
                groups.setdefault(uid, []).append(gname)
        return [
            UserView(
                id=u.id,
                username=u.username,
                full_name=u.full_name,
                email=u.email,
                role=Role(u.role),
                super_admin=u.super_admin,
                kind=u.kind,
                status=u.status,
                must_change_password=u.must_change_password,
                last_login_at=u.last_login_at,
                created_at=u.created_at,
                custom_attributes=dict(u.custom_attributes or {}),
                groups=groups.get(u.id, []),
                locked_until=u.locked_until,
            )
            for u in rows
        ]

    def list_users(self, actor: SessionUser, *, search: str = "") -> list[UserView]:
        self._can_list(actor)
        term = one_line("search", search, 128).casefold()
        with self._store.sessions() as s:
            stmt = select(User).order_by(User.username)
            if term:
                stmt = stmt.where(User.username.contains(term, autoescape=True))
            return [_as_seen_by(actor, v) for v in self._views(s, list(s.scalars(stmt)))]

    def get_user(self, actor: SessionUser, user_id: int) -> UserView:
        if user_id != actor.id:
            self._can_list(actor)
        with self._store.sessions() as s:
            view = self._views(s, [self._user(s, user_id)])[0]
        return view if user_id == actor.id else _as_seen_by(actor, view)

    def user_id_by_name(self, actor: SessionUser, username: str) -> int:
        self._can_list(actor)
        name = normalize_username(username) if isinstance(username, str) else ""
        with self._store.sessions() as s:
            uid = s.scalars(select(User.id).where(User.username == name)).first()
            if uid is None:
                raise NotFoundError(f"no user named '{name[:128]}'")
            return uid

    # user groups --------------------------------------------------------------------------

    @staticmethod
    def _group(s: Session, group_id: int) -> UserGroup:
        g = get_row(s, UserGroup, group_id)
        if g is None:
            raise NotFoundError(f"no user group with id {group_id}")
        return g

    def create_user_group(
        self, actor: SessionUser, ip: str, name: str, description: str = ""
    ) -> int:
        require(actor.role, Action.MANAGE_USERS)
        text = one_line("group name", name, 128, required=True)
        desc = one_line("description", description, 512)
        with (
            conflict_on_duplicate(f"a user group named '{text}' exists already"),
            self._store.transaction() as s,
        ):
            other = name_clash(s, UserGroup.name, text)
            if other is not None:
                raise ConflictError(f"a user group named '{other.name}' exists already")
            g = UserGroup(name=text, description=desc)
            s.add(g)
            s.flush()
            self._log(s, actor, ip, "add user group", text)
            return g.id

    def edit_user_group(
        self,
        actor: SessionUser,
        ip: str,
        group_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        require(actor.role, Action.MANAGE_USERS)
        with self._store.transaction() as s:
            g = self._group(s, group_id)
            was = g.name
            if name is not None:
                text = one_line("group name", name, 128, required=True)
                other = name_clash(s, UserGroup.name, text, except_id=g.id)
                if other is not None:
                    raise ConflictError(f"a user group named '{other.name}' exists already")
                g.name = text
            if description is not None:
                g.description = one_line("description", description, 512)
            renamed = f"renamed from {was}" if g.name != was else ""
            self._log(s, actor, ip, "edit user group", g.name, renamed)

    def delete_user_group(self, actor: SessionUser, ip: str, group_id: int) -> None:
        require(actor.role, Action.MANAGE_USERS)
        with self._store.transaction() as s:
            g = self._group(s, group_id)
            members = s.scalars(
                select(User)
                .join(UserGroupMember, UserGroupMember.user_id == User.id)
                .where(UserGroupMember.group_id == g.id)
            ).all()
            for u in members:  # deleting the group ends their memberships
                guard_scoped(actor, u, "change their group memberships")
            shares = s.scalar(
                select(func.count()).select_from(Share).where(Share.user_group_id == g.id)
            )
            detail = f"{len(members)} members, {int(shares or 0)} shares ended"
            self._log(s, actor, ip, "delete user group", g.name, detail)
            s.execute(delete(UserGroup).where(UserGroup.id == g.id))

    def add_group_member(self, actor: SessionUser, ip: str, group_id: int, user_id: int) -> None:
        require(actor.role, Action.MANAGE_USERS)
        with self._store.transaction() as s:
            g = self._group(s, group_id)
            u = self._user(s, user_id)
            guard_scoped(actor, u, "change their group memberships")
            if s.get(UserGroupMember, (g.id, u.id)) is None:
                s.add(UserGroupMember(group_id=g.id, user_id=u.id))
            self._log(s, actor, ip, "add group member", g.name, u.username)

    def remove_group_member(self, actor: SessionUser, ip: str, group_id: int, user_id: int) -> None:
        require(actor.role, Action.MANAGE_USERS)
        with self._store.transaction() as s:
            g = self._group(s, group_id)
            u = self._user(s, user_id)
            guard_scoped(actor, u, "change their group memberships")
            row = s.get(UserGroupMember, (g.id, u.id))
            if row is None:
                raise NotFoundError(f"{u.username} is not in the group '{g.name}'")
            s.delete(row)
            self._log(s, actor, ip, "remove group member", g.name, u.username)

    def list_user_groups(self, actor: SessionUser) -> list[UserGroupView]:
        self._can_list(actor)
        with self._store.sessions() as s:
            groups = s.scalars(select(UserGroup).order_by(UserGroup.name)).all()
            members: dict[int, list[str]] = {}
            for gid, uname in s.execute(
                select(UserGroupMember.group_id, User.username)
                .join(User, User.id == UserGroupMember.user_id)
                .order_by(User.username)
            ).all():
                members.setdefault(gid, []).append(uname)
            return [
                UserGroupView(g.id, g.name, g.description, members.get(g.id, [])) for g in groups
            ]

    # custom fields ------------------------------------------------------------------------

    def define_field(
        self, actor: SessionUser, ip: str, applies_to: str, name: str, field_type: str = "text"
    ) -> int:
        require(actor.role, Action.MANAGE_CUSTOM_FIELDS)
        if applies_to not in FIELD_KINDS:
            raise ValidationError("a custom field applies to a user, a resource or an account")
        if field_type not in FIELD_TYPES:
            raise ValidationError(f"field type must be one of: {', '.join(FIELD_TYPES)}")
        text = one_line("field name", name, 64, required=True)
        with self._store.transaction() as s:
            other = name_clash(s, CustomField.name, text, CustomField.applies_to == applies_to)
            if other is not None:
                raise ConflictError(f"a {applies_to} field named '{other.name}' exists already")
            row = CustomField(applies_to=applies_to, name=text, field_type=field_type)
            s.add(row)
            s.flush()
            self._log(s, actor, ip, "add custom field", f"{applies_to}.{text}", field_type)
            return row.id

    def delete_field(self, actor: SessionUser, ip: str, field_id: int) -> None:
        """Remove a field definition; values already saved stay on their objects."""
        require(actor.role, Action.MANAGE_CUSTOM_FIELDS)
        with self._store.transaction() as s:
            row = get_row(s, CustomField, field_id)
            if row is None:
                raise NotFoundError(f"no custom field with id {field_id}")
            self._log(s, actor, ip, "delete custom field", f"{row.applies_to}.{row.name}")
            s.delete(row)

    def list_fields(self, actor: SessionUser, applies_to: str | None = None) -> list[FieldView]:
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            stmt = select(CustomField).order_by(CustomField.applies_to, CustomField.name)
            if applies_to is not None:
                stmt = stmt.where(CustomField.applies_to == applies_to)
            return [FieldView(f.id, f.applies_to, f.name, f.field_type) for f in s.scalars(stmt)]
