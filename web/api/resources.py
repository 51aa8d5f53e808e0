"""REST API: resources, their accounts and passwords (PMP paths under /restapi/json/v1).

Handlers parse and check the input (web.api.schema), call the vault services with the API
user as the actor, and render PMP's key names. Ids and flags are strings in replies. An id
that does not exist and one that is not shared with the caller get the same 404.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from node.access import Access
from node.auth import SessionUser
from node.errors import ConflictError, NotFoundError, StrongroomError, ValidationError
from node.permissions import Action, require
from node.services import Services
from node.vault import AccountView, NewAccount, NewResource, ResourceView
from web.api.base import ApiHandler, api_routes, operation
from web.api.schema import CHOICE, OBJECTS, Field, Spec

# --- input -------------------------------------------------------------------------------

NAME = 256
TEXT = 4096
CUSTOM_FIELDS = Spec(
    (
        Field("CUSTOMLABEL", max_len=64, required=True, description="the custom field's name"),
        Field("CUSTOMVALUE", max_len=1024),
    )
)
SEARCH_COLUMNS = (
    "RESOURCENAME",
    "RESOURCEDESCRIPTION",
    "RESOURCETYPE",
    "DNSNAME",
    "DEPARTMENT",
    "LOCATION",
    "ALL",
)
SEARCH_TYPES = ("CONTAINS", "EQUALS", "STARTSWITH")
LIST_SPEC = Spec(
    (
        Field("SEARCHCOLUMN", CHOICE, choices=SEARCH_COLUMNS, description="default ALL"),
        Field("SEARCHVALUE", max_len=NAME, description="text to look for (case-insensitive)"),
        Field("SEARCHTYPE", CHOICE, choices=SEARCH_TYPES, description="default CONTAINS"),
    )
)
ACCOUNT_FIELDS = (
    Field("PASSWORD", max_len=256, secret=True, description="generated from the policy if absent"),
    Field("NOTES", max_len=TEXT),
    Field("ACCOUNTPASSWORDPOLICY", max_len=128, description="a password policy's name"),
    Field("ACCOUNTCUSTOMFIELD", OBJECTS, item=CUSTOM_FIELDS, max_items=50),
)
CREATE_SPEC = Spec(
    (
        Field("RESOURCENAME", max_len=NAME, required=True),
        Field("ACCOUNTNAME", max_len=NAME, description="the first account (optional)"),
        Field("RESOURCETYPE", max_len=64, description="Linux, Windows, MySQL, … (default Generic)"),
        *ACCOUNT_FIELDS,
        Field("RESOURCEURL", max_len=1024),
        Field("DNSNAME", max_len=NAME, description="DNS name or IP address"),
        Field("DEPARTMENT", max_len=128),
        Field("LOCATION", max_len=128),
        Field("RESOURCEDESCRIPTION", max_len=TEXT),
        Field("DOMAINNAME", max_len=NAME),
        Field("RESOURCEPASSWORDPOLICY", max_len=128, description="a password policy's name"),
        Field("RESOURCECUSTOMFIELD", OBJECTS, item=CUSTOM_FIELDS, max_items=50),
        Field(
            "RESOURCEGROUPNAME",
            max_len=128,
            description="an existing resource group the API user may change",
        ),
        Field(
            "OWNERNAME",
            max_len=128,
            description="another administrator to own the resource (needs the right to "
            "transfer ownership)",
        ),
    )
)
ADD_ACCOUNTS_SPEC = Spec(
    (
        Field(
            "ACCOUNTLIST",
            OBJECTS,
            required=True,
            max_items=100,
            item=Spec((Field("ACCOUNTNAME", max_len=NAME, required=True), *ACCOUNT_FIELDS)),
        ),
    )
)
REASON_FIELDS = (
    Field("REASON", max_len=1024, description="required when the account says so"),
    Field("TICKETID", max_len=128, description="required when the account says so"),
)
GET_PASSWORD_SPEC = Spec(REASON_FIELDS)
CHANGE_PASSWORD_SPEC = Spec(
    (
        Field("NEWPASSWORD", max_len=256, required=True, secret=True),
        Field(
            "RESETTYPE",
            CHOICE,
            choices=("LOCAL", "REMOTE"),
            description="LOCAL (default) stores the password; REMOTE is not available yet",
        ),
        *REASON_FIELDS,
    )
)
IDS_BY_NAME_SPEC = Spec(
    (
        Field("RESOURCENAME", max_len=NAME, required=True),
        Field("ACCOUNTNAME", max_len=NAME, required=True),
    )
)
REMOTE_NOT_AVAILABLE = (
    "Remote password reset is not available yet: use RESETTYPE LOCAL to store the new "
    "password in the vault (the target system is then not changed)."
)

# --- replies -----------------------------------------------------------------------------

_S = {"type": "string"}


def _obj(*keys: str, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {**{k: _S for k in keys}, **extra}}


RESOURCE_ROW = _obj(
    "RESOURCE ID", "RESOURCE NAME", "RESOURCE TYPE", "RESOURCE DESCRIPTION", "NOOFACCOUNTS"
)
ACCOUNT_ROW = _obj(
    "ACCOUNT ID",
    "ACCOUNT NAME",
    "PASSWDID",
    "PASSWORD STATUS",
    "ACCOUNT PASSWORD POLICY",
    "ISREASONREQUIRED",
    "IS_TICKETID_REQD",
    "IS_TICKETID_REQD_MANDATORY",
)
CUSTOM_FIELD_ROW = _obj(
    "CUSTOMFIELDLABEL", "CUSTOMFIELDVALUE", "CUSTOMFIELDTYPE", "CUSTOMFIELDCOLUMNNAME"
)
RESOURCE_DETAIL = _obj(
    "RESOURCE ID",
    "RESOURCE NAME",
    "RESOURCE DESCRIPTION",
    "RESOURCE TYPE",
    "DNS NAME",
    "DEPARTMENT",
    "LOCATION",
    "RESOURCE URL",
    "RESOURCE OWNER",
    "RESOURCE PASSWORD POLICY",
    "DOMAIN NAME",
    **{
        "CUSTOM FIELD": {"type": "array", "items": CUSTOM_FIELD_ROW},
        "ACCOUNT LIST": {"type": "array", "items": ACCOUNT_ROW},
    },
)
ACCOUNT_DETAIL = _obj(
    "DESCRIPTION",
    "PASSWDID",
    "LAST MODIFIED TIME",
    "LAST ACCESSED TIME",
    "EXPIRY STATUS",
    "PASSWORD STATUS",
    "PASSWORD POLICY",
    "COMPLIANT STATUS",
    "COMPLIANT REASON",
)
IDS_REPLY = _obj("RESOURCEID", "ACCOUNTID")


def flag(value: bool) -> str:
    return "true" if value else "false"


def when(value: dt.datetime | None) -> str:
    """PMP writes times like ``Nov 30, 2026 01:15 AM``; ours are UTC and say so."""
    return "N/A" if value is None else value.strftime("%b %d, %Y %I:%M %p UTC")


def custom_fields(values: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {
            "CUSTOMFIELDLABEL": str(k),
            "CUSTOMFIELDVALUE": str(v),
            "CUSTOMFIELDTYPE": "Character",
            "CUSTOMFIELDCOLUMNNAME": str(k),
        }
        for k, v in sorted(values.items())
    ]


def custom_input(items: Sequence[Mapping[str, str]] | None) -> dict[str, str] | None:
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        label = item["CUSTOMLABEL"].strip()
        if label in out:
            raise ValidationError(f"custom field '{label}' is given twice")
        out[label] = item.get("CUSTOMVALUE", "")
    return out


def _matches(view: ResourceView, column: str, needle: str, how: str) -> bool:
    values = {
        "RESOURCENAME": view.name,
        "RESOURCEDESCRIPTION": view.description,
        "RESOURCETYPE": view.resource_type,
        "DNSNAME": view.dns_name,
        "DEPARTMENT": view.department,
        "LOCATION": view.location,
    }
    candidates = list(values.values()) if column == "ALL" else [values[column]]
    for text in candidates:
        hay = text.casefold()
        if (
            (how == "EQUALS" and hay == needle)
            or (how == "STARTSWITH" and hay.startswith(needle))
            or (how == "CONTAINS" and needle in hay)
        ):
            return True
    return False


# --- service calls that need several steps (run off the event loop, in one hop) ----------


def policy_names(services: Services, actor: SessionUser) -> tuple[dict[int, str], str]:
    """Policy names by id, and the vault's default policy name."""
    names = {p.id: p.name for p in services.policies.list_policies(actor)}
    return names, services.vault.get_settings(actor).default_policy


