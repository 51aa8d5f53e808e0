"""People (administrators): users, user groups, custom fields and transfer of ownership.

A new user's one-time password, and one made by "reset login password", appears once, in
the page that answers the POST; it is never in a URL, a flash message or a log.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node.errors import ValidationError
from node.inputs import FIELD_KINDS, FIELD_TYPES
from node.permissions import Action
from node.roles import Role, parse_role
from node.store.models import utcnow
from node.users import UserChanges, UserView
from web.base import needs
from web.console import ConsolePage, NamedGroupListPage, Refused

ROLES = [(r.value, r.label) for r in Role]


class PeoplePage(ConsolePage):
    async def user_fields(self) -> list[object]:
        return list(await self.call(self.services.users.list_fields, self.user, "user"))


# --- users ---------------------------------------------------------------------------------


class UserListPage(PeoplePage):
    @needs(Action.MANAGE_USERS)
    async def get(self) -> None:
        q = self.get_query_argument("q", "")[:128]
        users = await self.call(self.services.users.list_users, self.user, search=q)
        people = [u for u in users if u.kind == "person"]
        self.render("people_users.html", users=people, q=q)


class UserNewPage(PeoplePage):
    async def show_form(self, error: str | None = None) -> None:
        values = {
            k: self.get_body_argument(k, "")[:256] for k in ("username", "full_name", "email")
        }
        values["role"] = self.get_body_argument("role", Role.PASSWORD_USER.value)[:32]
        self.render(
            "people_user_form.html",
            u=None,
            values=values,
            attributes=self.typed_attributes(),
            custom_fields=await self.user_fields(),
            roles=ROLES,
            error=error,
        )

    @needs(Action.MANAGE_USERS)
    async def get(self) -> None:
        await self.show_form()

    @needs(Action.MANAGE_USERS)
    async def post(self) -> None:
        try:
            username = self.field("username", 128)
            full_name = self.field("full_name")
            email = self.field("email")
            role = parse_role(self.field("role", 32))
            attrs = self.custom_fields()
        except ValidationError as exc:
            self.set_status(400)
            await self.show_form(str(exc))
            return
        created, error = await self.attempt(
            self.services.users.add_user,
            self.user,
            self.source_ip,
            username,
            role,
            full_name=full_name,
            email=email,
            custom_attributes=attrs or None,
        )
        if created is None:
            await self.show_form(error)
            return
        self.render(
            "people_one_time.html",
            username=created.username,
            user_id=created.id,
            password=created.one_time_password,
            new=True,
        )


class UserPage(PeoplePage):
    async def show(self, user_id: int, error: str | None = None, typed: bool = False) -> None:
        u = await self.call(self.services.users.get_user, self.user, user_id)
        values = {"username": u.username, "full_name": u.full_name, "email": u.email}
        attributes = dict(u.custom_attributes)
        if typed:
            values.update(
                full_name=self.get_body_argument("full_name", "")[:256],
                email=self.get_body_argument("email", "")[:256],
            )
            attributes = self.typed_attributes()
        owned = None
        if self.can(Action.TRANSFER_OWNERSHIP):
            owned = await self.call(self.services.sharing.owned_counts, self.user, user_id)
        self.render(
            "people_user_form.html",
            u=u,
            values=values,
            attributes=attributes,
            custom_fields=await self.user_fields(),
            roles=ROLES,
            owned=owned,
            error=error,
            now=utcnow(),
        )

    @needs(Action.MANAGE_USERS)
    async def get(self, user_id: str) -> None:
        await self.show(self.object_id(user_id))

    @needs(Action.MANAGE_USERS)
    async def post(self, user_id: str) -> None:
        uid = self.object_id(user_id)
        await self.call(self.services.users.get_user, self.user, uid)
        try:
            changes = UserChanges(
                full_name=self.field("full_name"),
                email=self.field("email"),
                custom_attributes=self.custom_fields(),
            )
        except ValidationError as exc:
            self.set_status(400)
            await self.show(uid, str(exc), typed=True)
            return
        _, error = await self.attempt(
            self.services.users.edit_user, self.user, self.source_ip, uid, changes
        )
        if error is not None:
            await self.show(uid, error, typed=True)
            return
        self.done("User saved.", f"/users/{uid}")


class UserActionPage(PeoplePage):
    """One administrative action on a user, answered with a flash message on the user's
    page (or the list, after a delete)."""

    async def act(self, user_id: str) -> tuple[int, UserView]:
        uid = self.object_id(user_id)
        return uid, await self.call(self.services.users.get_user, self.user, uid)

    def flag(self, name: str) -> bool:
        """A yes/no form field: "1" or "0", anything else refused (400)."""
        value = self.get_body_argument(name, "")
        if value not in ("0", "1"):
            raise Refused(400, f"{name} must be 0 or 1")
        return value == "1"

    async def finish_with(self, uid: int, error: str | None, message: str) -> None:
        if error is not None:
            self.flash(error, "error")
            self.redirect(f"/users/{uid}")
            return
        self.done(message, f"/users/{uid}")


class UserRolePage(UserActionPage):
    @needs(Action.MANAGE_USERS)
    async def post(self, user_id: str) -> None:
        uid, u = await self.act(user_id)
        role_text = self.get_body_argument("role", "")[:32]
        _, error = await self.attempt(
            self.services.users.change_role, self.user, self.source_ip, uid, role_text
        )
        label = parse_role(role_text).label if error is None else ""
        await self.finish_with(uid, error, f"{u.username} is now {label}.")


class UserStatusPage(UserActionPage):
    @needs(Action.MANAGE_USERS)
    async def post(self, user_id: str) -> None:
        uid, u = await self.act(user_id)
        enable = self.flag("enabled")
        _, error = await self.attempt(
            self.services.users.set_enabled, self.user, self.source_ip, uid, enable
        )
        state = "enabled" if enable else "disabled; their sessions have ended"
        await self.finish_with(uid, error, f"{u.username} is {state}.")


class UserSuperAdminPage(UserActionPage):
    @needs(Action.GRANT_SUPER_ADMIN)
    async def post(self, user_id: str) -> None:
        uid, u = await self.act(user_id)
        grant = self.flag("grant")
        users = self.services.users
        fn = users.grant_super_admin if grant else users.revoke_super_admin
        _, error = await self.attempt(fn, self.user, self.source_ip, uid)
        msg = (
            f"{u.username} was granted Super Administrator scope."
            if grant
            else f"{u.username} no longer has Super Administrator scope."
        )
        await self.finish_with(uid, error, msg)


class UserDeletePage(UserActionPage):
    @needs(Action.MANAGE_USERS)
    async def post(self, user_id: str) -> None:
        uid, u = await self.act(user_id)
        _, error = await self.attempt(
            self.services.users.delete_user, self.user, self.source_ip, uid
        )
        if error is not None:
            await self.finish_with(uid, error, "")
            return
        self.done(f"User {u.username} deleted.", "/users")


class UserResetPasswordPage(UserActionPage):
    @needs(Action.MANAGE_USERS)
    async def post(self, user_id: str) -> None:
        uid, u = await self.act(user_id)
        if u.kind != "person":
            await self.finish_with(uid, "API users have no login password.", "")
            return
        if uid == self.user.id:
            # it would end this very session and show one's own new password as if for
            # someone else to pass on: one's own password is changed on /change-password
            await self.finish_with(
                uid,
                "This is your own account: change your login password with My password.",
                "",
            )
            return
        await self.call(self.services.users.require_may_manage, self.user, uid)
        password, error = await self.attempt(
            self.services.auth.reset_password, u.username, self.user.username, self.source_ip
        )
        if password is None:
            await self.finish_with(uid, error, "")
            return
        self.render(
            "people_one_time.html", username=u.username, user_id=uid, password=password, new=False
        )


# --- user groups ---------------------------------------------------------------------------


class UserGroupListPage(NamedGroupListPage):
    template = "people_groups.html"
    noun = "User group"
    path = "/user-groups"

    async def list_groups(self) -> list[Any]:
        return list(await self.call(self.services.users.list_user_groups, self.user))

    async def create_group(self, name: str, description: str) -> tuple[int | None, str | None]:
        return await self.attempt(
            self.services.users.create_user_group, self.user, self.source_ip, name, description
        )

    @needs(Action.MANAGE_USERS)
    async def get(self) -> None:
        await self.show()

    @needs(Action.MANAGE_USERS)
    async def post(self) -> None:
        await self.create()


class UserGroupPage(PeoplePage):
    async def show(self, gid: int, error: str | None = None) -> None:
        groups, users = await asyncio.gather(
            self.call(self.services.users.list_user_groups, self.user),
            self.call(self.services.users.list_users, self.user),
        )
        group = next((g for g in groups if g.id == gid), None)
        if group is None:
            self.set_status(404)
            self.render("error.html", status=404, message=f"no user group with id {gid}")
            return
        members = [u for u in users if u.username in group.members]
        others = [u for u in users if u.username not in group.members]
        self.render(
            "people_group.html",
            g=group,
            members=members,
            others=others,
            error=error,
            name=self.typed_or("name", group.name, 128),
            description=self.typed_or("description", group.description, 512),
        )

    @needs(Action.MANAGE_USERS)
    async def get(self, group_id: str) -> None:
        await self.show(self.object_id(group_id))

    @needs(Action.MANAGE_USERS)
    async def post(self, group_id: str) -> None:
        gid = self.object_id(group_id)
        op = self.get_body_argument("op", "")
        users = self.services.users
        try:
            if op == "add":
                uid = self.int_field("user_id", label="user")
                assert uid is not None
                _, error = await self.attempt(
                    users.add_group_member, self.user, self.source_ip, gid, uid
                )
                message = "Member added."
            elif op == "remove":
                uid = self.int_field("user_id", label="user")
                assert uid is not None
                _, error = await self.attempt(
                    users.remove_group_member, self.user, self.source_ip, gid, uid
                )
                message = "Member removed."
            elif op == "delete":
                _, error = await self.attempt(
                    users.delete_user_group, self.user, self.source_ip, gid
                )
                if error is None:
                    self.done("User group deleted.", "/user-groups")
                    return
                message = ""
            else:
                _, error = await self.attempt(
                    users.edit_user_group,
                    self.user,
                    self.source_ip,
                    gid,
                    name=self.field("name", 128),
                    description=self.field("description", 512),
                )
                message = "User group saved."
        except ValidationError as exc:
            self.set_status(400)
            error = str(exc)
        if error is not None:
            await self.show(gid, error)
            return
        self.done(message, f"/user-groups/{gid}")


# --- custom fields and transfer ------------------------------------------------------------


class CustomFieldsPage(PeoplePage):
    async def show(self, error: str | None = None) -> None:
        fields = await self.call(self.services.users.list_fields, self.user)
        self.render(
            "people_fields.html",
            fields=fields,
            kinds=FIELD_KINDS,
            types=FIELD_TYPES,
            error=error,
            name=self.get_body_argument("name", "")[:64] if error else "",
        )

    @needs(Action.MANAGE_CUSTOM_FIELDS)
    async def get(self) -> None:
        await self.show()

    @needs(Action.MANAGE_CUSTOM_FIELDS)
    async def post(self) -> None:
        users = self.services.users
        try:
            delete_id = self.int_field("delete", required=False, label="field")
            if delete_id is not None:
                _, error = await self.attempt(
                    users.delete_field, self.user, self.source_ip, delete_id
                )
                message = "Custom field deleted; values already saved stay on their objects."
            else:
                name = self.field("name", 64)
                _, error = await self.attempt(
                    users.define_field,
                    self.user,
                    self.source_ip,
                    self.field("applies_to", 16),
                    name,
                    self.field("field_type", 16),
                )
                message = f"Custom field '{name}' added."
        except ValidationError as exc:
            self.set_status(400)
            error = str(exc)
        if error is not None:
            await self.show(error)
            return
        self.done(message, "/custom-fields")


class TransferPage(PeoplePage):
    async def show(self, error: str | None = None) -> None:
        users = await self.call(self.services.users.list_users, self.user)
        people = [u for u in users if u.kind == "person"]
        receivers = [u for u in people if u.role.is_admin_type and u.status == "active"]
        self.render(
            "people_transfer.html",
            # what an API user (an application) made is transferred too: then it can go
            givers=users,
            receivers=receivers,
            error=error,
            chosen_from=self.get_argument("from", "")[:9],
        )

    @needs(Action.TRANSFER_OWNERSHIP)
    async def get(self) -> None:
        await self.show()

    @needs(Action.TRANSFER_OWNERSHIP)
    async def post(self) -> None:
        try:
            giver = self.int_field("from", label="the user who owns the objects")
            taker = self.int_field("to", label="the administrator who receives them")
            assert giver is not None and taker is not None
        except ValidationError as exc:
            self.set_status(400)
            await self.show(str(exc))
            return
        result, error = await self.attempt(
            self.services.sharing.transfer_ownership, self.user, self.source_ip, giver, taker
        )
        if result is None:
            await self.show(error)
            return
        self.done(
            f"Transferred {result.resources} resources and {result.groups} resource groups.",
            "/transfer",
        )


ROUTES = [
    (r"/users", UserListPage),
    (r"/users/new", UserNewPage),
    (r"/users/([0-9]+)", UserPage),
    (r"/users/([0-9]+)/role", UserRolePage),
    (r"/users/([0-9]+)/status", UserStatusPage),
    (r"/users/([0-9]+)/super-admin", UserSuperAdminPage),
    (r"/users/([0-9]+)/delete", UserDeletePage),
    (r"/users/([0-9]+)/reset-password", UserResetPasswordPage),
    (r"/user-groups", UserGroupListPage),
    (r"/user-groups/([0-9]+)", UserGroupPage),
    (r"/custom-fields", CustomFieldsPage),
    (r"/transfer", TransferPage),
]
