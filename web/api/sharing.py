"""REST API: sharing an account with a user or user group, and a user's id by name."""

from __future__ import annotations

from typing import Any

from node.auth import SessionUser
from node.errors import ValidationError
from node.permissions import Action
from node.services import Services
from web.api.base import ApiHandler, api_routes, operation
from web.api.resources import account_of
from web.api.schema import CHOICE, ID, Field, Spec

# PMP's ACCESSTYPE names and the vault's access levels.
ACCESS_OF = {"view": "view", "modify": "modify", "fullaccess": "full"}
SHARE_SPEC = Spec(
    (
        Field(
            "ACCESSTYPE",
            CHOICE,
            required=True,
            choices=("view", "modify", "fullaccess", "revoke"),
            description="revoke removes the share",
        ),
        Field("USERID", ID, description="the user to share with (see user/getUserId)"),
        Field("USERGROUPID", ID, description="or the user group to share with"),
    )
)
USER_ID_SPEC = Spec((Field("USERNAME", max_len=128, required=True),))


def share(
    services: Services, actor: SessionUser, ip: str, rid: int, aid: int, d: dict[str, Any]
) -> str:
    user_id = d.get("USERID")
    group_id = d.get("USERGROUPID")
    if (user_id is None) == (group_id is None):
        raise ValidationError("send exactly one of USERID and USERGROUPID")
    account_of(services, actor, rid, aid)
    access = d["ACCESSTYPE"]
    if access == "revoke":
        services.sharing.unshare_account(actor, ip, aid, user_id=user_id, user_group_id=group_id)
        return "Account share revoked successfully"
    services.sharing.share_account(
        actor, ip, aid, ACCESS_OF[access], user_id=user_id, user_group_id=group_id
    )
    return "Account shared successfully"


class ShareAccountHandler(ApiHandler):
    path_template = "/resources/{rid}/accounts/{aid}/share"

    @operation("SHARE ACCOUNT", Action.SHARE, SHARE_SPEC)
    async def put(self, rid: str, aid: str, d: dict[str, Any]) -> None:
        """Share an account with a user or user group (view, modify, fullaccess) or revoke"""
        message = await self.run(
            share,
            self.services,
            self.api_user,
            self.source_ip,
            self.path_id(rid, "resource"),
            self.path_id(aid, "account"),
            d,
        )
        self.answer(message)


class UserIdHandler(ApiHandler):
    path_template = "/user/getUserId"

    @operation(
        "GET_USERID",
        Action.SHARE,
        USER_ID_SPEC,
        reply={"type": "object", "properties": {"USERID": {"type": "string"}}},
    )
    async def get(self, d: dict[str, Any]) -> None:
        """A user's id by their user name (to share with them)"""
        uid = await self.run(self.services.users.user_id_by_name, self.api_user, d["USERNAME"])
        self.answer("User ID fetched successfully", {"USERID": str(uid)})


ROUTES = api_routes([ShareAccountHandler, UserIdHandler])
