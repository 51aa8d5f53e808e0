"""Password policies and the password generator.

A policy sets a length range, required character classes (lower, upper, digit, special),
no reuse of the last N passwords, and a maximum age in days. Four built-in policies
(:data:`BUILTIN_POLICIES`: Low, Medium, Strong, Offline Password) are seeded at node start
and cannot be edited or deleted; administrators add custom ones.

Pure functions:
- :func:`check_password` raises ValidationError naming the policy and the rule that failed.
- :func:`generate_password` returns a random password (``secrets``) that obeys the policy.

:class:`PolicyService` (acting user + source IP, audited):
- ``list_policies``, ``get_policy`` (anyone logged in; NotFoundError for a bad id),
- ``create_policy``, ``update_policy``, ``delete_policy`` (Action.MANAGE_POLICIES, else
  PermissionDeniedError; ConflictError for a built-in policy, a duplicate name, or a policy
  in use; ValidationError for an inconsistent policy),
- ``generate(actor, policy_id)``.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.audit import AuditLog, user_event
from node.auth import SessionUser
from node.errors import ConflictError, NotFoundError, ValidationError
from node.inputs import get_row, name_clash, one_line
from node.permissions import Action, require
from node.store.db import Store
from node.store.models import Account, AppSetting, PasswordPolicy, Resource

LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase
DIGITS = string.digits
SPECIAL = "!#$%&()*+,-./:;<=>?@[]^_{|}~"
MAX_PASSWORD = 256
GENERATED_LENGTH = 20


@dataclass(frozen=True)
class PolicySpec:
    name: str
    min_length: int = 8
    max_length: int = 64
    require_lower: bool = True
    require_upper: bool = False
    require_digit: bool = False
    require_special: bool = False
    no_reuse_last: int = 0
    max_age_days: int | None = None
    builtin: bool = False
    id: int = 0

    @property
    def classes(self) -> list[tuple[str, str]]:
        wanted = [
            (self.require_lower, "a lower-case letter", LOWER),
            (self.require_upper, "an upper-case letter", UPPER),
            (self.require_digit, "a digit", DIGITS),
            (self.require_special, "a special character", SPECIAL),
        ]
        return [(label, chars) for on, label, chars in wanted if on]


BUILTIN_POLICIES = (
    PolicySpec("Low", min_length=4, max_length=64, require_lower=False, builtin=True),
    PolicySpec(
        "Medium",
        min_length=8,
        max_length=64,
        require_lower=True,
        require_upper=True,
        require_digit=True,
        no_reuse_last=1,
        builtin=True,
    ),
    PolicySpec(
        "Strong",
        min_length=12,
        max_length=64,
        require_lower=True,
        require_upper=True,
        require_digit=True,
        require_special=True,
        no_reuse_last=4,
        max_age_days=90,
        builtin=True,
    ),
    PolicySpec(
        "Offline Password",
        min_length=16,
        max_length=64,
        require_lower=True,
        require_upper=True,
        require_digit=True,
        require_special=True,
        no_reuse_last=10,
        max_age_days=30,
        builtin=True,
    ),
)
DEFAULT_POLICY = "Low"
SETTING_DEFAULT_POLICY = "default_password_policy"  # the app setting: a policy's name
GENERATE_TRIES = 1000  # new passwords tried before a policy is said to allow too few


def spec_of(row: PasswordPolicy) -> PolicySpec:
    return PolicySpec(
        name=row.name,
        min_length=row.min_length,
        max_length=row.max_length,
        require_lower=row.require_lower,
        require_upper=row.require_upper,
        require_digit=row.require_digit,
        require_special=row.require_special,
        no_reuse_last=row.no_reuse_last,
        max_age_days=row.max_age_days,
        builtin=row.builtin,
        id=row.id,
    )


def check_basic(password: object) -> str:
    """Rules every password obeys whatever the policy: text, not empty, no control
    characters, at most MAX_PASSWORD characters. The message never echoes the password."""
    if not isinstance(password, str):
        raise ValidationError("the password must be text")
    if not password:
        raise ValidationError("the password must not be empty")
    if len(password) > MAX_PASSWORD:
        raise ValidationError(f"the password is too long (at most {MAX_PASSWORD} characters)")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise ValidationError("the password must not contain control characters")
    return password


def check_password(policy: PolicySpec, password: str, recent: list[str] | None = None) -> None:
    """Raise ValidationError naming the first rule of ``policy`` that ``password`` breaks.
    ``recent`` are the account's most recent passwords, newest first (decrypted)."""
    check_basic(password)
    head = f"password policy '{policy.name}'"
    if len(password) < policy.min_length:
        raise ValidationError(f"{head}: at least {policy.min_length} characters are required")
    if len(password) > policy.max_length:
        raise ValidationError(f"{head}: at most {policy.max_length} characters are allowed")
    for label, chars in policy.classes:
        if not any(c in chars for c in password):
            raise ValidationError(f"{head}: the password must contain {label}")
    if policy.no_reuse_last and recent:
        if password in recent[: policy.no_reuse_last]:
            raise ValidationError(
                f"{head}: the password must not reuse any of the last "
                f"{policy.no_reuse_last} passwords"
            )