def policy_id(services: Services, actor: SessionUser, name: str | None) -> int | None:
    if not name or not name.strip():
        return None
    text = name.strip()
    policies = services.policies.list_policies(actor)
    exact = [p.id for p in policies if p.name == text]
    if exact:
        return exact[0]
    # names are unique regardless of case; two from an older version that differ only in
    # case are found by their exact spelling only
    folded = [p.id for p in policies if p.name.casefold() == text.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise ValidationError(f"no password policy named '{text[:128]}'")


def generated_password(
    services: Services, actor: SessionUser, account_policy: int | None, resource_policy: int | None
) -> str:
    """A password for a new account that obeys the policy that will be in force on it (the
    account's, else the resource's, else the vault's default)."""
    pid = account_policy or resource_policy
    if pid is None:
        pid = policy_id(services, actor, services.vault.get_settings(actor).default_policy)
    if pid is None:
        raise ValidationError("no password policy is defined; send PASSWORD")
    return services.policies.generate(actor, pid)


def list_all_resources(
    services: Services, actor: SessionUser, column: str, needle: str, how: str
) -> list[ResourceView]:
    """Every resource visible to ``actor`` (the service filters by access in its query),
    narrowed by PMP's search on one column."""
    out: list[ResourceView] = []
    offset = 0
    # The service's own search (name or DNS name contains) narrows the query when it can.
    prefilter = needle if needle and how == "CONTAINS" and column == "RESOURCENAME" else ""
    while True:
        page = services.vault.list_resources(actor, search=prefilter, offset=offset, limit=1000)
        out.extend(page.items)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            break
    if needle:
        out = [r for r in out if _matches(r, column, needle.casefold(), how)]
    return out


def account_of(services: Services, actor: SessionUser, rid: int, aid: int) -> AccountView:
    """The account ``aid`` if it is visible and belongs to resource ``rid``; otherwise the
    same NotFoundError as for an account that does not exist."""
    view = services.vault.get_account(actor, aid)
    if view.resource_id != rid:
        raise NotFoundError(f"no account with id {aid}")
    return view


def resource_detail(services: Services, actor: SessionUser, rid: int) -> dict[str, Any]:
    detail = services.vault.get_resource(actor, rid)
    names, default_policy = policy_names(services, actor)
    reason_always = services.vault.get_settings(actor).password_reason == "required"
    r = detail.resource
    body: dict[str, Any] = {
        "RESOURCE ID": str(r.id),
        "RESOURCE NAME": r.name,
        "RESOURCE DESCRIPTION": r.description,
        "RESOURCE TYPE": r.resource_type,
        "DNS NAME": r.dns_name,
        "DEPARTMENT": r.department,
        "LOCATION": r.location,
        "RESOURCE URL": r.url,
        "RESOURCE OWNER": r.owner_name,
        "RESOURCE PASSWORD POLICY": names.get(r.password_policy_id or 0, default_policy),
        "DOMAIN NAME": r.domain_name,
    }
    if r.custom_attributes:
        body["CUSTOM FIELD"] = custom_fields(r.custom_attributes)
    body["ACCOUNT LIST"] = [
        {
            "ACCOUNT ID": str(a.id),
            "ACCOUNT NAME": a.username,
            "PASSWDID": str(a.id),
            "PASSWORD STATUS": "****" if a.has_password else "",
            "ACCOUNT PASSWORD POLICY": a.policy_name,
            "ISREASONREQUIRED": flag(reason_always or a.reason_required),
            "IS_TICKETID_REQD": flag(a.ticket_required),
            "IS_TICKETID_REQD_MANDATORY": flag(a.ticket_required),
        }
        for a in detail.accounts
    ]
    return body


def account_detail(services: Services, actor: SessionUser, rid: int, aid: int) -> dict[str, str]:
    a = account_of(services, actor, rid, aid)
    problems = services.vault.compliance_problems(actor, aid)
    return {
        "DESCRIPTION": a.notes,
        "PASSWDID": str(a.id),
        "LAST MODIFIED TIME": when(a.last_changed_at),
        "LAST ACCESSED TIME": when(a.last_accessed_at),
        "EXPIRY STATUS": "Expired" if a.password_expired else "Valid",
        "PASSWORD STATUS": "****" if a.has_password else "",
        "PASSWORD POLICY": a.policy_name,
        "COMPLIANT STATUS": "Non-Compliant" if problems else "Compliant",
        "COMPLIANT REASON": "; ".join(problems),
    }


def create_resource(services: Services, actor: SessionUser, ip: str, d: dict[str, Any]) -> str:
    resource_policy = policy_id(services, actor, d.get("RESOURCEPASSWORDPOLICY"))
    spec = NewResource(
        name=d["RESOURCENAME"],
        dns_name=d.get("DNSNAME", ""),
        resource_type=d.get("RESOURCETYPE") or "Generic",
        description=d.get("RESOURCEDESCRIPTION", ""),
        department=d.get("DEPARTMENT", ""),
        location=d.get("LOCATION", ""),
        url=d.get("RESOURCEURL", ""),
        domain_name=d.get("DOMAINNAME", ""),
        password_policy_id=resource_policy,
        custom_attributes=custom_input(d.get("RESOURCECUSTOMFIELD")),
    )
    first: NewAccount | None = None
    if d.get("ACCOUNTNAME", "").strip():
        first = new_account(services, actor, d, resource_policy)
    else:
        account_keys = ("PASSWORD", "NOTES", "ACCOUNTPASSWORDPOLICY", "ACCOUNTCUSTOMFIELD")
        stray = [k for k in account_keys if d.get(k)]
        if stray:
            raise ValidationError(f"{stray[0]} needs ACCOUNTNAME (the account it belongs to)")
    owner_id = owner_of(services, actor, d.get("OWNERNAME", ""))
    group_id = group_of(services, actor, d.get("RESOURCEGROUPNAME", ""))
    if group_id is not None and owner_id not in (None, actor.id) and not actor.super_admin:
        raise ValidationError(
            "RESOURCEGROUPNAME cannot be used with OWNERNAME naming another user: the new "
            "owner can add the resource to a group"
        )
    groups = services.resource_groups
    services.vault.create_resource(
        actor,
        ip,
        spec,
        first,
        owner_id=owner_id,
        # The group is joined in the transaction that creates the resource: should it
        # refuse (its shares changed since the lookup above), no resource is left behind.
        in_same_transaction=(
            None
            if group_id is None
            else lambda s, rid: groups.add_resource_in(s, actor, ip, group_id, rid)
        ),
    )
    return str(spec.name).strip()


def owner_of(services: Services, actor: SessionUser, name: str) -> int | None:
    if not name.strip():
        return None
    try:
        return services.users.user_id_by_name(actor, name)
    except NotFoundError:
        raise ValidationError(f"OWNERNAME: no user named '{name.strip()[:128]}'") from None


def group_of(services: Services, actor: SessionUser, name: str) -> int | None:
    """The id of a resource group the caller may change, by name; a group that does not
    exist and one the caller may not see or change get the same answer."""
    wanted = name.strip()
    if not wanted:
        return None
    require(actor.role, Action.MANAGE_RESOURCE_GROUPS)
    for g in services.resource_groups.list_groups(actor):
        if g.name == wanted and g.access >= Access.MODIFY:
            return g.id
    raise ValidationError(f"RESOURCEGROUPNAME: no resource group named '{wanted}' you may change")


def new_account(
    services: Services, actor: SessionUser, d: Mapping[str, Any], resource_policy: int | None
) -> NewAccount:
    account_policy = policy_id(services, actor, d.get("ACCOUNTPASSWORDPOLICY"))
    password = d.get("PASSWORD") or generated_password(
        services, actor, account_policy, resource_policy
    )
    return NewAccount(
        username=d["ACCOUNTNAME"],
        password=password,
        notes=d.get("NOTES", ""),
        custom_attributes=custom_input(d.get("ACCOUNTCUSTOMFIELD")),
        password_policy_id=account_policy,
    )


def add_accounts(
    services: Services, actor: SessionUser, ip: str, rid: int, items: list[dict[str, Any]]
) -> tuple[list[dict[str, dict[str, str]]], int, bool]:
    """Add each account in its own transaction; returns per-account statuses, how many
    were added, and whether every failure was a duplicate. Any other refusal (the role,
    an audit row or the account not written) fails the call while nothing is added;
    once some are, it stops there and the statuses say which were and which were not."""
    resource = services.vault.get_resource(actor, rid).resource  # 404 before anything else
    statuses: list[dict[str, dict[str, str]]] = []
    added = 0
    only_conflicts = True
    for n, item in enumerate(items):
        name = item["ACCOUNTNAME"]
        try:
            spec = new_account(services, actor, item, resource.password_policy_id)
            services.vault.add_account(actor, ip, rid, spec)
        except ConflictError:
            statuses.append({name: {"STATUS": "Account already exists; not added"}})
            continue
        except (ValidationError, NotFoundError) as exc:
            only_conflicts = False
            statuses.append({name: {"STATUS": f"Not added: {exc}"}})
            continue
        except StrongroomError as exc:
            if not added:
                raise
            only_conflicts = False
            for rest in items[n:]:
                statuses.append({rest["ACCOUNTNAME"]: {"STATUS": f"Not added: {exc}"}})
            break
        added += 1
        statuses.append({name: {"STATUS": "Account added successfully"}})
    return statuses, added, only_conflicts


# --- handlers ----------------------------------------------------------------------------


class ResourcesHandler(ApiHandler):
    path_template = "/resources"

    @operation(
        "GET RESOURCES",
        Action.USE_VAULT,
        LIST_SPEC,
        reply={"type": "array", "items": RESOURCE_ROW},
        list_reply=True,
    )
    async def get(self, d: dict[str, Any]) -> None:
        """Resources owned by or shared with the API user, optionally searched"""
        column = d.get("SEARCHCOLUMN") or "ALL"
        how = d.get("SEARCHTYPE") or "CONTAINS"
        rows = await self.run(
            list_all_resources,
            self.services,
            self.api_user,
            column,
            d.get("SEARCHVALUE", "").strip(),
            how,
        )
        if not rows:
            self.answer("No resources found.", total_rows=0)
            return
        self.answer(
            "Resources fetched successfully",
            [
                {
                    "RESOURCE ID": str(r.id),
                    "RESOURCE NAME": r.name,
                    "RESOURCE TYPE": r.resource_type,
                    "RESOURCE DESCRIPTION": r.description,
                    "NOOFACCOUNTS": str(r.account_count),
                }
                for r in rows
            ],
            total_rows=len(rows),
        )

    @operation(
        "CREATE RESOURCE",
        Action.ADD_RESOURCE,
        CREATE_SPEC,
        failures={409: "A resource of that name exists already (in the trash, perhaps)"},
    )
    async def post(self, d: dict[str, Any]) -> None:
        """Create a resource, with its first account when ACCOUNTNAME is given"""
        name = await self.run(create_resource, self.services, self.api_user, self.source_ip, d)
        self.answer(f"Resource {name} has been added successfully")


class ResourceAccountsHandler(ApiHandler):
    path_template = "/resources/{rid}/accounts"

    @operation("GET RESOURCE ACCOUNTLIST", Action.USE_VAULT, reply=RESOURCE_DETAIL)
    async def get(self, rid: str, _d: dict[str, Any]) -> None:
        """A resource and the accounts on it the API user may see"""
        body = await self.run(
            resource_detail, self.services, self.api_user, self.path_id(rid, "resource")
        )
        self.answer("Resource details with account list fetched successfully", body)

    @operation(
        "ADD ACCOUNTS",
        Action.MANAGE_OWN_RESOURCES,
        ADD_ACCOUNTS_SPEC,
        reply={
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": _obj("STATUS"),
            },
        },
        failures={
            400: "No account was added (`Details` gives each one's `STATUS`), or bad input",
            409: "Every account named exists already: none added (`Details` as on success)",
        },
        failures_with_details=(400, 409),
    )
    async def post(self, rid: str, d: dict[str, Any]) -> None:
        """Add accounts to a resource; a duplicate is reported as not added"""
        statuses, added, only_conflicts = await self.run(
            add_accounts,
            self.services,
            self.api_user,
            self.source_ip,
            self.path_id(rid, "resource"),
            d["ACCOUNTLIST"],
        )
        total = len(d["ACCOUNTLIST"])
        message = f"{added} of {total} account(s) added"
        if added:
            self.answer(message, statuses)
        else:
            self.answer(message, statuses, status=409 if only_conflicts else 400, failed=True)


