"""Static resource groups: list, create, members, edit and delete. Sharing a group is in
web/share_pages.py. node.resource_groups.ResourceGroupService checks the access on the
group (and Owner on a resource added to it) and audits."""

from __future__ import annotations

from typing import Any

from node.errors import ValidationError
from node.permissions import Action
from web.base import needs
from web.console import ConsolePage, NamedGroupListPage


class GroupListPage(NamedGroupListPage):
    template = "group_list.html"
    noun = "Resource group"
    path = "/groups"

    async def list_groups(self) -> list[Any]:
        return list(await self.call(self.services.resource_groups.list_groups, self.user))

    async def create_group(self, name: str, description: str) -> tuple[int | None, str | None]:
        return await self.attempt(
            self.services.resource_groups.create_group,
            self.user,
            self.source_ip,
            name,
            description,
        )

    @needs(Action.USE_VAULT)
    async def get(self) -> None:
        await self.show()

    @needs(Action.MANAGE_RESOURCE_GROUPS)
    async def post(self) -> None:
        await self.create()


class GroupPage(ConsolePage):
    async def show(self, gid: int, error: str | None = None) -> None:
        detail = await self.call(self.services.resource_groups.get_group, self.user, gid)
        candidates: list[tuple[int, str]] = []
        if self.can(Action.MANAGE_RESOURCE_GROUPS) and detail.group.access.value >= 2:
            # only what add_resource takes (one's own resources), all of them
            candidates = await self.call(
                self.services.resource_groups.groupable_resources, self.user, gid
            )
        self.render(
            "group_detail.html",
            d=detail,
            g=detail.group,
            candidates=candidates,
            error=error,
            name=self.typed_or("name", detail.group.name, 128),
            description=self.typed_or("description", detail.group.description, 512),
        )

    @needs(Action.USE_VAULT)
    async def get(self, group_id: str) -> None:
        await self.show(self.object_id(group_id))

    @needs(Action.MANAGE_RESOURCE_GROUPS)
    async def post(self, group_id: str) -> None:
        gid = self.object_id(group_id)
        groups = self.services.resource_groups
        op = self.get_body_argument("op", "")
        message = ""
        try:
            if op in ("add", "remove"):
                rid = self.int_field("resource_id", label="resource")
                assert rid is not None
                fn = groups.add_resource if op == "add" else groups.remove_resource
                _, error = await self.attempt(fn, self.user, self.source_ip, gid, rid)
                message = "Resource added to the group." if op == "add" else "Resource removed."
            elif op == "delete":
                _, error = await self.attempt(groups.delete_group, self.user, self.source_ip, gid)
                if error is None:
                    self.done("Resource group deleted; its resources stay.", "/groups")
                    return
            elif op == "edit":
                _, error = await self.attempt(
                    groups.edit_group,
                    self.user,
                    self.source_ip,
                    gid,
                    name=self.field("name", 128),
                    description=self.field("description", 512),
                )
                message = "Resource group saved."
            else:
                raise ValidationError("unknown action on a resource group")
        except ValidationError as exc:
            self.set_status(400)
            error = str(exc)
        if error is not None:
            await self.show(gid, error)
            return
        self.done(message, f"/groups/{gid}")


ROUTES = [
    (r"/groups", GroupListPage),
    (r"/groups/([0-9]+)", GroupPage),
]
