"""Resources, their accounts and passwords, the trash, resource types and vault settings.

Every method takes the acting user (:class:`node.auth.SessionUser`) and, when it changes
something or reveals a password, the source IP; it checks the role's actions
(node/permissions.py) and the user's access on the object (node/access.py), filters lists
inside the SQL query, and writes its audit row in the same transaction.

Errors (node.errors):
- PermissionDeniedError: the role lacks the action, or the access on a visible object is
  too low (e.g. View when changing a password).
- NotFoundError: the id does not exist, is in the trash, or is not shared with the caller
  (one answer for all three).
- ValidationError: bad input (message names the field and rule; a password breaking its
  policy names the rule), a missing required reason or ticket id.
- ConflictError: a duplicate resource name (also in the trash), account name or type.
- AuditWriteError: the audit row could not be written; nothing happened, no password left.

Methods of :class:`VaultService`:
- resources: ``create_resource`` (with an optional first account; a licence check on the
  resource count belongs at the top of its transaction, the one place resources are added),
  ``edit_resource``, ``list_resources``, ``get_resource`` (with visible accounts),
  ``resource_id_by_name``, ``delete_resource`` (to the trash), ``list_trash``,
  ``restore_resource``, ``purge_resource``.
- accounts: ``add_account``, ``edit_account``, ``get_account``, ``account_id_by_name``,
  ``delete_account``, ``password_history`` (metadata only).
- passwords: ``view_password``, ``copy_password`` (plaintext, returned only after the
  audit row committed; a refused attempt for lack of a reason or ticket is audited with
  result "failure"), ``change_password`` (local; policy and no-reuse enforced),
  ``generate_for_account``.
- resource types: ``list_resource_types``, ``add_resource_type``, ``delete_resource_type``.
- settings: ``get_settings``, ``set_password_reason`` ("optional" or "required"),
  ``set_default_policy``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session, contains_eager

from node.access import (
    Access,
    account_access,
    account_levels,
    need_access,
    resource_access,
    resource_levels,
    visible_accounts,
    visible_resources,
)
from node.audit import AuditLog, user_event
from node.audit import resource_event as _resource_event
from node.auth import SessionUser
from node.errors import (
    ConflictError,
    DecryptionError,
    NotFoundError,
    ValidationError,
)
from node.inputs import (
    MAX_ID,
    MAX_TEXT,
    clean_attributes,
    conflict_on_duplicate,
    get_row,
    host_name,
    in_range,
    multi_line,
    name_clash,
    one_line,
    resource_url,
    shows_something,
    updated_attributes,
)
from node.keyring import KeyRing
from node.licence_service import LicenceService
from node.permissions import Action, require
from node.policies import (
    DEFAULT_POLICY,
    GENERATE_TRIES,
    SETTING_DEFAULT_POLICY,
    PolicySpec,
    check_basic,
    check_password,
    generate_password,
    policy_by_name,
    spec_of,
)
from node.reveal_writer import InProcessWriter, RevealWriter
from node.reveals import REVEALS, SETTING_REASON, RevealRequest
from node.roles import Role
from node.store.db import Store
from node.store.dialect import unused_id
from node.store.models import (
    Account,
    AppSetting,
    AuditRow,
    PasswordHistory,
    PasswordPolicy,
    Resource,
    ResourceType,
    User,
    utcnow,
)

log = logging.getLogger("strongroom.vault")

BUILTIN_RESOURCE_TYPES = (
    "Linux",
    "Windows",
    "Windows Domain",
    "MySQL",
    "PostgreSQL",
    "Oracle",
    "MS SQL",
    "Cisco IOS",
    "Generic",
)
REASON_MODES = ("optional", "required")
MAX_LIST = 1000


# --- what callers pass and get -------------------------------------------------------------


@dataclass(frozen=True)
class NewAccount:
    username: str
    password: str
    notes: str = ""
    custom_attributes: Mapping[str, object] | None = None
    password_policy_id: int | None = None
    reason_required: bool = False
    ticket_required: bool = False


@dataclass(frozen=True)
class NewResource:
    name: str
    dns_name: str = ""
    resource_type: str = "Generic"
    description: str = ""
    department: str = ""
    location: str = ""
    url: str = ""
    domain_name: str = ""
    password_policy_id: int | None = None
    custom_attributes: Mapping[str, object] | None = None


@dataclass(frozen=True)
class ResourceChanges:
    """Fields to change; None leaves a field as it is."""

    name: str | None = None
    dns_name: str | None = None
    resource_type: str | None = None
    description: str | None = None
    department: str | None = None
    location: str | None = None
    url: str | None = None
    domain_name: str | None = None
    password_policy_id: int | None = None  # 0: no own policy (the vault default applies)
    custom_attributes: Mapping[str, object] | None = None


@dataclass(frozen=True)
class AccountChanges:
    """Fields to change; None leaves a field as it is."""

    username: str | None = None
    notes: str | None = None
    custom_attributes: Mapping[str, object] | None = None
    password_policy_id: int | None = None  # 0: no own policy (the resource's applies)
    reason_required: bool | None = None
    ticket_required: bool | None = None


@dataclass(frozen=True)
class Created:
    resource_id: int
    account_id: int | None = None


@dataclass(frozen=True)
class ResourceView:
    id: int
    name: str
    dns_name: str
    resource_type: str
    description: str
    department: str
    location: str
    url: str
    domain_name: str
    owner_id: int
    owner_name: str
    password_policy_id: int | None
    custom_attributes: dict[str, Any]
    created_at: dt.datetime
    access: Access  # on the resource itself; NONE if seen only through shared accounts
    account_count: int  # accounts visible to the caller
    deleted_at: dt.datetime | None = None


@dataclass(frozen=True)
class AccountView:
    id: int
    resource_id: int
    resource_name: str
    username: str
    notes: str
    custom_attributes: dict[str, Any]
    password_policy_id: int | None  # the account's own setting
    policy_name: str  # the policy in force (account, else resource, else vault default)
    reason_required: bool
    ticket_required: bool
    has_password: bool
    last_changed_at: dt.datetime | None
    last_accessed_at: dt.datetime | None
    password_expired: bool
    access: Access
    owner_id: int  # the resource's owner


@dataclass(frozen=True)
class ResourceDetail:
    resource: ResourceView
    accounts: list[AccountView] = field(default_factory=list)


@dataclass(frozen=True)
class ResourcePage:
    total: int
    items: list[ResourceView]


@dataclass(frozen=True)
class HistoryEntry:
    changed_at: dt.datetime
    changed_by: str


@dataclass(frozen=True)
class VaultSettings:
    password_reason: str
    default_policy: str


# --- seeding -------------------------------------------------------------------------------


def seed_resource_types(session: Session) -> int:
    have = set(session.scalars(select(ResourceType.name)))
    added = 0
    for name in BUILTIN_RESOURCE_TYPES:
        if name not in have:
            session.add(ResourceType(name=name, builtin=True))
            added += 1
    return added


def get_setting(session: Session, key: str, default: Any) -> Any:
    row = session.get(AppSetting, key)
    return default if row is None else row.value


def put_setting(session: Session, key: str, value: Any) -> None:
    row = session.get(AppSetting, key)
    if row is None:
        session.add(AppSetting(key=key, value=value))
    else:
        row.value = value


# --- the service ---------------------------------------------------------------------------


class VaultService:
    def __init__(
        self, store: Store, keyring: KeyRing, audit: AuditLog, licence: LicenceService
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._audit = audit
        self._licence = licence  # limits the number of resources
        self._reveals: RevealWriter = InProcessWriter(store, audit)

    @property
    def reveals(self) -> RevealWriter:
        """Where reveals' audit rows are written (node/reveal_writer.py)."""
        return self._reveals

    def use_reveal_writer(self, writer: RevealWriter) -> None:
        """Write reveals' audit rows with ``writer`` from now on (``strongroom serve``: a
        child process; set before serving, as awaiting code subscribes to it)."""
        self._reveals = writer

    # helpers ----------------------------------------------------------------------------

    def _log(
        self,
        s: Session,
        actor: SessionUser,
        ip: str,
        operation: str,
        target: str,
        *,
        resource_id: int | None = None,
        account_id: int | None = None,
        reason: str = "",
        detail: str = "",
        result: str = "success",
    ) -> None:
        self._audit.append(
            s,
            _resource_event(
                actor, ip, operation, target, resource_id, account_id, reason, detail, result
            ),
        )

    @staticmethod
    def _resource(s: Session, actor: SessionUser, resource_id: int) -> Resource:
        if not in_range(resource_id):
            raise NotFoundError(f"no resource with id {resource_id}")
        row = s.scalars(
            select(Resource).where(
                Resource.id == resource_id,
                Resource.deleted_at.is_(None),
                visible_resources(actor),
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no resource with id {resource_id}")
        return row

    @staticmethod
    def _account(s: Session, actor: SessionUser, account_id: int) -> Account:
        if not in_range(account_id):
            raise NotFoundError(f"no account with id {account_id}")
        row = s.scalars(
            select(Account)
            .join(Resource, Resource.id == Account.resource_id)
            .options(contains_eager(Account.resource))  # the joined row fills a.resource
            .where(
                Account.id == account_id,
                Resource.deleted_at.is_(None),
                visible_accounts(actor),
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no account with id {account_id}")
        return row

    _need = staticmethod(need_access)

    @staticmethod
    def _policy_id(s: Session, policy_id: int | None) -> int | None:
        if policy_id is None:
            return None
        if get_row(s, PasswordPolicy, policy_id) is None:
            raise ValidationError(f"no password policy with id {policy_id}")
        return policy_id

    @staticmethod
    def _resource_type(s: Session, name: str) -> str:
        text = one_line("resource type", name, 64, required=True)
        known = s.scalars(
            select(ResourceType.name).where(func.lower(ResourceType.name) == text.lower())
        ).first()
        if known is None:
            raise ValidationError(f"unknown resource type '{text}'")
        return known

    @staticmethod
    def _unique_name(s: Session, name: str, except_id: int | None = None) -> None:
        """Resource names are unique regardless of letter case (``web-01`` and ``WEB-01``
        name one server): node/inputs.py ``name_clash``."""
        other = name_clash(s, Resource.name, name, except_id=except_id)
        if other is not None:
            same = "" if other.name == name else " (names are unique regardless of case)"
            # who may act on it, as _trash_filter and Action.MANAGE_TRASH decide: whoever
            # holds the name may not see the trash at all (a Password Administrator)
            where = (
                ": it is in the trash, where an Administrator with the Super Administrator"
                " scope, or its owner if their role is Administrator, can restore or purge it"
                if other.deleted_at is not None
                else ""
            )
            raise ConflictError(f"a resource named '{other.name}' exists already{same}{where}")

    def _effective_policy(self, s: Session, account: Account) -> PolicySpec:
        pid = account.password_policy_id or account.resource.password_policy_id
        row = get_row(s, PasswordPolicy, pid) if pid is not None else None
        if row is not None:
            return spec_of(row)
        cached = s.info.get("default_policy")  # asked once per transaction
        if isinstance(cached, PolicySpec):
            return cached
        name = str(get_setting(s, SETTING_DEFAULT_POLICY, DEFAULT_POLICY))
        row = policy_by_name(s, name) or policy_by_name(s, DEFAULT_POLICY)
        spec = (
            spec_of(row)
            if row is not None
            else PolicySpec(DEFAULT_POLICY, min_length=1, require_lower=False)
        )
        s.info["default_policy"] = spec
        return spec

    def _recent_passwords(self, s: Session, account: Account, n: int) -> list[str]:
        if n <= 0:
            return []
        rows = s.scalars(
            select(PasswordHistory)
            .where(PasswordHistory.account_id == account.id)
            .order_by(PasswordHistory.changed_at.desc(), PasswordHistory.id.desc())
            .limit(n)
        ).all()
        return [
            self._keyring.decrypt_text(r.password_ct, "password_history", "password_ct", r.id)
            for r in rows
        ]

    def _set_password(
        self, s: Session, actor: SessionUser, account: Account, password: str, now: dt.datetime
    ) -> None:
        """Check the policy (with no-reuse against the decrypted history), encrypt, and keep
        the new password in the history too (the history's newest row is the current one)."""
        policy = self._effective_policy(s, account)
        check_password(policy, password, self._recent_passwords(s, account, policy.no_reuse_last))
        if account.id is None:
            s.flush()
        account.password_ct = self._keyring.encrypt(password, "accounts", "password_ct", account.id)
        account.last_changed_at = now
        hist = PasswordHistory(
            account_id=account.id, password_ct=b"", changed_at=now, changed_by=actor.id
        )
        s.add(hist)
        s.flush()
        hist.password_ct = self._keyring.encrypt(
            password, "password_history", "password_ct", hist.id
        )

    def _new_account(
        self, s: Session, actor: SessionUser, resource: Resource, spec: NewAccount
    ) -> Account:
        username = one_line("account name", spec.username, 256, required=True)
        check_basic(spec.password)
        exists = s.scalars(
            select(Account.id).where(
                Account.resource_id == resource.id, Account.username == username
            )
        ).first()
        if exists is not None:
            raise ConflictError(f"the resource already has an account named '{username}'")
        account = Account(
            id=unused_id(s, Account.id, AuditRow.account_id),
            resource=resource,
            username=username,
            notes=multi_line("notes", spec.notes, MAX_TEXT),
            custom_attributes=clean_attributes(s, "account", spec.custom_attributes),
            password_policy_id=self._policy_id(s, spec.password_policy_id),
            reason_required=bool(spec.reason_required),
            ticket_required=bool(spec.ticket_required),
        )
        s.add(account)
        s.flush()  # the row id is part of the ciphertext's associated data
        self._set_password(s, actor, account, spec.password, utcnow())
        return account

    # resources --------------------------------------------------------------------------

    def create_resource(
        self,
        actor: SessionUser,
        ip: str,
        spec: NewResource,
        first_account: NewAccount | None = None,
        *,
        owner_id: int | None = None,
        in_same_transaction: Callable[[Session, int], None] | None = None,
    ) -> Created:
        """Add a resource owned by ``actor``, optionally with its first account. With
        ``owner_id`` (another active administrator-type user; the actor needs
        Action.TRANSFER_OWNERSHIP) that user owns it from the start, and the actor gains no
        access to it (unless Super Administrator). ``in_same_transaction`` is a further
        step (say, joining a resource group) called with the session and the new
        resource's id before the commit: if it raises, nothing is created."""
        require(actor.role, Action.ADD_RESOURCE)
        if owner_id is not None and owner_id != actor.id:
            require(actor.role, Action.TRANSFER_OWNERSHIP)
        name = one_line("resource name", spec.name, 256, required=True)
        with (
            conflict_on_duplicate(f"a resource named '{name}' exists already"),
            self._store.transaction() as s,
        ):
            self._unique_name(s, name)
            self._licence.check_add_resource(s)
            owner = actor.id if owner_id is None else self._new_owner(s, owner_id)
            resource = Resource(
                id=unused_id(s, Resource.id, AuditRow.resource_id),
                name=name,
                dns_name=host_name("DNS name or IP", spec.dns_name),
                resource_type=self._resource_type(s, spec.resource_type or "Generic"),
                description=multi_line("description", spec.description, MAX_TEXT),
                department=one_line("department", spec.department, 128),
                location=one_line("location", spec.location, 128),
                url=resource_url("URL", spec.url),
                domain_name=one_line("domain name", spec.domain_name, 256),
                owner_id=owner,
                password_policy_id=self._policy_id(s, spec.password_policy_id),
                custom_attributes=clean_attributes(s, "resource", spec.custom_attributes),
            )
            s.add(resource)
            s.flush()
            detail = "" if owner == actor.id else f"owner {self._username(s, owner)}"
            self._log(s, actor, ip, "add resource", name, resource_id=resource.id, detail=detail)
            account_id = None
            if first_account is not None:
                account = self._new_account(s, actor, resource, first_account)
                account_id = account.id
                self._log(
                    s,
                    actor,
                    ip,
                    "add account",
                    f"{name}/{account.username}",
                    resource_id=resource.id,
                    account_id=account.id,
                )
            if in_same_transaction is not None:
                in_same_transaction(s, resource.id)
            return Created(resource.id, account_id)

    @staticmethod
    def _new_owner(s: Session, user_id: int) -> int:
        user = get_row(s, User, user_id)
        if user is None or user.status != "active" or not Role(user.role).is_admin_type:
            raise ValidationError(
                "the owner must be an active Administrator or Password Administrator"
            )
        return user.id

    @staticmethod
    def _username(s: Session, user_id: int) -> str:
        user = get_row(s, User, user_id)
        return user.username if user is not None else str(user_id)

    def edit_resource(
        self, actor: SessionUser, ip: str, resource_id: int, changes: ResourceChanges
    ) -> None:
        require(actor.role, Action.MANAGE_OWN_RESOURCES)
        with (
            conflict_on_duplicate("a resource with that name exists already"),
            self._store.transaction() as s,
        ):
            r = self._resource(s, actor, resource_id)
            level = resource_access(s, actor, r)
            self._need(level, Access.MODIFY, "editing this resource")
            if (
                changes.password_policy_id is not None
                and (changes.password_policy_id or None) != r.password_policy_id
            ):
                self._need(level, Access.OWNER, "changing this resource's password policy")
            changed: list[str] = []
            if changes.name is not None:
                name = one_line("resource name", changes.name, 256, required=True)
                if name != r.name:
                    self._unique_name(s, name, r.id)
                    r.name = name
                    changed.append("name")
            simple: dict[str, Callable[[object], str]] = {
                "dns_name": functools.partial(host_name, "DNS name or IP"),
                "department": functools.partial(one_line, "department", max_len=128),
                "location": functools.partial(one_line, "location", max_len=128),
                "url": functools.partial(resource_url, "URL"),
                "domain_name": functools.partial(one_line, "domain name", max_len=256),
            }
            for attr, check in simple.items():
                value = getattr(changes, attr)
                if value is not None:
                    setattr(r, attr, check(value))
                    changed.append(attr)
            if changes.description is not None:
                r.description = multi_line("description", changes.description, MAX_TEXT)
                changed.append("description")
            if changes.resource_type is not None:
                r.resource_type = self._resource_type(s, changes.resource_type)
                changed.append("resource_type")
            if changes.password_policy_id is not None:
                r.password_policy_id = self._policy_id(s, changes.password_policy_id or None)
                changed.append("password_policy")
            if changes.custom_attributes is not None:
                r.custom_attributes = updated_attributes(
                    s, "resource", r.custom_attributes, changes.custom_attributes
                )
                changed.append("custom_attributes")
            self._log(
                s, actor, ip, "edit resource", r.name, resource_id=r.id, detail=",".join(changed)
            )

    def _views(
        self, s: Session, actor: SessionUser, rows: Sequence[Resource]
    ) -> list[ResourceView]:
        if not rows:
            return []
        ids = [r.id for r in rows]
        levels = resource_levels(s, actor, rows)
        counts = dict(
            s.execute(
                select(Account.resource_id, func.count())
                .where(Account.resource_id.in_(ids), visible_accounts(actor))
                .group_by(Account.resource_id)
            ).all()
        )
        owners = dict(
            s.execute(
                select(User.id, User.username).where(User.id.in_({r.owner_id for r in rows}))
            ).all()
        )
        return [
            ResourceView(
                id=r.id,
                name=r.name,
                dns_name=r.dns_name,
                resource_type=r.resource_type,
                description=r.description,
                department=r.department,
                location=r.location,
                url=r.url,
                domain_name=r.domain_name,
                owner_id=r.owner_id,
                owner_name=owners.get(r.owner_id, ""),
                password_policy_id=r.password_policy_id,
                custom_attributes=dict(r.custom_attributes or {}),
                created_at=r.created_at,
                access=levels[r.id],
                account_count=int(counts.get(r.id, 0)),
                deleted_at=r.deleted_at,
            )
            for r in rows
        ]

    def list_resources(
        self, actor: SessionUser, *, search: str = "", offset: int = 0, limit: int = 100
    ) -> ResourcePage:
        """Resources visible to ``actor`` (not in the trash), by name; ``total`` counts only
        visible ones."""
        require(actor.role, Action.USE_VAULT)
        term = one_line("search", search, 256)
        conds: list[ColumnElement[bool]] = [
            Resource.deleted_at.is_(None),
            visible_resources(actor),
        ]
        if term:
            needle = term.lower()
            conds.append(
                or_(
                    func.lower(Resource.name).contains(needle, autoescape=True),
                    func.lower(Resource.dns_name).contains(needle, autoescape=True),
                )
            )
        if not isinstance(offset, int) or not isinstance(limit, int):
            raise ValidationError("offset and limit must be whole numbers")
        offset = max(0, min(offset, MAX_ID))
        limit = max(1, min(limit, MAX_LIST))
        with self._store.sessions() as s:
            total = s.scalar(select(func.count()).select_from(Resource).where(*conds)) or 0
            rows = s.scalars(
                select(Resource)
                .where(*conds)
                .order_by(Resource.name, Resource.id)
                .offset(offset)
                .limit(limit)
            ).all()
            return ResourcePage(total=int(total), items=self._views(s, actor, rows))

    def get_resource(self, actor: SessionUser, resource_id: int) -> ResourceDetail:
        """A visible resource with the accounts the caller may see."""
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            r = self._resource(s, actor, resource_id)
            accounts = s.scalars(
                select(Account)
                .where(Account.resource_id == r.id, visible_accounts(actor))
                .order_by(Account.username, Account.id)
            ).all()
            view = self._views(s, actor, [r])[0]
            levels = account_levels(s, actor, r, [a.id for a in accounts])
            return ResourceDetail(
                resource=view, accounts=[self._account_view(s, a, levels[a.id]) for a in accounts]
            )

    def resource_id_by_name(self, actor: SessionUser, name: str) -> int:
        require(actor.role, Action.USE_VAULT)
        text = one_line("resource name", name, 256, required=True)
        with self._store.sessions() as s:
            found = s.execute(
                select(Resource.id, Resource.name).where(
                    func.lower(Resource.name) == func.lower(text),
                    Resource.deleted_at.is_(None),
                    visible_resources(actor),
                )
            ).all()
            rid = _by_name(found, text)
            if rid is None:
                raise NotFoundError(f"no resource named '{text}'")
            return rid

    def delete_resource(self, actor: SessionUser, ip: str, resource_id: int) -> None:
        """Move a resource (with its accounts and shares) to the trash."""
        require(actor.role, Action.MANAGE_OWN_RESOURCES)
        with self._store.transaction() as s:
            r = self._resource(s, actor, resource_id)
            self._need(resource_access(s, actor, r), Access.OWNER, "deleting this resource")
            r.deleted_at = utcnow()
            r.deleted_by = actor.id
            self._log(
                s, actor, ip, "delete resource", r.name, resource_id=r.id, detail="moved to trash"
            )

    def _trash_filter(self, actor: SessionUser) -> list[ColumnElement[bool]]:
        """What of the trash ``actor`` sees: all of it with the Super Administrator scope,
        else what they own. Only roles with Action.MANAGE_TRASH (Administrator) get here:
        _unique_name's message and the resource page's say so; keep them in step."""
        conds: list[ColumnElement[bool]] = [Resource.deleted_at.is_not(None)]
        if not actor.super_admin:
            conds.append(Resource.owner_id == actor.id)
        return conds

    def list_trash(self, actor: SessionUser) -> list[ResourceView]:
        """Resources in the trash: all of them for a Super Administrator, else one's own."""
        require(actor.role, Action.MANAGE_TRASH)
        with self._store.sessions() as s:
            rows = s.scalars(
                select(Resource).where(*self._trash_filter(actor)).order_by(Resource.name)
            ).all()
            return self._views(s, actor, rows)

    def _trashed(self, s: Session, actor: SessionUser, resource_id: int) -> Resource:
        if not in_range(resource_id):
            raise NotFoundError(f"no resource with id {resource_id} in the trash")
        row = s.scalars(
            select(Resource).where(Resource.id == resource_id, *self._trash_filter(actor))
        ).first()
        if row is None:
            raise NotFoundError(f"no resource with id {resource_id} in the trash")
        return row

    def restore_resource(self, actor: SessionUser, ip: str, resource_id: int) -> None:
        require(actor.role, Action.MANAGE_TRASH)
        with self._store.transaction() as s:
            r = self._trashed(s, actor, resource_id)
            self._licence.check_add_resource(s)
            r.deleted_at = None
            r.deleted_by = None
            self._log(s, actor, ip, "restore resource", r.name, resource_id=r.id)

    def purge_resource(self, actor: SessionUser, ip: str, resource_id: int) -> None:
        """Delete a trashed resource for good, with its accounts, history and shares."""
        require(actor.role, Action.MANAGE_TRASH)
        with self._store.transaction() as s:
            r = self._trashed(s, actor, resource_id)
            self._log(s, actor, ip, "purge resource", r.name, resource_id=r.id)
            s.execute(delete(Resource).where(Resource.id == r.id))

    # accounts ---------------------------------------------------------------------------

    def add_account(self, actor: SessionUser, ip: str, resource_id: int, spec: NewAccount) -> int:
        require(actor.role, Action.MANAGE_OWN_RESOURCES)
        with (
            conflict_on_duplicate("the resource already has an account with that name"),
            self._store.transaction() as s,
        ):
            r = self._resource(s, actor, resource_id)
            self._need(resource_access(s, actor, r), Access.MODIFY, "adding accounts here")
            account = self._new_account(s, actor, r, spec)
            self._log(
                s,
                actor,
                ip,
                "add account",
                f"{r.name}/{account.username}",
                resource_id=r.id,
                account_id=account.id,
            )
            return account.id

    def edit_account(
        self, actor: SessionUser, ip: str, account_id: int, changes: AccountChanges
    ) -> None:
        require(actor.role, Action.MANAGE_OWN_RESOURCES)
        with (
            conflict_on_duplicate("the resource already has an account with that name"),
            self._store.transaction() as s,
        ):
            a = self._account(s, actor, account_id)
            level = account_access(s, actor, a)
            self._need(level, Access.MODIFY, "editing this account")
            controls = (
                changes.password_policy_id is not None
                and (changes.password_policy_id or None) != a.password_policy_id,
                changes.reason_required is not None
                and bool(changes.reason_required) != a.reason_required,
                changes.ticket_required is not None
                and bool(changes.ticket_required) != a.ticket_required,
            )
            if any(controls):  # what guards the password is its owner's to set
                self._need(level, Access.OWNER, "changing this account's policy or reveal rules")
            changed: list[str] = []
            if changes.username is not None:
                name = one_line("account name", changes.username, 256, required=True)
                if name != a.username:
                    clash = s.scalars(
                        select(Account.id).where(
                            Account.resource_id == a.resource_id, Account.username == name
                        )
                    ).first()
                    if clash is not None:
                        raise ConflictError(f"the resource already has an account named '{name}'")
                    a.username = name
                    changed.append("username")
            if changes.notes is not None:
                a.notes = multi_line("notes", changes.notes, MAX_TEXT)
                changed.append("notes")
            if changes.custom_attributes is not None:
                a.custom_attributes = updated_attributes(
                    s, "account", a.custom_attributes, changes.custom_attributes
                )
                changed.append("custom_attributes")
            if changes.password_policy_id is not None:
                a.password_policy_id = self._policy_id(s, changes.password_policy_id or None)
                changed.append("password_policy")
            if changes.reason_required is not None:
                a.reason_required = bool(changes.reason_required)
                changed.append("reason_required")
            if changes.ticket_required is not None:
                a.ticket_required = bool(changes.ticket_required)
                changed.append("ticket_required")
            self._log(
                s,
                actor,
                ip,
                "edit account",
                f"{a.resource.name}/{a.username}",
                resource_id=a.resource_id,
                account_id=a.id,
                detail=",".join(changed),
            )

    def _account_view(self, s: Session, a: Account, level: Access) -> AccountView:
        policy = self._effective_policy(s, a)
        expired = bool(
            policy.max_age_days
            and a.last_changed_at is not None
            and utcnow() - a.last_changed_at > dt.timedelta(days=policy.max_age_days)
        )
        return AccountView(
            id=a.id,
            resource_id=a.resource_id,
            resource_name=a.resource.name,
            username=a.username,
            notes=a.notes,
            custom_attributes=dict(a.custom_attributes or {}),
            password_policy_id=a.password_policy_id,
            policy_name=policy.name,
            reason_required=a.reason_required,
            ticket_required=a.ticket_required,
            has_password=a.password_ct is not None,
            last_changed_at=a.last_changed_at,
            last_accessed_at=a.last_accessed_at,
            password_expired=expired,
            access=level,
            owner_id=a.resource.owner_id,
        )

    def get_account(self, actor: SessionUser, account_id: int) -> AccountView:
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            a = self._account(s, actor, account_id)
            return self._account_view(s, a, account_access(s, actor, a))

    def compliance_problems(self, actor: SessionUser, account_id: int) -> list[str]:
        """The rules of the policy in force that the account's stored password breaks, and
        its maximum age, in the words of the policy-compliance report (they reveal nothing
        else about the password). The password is decrypted here only to be tested; it does
        not leave the service, so this is not audited as a view."""
        from node.reports import policy_problems  # reports builds on this module

        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            a = self._account(s, actor, account_id)
            if a.password_ct is None:
                return ["no password is stored"]
            policy = self._effective_policy(s, a)
            password = self._keyring.decrypt_text(a.password_ct, "accounts", "password_ct", a.id)
            return policy_problems(policy, password, a.last_changed_at, utcnow())

    def account_id_by_name(
        self, actor: SessionUser, resource_name: str, account_name: str
    ) -> tuple[int, int]:
        """(resource id, account id) of a visible account, by names."""
        require(actor.role, Action.USE_VAULT)
        rname = one_line("resource name", resource_name, 256, required=True)
        aname = one_line("account name", account_name, 256, required=True)
        with self._store.sessions() as s:
            rows = s.execute(
                select(Resource.id, Resource.name, Account.id)
                .join(Account, Account.resource_id == Resource.id)
                .where(
                    func.lower(Resource.name) == func.lower(rname),
                    Account.username == aname,  # account names keep their case (root, Root)
                    Resource.deleted_at.is_(None),
                    visible_accounts(actor),
                )
            ).all()
            rid = _by_name([(r[0], r[1]) for r in rows], rname)
            if rid is None:
                raise NotFoundError(f"no account '{aname}' on a resource named '{rname}'")
            return rid, next(int(r[2]) for r in rows if r[0] == rid)

    def delete_account(self, actor: SessionUser, ip: str, account_id: int) -> None:
        require(actor.role, Action.MANAGE_OWN_RESOURCES)
        with self._store.transaction() as s:
            a = self._account(s, actor, account_id)
            # the owner's call, as deleting the resource is (an account has no trash)
            self._need(account_access(s, actor, a), Access.OWNER, "deleting this account")
            self._log(
                s,
                actor,
                ip,
                "delete account",
                f"{a.resource.name}/{a.username}",
                resource_id=a.resource_id,
                account_id=a.id,
            )
            s.execute(delete(Account).where(Account.id == a.id))

    def password_history(self, actor: SessionUser, account_id: int) -> list[HistoryEntry]:
        """When the password changed and by whom, newest first (never the passwords)."""
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            a = self._account(s, actor, account_id)
            rows = s.execute(
                select(PasswordHistory.changed_at, User.username)
                .outerjoin(User, User.id == PasswordHistory.changed_by)
                .where(PasswordHistory.account_id == a.id)
                .order_by(PasswordHistory.changed_at.desc(), PasswordHistory.id.desc())
            ).all()
            return [HistoryEntry(changed_at=r[0], changed_by=r[1] or "") for r in rows]

    # passwords --------------------------------------------------------------------------

    def view_password(
        self,
        actor: SessionUser,
        ip: str,
        account_id: int,
        reason: str = "",
        ticket: str = "",
        *,
        resource_id: int | None = None,
    ) -> str:
        """The plaintext password, audited as "view password". With ``resource_id``, an
        account on another resource gets the same NotFoundError as a missing one (the REST
        API's paths name both)."""
        request = self.reveal_request(
            "view password", actor, ip, account_id, reason, ticket, resource_id=resource_id
        )
        return self.submit_reveal(request).result()

    def copy_password(
        self, actor: SessionUser, ip: str, account_id: int, reason: str = "", ticket: str = ""
    ) -> str:
        """The plaintext password for the clipboard, audited as "copy password"."""
        request = self.reveal_request("copy password", actor, ip, account_id, reason, ticket)
        return self.submit_reveal(request).result()

    def reveal_request(
        self,
        op: str,
        actor: SessionUser,
        ip: str,
        account_id: int,
        reason: str = "",
        ticket: str = "",
        *,
        resource_id: int | None = None,
    ) -> RevealRequest:
        """A password reveal (``op``: "view password" or "copy password") with its input
        checked: the role allows seeing passwords, the reason and ticket are single lines
        of bounded length, the id can exist. It reads nothing; :meth:`submit_reveal`
        decides the rest and records the audit row before the password is shown."""
        if op not in REVEALS:
            raise ValueError(f"not a password reveal: {op}")
        require(actor.role, Action.VIEW_PASSWORD)
        why, ticket_id = _reason_and_ticket(reason, ticket)
        if not in_range(account_id):
            raise NotFoundError(f"no account with id {account_id}")
        return RevealRequest(op, actor, ip, account_id, resource_id, why, ticket_id)

    def submit_reveal(self, request: RevealRequest) -> Future[str]:
        """Show a password, once its reveal's audit row (and the account's last access) is
        committed: :attr:`reveals` checks access and the reason and ticket rules
        (node/reveals.py) and writes the row in a group commit (reveals that arrive
        together share one commit, most of what a reveal costs); the password is decrypted
        here, only then. The future holds it, or the error: NotFoundError, the
        PermissionDeniedError or the refusal (ValidationError, recorded too) the reveal
        met, AuditWriteError when its row could not be written (fail closed)."""
        shown: Future[str] = Future()

        def committed(done: Future[bytes]) -> None:
            if shown.cancelled():
                return  # the caller stopped waiting: the password is never shown
            error = done.exception()
            if error is not None:
                shown.set_exception(error)
                return
            try:
                password = self._keyring.decrypt_text(
                    done.result(), "accounts", "password_ct", request.account_id
                )
            except DecryptionError as exc:
                log.error(
                    "a revealed password could not be decrypted",
                    extra={"account_id": request.account_id},
                )
                self._record_undecryptable(request)
                shown.set_exception(exc)
            else:
                shown.set_result(password)

        self._reveals.reveal(request).add_done_callback(committed)
        return shown

    def _record_undecryptable(self, request: RevealRequest) -> None:
        """After the reveal's audit row (a success: access was granted), a second row saying
        that the password was not shown after all, its ciphertext not decrypting (damaged,
        or altered in the database). Written by the store's committer, without waiting."""
        event = _resource_event(
            request.actor,
            request.ip,
            request.op,
            f"account {request.account_id}",
            request.resource_id,
            request.account_id,
            request.reason,
            "not shown: the stored password could not be decrypted",
            "failure",
        )
        at = utcnow()

        def written(done: Future[None]) -> None:
            if done.exception() is not None:
                log.error("the audit row of an undecryptable password could not be written")

        self._store.submit(lambda conn: self._audit.append(conn, event, at)).add_done_callback(
            written
        )

    def _changeable(
        self, s: Session, actor: SessionUser, account_id: int, resource_id: int | None
    ) -> Account:
        """The account whose password ``actor`` is about to change: NotFoundError if it is
        not visible (or not on ``resource_id``), PermissionDeniedError below Modify."""
        a = self._account(s, actor, account_id)
        if resource_id is not None and a.resource_id != resource_id:
            raise NotFoundError(f"no account with id {account_id}")
        self._need(account_access(s, actor, a), Access.MODIFY, "changing this password")
        return a

    def check_password_change(
        self, actor: SessionUser, account_id: int, *, resource_id: int | None = None
    ) -> None:
        """Raise what :meth:`change_password` would raise for who is asking (role, access,
        the account not found), changing nothing: a change this vault cannot make yet
        (the API's remote reset) is refused for that reason only to someone who could
        make it, so nobody learns more than a change would tell them."""
        require(actor.role, Action.CHANGE_SHARED_PASSWORD)
        with self._store.sessions() as s:
            self._changeable(s, actor, account_id, resource_id)

    def change_password(
        self,
        actor: SessionUser,
        ip: str,
        account_id: int,
        new_password: str,
        reason: str = "",
        *,
        ticket: str = "",
        resource_id: int | None = None,
        asked_as: tuple[str, str] = ("a reason", "a ticket id"),
    ) -> None:
        """Store a new password (local change; the target system is not touched). An
        account that asks for a reason or a ticket id to be shown asks for them to be
        changed too (``asked_as``: what the refusal calls them). ``resource_id``: the
        account must belong to it (else the same NotFoundError as for no account)."""
        require(actor.role, Action.CHANGE_SHARED_PASSWORD)
        why, ticket_id = _reason_and_ticket(reason, ticket)
        check_basic(new_password)
        with self._store.transaction() as s:
            a = self._changeable(s, actor, account_id, resource_id)
            for needed, given, name in (
                (a.reason_required, why, asked_as[0]),
                (a.ticket_required, ticket_id, asked_as[1]),
            ):
                if needed and not given.strip():
                    raise ValidationError(f"{name} is required to change this password")
            if ticket_id.strip():
                why = f"{why} (ticket {ticket_id})".strip()
            self._set_password(s, actor, a, new_password, utcnow())
            self._log(
                s,
                actor,
                ip,
                "change password",
                f"{a.resource.name}/{a.username}",
                resource_id=a.resource_id,
                account_id=a.id,
                reason=why,
                detail="local",
            )

    def generate_for_account(self, actor: SessionUser, account_id: int) -> str:
        """A new random password obeying the policy in force on the account."""
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            a = self._account(s, actor, account_id)
            policy = self._effective_policy(s, a)
            recent = self._recent_passwords(s, a, policy.no_reuse_last)
        for _ in range(GENERATE_TRIES):
            candidate = generate_password(policy)
            if candidate not in recent:
                return candidate
        # a policy that allows only a few passwords (length 1, digits only, no reuse of
        # the last 24) may have used them all: say so rather than try for ever
        raise ValidationError(
            f"the policy '{policy.name}' allows too few passwords to find one that is not "
            f"among the last {policy.no_reuse_last}: type one, or widen the policy"
        )

    # resource types ---------------------------------------------------------------------

    def list_resource_types(self, actor: SessionUser) -> list[tuple[str, bool]]:
        """(name, built-in) pairs, built-ins first."""
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            rows = s.execute(
                select(ResourceType.name, ResourceType.builtin).order_by(
                    ResourceType.builtin.desc(), ResourceType.name
                )
            ).all()
            return [(r[0], bool(r[1])) for r in rows]

    def add_resource_type(self, actor: SessionUser, ip: str, name: str) -> None:
        require(actor.role, Action.MANAGE_RESOURCE_TYPES)
        text = one_line("resource type", name, 64, required=True)
        with self._store.transaction() as s:
            clash = s.scalars(
                select(ResourceType.name).where(func.lower(ResourceType.name) == text.lower())
            ).first()
            if clash is not None:
                # named as stored: "linux" is refused because "Linux" exists
                same = "" if clash == text else " (names are unique regardless of case)"
                raise ConflictError(f"a resource type named '{clash}' exists already{same}")
            s.add(ResourceType(name=text, builtin=False))
            self._log(s, actor, ip, "add resource type", text)

    def delete_resource_type(self, actor: SessionUser, ip: str, name: str) -> None:
        require(actor.role, Action.MANAGE_RESOURCE_TYPES)
        with self._store.transaction() as s:
            row = s.scalars(select(ResourceType).where(ResourceType.name == name)).first()
            if row is None:
                raise NotFoundError(f"no resource type named '{name}'")
            if row.builtin:
                raise ConflictError(f"the built-in resource type '{name}' cannot be deleted")
            used = s.scalar(
                select(func.count()).select_from(Resource).where(Resource.resource_type == name)
            )
            if used:
                raise ConflictError(f"the resource type '{name}' is in use")
            self._log(s, actor, ip, "delete resource type", name)
            s.delete(row)

    # settings ---------------------------------------------------------------------------

    def get_settings(self, actor: SessionUser) -> VaultSettings:
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            return VaultSettings(
                password_reason=str(get_setting(s, SETTING_REASON, "optional")),
                default_policy=str(get_setting(s, SETTING_DEFAULT_POLICY, DEFAULT_POLICY)),
            )

    def _log_setting(self, s: Session, actor: SessionUser, ip: str, name: str, value: str) -> None:
        """A settings change: a user-audit row, as every settings change is
        (docs/audit-and-reports.md)."""
        self._audit.append(s, user_event(actor, ip, "settings", name, value))

    def set_password_reason(self, actor: SessionUser, ip: str, mode: str) -> None:
        """Whether a reason is "optional" or "required" to view or copy any password."""
        require(actor.role, Action.MANAGE_SETTINGS)
        if mode not in REASON_MODES:
            raise ValidationError("password reason must be 'optional' or 'required'")
        with self._store.transaction() as s:
            put_setting(s, SETTING_REASON, mode)
            self._log_setting(s, actor, ip, SETTING_REASON, mode)

    def set_default_policy(self, actor: SessionUser, ip: str, policy_id: int) -> None:
        require(actor.role, Action.MANAGE_SETTINGS)
        with self._store.transaction() as s:
            row = get_row(s, PasswordPolicy, policy_id)
            if row is None:
                raise NotFoundError(f"no password policy with id {policy_id}")
            put_setting(s, SETTING_DEFAULT_POLICY, row.name)
            self._log_setting(s, actor, ip, SETTING_DEFAULT_POLICY, row.name)


def _reason_and_ticket(reason: str, ticket: str) -> tuple[str, str]:
    """A reveal's or a change's reason and ticket id, checked as single lines; one that
    shows nothing (only invisible, text-direction or blank-looking characters) counts as
    not given, so that it neither meets a rule that asks for it nor reads as empty in the
    audit trail while it is not."""
    why = one_line("reason", reason, 1024)
    ticket_id = one_line("ticket id", ticket, 128)
    return (
        why if shows_something(why) else "",
        ticket_id if shows_something(ticket_id) else "",
    )


def _by_name(found: Sequence[tuple[int, str]], name: str) -> int | None:
    """The id of the resource named ``name`` among ``found`` (those whose names fold to the
    same): the one named exactly so; else the only one. Two that differ only in case can
    exist from before names were unique regardless of case: then only the exact name
    finds one."""
    exact = [rid for rid, rname in found if rname == name]
    if exact:
        return int(exact[0])
    return int(found[0][0]) if len(found) == 1 else None
