"""Sharing resources, accounts and resource groups, and transferring ownership.

Who may share: a role with Action.SHARE whose effective access on the object is Full or
Owner (owner, Super Administrator, or a Full share: "full may re-share"). Shares go to one
user or one user group at View, Modify or Full; sharing again with the same user or group
replaces the level. How shares combine is decided in node/access.py (:func:`resolve`).

Methods of :class:`SharingService` (all audited in the same transaction):
- ``share_account``, ``share_resource``, ``share_group``: grant or change a share.
- ``unshare_account``, ``unshare_resource``, ``unshare_group``: remove one.
- ``list_shares(actor, kind, object_id)``: who has what on an object (needs Full).
- ``transfer_ownership(actor, ip, from_user_id, to_user_id)``: every resource and resource
  group the first user owns (trash included) goes to the second, who must be an active
  administrator-type user. The acting administrator gains nothing unless they are the
  receiver. Needs Action.TRANSFER_OWNERSHIP.

Errors: NotFoundError (object missing or not visible; unknown user or user group),
PermissionDeniedError (role lacks the action, or access below Full), ValidationError
(bad level, sharing with oneself or with the owner, transfer to a non-administrator or to
the same user), AuditWriteError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from node.access import (
    Access,
    account_access,
    account_levels,
    group_access,
    parse_access,
    resource_access,
    resource_levels,
    visible_accounts,
    visible_groups,
    visible_resources,
)
from node.audit import TRANSFER_OWNERSHIP_OPERATION, AuditEvent, AuditLog, user_event
from node.auth import SessionUser
from node.errors import NotFoundError, PermissionDeniedError, ValidationError
from node.inputs import get_row, in_range
from node.permissions import Action, require
from node.roles import Role
from node.store.db import Store
from node.store.models import (
    Account,
    Resource,
    ResourceGroup,
    ResourceGroupMember,
    Share,
    User,
    UserGroup,
    UserGroupMember,
)
from node.users import guard_scoped

ObjectKind = Literal["account", "resource", "group"]


@dataclass(frozen=True)
class ShareView:
    id: int
    principal: Literal["user", "user_group"]
    principal_id: int
    principal_name: str
    access: Access
    granted_by: str


@dataclass(frozen=True)
class GroupReach:
    """A resource group holding a resource, and the shares of that group."""

    group_id: int
    group_name: str
    shares: list[ShareView]


@dataclass(frozen=True)
class TransferResult:
    resources: int
    groups: int


@dataclass(frozen=True)
class _Target:
    kind: ObjectKind
    id: int
    name: str
    owner_id: int
    resource_id: int | None
    account_id: int | None
    level: Access  # the caller's access on it: Full or Owner


class SharingService:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit

    # the object and the caller's right on it ---------------------------------------------

    def _target(self, s: Session, actor: SessionUser, kind: ObjectKind, oid: int) -> _Target:
        if not in_range(oid):
            raise NotFoundError(f"no {kind} with id {oid}")
        if kind == "account":
            a = s.scalars(
                select(Account)
                .join(Resource, Resource.id == Account.resource_id)
                .where(Account.id == oid, Resource.deleted_at.is_(None), visible_accounts(actor))
            ).first()
            if a is None:
                raise NotFoundError(f"no account with id {oid}")
            level = account_access(s, actor, a)
            target = _Target(
                "account",
                a.id,
                f"{a.resource.name}/{a.username}",
                a.resource.owner_id,
                a.resource_id,
                a.id,
                level,
            )
        elif kind == "resource":
            r = s.scalars(
                select(Resource).where(
                    Resource.id == oid, Resource.deleted_at.is_(None), visible_resources(actor)
                )
            ).first()
            if r is None:
                raise NotFoundError(f"no resource with id {oid}")
            level = resource_access(s, actor, r)
            target = _Target("resource", r.id, r.name, r.owner_id, r.id, None, level)
        else:
            g = s.scalars(
                select(ResourceGroup).where(ResourceGroup.id == oid, visible_groups(actor))
            ).first()
            if g is None:
                raise NotFoundError(f"no resource group with id {oid}")
            level = group_access(s, actor, g)
            target = _Target("group", g.id, g.name, g.owner_id, None, None, level)
        if level < Access.FULL:
            raise PermissionDeniedError(
                f"your access ({level.label}) does not allow sharing this {kind} (needs Full)"
            )
        return target

    @staticmethod
    def _lowest_reached(s: Session, actor: SessionUser, t: _Target) -> tuple[Access, str]:
        """The caller's lowest access on what a share of ``t`` reaches (each account of a
        resource; each account of each resource of a group), and where it is: a share
        passed on by someone who is not the owner may give no more than that."""
        lowest, where = t.level, f"this {t.kind}"
        if t.kind == "account":
            return lowest, where
        resources = SharingService._resources_reached(s, t)
        on_resources = resource_levels(s, actor, resources)
        for r in resources:
            level = on_resources[r.id]
            if level < lowest:
                lowest, where = level, f"resource {r.name}"
            accounts = {a.id: a.username for a in r.accounts}
            for aid, level in account_levels(s, actor, r, list(accounts)).items():
                if level < lowest:
                    lowest, where = level, f"account {r.name}/{accounts[aid]}"
        return lowest, where

    @staticmethod
    def _resources_reached(s: Session, t: _Target) -> list[Resource]:
        """The resources a share of a resource or a group reaches (none for an account)."""
        if t.kind == "account":
            return []
        if t.kind == "resource":
            return list(s.scalars(select(Resource).where(Resource.id == t.id)))
        return list(
            s.scalars(
                select(Resource)
                .join(ResourceGroupMember, ResourceGroupMember.resource_id == Resource.id)
                .where(ResourceGroupMember.group_id == t.id, Resource.deleted_at.is_(None))
                .order_by(Resource.id)
            )
        )

    @staticmethod
    def _people_reached(s: Session, actor: SessionUser, pkind: str, pid: int) -> list[SessionUser]:
        """Who a share with the user or user group ``pid`` reaches (never its granter)."""
        if pkind == "user":
            ids = select(User.id).where(User.id == pid)
        else:
            ids = select(UserGroupMember.user_id).where(UserGroupMember.group_id == pid)
        users = s.scalars(
            select(User).where(User.id.in_(ids), User.id != actor.id).order_by(User.id)
        ).all()
        return [
            SessionUser(u.id, u.username, Role(u.role), u.super_admin, False, u.full_name)
            for u in users
        ]

    @staticmethod
    def _holdings(
        s: Session, people: Sequence[SessionUser], t: _Target, not_from: int | None = None
    ) -> dict[tuple[str, str], Access]:
        """What each of ``people`` holds on everything a share of ``t`` reaches, as
        (username, what) -> level; with ``not_from``: through the shares others than that
        user granted."""
        out: dict[tuple[str, str], Access] = {}
        resources = SharingService._resources_reached(s, t)
        account = s.get(Account, t.id) if t.kind == "account" else None
        group = s.get(ResourceGroup, t.id) if t.kind == "group" else None
        for u in people:
            if account is not None:
                on_account = account_levels(s, u, account.resource, [account.id], not_from=not_from)
                out[(u.username, f"account {t.name}")] = on_account[account.id]
            if group is not None:
                level = group_access(s, u, group, not_from=not_from)
                out[(u.username, f"resource group {t.name}")] = level
            on_resources = resource_levels(s, u, resources, not_from=not_from)
            for r in resources:
                out[(u.username, f"resource {r.name}")] = on_resources[r.id]
                names = {a.id: a.username for a in r.accounts}
                levels = account_levels(s, u, r, list(names), not_from=not_from)
                for aid, level in levels.items():
                    out[(u.username, f"account {r.name}/{names[aid]}")] = level
        return out

    @staticmethod
    def _object_filter(t: _Target) -> list[ColumnElement[bool]]:
        if t.kind == "account":
            return [Share.account_id == t.id]
        if t.kind == "resource":
            return [Share.resource_id == t.id]
        return [Share.resource_group_id == t.id]

    @staticmethod
    def _principal(
        s: Session, user_id: int | None, user_group_id: int | None
    ) -> tuple[str, int, str]:
        if (user_id is None) == (user_group_id is None):
            raise ValidationError("share with exactly one user or one user group")
        if user_id is not None:
            u = get_row(s, User, user_id)
            if u is None:
                raise NotFoundError(f"no user with id {user_id}")
            if u.status != "active":
                raise ValidationError(f"{u.username} is disabled: share with an active user")
            return "user", u.id, u.username
        assert user_group_id is not None
        g = get_row(s, UserGroup, user_group_id)
        if g is None:
            raise NotFoundError(f"no user group with id {user_group_id}")
        return "user_group", g.id, g.name

    def _log(
        self, s: Session, actor: SessionUser, ip: str, op: str, t: _Target, detail: str
    ) -> None:
        self._audit.append(
            s,
            AuditEvent(
                operation=op,
                username=actor.username,
                source_ip=ip,
                target=f"{t.kind} {t.name}",
                category="resource",
                resource_id=t.resource_id,
                account_id=t.account_id,
                detail=detail,
            ),
        )

    # sharing ------------------------------------------------------------------------------

    @staticmethod
    def _may_pass_on(actor: SessionUser, t: _Target, row: Share | None, pname: str) -> None:
        """A Full share holder passes access on; they change or remove only the shares
        they granted (the owner's, or another holder's, stay as those made them)."""
        if row is not None and row.granted_by != actor.id:
            raise PermissionDeniedError(
                f"the share of this {t.kind} with {pname} was granted by someone else: only "
                "its owner can change or remove it"
            )

    def _share(
        self,
        actor: SessionUser,
        ip: str,
        kind: ObjectKind,
        oid: int,
        user_id: int | None,
        user_group_id: int | None,
        access: object,
    ) -> None:
        require(actor.role, Action.SHARE)
        level = parse_access(access)
        with self._store.transaction() as s:
            t = self._target(s, actor, kind, oid)
            pkind, pid, pname = self._principal(s, user_id, user_group_id)
            if pkind == "user" and pid == actor.id:
                raise ValidationError("you cannot share with yourself")
            if pkind == "user" and pid == t.owner_id:
                raise ValidationError(f"{pname} owns this {kind} already")
            col = Share.user_id if pkind == "user" else Share.user_group_id
            row = s.scalars(select(Share).where(*self._object_filter(t), col == pid)).first()
            before: dict[tuple[str, str], Access] | None = None
            people: list[SessionUser] = []
            if t.level < Access.OWNER:  # passed on by a Full share holder
                self._may_pass_on(actor, t, row, pname)
                lowest, where = self._lowest_reached(s, actor, t)
                if level > lowest:
                    raise PermissionDeniedError(
                        f"you hold {lowest.label} on {where}: you cannot share this {kind} "
                        f"at {level.label}"
                    )
                # A more specific share beats a less specific one even when lower: what
                # the people it reaches hold through the others' shares (the owner's) is
                # theirs to keep.
                people = self._people_reached(s, actor, pkind, pid)
                before = self._holdings(s, people, t, not_from=actor.id)
            if row is None:
                row = Share(
                    account_id=t.id if kind == "account" else None,
                    resource_id=t.id if kind == "resource" else None,
                    resource_group_id=t.id if kind == "group" else None,
                    user_id=pid if pkind == "user" else None,
                    user_group_id=pid if pkind == "user_group" else None,
                )
                s.add(row)
            row.access = level.name.lower()
            row.granted_by = actor.id
            if before is not None:
                s.flush()
                after = self._holdings(s, people, t)
                for (who, what), held in before.items():
                    if after[(who, what)] < held:
                        raise PermissionDeniedError(
                            f"{who} holds {held.label} on {what} through others' shares: a "
                            f"share from you at {level.label} would lower it"
                        )
            self._log(s, actor, ip, "share", t, f"{pkind.replace('_', ' ')} {pname}: {level.label}")

    def share_account(
        self,
        actor: SessionUser,
        ip: str,
        account_id: int,
        access: object,
        *,
        user_id: int | None = None,
        user_group_id: int | None = None,
    ) -> None:
        self._share(actor, ip, "account", account_id, user_id, user_group_id, access)

    def share_resource(
        self,
        actor: SessionUser,
        ip: str,
        resource_id: int,
        access: object,
        *,
        user_id: int | None = None,
        user_group_id: int | None = None,
    ) -> None:
        self._share(actor, ip, "resource", resource_id, user_id, user_group_id, access)

    def share_group(
        self,
        actor: SessionUser,
        ip: str,
        group_id: int,
        access: object,
        *,
        user_id: int | None = None,
        user_group_id: int | None = None,
    ) -> None:
        self._share(actor, ip, "group", group_id, user_id, user_group_id, access)

    def _unshare(
        self,
        actor: SessionUser,
        ip: str,
        kind: ObjectKind,
        oid: int,
        user_id: int | None,
        user_group_id: int | None,
    ) -> None:
        require(actor.role, Action.SHARE)
        with self._store.transaction() as s:
            t = self._target(s, actor, kind, oid)
            pkind, pid, pname = self._principal(s, user_id, user_group_id)
            col = Share.user_id if pkind == "user" else Share.user_group_id
            row = s.scalars(select(Share).where(*self._object_filter(t), col == pid)).first()
            if row is None:
                raise NotFoundError(f"this {kind} is not shared with {pname}")
            if t.level < Access.OWNER:
                self._may_pass_on(actor, t, row, pname)
            s.delete(row)
            self._log(s, actor, ip, "unshare", t, f"{pkind.replace('_', ' ')} {pname}")

    def unshare_account(
        self,
        actor: SessionUser,
        ip: str,
        account_id: int,
        *,
        user_id: int | None = None,
        user_group_id: int | None = None,
    ) -> None:
        self._unshare(actor, ip, "account", account_id, user_id, user_group_id)

    def unshare_resource(
        self,
        actor: SessionUser,
        ip: str,
        resource_id: int,
        *,
        user_id: int | None = None,
        user_group_id: int | None = None,
    ) -> None:
        self._unshare(actor, ip, "resource", resource_id, user_id, user_group_id)

    def unshare_group(
        self,
        actor: SessionUser,
        ip: str,
        group_id: int,
        *,
        user_id: int | None = None,
        user_group_id: int | None = None,
    ) -> None:
        self._unshare(actor, ip, "group", group_id, user_id, user_group_id)

    def list_shares(self, actor: SessionUser, kind: ObjectKind, object_id: int) -> list[ShareView]:
        require(actor.role, Action.SHARE)
        with self._store.sessions() as s:
            t = self._target(s, actor, kind, object_id)
            rows = s.scalars(select(Share).where(*self._object_filter(t)).order_by(Share.id)).all()
            return self._share_views(s, rows)

    def group_reach(self, actor: SessionUser, resource_id: int) -> list[GroupReach]:
        """For the resource's owner (or a Super Administrator): the resource groups that
        hold it and their shares, which reach the resource too. Empty for anyone else."""
        require(actor.role, Action.SHARE)
        with self._store.sessions() as s:
            t = self._target(s, actor, "resource", resource_id)
            if t.level < Access.OWNER:
                return []
            groups = s.scalars(
                select(ResourceGroup)
                .join(ResourceGroupMember, ResourceGroupMember.group_id == ResourceGroup.id)
                .where(ResourceGroupMember.resource_id == t.id)
                .order_by(ResourceGroup.name)
            ).all()
            out = []
            for g in groups:
                rows = s.scalars(
                    select(Share).where(Share.resource_group_id == g.id).order_by(Share.id)
                ).all()
                out.append(GroupReach(g.id, g.name, self._share_views(s, rows)))
            return out

    @staticmethod
    def _share_views(s: Session, rows: Sequence[Share]) -> list[ShareView]:
        names = dict(s.execute(select(User.id, User.username)).all())
        groups = dict(s.execute(select(UserGroup.id, UserGroup.name)).all())
        out = []
        for r in rows:
            if r.user_id is not None:
                principal: Literal["user", "user_group"] = "user"
                pid, pname = r.user_id, names.get(r.user_id, "")
            else:
                assert r.user_group_id is not None
                principal = "user_group"
                pid, pname = r.user_group_id, groups.get(r.user_group_id, "")
            out.append(
                ShareView(
                    id=r.id,
                    principal=principal,
                    principal_id=pid,
                    principal_name=pname,
                    access=Access[r.access.upper()],
                    granted_by=names.get(r.granted_by or 0, ""),
                )
            )
        return out

    # ownership ----------------------------------------------------------------------------

    def transfer_ownership(
        self, actor: SessionUser, ip: str, from_user_id: int, to_user_id: int
    ) -> TransferResult:
        require(actor.role, Action.TRANSFER_OWNERSHIP)
        if from_user_id == to_user_id:
            raise ValidationError("choose a different user to receive the ownership")
        with self._store.transaction() as s:
            giver = get_row(s, User, from_user_id)
            taker = get_row(s, User, to_user_id)
            if giver is None:
                raise NotFoundError(f"no user with id {from_user_id}")
            if taker is None:
                raise NotFoundError(f"no user with id {to_user_id}")
            guard_scoped(actor, giver, "transfer what they own")
            if taker.kind != "person":
                raise ValidationError(f"{taker.username} is an API user: transfer to a person")
            if not Role(taker.role).is_admin_type or taker.status != "active":
                raise ValidationError(
                    f"{taker.username} is not an active administrator or password administrator"
                )
            resources = s.scalars(
                select(Resource).where(Resource.owner_id == giver.id).order_by(Resource.id)
            ).all()
            groups = s.scalars(
                select(ResourceGroup).where(ResourceGroup.owner_id == giver.id)
            ).all()
            detail = f"from {giver.username} to {taker.username}"
            for r in resources:
                r.owner_id = taker.id
                self._audit.append(
                    s,
                    AuditEvent(
                        operation=TRANSFER_OWNERSHIP_OPERATION,
                        username=actor.username,
                        source_ip=ip,
                        target=r.name,
                        category="resource",
                        resource_id=r.id,
                        detail=detail,
                    ),
                )
            for g in groups:
                g.owner_id = taker.id
            # The new owner needs no share of what they own now: one left behind would
            # keep their access after they, in turn, hand it on.
            resource_ids = [r.id for r in resources]
            owned = or_(
                Share.resource_id.in_(resource_ids),
                Share.account_id.in_(
                    select(Account.id).where(Account.resource_id.in_(resource_ids))
                ),
                Share.resource_group_id.in_([g.id for g in groups]),
            )
            s.execute(delete(Share).where(Share.user_id == taker.id, owned))
            summary = f"{detail}: {len(resources)} resources, {len(groups)} groups"
            self._audit.append(
                s, user_event(actor, ip, TRANSFER_OWNERSHIP_OPERATION, giver.username, summary)
            )
            return TransferResult(resources=len(resources), groups=len(groups))

    def owned_counts(self, actor: SessionUser, user_id: int) -> TransferResult:
        """How much a user owns (for the transfer page); needs TRANSFER_OWNERSHIP."""
        require(actor.role, Action.TRANSFER_OWNERSHIP)
        with self._store.sessions() as s:
            if get_row(s, User, user_id) is None:
                raise NotFoundError(f"no user with id {user_id}")
            nres = s.scalar(
                select(func.count()).select_from(Resource).where(Resource.owner_id == user_id)
            )
            ngrp = s.scalar(
                select(func.count())
                .select_from(ResourceGroup)
                .where(ResourceGroup.owner_id == user_id)
            )
            return TransferResult(int(nres or 0), int(ngrp or 0))
