"""Administration of REST API users: list them, add one (its AUTHTOKEN is shown once, on the
page that answers the form, never in a cookie or a redirect), issue a new token, revoke."""

from __future__ import annotations

from node.api_tokens import IssuedToken
from node.errors import StrongroomError
from node.permissions import Action
from node.roles import Role, parse_role
from web.base import BaseHandler, needs, status_for

MAX_FIELD = 128


class ApiUsersPage(BaseHandler):
    async def _show(
        self, issued: IssuedToken | None = None, error: str | None = None, name: str = ""
    ) -> None:
        users = await self.run(self.services.api_tokens.list_api_users)
        self.render(
            "apiuser_list.html",
            api_users=users,
            roles=list(Role),
            issued=issued,
            error=error,
            name=name,
        )

    @needs(Action.MANAGE_API_USERS)
    async def get(self) -> None:
        await self._show()

    @needs(Action.MANAGE_API_USERS)
    async def post(self) -> None:
        name = self.get_body_argument("name", "")[:MAX_FIELD]
        try:
            role = parse_role(self.get_body_argument("role", "")[:MAX_FIELD])
            issued = await self.run(
                self.services.api_tokens.add_api_user,
                name,
                role,
                self.user.username,
                self.source_ip,
            )
        except StrongroomError as exc:
            self.set_status(status_for(exc))
            await self._show(error=str(exc), name=name)
            return
        await self._show(issued=issued)


class ApiUserTokenPage(BaseHandler):
    """POST .../token issues a new token (the old ones stop working); .../revoke revokes."""

    @needs(Action.MANAGE_API_USERS)
    async def post(self, name: str, verb: str) -> None:
        service = self.services.api_tokens
        try:
            if verb == "token":
                issued = await self.run(
                    service.regenerate, name, self.user.username, self.source_ip
                )
                users = await self.run(service.list_api_users)
                self.render(
                    "apiuser_list.html",
                    api_users=users,
                    roles=list(Role),
                    issued=issued,
                    error=None,
                    name="",
                )
                return
            count = await self.run(service.revoke, name, self.user.username, self.source_ip)
        except StrongroomError as exc:
            self.fail(exc)
            return
        self.flash(f"Revoked {count} token(s) of API user {name}.")
        self.redirect("/admin/api-users")


ROUTES = [
    (r"/admin/api-users", ApiUsersPage),
    (r"/admin/api-users/([a-z0-9][a-z0-9._@-]{0,63})/(token|revoke)", ApiUserTokenPage),
]
