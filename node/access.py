"""Who may see and do what on a resource, an account or a resource group.

Access levels, lowest first: NONE, VIEW, MODIFY, FULL (may re-share), OWNER (the owner of
the resource or group, or a Super Administrator).

Precedence (:func:`resolve`, the ONE rule): among the shares that apply to a user, the most
specific tier wins, and within a tier the most generous share:

    account to the user > account to a user group of theirs
    > resource to the user > resource to a user group
    > resource group to the user > resource group to a user group

So an account-level share beats a resource-level one (even when it is lower), a
resource-level share beats a group-level one, and at the same object a share to the user
beats a share to a user group. Ownership and Super Administrator scope are not shares and
always give OWNER. A share never applies to the user who granted it (one passed on to a
user group of theirs reaches the others in it, not them).

Functions:
- :func:`account_levels`, :func:`account_access` (:func:`account_access_by_id` when only
  the ids are at hand), :func:`resource_access`,
  :func:`group_access` compute effective access (one query each).
- :func:`visible_resources`, :func:`visible_accounts`, :func:`visible_groups` are SQL
  predicates that filter lists inside the query (a share of any level makes an object
  visible, so the predicates match :func:`resolve` exactly).
- :func:`parse_access` raises ValidationError for an unknown level name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, bindparam, or_, select, true
from sqlalchemy.orm import Session

from node.auth import SessionUser
from node.errors import PermissionDeniedError, ValidationError
from node.store.models import (
    Account,
    Resource,
    ResourceGroup,
    ResourceGroupMember,
    Share,
    UserGroupMember,
)
from node.store.point_reads import PointReader


class Access(IntEnum):
    NONE = 0
    VIEW = 1
    MODIFY = 2
    FULL = 3
    OWNER = 4

    @property
    def label(self) -> str:
        return self.name.title()


SHAREABLE = (Access.VIEW, Access.MODIFY, Access.FULL)


def need_access(level: Access, needed: Access, what: str) -> None:
    """Raise PermissionDeniedError unless ``level`` is at least ``needed`` (``what``: the
    operation, as the message names it)."""
    if level < needed:
        raise PermissionDeniedError(
            f"your access ({level.label}) does not allow {what} (needs {needed.label})"
        )


def parse_access(text: object) -> Access:
    if isinstance(text, Access) and text in SHAREABLE:
        return text
    key = str(text).strip().lower() if text is not None else ""
    for level in SHAREABLE:
        if level.name.lower() == key:
            return level
    raise ValidationError(f"unknown access level '{text}' (one of: view, modify, full)")


class Tier(IntEnum):
    """How specific a share is; higher beats lower."""

    GROUP_TO_USER_GROUP = 1
    GROUP_TO_USER = 2
    RESOURCE_TO_USER_GROUP = 3
    RESOURCE_TO_USER = 4
    ACCOUNT_TO_USER_GROUP = 5
    ACCOUNT_TO_USER = 6


@dataclass(frozen=True)
class Grant:
    tier: Tier
    access: Access


def resolve(grants: Iterable[Grant]) -> Access:
    """The precedence rule: the highest tier present decides; within it the best level."""
    best: Grant | None = None
    for g in grants:
        if best is None or g.tier > best.tier or (g.tier == best.tier and g.access > best.access):
            best = g
    return best.access if best is not None else Access.NONE


def _my_groups(user_id: int) -> Select[Any]:
    return select(UserGroupMember.group_id).where(UserGroupMember.user_id == user_id)


def _not_granted_by(user_id: Any) -> ColumnElement[bool]:
    """A share never reaches the one who granted it: else someone holding Full without
    owning would, by sharing with a user group of theirs, give themself a share that
    outlives what they held (the owner's removal of their share, a transfer of what
    they owned), and sharing an account with their group would lower their own access."""
    return or_(Share.granted_by.is_(None), Share.granted_by != user_id)


def applies_to(user_id: int, not_from: int | None = None) -> ColumnElement[bool]:
    """Shares made to the user or to one of their user groups, except those they granted
    (and, with ``not_from``, those that user granted)."""
    cond = and_(
        or_(Share.user_id == user_id, Share.user_group_id.in_(_my_groups(user_id))),
        _not_granted_by(user_id),
    )
    return cond if not_from is None else and_(cond, _not_granted_by(not_from))


def _tier(share: Share) -> Tier:
    return _tier_of(share.account_id, share.resource_id, share.user_id)


def _tier_of(account_id: int | None, resource_id: int | None, user_id: int | None) -> Tier:
    to_user = user_id is not None
    if account_id is not None:
        return Tier.ACCOUNT_TO_USER if to_user else Tier.ACCOUNT_TO_USER_GROUP
    if resource_id is not None:
        return Tier.RESOURCE_TO_USER if to_user else Tier.RESOURCE_TO_USER_GROUP
    return Tier.GROUP_TO_USER if to_user else Tier.GROUP_TO_USER_GROUP


def _level(text: str) -> Access:
    return Access[text.upper()]


def _is_owner(actor: SessionUser, owner_id: int) -> bool:
    return actor.super_admin or owner_id == actor.id


def _groups_of(resource_ids: Sequence[int]) -> Select[Any]:
    return select(ResourceGroupMember.group_id).where(
        ResourceGroupMember.resource_id.in_(resource_ids)
    )


def account_levels(
    session: Session,
    actor: SessionUser,
    resource: Resource,
    account_ids: Sequence[int],
    *,
    not_from: int | None = None,
) -> dict[int, Access]:
    """Effective access on each of ``account_ids`` (all on ``resource``), in one query
    (``not_from``: as if the shares that user granted were not there)."""
    if _is_owner(actor, resource.owner_id):
        return dict.fromkeys(account_ids, Access.OWNER)
    rows = session.scalars(
        select(Share).where(
            applies_to(actor.id, not_from),
            or_(
                Share.account_id.in_(account_ids),
                Share.resource_id == resource.id,
                Share.resource_group_id.in_(_groups_of([resource.id])),
            ),
        )
    ).all()
    common = [Grant(_tier(s), _level(s.access)) for s in rows if s.account_id is None]
    own: dict[int, list[Grant]] = {}
    for s in rows:
        if s.account_id is not None:
            own.setdefault(s.account_id, []).append(Grant(_tier(s), _level(s.access)))
    return {aid: resolve([*common, *own.get(aid, [])]) for aid in account_ids}


def account_access(session: Session, actor: SessionUser, account: Account) -> Access:
    owner_id = account.resource.owner_id
    return account_access_by_id(session, actor, owner_id, account.resource_id, account.id)


# The shares that bear on one account: one statement built once, with bind parameters
# (the same rule as account_levels, for a single account).
_SHARES_ON_ACCOUNT = select(Share.account_id, Share.resource_id, Share.user_id, Share.access).where(
    or_(
        Share.user_id == bindparam("uid"),
        Share.user_group_id.in_(
            select(UserGroupMember.group_id).where(UserGroupMember.user_id == bindparam("uid"))
        ),
    ),
    _not_granted_by(bindparam("uid")),
    or_(
        Share.account_id == bindparam("aid"),
        Share.resource_id == bindparam("rid"),
        Share.resource_group_id.in_(
            select(ResourceGroupMember.group_id).where(
                ResourceGroupMember.resource_id == bindparam("rid")
            )
        ),
    ),
)


def account_access_by_id(
    conn: Session | Connection | PointReader,
    actor: SessionUser,
    owner_id: int,
    resource_id: int,
    account_id: int,
) -> Access:
    """Effective access on one account known by its ids and its resource's owner (an ORM
    session, or the point reader the password fetch runs it on)."""
    if _is_owner(actor, owner_id):
        return Access.OWNER
    rows = conn.execute(
        _SHARES_ON_ACCOUNT, {"uid": actor.id, "aid": account_id, "rid": resource_id}
    ).all()
    return resolve(
        Grant(_tier_of(r.account_id, r.resource_id, r.user_id), _level(r.access)) for r in rows
    )


def resource_levels(
    session: Session,
    actor: SessionUser,
    resources: Sequence[Resource],
    *,
    not_from: int | None = None,
) -> dict[int, Access]:
    """Access on each resource itself (resource- and group-level shares). Someone who sees
    a resource only through shared accounts has NONE here, yet still sees the resource."""
    result: dict[int, Access] = {}
    others = []
    for r in resources:
        if _is_owner(actor, r.owner_id):
            result[r.id] = Access.OWNER
        else:
            others.append(r.id)
    if not others:
        return result
    direct = session.scalars(
        select(Share).where(applies_to(actor.id, not_from), Share.resource_id.in_(others))
    ).all()
    via_groups = session.execute(
        select(ResourceGroupMember.resource_id, Share)
        .join(Share, Share.resource_group_id == ResourceGroupMember.group_id)
        .where(applies_to(actor.id, not_from), ResourceGroupMember.resource_id.in_(others))
    ).all()
    grants: dict[int, list[Grant]] = {rid: [] for rid in others}
    for s in direct:
        assert s.resource_id is not None
        grants[s.resource_id].append(Grant(_tier(s), _level(s.access)))
    for rid, s in via_groups:
        grants[rid].append(Grant(_tier(s), _level(s.access)))
    result.update({rid: resolve(g) for rid, g in grants.items()})
    return result


def resource_access(
    session: Session, actor: SessionUser, resource: Resource, *, not_from: int | None = None
) -> Access:
    return resource_levels(session, actor, [resource], not_from=not_from)[resource.id]


def group_access(
    session: Session, actor: SessionUser, group: ResourceGroup, *, not_from: int | None = None
) -> Access:
    if _is_owner(actor, group.owner_id):
        return Access.OWNER
    rows = session.scalars(
        select(Share).where(applies_to(actor.id, not_from), Share.resource_group_id == group.id)
    ).all()
    return resolve(Grant(_tier(s), _level(s.access)) for s in rows)


# --- filters inside the query ---------------------------------------------------------------


def visible_resources(actor: SessionUser) -> ColumnElement[bool]:
    """Resources the actor may see: owned, in scope, or shared at any level (through the
    resource, a resource group or one of its accounts). Trash is filtered separately."""
    if actor.super_admin:
        return true()
    mine = applies_to(actor.id)
    return or_(
        Resource.owner_id == actor.id,
        Resource.id.in_(select(Share.resource_id).where(mine, Share.resource_id.is_not(None))),
        Resource.id.in_(
            select(ResourceGroupMember.resource_id)
            .join(Share, Share.resource_group_id == ResourceGroupMember.group_id)
            .where(mine)
        ),
        Resource.id.in_(
            select(Account.resource_id).join(Share, Share.account_id == Account.id).where(mine)
        ),
    )


def visible_accounts(actor: SessionUser) -> ColumnElement[bool]:
    """Accounts the actor may see (any effective access above NONE)."""
    if actor.super_admin:
        return true()
    mine = applies_to(actor.id)
    return or_(
        Account.resource_id.in_(select(Resource.id).where(Resource.owner_id == actor.id)),
        Account.id.in_(select(Share.account_id).where(mine, Share.account_id.is_not(None))),
        Account.resource_id.in_(
            select(Share.resource_id).where(mine, Share.resource_id.is_not(None))
        ),
        Account.resource_id.in_(
            select(ResourceGroupMember.resource_id)
            .join(Share, Share.resource_group_id == ResourceGroupMember.group_id)
            .where(mine)
        ),
    )


def visible_groups(actor: SessionUser) -> ColumnElement[bool]:
    if actor.super_admin:
        return true()
    return or_(
        ResourceGroup.owner_id == actor.id,
        ResourceGroup.id.in_(
            select(Share.resource_group_id).where(
                applies_to(actor.id), Share.resource_group_id.is_not(None)
            )
        ),
    )