class AccountHandler(ApiHandler):
    path_template = "/resources/{rid}/accounts/{aid}"

    @operation("GET RESOURCE ACCOUNT DETAILS", Action.USE_VAULT, reply=ACCOUNT_DETAIL)
    async def get(self, rid: str, aid: str, _d: dict[str, Any]) -> None:
        """Details of one account (never its password)"""
        body = await self.run(
            account_detail,
            self.services,
            self.api_user,
            self.path_id(rid, "resource"),
            self.path_id(aid, "account"),
        )
        self.answer("Account details fetched successfully", body)


def change(
    services: Services, actor: SessionUser, ip: str, rid: int, aid: int, d: dict[str, Any]
) -> None:
    # The account's settings that ask for a reason and a ticket id hold for changes too.
    services.vault.change_password(
        actor,
        ip,
        aid,
        d["NEWPASSWORD"],
        d.get("REASON", ""),
        ticket=d.get("TICKETID", ""),
        resource_id=rid,
        asked_as=("a reason (REASON)", "a ticket id (TICKETID)"),
    )


class PasswordHandler(ApiHandler):
    path_template = "/resources/{rid}/accounts/{aid}/password"

    @operation(
        "GET PASSWORD",
        Action.VIEW_PASSWORD,
        GET_PASSWORD_SPEC,
        reply={"type": "object", "properties": {"PASSWORD": {"type": "string"}}},
        failures={
            500: "The fetch could not be audited (or the password not decrypted): no "
            "password is sent (fail closed); logged"
        },
    )
    async def get(self, rid: str, aid: str, d: dict[str, Any]) -> None:
        """Retrieve an account's password (audited; REASON/TICKETID when required)"""
        rid_n, aid_n = self.path_id(rid, "resource"), self.path_id(aid, "account")
        vault = self.services.vault
        request = vault.reveal_request(
            "view password",
            self.api_user,
            self.source_ip,
            aid_n,
            d.get("REASON", ""),
            d.get("TICKETID", ""),
            resource_id=rid_n,
        )
        # The reveal is decided and its audit row written by the node's writer process
        # (node/reveal_writer.py); this request waits for it without holding a thread, and
        # gets the password only once that row is committed.
        password = await self.ctx.commits.wait(vault.submit_reveal(request))
        self.answer("Password fetched successfully", {"PASSWORD": password})

    @operation(
        "CHANGE PASSWORD",
        Action.CHANGE_SHARED_PASSWORD,
        CHANGE_PASSWORD_SPEC,
        failures={
            501: "`RESETTYPE` `REMOTE`: remote password reset is not available yet; nothing changed"
        },
    )
    async def put(self, rid: str, aid: str, d: dict[str, Any]) -> None:
        """Change an account's password (RESETTYPE LOCAL stores it in the vault)"""
        rid_n, aid_n = self.path_id(rid, "resource"), self.path_id(aid, "account")
        if d.get("RESETTYPE", "LOCAL") == "REMOTE":
            # Refused before anything changes, and only to a caller who could change this
            # password: an account not shared is still a 404, a View share the 403 of LOCAL.
            await self.run(
                self.services.vault.check_password_change,
                self.api_user,
                aid_n,
                resource_id=rid_n,
            )
            self.answer_failure(501, REMOTE_NOT_AVAILABLE)
            return
        await self.run(change, self.services, self.api_user, self.source_ip, rid_n, aid_n, d)
        self.answer("Password changed successfully")


