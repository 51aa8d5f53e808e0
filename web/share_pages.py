"""Share dialogs: give users or user groups View, Modify or Full access to a resource, an
account or a resource group; change or remove a share. node.sharing.SharingService
decides who may share (Full or owner) and audits every change."""

from __future__ import annotations

from typing import Any

from node.errors import ValidationError
from node.inputs import is_decimal
from node.permissions import Action
from node.sharing import ObjectKind
from web.base import needs
from web.console import ConsolePage

LEVELS = (("view", "View"), ("modify", "Modify"), ("full", "Full (may re-share)"))


class SharePage(ConsolePage):
    kind: ObjectKind = "resource"

    async def target(self, object_id: int) -> tuple[str, str, str]:
        """(title, back link, crumbs label) of the object; NotFound if not visible."""
        if self.kind == "account":
            a = await self.call(self.services.vault.get_account, self.user, object_id)
            return f"{a.resource_name} / {a.username}", f"/accounts/{a.id}", "account"
        if self.kind == "group":
            g = await self.call(self.services.resource_groups.get_group, self.user, object_id)
            return g.group.name, f"/groups/{g.group.id}", "resource group"
        d = await self.call(self.services.vault.get_resource, self.user, object_id)
        return d.resource.name, f"/resources/{d.resource.id}", "resource"

    async def show(self, object_id: int, error: str | None = None) -> None:
        title, back, label = await self.target(object_id)
        shares = await self.call(
            self.services.sharing.list_shares,
            self.user,
            self.kind,
            object_id,
        )
        reach = (
            await self.call(self.services.sharing.group_reach, self.user, object_id)
            if self.kind == "resource"
            else []
        )
        users = await self.call(self.services.users.list_users, self.user)
        groups = await self.call(self.services.users.list_user_groups, self.user)
        people = [u for u in users if u.id != self.user.id and u.status == "active"]
        self.render(
            "share_dialog.html",
            title=title,
            back=back,
            label=label,
            action=self.request.path,
            shares=shares,
            reach=reach,
            people=people,
            groups=groups,
            levels=LEVELS,
            error=error,
        )

    def principal(self) -> dict[str, int]:
        raw = self.get_body_argument("principal", "")
        kind, _, ident = raw.partition(":")
        if kind not in ("user", "group") or not is_decimal(ident) or len(ident) > 9:
            raise ValidationError("choose a user or a user group to share with")
        return {"user_id": int(ident)} if kind == "user" else {"user_group_id": int(ident)}

    def methods(self) -> tuple[Any, Any]:
        sharing = self.services.sharing
        if self.kind == "account":
            return sharing.share_account, sharing.unshare_account
        if self.kind == "group":
            return sharing.share_group, sharing.unshare_group
        return sharing.share_resource, sharing.unshare_resource

    @needs(Action.SHARE)
    async def get(self, object_id: str) -> None:
        await self.show(self.object_id(object_id))

    @needs(Action.SHARE)
    async def post(self, object_id: str) -> None:
        oid = self.object_id(object_id)
        await self.target(oid)
        leave = self.get_body_argument("leave_group", "")
        if self.kind == "resource" and leave:
            await self.leave_group(oid, leave)
            return
        share, unshare = self.methods()
        try:
            who = self.principal()
            remove = self.get_body_argument("remove", "") == "1"
            level = self.get_body_argument("access", "")
            if not remove and level not in {key for key, _ in LEVELS}:
                raise ValidationError("choose View, Modify or Full access")
        except ValidationError as exc:
            self.set_status(400)
            await self.show(oid, str(exc))
            return
        if remove:
            _, error = await self.attempt(unshare, self.user, self.source_ip, oid, **who)
        else:
            _, error = await self.attempt(share, self.user, self.source_ip, oid, level, **who)
        if error is not None:
            await self.show(oid, error)
            return
        self.done("Share removed." if remove else "Shared.", self.request.path)

    async def leave_group(self, resource_id: int, group: str) -> None:
        """The owner takes their resource out of a resource group that reaches it."""
        if not is_decimal(group) or len(group) > 9:
            self.set_status(400)
            await self.show(resource_id, "choose a resource group")
            return
        _, error = await self.attempt(
            self.services.resource_groups.remove_resource,
            self.user,
            self.source_ip,
            int(group),
            resource_id,
        )
        if error is not None:
            await self.show(resource_id, error)
            return
        self.done("Taken out of the resource group.", self.request.path)


class ResourceSharePage(SharePage):
    kind = "resource"


class AccountSharePage(SharePage):
    kind = "account"


class GroupSharePage(SharePage):
    kind = "group"


ROUTES = [
    (r"/resources/([0-9]+)/share", ResourceSharePage),
    (r"/accounts/([0-9]+)/share", AccountSharePage),
    (r"/groups/([0-9]+)/share", GroupSharePage),
]
