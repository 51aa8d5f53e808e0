"""The built-in reports: password inventory, passwords older than N days, policy
compliance (every broken rule of each password's policy), users and roles, and sharing.

No report contains a secret. The policy-compliance report decrypts each password here, in
the service, only to test it against its policy; it reports which rules fail, never the
password or anything derived from it (such as its length).

Who sees what (see ``node.report_scope``): Administrators and users with Super
Administrator scope see every resource and account; an auditor sees the resources and
accounts they own or that are shared with them, and the shares on those. The users-and-roles
report lists every user to both (auditing people is an auditor's job; it shows no vault
object). Running a report is audited (user audit, operation ``run report``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from node.access import visible_accounts, visible_groups, visible_resources
from node.audit import AuditEvent, AuditLog
from node.audit_query import sees_everything
from node.auth import SessionUser
from node.errors import DecryptionError, PermissionDeniedError, ValidationError
from node.export import Table
from node.keyring import KeyRing
from node.permissions import Action, allowed
from node.policies import (
    DEFAULT_POLICY,
    MAX_PASSWORD,
    SETTING_DEFAULT_POLICY,
    PolicySpec,
    check_password,
    policy_by_name,
    spec_of,
)
from node.store.db import Store
from node.store.models import (
    Account,
    PasswordPolicy,
    Resource,
    ResourceGroup,
    Share,
    User,
    UserGroup,
    UserGroupMember,
    utcnow,
)
from node.vault import get_setting

DEFAULT_AGE_DAYS = 90
MAX_AGE_DAYS = 36500


@dataclass(frozen=True)
class ReportInfo:
    key: str
    title: str
    description: str


REPORTS: dict[str, ReportInfo] = {
    r.key: r
    for r in (
        ReportInfo(
            "inventory",
            "Password inventory",
            "Every account you may see: its resource, owner, policy and password age.",
        ),
        ReportInfo(
            "aged",
            "Passwords older than N days",
            "Accounts whose password was last changed more than N days ago.",
        ),
        ReportInfo(
            "compliance",
            "Policy compliance",
            "Whether each password meets its password policy, and which rules it breaks.",
        ),
        ReportInfo("users", "Users and roles", "Every user, their role, status and groups."),
        ReportInfo("sharing", "Sharing", "Who has which access to which resource or account."),
    )
}


def _one_rule_each(policy: PolicySpec) -> list[PolicySpec]:
    """``policy`` split into policies of one rule each (length floor, length ceiling, each
    required character class), so that every broken rule is found by the one policy check
    of :mod:`node.policies`."""
    nothing = replace(
        policy,
        min_length=0,
        max_length=MAX_PASSWORD,
        require_lower=False,
        require_upper=False,
        require_digit=False,
        require_special=False,
        no_reuse_last=0,
    )
    rules = [replace(nothing, min_length=policy.min_length)]
    rules.append(replace(nothing, max_length=policy.max_length))
    if policy.require_lower:
        rules.append(replace(nothing, require_lower=True))
    if policy.require_upper:
        rules.append(replace(nothing, require_upper=True))
    if policy.require_digit:
        rules.append(replace(nothing, require_digit=True))
    if policy.require_special:
        rules.append(replace(nothing, require_special=True))
    return rules


def policy_problems(
    policy: PolicySpec, password: str, changed_at: dt.datetime | None, now: dt.datetime
) -> list[str]:
    """Every rule of ``policy`` that ``password`` breaks, as worded by
    :func:`node.policies.check_password`, plus the maximum age; the words reveal nothing
    about the password beyond the rule itself."""
    problems: list[str] = []
    for rule in _one_rule_each(policy):
        try:
            check_password(rule, password)
        except ValidationError as exc:
            # the rule's words after the check's head, which names the policy: a name
            # may itself hold ": " (splitting at the first one would cut the name)
            text = str(exc).removeprefix(f"password policy '{rule.name}': ")
            if text not in problems:
                problems.append(text)
    if policy.max_age_days and changed_at is not None:
        if now - changed_at > dt.timedelta(days=policy.max_age_days):
            problems.append(f"older than the maximum age of {policy.max_age_days} days")
    return problems


def parse_days(text: str | None) -> int:
    if text is None or not text.strip():
        return DEFAULT_AGE_DAYS
    text = text.strip()
    if not (text.isascii() and text.isdigit()):  # int() also takes '1_0' and other scripts' digits
        raise ValidationError("the number of days must be a whole number")
    if len(text) > len(str(MAX_AGE_DAYS)) or not 1 <= int(text) <= MAX_AGE_DAYS:
        raise ValidationError(f"the number of days must be between 1 and {MAX_AGE_DAYS}")
    return int(text)


def _age_days(changed: dt.datetime | None, now: dt.datetime) -> int | None:
    return None if changed is None else max(0, (now - changed).days)


def _default_policy(session: Session) -> PolicySpec:
    """The vault's default policy (the same rule as the vault service: the configured
    default, else the built-in default)."""
    name = str(get_setting(session, SETTING_DEFAULT_POLICY, DEFAULT_POLICY))
    row = policy_by_name(session, name) or policy_by_name(session, DEFAULT_POLICY)
    if row is None:
        return PolicySpec(DEFAULT_POLICY, min_length=1, require_lower=False)
    return spec_of(row)


class ReportService:
    def __init__(self, store: Store, keyring: KeyRing, audit: AuditLog) -> None:
        self._store = store
        self._keyring = keyring
        self._audit = audit

    def run(
        self,
        viewer: SessionUser,
        key: str,
        source_ip: str,
        *,
        days: int = DEFAULT_AGE_DAYS,
        now: dt.datetime | None = None,
    ) -> Table:
        """Run report ``key`` as ``viewer``; the run is audited in the same transaction."""
        if not allowed(viewer.role, Action.VIEW_REPORTS):
            raise PermissionDeniedError("your role does not allow reports")
        info = REPORTS.get(key)
        if info is None:
            raise ValidationError(f"unknown report '{key}'")
        if not 1 <= days <= MAX_AGE_DAYS:
            raise ValidationError(f"the number of days must be between 1 and {MAX_AGE_DAYS}")
        now = now or utcnow()
        builders: dict[str, Callable[[Session], Table]] = {
            "inventory": lambda s: self._inventory(s, viewer, now),
            "aged": lambda s: self._aged(s, viewer, now, days),
            "compliance": lambda s: self._compliance(s, viewer, now),
            "users": lambda s: self._users(s, viewer),
            "sharing": lambda s: self._sharing(s, viewer),
        }
        with self._store.transaction() as session:
            table = builders[key](session)
            table.generated_at = now
            self._audit.append(
                session,
                AuditEvent(
                    operation="run report",
                    username=viewer.username,
                    source_ip=source_ip,
                    target=table.title,
                    category="user",
                    detail=f"{len(table.rows)} rows",
                ),
                now=now,
            )
        return table

    # account-based reports ----------------------------------------------------------------

    def _account_rows(self, session: Session, viewer: SessionUser) -> Sequence[Any]:
        owner = aliased(User)
        acc_policy = aliased(PasswordPolicy)
        res_policy = aliased(PasswordPolicy)
        stmt = (
            select(Account, Resource, owner.username, acc_policy, res_policy)
            .join(Resource, Account.resource_id == Resource.id)
            .join(owner, Resource.owner_id == owner.id)
            .outerjoin(acc_policy, Account.password_policy_id == acc_policy.id)
            .outerjoin(res_policy, Resource.password_policy_id == res_policy.id)
            .where(Resource.deleted_at.is_(None))
            .order_by(func.lower(Resource.name), func.lower(Account.username))
        )
        if not sees_everything(viewer):
            stmt = stmt.where(visible_accounts(viewer))
        return session.execute(stmt).all()

    def _inventory(self, session: Session, viewer: SessionUser, now: dt.datetime) -> Table:
        table = Table(
            REPORTS["inventory"].title,
            [
                "Resource",
                "Resource type",
                "DNS name or IP",
                "Department",
                "Location",
                "Account",
                "Owner",
                "Password policy",
                "Has password",
                "Last changed (UTC)",
                "Last accessed (UTC)",
                "Password age (days)",
            ],
        )
        default = f"{_default_policy(session).name} (default)"
        for account, resource, owner, acc_policy, res_policy in self._account_rows(session, viewer):
            policy = acc_policy or res_policy
            changed = account.last_changed_at or account.created_at
            table.rows.append(
                [
                    resource.name,
                    resource.resource_type,
                    resource.dns_name,
                    resource.department,
                    resource.location,
                    account.username,
                    owner,
                    policy.name if policy else default,
                    account.password_ct is not None,
                    account.last_changed_at,
                    account.last_accessed_at,
                    _age_days(changed, now),
                ]
            )
        return table

    def _aged(self, session: Session, viewer: SessionUser, now: dt.datetime, days: int) -> Table:
        table = Table(
            f"Passwords older than {days} days",
            ["Resource", "Account", "Owner", "Last changed (UTC)", "Password age (days)"],
        )
        limit = now - dt.timedelta(days=days)
        for account, resource, owner, _a, _r in self._account_rows(session, viewer):
            changed = account.last_changed_at or account.created_at
            if account.password_ct is None or changed >= limit:
                continue
            table.rows.append(
                [resource.name, account.username, owner, changed, _age_days(changed, now)]
            )
        return table

    def _compliance(self, session: Session, viewer: SessionUser, now: dt.datetime) -> Table:
        table = Table(
            REPORTS["compliance"].title,
            ["Resource", "Account", "Password policy", "Compliant", "Rules broken"],
        )
        default = _default_policy(session)
        for account, resource, _owner, acc_policy, res_policy in self._account_rows(
            session, viewer
        ):
            row = acc_policy or res_policy
            policy = spec_of(row) if row is not None else default
            if account.password_ct is None:
                verdict, broken = "no password", ""
            else:
                try:
                    password = self._keyring.decrypt_text(
                        account.password_ct, "accounts", "password_ct", account.id
                    )
                except DecryptionError:
                    verdict, broken = "cannot decrypt", ""
                else:
                    changed = account.last_changed_at or account.created_at
                    problems = policy_problems(policy, password, changed, now)
                    del password
                    verdict = "no" if problems else "yes"
                    broken = "; ".join(problems)
            table.rows.append([resource.name, account.username, policy.name, verdict, broken])
        return table

    # people and shares --------------------------------------------------------------------

    def _users(self, session: Session, viewer: SessionUser) -> Table:
        # E-mail addresses are for those who manage users, as on the people pages.
        with_email = allowed(viewer.role, Action.MANAGE_USERS)
        table = Table(
            REPORTS["users"].title,
            [
                "Username",
                "Full name",
                *(["Email"] if with_email else []),
                "Role",
                "Super Administrator",
                "Kind",
                "Status",
                "User groups",
                "Last login (UTC)",
                "Created (UTC)",
            ],
        )
        groups: dict[int, list[str]] = {}
        for user_id, name in session.execute(
            select(UserGroupMember.user_id, UserGroup.name)
            .join(UserGroup, UserGroup.id == UserGroupMember.group_id)
            .order_by(UserGroup.name)
        ):
            groups.setdefault(user_id, []).append(name)
        for user in session.scalars(select(User).order_by(User.username)):
            table.rows.append(
                [
                    user.username,
                    user.full_name,
                    *([user.email] if with_email else []),
                    user.role.replace("_", " ").title(),
                    user.super_admin,
                    user.kind,
                    user.status,
                    ", ".join(groups.get(user.id, [])),
                    user.last_login_at,
                    user.created_at,
                ]
            )
        return table

    def _sharing(self, session: Session, viewer: SessionUser) -> Table:
        table = Table(
            REPORTS["sharing"].title,
            [
                "Shared object",
                "Object kind",
                "Shared with",
                "Shared with kind",
                "Access",
                "Granted by",
                "Granted at (UTC)",
            ],
        )
        grantee = aliased(User)
        granter = aliased(User)
        acc_res = aliased(Resource)
        stmt = (
            select(
                Share,
                Resource.name,
                Account.username,
                acc_res.name,
                ResourceGroup.name,
                grantee.username,
                UserGroup.name,
                granter.username,
            )
            .outerjoin(Resource, Share.resource_id == Resource.id)
            .outerjoin(Account, Share.account_id == Account.id)
            .outerjoin(acc_res, Account.resource_id == acc_res.id)
            .outerjoin(ResourceGroup, Share.resource_group_id == ResourceGroup.id)
            .outerjoin(grantee, Share.user_id == grantee.id)
            .outerjoin(UserGroup, Share.user_group_id == UserGroup.id)
            .outerjoin(granter, Share.granted_by == granter.id)
            # nothing in the trash, as in every report
            .where(Resource.deleted_at.is_(None), acc_res.deleted_at.is_(None))
            .order_by(Share.id)
        )
        if not sees_everything(viewer):
            stmt = stmt.where(
                or_(
                    Share.resource_id.in_(select(Resource.id).where(visible_resources(viewer))),
                    Share.account_id.in_(select(Account.id).where(visible_accounts(viewer))),
                    Share.resource_group_id.in_(
                        select(ResourceGroup.id).where(visible_groups(viewer))
                    ),
                )
            )
        for (
            share,
            res_name,
            acc_user,
            acc_res_name,
            group_name,
            to_user,
            to_group,
            by,
        ) in session.execute(stmt).all():
            if share.resource_id is not None:
                obj, kind = res_name, "resource"
            elif share.account_id is not None:
                obj, kind = f"{acc_res_name} / {acc_user}", "account"
            else:
                obj, kind = group_name, "resource group"
            who, who_kind = (to_user, "user") if share.user_id is not None else (to_group, "group")
            table.rows.append([obj, kind, who, who_kind, share.access, by or "", share.created_at])
        return table