def generate_password(policy: PolicySpec, length: int | None = None) -> str:
    """A random password that obeys ``policy``: one character of each required class, the
    rest from all classes (letters, digits and specials when no class is required)."""
    n = length or max(policy.min_length, min(GENERATED_LENGTH, policy.max_length))
    n = max(policy.min_length, min(n, policy.max_length))
    required = policy.classes
    pool = "".join(chars for _, chars in required) or (LOWER + UPPER + DIGITS + SPECIAL)
    chars = [secrets.choice(cs) for _, cs in required]
    chars += [secrets.choice(pool) for _ in range(n - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def validate_spec(spec: PolicySpec) -> PolicySpec:
    name = one_line("policy name", spec.name, 128, required=True)
    if not 1 <= spec.min_length <= MAX_PASSWORD:
        raise ValidationError(f"minimum length must be between 1 and {MAX_PASSWORD}")
    if not spec.min_length <= spec.max_length <= MAX_PASSWORD:
        raise ValidationError(
            f"maximum length must be between the minimum length and {MAX_PASSWORD}"
        )
    if len(spec.classes) > spec.min_length:
        raise ValidationError("minimum length is shorter than the number of required classes")
    if not 0 <= spec.no_reuse_last <= 24:
        raise ValidationError("no reuse of the last N passwords: N must be between 0 and 24")
    if spec.max_age_days is not None and not 1 <= spec.max_age_days <= 3650:
        raise ValidationError("maximum age must be between 1 and 3650 days (or none)")
    return replace(spec, name=name)


def _fill(row: PasswordPolicy, spec: PolicySpec) -> None:
    row.name = spec.name
    row.min_length = spec.min_length
    row.max_length = spec.max_length
    row.require_lower = spec.require_lower
    row.require_upper = spec.require_upper
    row.require_digit = spec.require_digit
    row.require_special = spec.require_special
    row.no_reuse_last = spec.no_reuse_last
    row.max_age_days = spec.max_age_days


def seed_policies(session: Session) -> int:
    """Add the built-in policies that are missing; returns how many were added."""
    have = set(session.scalars(select(PasswordPolicy.name)))
    added = 0
    for spec in BUILTIN_POLICIES:
        if spec.name not in have:
            row = PasswordPolicy(builtin=True)
            _fill(row, spec)
            session.add(row)
            added += 1
    return added


def policy_by_name(session: Session, name: str) -> PasswordPolicy | None:
    return session.scalars(select(PasswordPolicy).where(PasswordPolicy.name == name)).first()


def _name_taken(session: Session, name: str, except_id: int | None = None) -> None:
    """Policy names are unique regardless of letter case (node/inputs.py ``name_clash``),
    so that a custom ``low`` is never taken for the built-in ``Low``."""
    other = name_clash(session, PasswordPolicy.name, name, except_id=except_id)
    if other is not None:
        raise ConflictError(f"a password policy named '{other.name}' exists already")


def _default_name(session: Session) -> str:
    row = session.get(AppSetting, SETTING_DEFAULT_POLICY)
    return DEFAULT_POLICY if row is None else str(row.value)


class PolicyService:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit

    def list_policies(self, actor: SessionUser) -> list[PolicySpec]:
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            rows = s.scalars(
                select(PasswordPolicy).order_by(PasswordPolicy.builtin.desc(), PasswordPolicy.id)
            )
            return [spec_of(r) for r in rows]

    def get_policy(self, actor: SessionUser, policy_id: int) -> PolicySpec:
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            row = get_row(s, PasswordPolicy, policy_id)
            if row is None:
                raise NotFoundError(f"no password policy with id {policy_id}")
            return spec_of(row)

    def generate(self, actor: SessionUser, policy_id: int) -> str:
        return generate_password(self.get_policy(actor, policy_id))

    def _audit_row(self, s: Session, actor: SessionUser, ip: str, op: str, name: str) -> None:
        self._audit.append(s, user_event(actor, ip, op, name, "password policy"))

    def create_policy(self, actor: SessionUser, ip: str, spec: PolicySpec) -> int:
        require(actor.role, Action.MANAGE_POLICIES)
        spec = validate_spec(spec)
        try:
            with self._store.transaction() as s:
                _name_taken(s, spec.name)
                row = PasswordPolicy(builtin=False)
                _fill(row, spec)
                s.add(row)
                s.flush()
                self._audit_row(s, actor, ip, "add password policy", spec.name)
                return row.id
        except IntegrityError:
            raise ConflictError(f"a password policy named '{spec.name}' exists already") from None

    def update_policy(self, actor: SessionUser, ip: str, policy_id: int, spec: PolicySpec) -> None:
        require(actor.role, Action.MANAGE_POLICIES)
        spec = validate_spec(spec)
        with self._store.transaction() as s:
            row = get_row(s, PasswordPolicy, policy_id)
            if row is None:
                raise NotFoundError(f"no password policy with id {policy_id}")
            if row.builtin:
                raise ConflictError(f"the built-in policy '{row.name}' cannot be edited")
            _name_taken(s, spec.name, row.id)
            default = s.get(AppSetting, SETTING_DEFAULT_POLICY)
            if default is not None and default.value == row.name and spec.name != row.name:
                default.value = spec.name  # the vault's default follows its new name
            _fill(row, spec)
            self._audit_row(s, actor, ip, "edit password policy", spec.name)

    def delete_policy(self, actor: SessionUser, ip: str, policy_id: int) -> None:
        require(actor.role, Action.MANAGE_POLICIES)
        with self._store.transaction() as s:
            row = get_row(s, PasswordPolicy, policy_id)
            if row is None:
                raise NotFoundError(f"no password policy with id {policy_id}")
            if row.builtin:
                raise ConflictError(f"the built-in policy '{row.name}' cannot be deleted")
            if _default_name(s) == row.name:
                raise ConflictError(
                    f"the policy '{row.name}' is the vault's default: choose another default "
                    "(Settings) before deleting it"
                )
            used: Any = (
                s.scalar(
                    select(func.count())
                    .select_from(Account)
                    .where(Account.password_policy_id == row.id)
                )
                or 0
            )
            used += (
                s.scalar(
                    select(func.count())
                    .select_from(Resource)
                    .where(or_(Resource.password_policy_id == row.id))
                )
                or 0
            )
            if used:
                raise ConflictError(
                    f"the policy '{row.name}' is used by {used} resources or accounts"
                )
            self._audit_row(s, actor, ip, "delete password policy", row.name)
            s.delete(row)
