"""Static resource groups: named sets of resources that can be shared as one.

Methods of :class:`ResourceGroupService` (acting user + source IP, audited):
- ``create_group`` (Action.MANAGE_RESOURCE_GROUPS; the creator owns the group),
- ``edit_group`` (Modify on the group), ``delete_group`` (Owner; the resources stay),
- ``add_resource`` (Modify on the group and Owner on the resource, because members of a
  shared group become shared; ``add_resource_in`` does it in the caller's transaction),
  ``remove_resource`` (Modify on the group),
- ``groupable_resources`` (what ``add_resource`` would take: the caller's own resources,
  every one with the Super Administrator scope, not yet in the group),
- ``list_groups`` (visible groups; member counts count only resources the caller sees),
- ``get_group`` (a visible group and its members the caller may see).

Errors: NotFoundError (group or resource missing or not visible), PermissionDeniedError
(role or access too low), ConflictError (duplicate name), ValidationError, AuditWriteError.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from node.access import (
    Access,
    group_access,
    resource_access,
    visible_groups,
    visible_resources,
)
from node.audit import AuditEvent, AuditLog
from node.auth import SessionUser
from node.errors import ConflictError, NotFoundError, PermissionDeniedError
from node.inputs import conflict_on_duplicate, in_range, name_clash, one_line
from node.permissions import Action, require
from node.store.db import Store
from node.store.models import Resource, ResourceGroup, ResourceGroupMember, User


@dataclass(frozen=True)
class GroupView:
    id: int
    name: str
    description: str
    owner_name: str
    access: Access
    resource_count: int
    owner_id: int


@dataclass(frozen=True)
class GroupDetail:
    group: GroupView
    resources: list[tuple[int, str]]  # (id, name) of members the caller sees


class ResourceGroupService:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit

    def _log(
        self,
        s: Session,
        actor: SessionUser,
        ip: str,
        op: str,
        target: str,
        resource_id: int | None = None,
        detail: str = "",
    ) -> None:
        self._audit.append(
            s,
            AuditEvent(
                operation=op,
                username=actor.username,
                source_ip=ip,
                target=f"group {target}",
                category="resource",
                resource_id=resource_id,
                detail=detail,
            ),
        )

    @staticmethod
    def _group(
        s: Session, actor: SessionUser, group_id: int, needed: Access, what: str
    ) -> ResourceGroup:
        if not in_range(group_id):
            raise NotFoundError(f"no resource group with id {group_id}")
        g = s.scalars(
            select(ResourceGroup).where(ResourceGroup.id == group_id, visible_groups(actor))
        ).first()
        if g is None:
            raise NotFoundError(f"no resource group with id {group_id}")
        level = group_access(s, actor, g)
        if level < needed:
            raise PermissionDeniedError(
                f"your access ({level.label}) does not allow {what} (needs {needed.label})"
            )
        return g

    @staticmethod
    def _owners_group(
        s: Session, actor: SessionUser, group_id: int, resource_id: int
    ) -> ResourceGroup | None:
        """The group ``group_id`` if it holds ``resource_id`` and the caller owns that
        resource: an owner may always take their resource out of a group (whose shares
        reach it), even one they cannot otherwise see or change. Else None."""
        if not (in_range(group_id) and in_range(resource_id)):
            return None
        if s.get(ResourceGroupMember, (group_id, resource_id)) is None:
            return None
        r = s.get(Resource, resource_id)
        if r is None or resource_access(s, actor, r) < Access.OWNER:
            return None
        return s.get(ResourceGroup, group_id)

    @staticmethod
    def _unique(s: Session, name: str, except_id: int | None = None) -> None:
        """Group names are unique regardless of letter case (node/inputs.py ``name_clash``)."""
        other = name_clash(s, ResourceGroup.name, name, except_id=except_id)
        if other is not None:
            raise ConflictError(f"a resource group named '{other.name}' exists already")

    def create_group(self, actor: SessionUser, ip: str, name: str, description: str = "") -> int:
        require(actor.role, Action.MANAGE_RESOURCE_GROUPS)
        text = one_line("group name", name, 128, required=True)
        desc = one_line("description", description, 512)
        with (
            conflict_on_duplicate(f"a resource group named '{text}' exists already"),
            self._store.transaction() as s,
        ):
            self._unique(s, text)
            g = ResourceGroup(name=text, description=desc, owner_id=actor.id)
            s.add(g)
            s.flush()
            self._log(s, actor, ip, "add resource group", text)
            return g.id

    def edit_group(
        self,
        actor: SessionUser,
        ip: str,
        group_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        require(actor.role, Action.MANAGE_RESOURCE_GROUPS)
        with self._store.transaction() as s:
            g = self._group(s, actor, group_id, Access.MODIFY, "editing this group")
            if name is not None:
                text = one_line("group name", name, 128, required=True)
                self._unique(s, text, g.id)
                g.name = text
            if description is not None:
                g.description = one_line("description", description, 512)
            self._log(s, actor, ip, "edit resource group", g.name)

    def delete_group(self, actor: SessionUser, ip: str, group_id: int) -> None:
        require(actor.role, Action.MANAGE_RESOURCE_GROUPS)
        with self._store.transaction() as s:
            g = self._group(s, actor, group_id, Access.OWNER, "deleting this group")
            self._log(s, actor, ip, "delete resource group", g.name)
            s.execute(delete(ResourceGroup).where(ResourceGroup.id == g.id))

    def add_resource(self, actor: SessionUser, ip: str, group_id: int, resource_id: int) -> None:
        with self._store.transaction() as s:
            self.add_resource_in(s, actor, ip, group_id, resource_id)

    def add_resource_in(
        self, s: Session, actor: SessionUser, ip: str, group_id: int, resource_id: int
    ) -> None:
        """:meth:`add_resource` in the caller's transaction ``s``: a resource being created
        joins its group in the transaction that creates it, so a refusal here leaves no
        resource behind (VaultService.create_resource's ``in_same_transaction``)."""
        require(actor.role, Action.MANAGE_RESOURCE_GROUPS)
        g = self._group(s, actor, group_id, Access.MODIFY, "changing this group")
        r = (
            None
            if not in_range(resource_id)
            else s.scalars(
                select(Resource).where(
                    Resource.id == resource_id,
                    Resource.deleted_at.is_(None),
                    visible_resources(actor),
                )
            ).first()
        )
        if r is None:
            raise NotFoundError(f"no resource with id {resource_id}")
        level = resource_access(s, actor, r)
        if level < Access.OWNER:
            # A group's shares reach its resources: putting someone else's resource in
            # a group would share it past its owner, out of their sight.
            raise PermissionDeniedError(
                f"your access ({level.label}) does not allow grouping this resource "
                "(only its owner can)"
            )
        if s.get(ResourceGroupMember, (g.id, r.id)) is None:
            s.add(ResourceGroupMember(group_id=g.id, resource_id=r.id))
        self._log(s, actor, ip, "add to resource group", g.name, r.id, r.name)

    def remove_resource(self, actor: SessionUser, ip: str, group_id: int, resource_id: int) -> None:
        require(actor.role, Action.MANAGE_RESOURCE_GROUPS)
        with self._store.transaction() as s:
            g = self._owners_group(s, actor, group_id, resource_id) or self._group(
                s, actor, group_id, Access.MODIFY, "changing this group"
            )
            member = (
                s.scalars(
                    select(Resource)
                    .join(ResourceGroupMember, ResourceGroupMember.resource_id == Resource.id)
                    .where(
                        ResourceGroupMember.group_id == g.id,
                        Resource.id == resource_id,
                        Resource.deleted_at.is_(None),
                        visible_resources(actor),  # what the caller cannot see, they cannot probe
                    )
                ).first()
                if in_range(resource_id)
                else None
            )
            if member is None:
                raise NotFoundError(f"no resource with id {resource_id} in this group")
            s.execute(
                delete(ResourceGroupMember).where(
                    ResourceGroupMember.group_id == g.id,
                    ResourceGroupMember.resource_id == member.id,
                )
            )
            self._log(s, actor, ip, "remove from resource group", g.name, member.id, member.name)

    def _views(
        self, s: Session, actor: SessionUser, groups: list[ResourceGroup]
    ) -> list[GroupView]:
        ids = [g.id for g in groups]
        counts: dict[int, int] = {}
        if ids:
            counts = {
                int(gid): int(n)
                for gid, n in s.execute(
                    select(ResourceGroupMember.group_id, func.count())
                    .join(Resource, Resource.id == ResourceGroupMember.resource_id)
                    .where(
                        ResourceGroupMember.group_id.in_(ids),
                        Resource.deleted_at.is_(None),
                        visible_resources(actor),
                    )
                    .group_by(ResourceGroupMember.group_id)
                ).all()
            }
        owners = {
            int(uid): str(name)
            for uid, name in s.execute(
                select(User.id, User.username).where(User.id.in_({g.owner_id for g in groups}))
            ).all()
        }
        return [
            GroupView(
                g.id,
                g.name,
                g.description,
                owners.get(g.owner_id, ""),
                group_access(s, actor, g),
                counts.get(g.id, 0),
                g.owner_id,
            )
            for g in groups
        ]

    def list_groups(self, actor: SessionUser) -> list[GroupView]:
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            groups = list(
                s.scalars(
                    select(ResourceGroup).where(visible_groups(actor)).order_by(ResourceGroup.name)
                )
            )
            return self._views(s, actor, groups)

    def groupable_resources(self, actor: SessionUser, group_id: int) -> list[tuple[int, str]]:
        """(id, name) of the resources ``add_resource`` would put in the group, by name:
        those the actor owns (Owner access: every one with the Super Administrator scope),
        not in the trash, not in the group yet. All of them, for the console's list."""
        require(actor.role, Action.MANAGE_RESOURCE_GROUPS)
        with self._store.sessions() as s:
            g = self._group(s, actor, group_id, Access.MODIFY, "changing this group")
            members = select(ResourceGroupMember.resource_id).where(
                ResourceGroupMember.group_id == g.id
            )
            conds: list[ColumnElement[bool]] = [
                Resource.deleted_at.is_(None),
                Resource.id.not_in(members),
            ]
            if not actor.super_admin:
                conds.append(Resource.owner_id == actor.id)
            rows = s.execute(
                select(Resource.id, Resource.name)
                .where(*conds)
                .order_by(Resource.name, Resource.id)
            ).all()
            return [(int(i), str(n)) for i, n in rows]

    def get_group(self, actor: SessionUser, group_id: int) -> GroupDetail:
        require(actor.role, Action.USE_VAULT)
        with self._store.sessions() as s:
            g = self._group(s, actor, group_id, Access.VIEW, "seeing this group")
            members = s.execute(
                select(Resource.id, Resource.name)
                .join(ResourceGroupMember, ResourceGroupMember.resource_id == Resource.id)
                .where(
                    ResourceGroupMember.group_id == g.id,
                    Resource.deleted_at.is_(None),
                    visible_resources(actor),
                )
                .order_by(Resource.name)
            ).all()
            return GroupDetail(
                self._views(s, actor, [g])[0], [(int(i), str(n)) for i, n in members]
            )