class ResourceHandler(ApiHandler):
    path_template = "/resources/{rid}"

    @operation("DELETE RESOURCE", Action.MANAGE_OWN_RESOURCES)
    async def delete(self, rid: str, _d: dict[str, Any]) -> None:
        """Delete a resource (it goes to the trash, where an administrator can restore it)"""
        rid_n = self.path_id(rid, "resource")
        await self.run(self.services.vault.delete_resource, self.api_user, self.source_ip, rid_n)
        self.answer("Resource deleted successfully")


def _ids_reply(ids: tuple[int, int]) -> dict[str, str]:
    return {"RESOURCEID": str(ids[0]), "ACCOUNTID": str(ids[1])}


class IdsByNameHandler(ApiHandler):
    path_template = "/resources/getResourceIdAccountId"

    @operation("GET_RESOURCEACCOUNTID", Action.USE_VAULT, IDS_BY_NAME_SPEC, reply=IDS_REPLY)
    async def get(self, d: dict[str, Any]) -> None:
        """Resource and account ids by their names"""
        ids = await self.run(
            self.services.vault.account_id_by_name,
            self.api_user,
            d["RESOURCENAME"],
            d["ACCOUNTNAME"],
        )
        self.answer("Resource ID and account ID fetched successfully", _ids_reply(ids))


class IdsByPathHandler(ApiHandler):
    path_template = "/resources/resourcename/{resourcename}/accounts/accountname/{accountname}"

    @operation("GET_RESOURCEACCOUNTID", Action.USE_VAULT, reply=IDS_REPLY)
    async def get(self, resource_name: str, account_name: str, _d: dict[str, Any]) -> None:
        """Resource and account ids by their names (the older path form)"""
        ids = await self.run(
            self.services.vault.account_id_by_name,
            self.api_user,
            _bounded(resource_name),
            _bounded(account_name),
        )
        self.answer("Resource ID and account ID fetched successfully", _ids_reply(ids))


class ResourceIdHandler(ApiHandler):
    path_template = "/resources/resourcename/{resourcename}"

    @operation("GET_RESOURCEID", Action.USE_VAULT, reply=_obj("RESOURCEID"))
    async def get(self, resource_name: str, _d: dict[str, Any]) -> None:
        """A resource's id by its name"""
        rid = await self.run(
            self.services.vault.resource_id_by_name, self.api_user, _bounded(resource_name)
        )
        self.answer("Resource ID fetched successfully", {"RESOURCEID": str(rid)})


def _bounded(name: str) -> str:
    if len(name) > NAME:
        raise ValidationError(f"the name in the path is too long (at most {NAME} characters)")
    return name


HANDLERS: list[type[ApiHandler]] = [
    # The password fetch first: it is most of the API's requests, and no other path has
    # its shape (four segments after /resources, the last one "password"). Then specific
    # paths before the ones with an id in the same place.
    PasswordHandler,
    IdsByNameHandler,
    IdsByPathHandler,
    ResourceIdHandler,
    ResourcesHandler,
    ResourceAccountsHandler,
    AccountHandler,
    ResourceHandler,
]

ROUTES = api_routes(HANDLERS)
