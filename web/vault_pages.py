"""The vault in the browser: resources, their accounts, viewing, copying and changing
passwords, password history, the trash, resource types and password access settings.

Handlers are thin: they read the form, call node.vault.VaultService (which checks the
role, the share on the object and the policy, and audits), and render. A password is only
ever in the body of the page that answers the POST that revealed it: never in a URL, a
redirect, a flash message or a log.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from node.errors import ValidationError
from node.inputs import MAX_TEXT, is_decimal
from node.permissions import Action
from node.vault import AccountChanges, NewAccount, NewResource, ResourceChanges
from web.base import needs
from web.console import ConsolePage, Refused

PAGE_SIZE = 50
RESOURCE_FIELDS = (
    "name",
    "dns_name",
    "resource_type",
    "description",
    "department",
    "location",
    "url",
    "domain_name",
)
FIELD_LIMITS = {"description": MAX_TEXT, "url": 1024, "department": 128, "location": 128}


class VaultPage(ConsolePage):
    async def form_choices(self, kind: str = "resource") -> dict[str, Any]:
        """What the resource and account forms offer: types, policies, custom fields."""
        types = await self.call(self.services.vault.list_resource_types, self.user)
        policies = await self.call(self.services.policies.list_policies, self.user)
        fields = await self.call(self.services.users.list_fields, self.user, kind)
        return {
            "types": [name for name, _builtin in types],
            "policies": policies,
            "custom_fields": fields,
        }

    def confirmed(self) -> bool:
        """Whether a form that deletes for good came with its "I understand" box ticked
        (``confirm=1``): the box is required in the page, but a request may come without."""
        return self.get_body_argument("confirm", "") == "1"

    def policy_choice(self) -> int | None:
        return self.int_field("password_policy_id", required=False, label="password policy")

    def policy_change(self) -> int | None:
        """An edit form's password policy: the chosen policy's id, 0 for the form's first
        option (no own policy: "As the resource", "Vault default"), None when the form
        did not send the field (no change)."""
        if "password_policy_id" not in self.request.body_arguments:
            return None
        return self.policy_choice() or 0


# --- resources -----------------------------------------------------------------------------


class ResourceListPage(VaultPage):
    @needs(Action.USE_VAULT)
    async def get(self) -> None:
        q = self.get_query_argument("q", "")[:256]
        page_text = self.get_query_argument("page", "1")
        page = int(page_text) if is_decimal(page_text) and 0 < len(page_text) < 6 else 1
        result = await self.call(
            self.services.vault.list_resources,
            self.user,
            search=q,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        pages = max(1, (result.total + PAGE_SIZE - 1) // PAGE_SIZE)

        def page_url(n: int) -> str:
            return "/resources?" + urllib.parse.urlencode({"q": q, "page": n})

        self.render(
            "vault_resources.html", result=result, q=q, page=page, pages=pages, page_url=page_url
        )


class ResourceFormPage(VaultPage):
    def typed(self) -> dict[str, str]:
        """The resource form as typed, for showing it again."""
        values = {
            f: self.get_body_argument(f, "")[: FIELD_LIMITS.get(f, 256)] for f in RESOURCE_FIELDS
        }
        values["password_policy_id"] = self.get_body_argument("password_policy_id", "")[:9]
        return values

    def read_fields(self) -> dict[str, str]:
        return {f: self.field(f, FIELD_LIMITS.get(f, 256)) for f in RESOURCE_FIELDS}


class ResourceNewPage(ResourceFormPage):
    @needs(Action.ADD_RESOURCE)
    async def get(self) -> None:
        values = dict.fromkeys(RESOURCE_FIELDS, "")
        values["resource_type"] = "Generic"
        self.render(
            "vault_resource_form.html",
            values=values,
            resource=None,
            error=None,
            account={"username": ""},
            attributes={},
            **await self.form_choices(),
        )

    @needs(Action.ADD_RESOURCE)
    async def post(self) -> None:
        choices = await self.form_choices()
        account_name = self.get_body_argument("account_username", "")[:256]
        back: dict[str, Any] = {
            "values": self.typed(),
            "resource": None,
            "account": {"username": account_name},
            "attributes": self.typed_attributes(),
        }
        try:
            spec = NewResource(
                **self.read_fields(),
                password_policy_id=self.policy_choice(),
                custom_attributes=self.custom_fields() or None,
            )
            first = None
            password = self.secret_field("account_password")
            if self.field("account_username") or password:
                if password != self.secret_field("account_confirm"):
                    raise ValidationError("the password and its confirmation differ")
                first = NewAccount(username=self.field("account_username"), password=password)
        except ValidationError as exc:
            self.refuse("vault_resource_form.html", str(exc), **back, **choices)
            return
        created, error = await self.attempt(
            self.services.vault.create_resource, self.user, self.source_ip, spec, first
        )
        if created is None:
            self.refuse("vault_resource_form.html", error or "", **back, **choices)
            return
        extra = " with its first account" if created.account_id else ""
        self.done(f"Resource '{spec.name}' added{extra}.", f"/resources/{created.resource_id}")


class ResourcePage(VaultPage):
    @needs(Action.USE_VAULT)
    async def get(self, resource_id: str) -> None:
        detail = await self.call(
            self.services.vault.get_resource, self.user, self.object_id(resource_id)
        )
        settings = await self.call(self.services.vault.get_settings, self.user)
        self.render("vault_resource.html", detail=detail, r=detail.resource, settings=settings)


class ResourceEditPage(ResourceFormPage):
    @needs(Action.MANAGE_OWN_RESOURCES)
    async def get(self, resource_id: str) -> None:
        detail = await self.call(
            self.services.vault.get_resource, self.user, self.object_id(resource_id)
        )
        r = detail.resource
        values = {f: getattr(r, f) for f in RESOURCE_FIELDS}
        values["password_policy_id"] = str(r.password_policy_id or "")
        self.render(
            "vault_resource_form.html",
            values=values,
            resource=r,
            error=None,
            account=None,
            attributes=r.custom_attributes,
            **await self.form_choices(),
        )

    @needs(Action.MANAGE_OWN_RESOURCES)
    async def post(self, resource_id: str) -> None:
        rid = self.object_id(resource_id)
        detail = await self.call(self.services.vault.get_resource, self.user, rid)
        choices = await self.form_choices()
        back: dict[str, Any] = {
            "values": self.typed(),
            "resource": detail.resource,
            "account": None,
            "attributes": self.typed_attributes(),
        }
        try:
            changes = ResourceChanges(
                **self.read_fields(),
                password_policy_id=self.policy_change(),
                custom_attributes=self.custom_fields(),
            )
        except ValidationError as exc:
            self.refuse("vault_resource_form.html", str(exc), **back, **choices)
            return
        _, error = await self.attempt(
            self.services.vault.edit_resource, self.user, self.source_ip, rid, changes
        )
        if error is not None:
            self.refuse("vault_resource_form.html", error, **back, **choices)
            return
        self.done("Resource saved.", f"/resources/{rid}")


class ResourceDeletePage(VaultPage):
    @needs(Action.MANAGE_OWN_RESOURCES)
    async def post(self, resource_id: str) -> None:
        rid = self.object_id(resource_id)
        detail = await self.call(self.services.vault.get_resource, self.user, rid)
        await self.call(self.services.vault.delete_resource, self.user, self.source_ip, rid)
        self.done(f"Resource '{detail.resource.name}' moved to the trash.", "/resources")


# --- accounts ------------------------------------------------------------------------------


class AccountNewPage(VaultPage):
    @needs(Action.MANAGE_OWN_RESOURCES)
    async def get(self, resource_id: str) -> None:
        detail = await self.call(
            self.services.vault.get_resource, self.user, self.object_id(resource_id)
        )
        self.render(
            "vault_account_form.html",
            r=detail.resource,
            account=None,
            error=None,
            values={"username": "", "notes": "", "password_policy_id": ""},
            attributes={},
            **await self.form_choices("account"),
        )

    @needs(Action.MANAGE_OWN_RESOURCES)
    async def post(self, resource_id: str) -> None:
        rid = self.object_id(resource_id)
        detail = await self.call(self.services.vault.get_resource, self.user, rid)
        choices = await self.form_choices("account")
        values = {
            "username": self.get_body_argument("username", "")[:256],
            "notes": self.get_body_argument("notes", "")[:MAX_TEXT],
            "password_policy_id": self.get_body_argument("password_policy_id", "")[:9],
            "reason_required": self.checkbox("reason_required"),
            "ticket_required": self.checkbox("ticket_required"),
        }
        back: dict[str, Any] = {
            "r": detail.resource,
            "account": None,
            "values": values,
            "attributes": self.typed_attributes(),
        }
        try:
            generate = self.checkbox("generate")
            password = self.secret_field("password")
            if not generate and password != self.secret_field("confirm"):
                raise ValidationError("the password and its confirmation differ")
            policy_id = self.policy_choice()
        except ValidationError as exc:
            self.refuse("vault_account_form.html", str(exc), **back, **choices)
            return
        if generate:
            chosen = policy_id or detail.resource.password_policy_id
            if chosen is None:
                settings = await self.call(self.services.vault.get_settings, self.user)
                chosen = next(
                    (p.id for p in choices["policies"] if p.name == settings.default_policy), None
                )
            if chosen is None:
                self.refuse(
                    "vault_account_form.html", "choose a password policy", **back, **choices
                )
                return
            password = await self.call(self.services.policies.generate, self.user, chosen)
        try:
            spec = NewAccount(
                username=self.field("username"),
                password=password,
                notes=self.field("notes", MAX_TEXT, strip=False),
                custom_attributes=self.custom_fields() or None,
                password_policy_id=policy_id,
                reason_required=self.checkbox("reason_required"),
                ticket_required=self.checkbox("ticket_required"),
            )
        except ValidationError as exc:
            self.refuse("vault_account_form.html", str(exc), **back, **choices)
            return
        account_id, error = await self.attempt(
            self.services.vault.add_account, self.user, self.source_ip, rid, spec
        )
        if account_id is None:
            self.refuse("vault_account_form.html", error or "", **back, **choices)
            return
        how = " with a generated password (use View password to see it)" if generate else ""
        self.done(f"Account '{spec.username}' added{how}.", f"/accounts/{account_id}")


class AccountPage(VaultPage):
    @needs(Action.USE_VAULT)
    async def get(self, account_id: str) -> None:
        account = await self.call(
            self.services.vault.get_account, self.user, self.object_id(account_id)
        )
        settings = await self.call(self.services.vault.get_settings, self.user)
        self.render("vault_account.html", a=account, settings=settings, error=None)


class AccountEditPage(VaultPage):
    @needs(Action.MANAGE_OWN_RESOURCES)
    async def get(self, account_id: str) -> None:
        a = await self.call(self.services.vault.get_account, self.user, self.object_id(account_id))
        values = {
            "username": a.username,
            "notes": a.notes,
            "password_policy_id": str(a.password_policy_id or ""),
            "reason_required": a.reason_required,
            "ticket_required": a.ticket_required,
        }
        detail = await self.call(self.services.vault.get_resource, self.user, a.resource_id)
        self.render(
            "vault_account_form.html",
            r=detail.resource,
            account=a,
            values=values,
            error=None,
            attributes=a.custom_attributes,
            **await self.form_choices("account"),
        )

    @needs(Action.MANAGE_OWN_RESOURCES)
    async def post(self, account_id: str) -> None:
        aid = self.object_id(account_id)
        a = await self.call(self.services.vault.get_account, self.user, aid)
        detail = await self.call(self.services.vault.get_resource, self.user, a.resource_id)
        choices = await self.form_choices("account")
        values = {
            "username": self.get_body_argument("username", "")[:256],
            "notes": self.get_body_argument("notes", "")[:MAX_TEXT],
            "password_policy_id": self.get_body_argument("password_policy_id", "")[:9],
            "reason_required": self.checkbox("reason_required"),
            "ticket_required": self.checkbox("ticket_required"),
        }
        back: dict[str, Any] = {
            "r": detail.resource,
            "account": a,
            "values": values,
            "attributes": self.typed_attributes(),
        }
        try:
            changes = AccountChanges(
                username=self.field("username"),
                notes=self.field("notes", MAX_TEXT, strip=False),
                custom_attributes=self.custom_fields(),
                password_policy_id=self.policy_change(),
                reason_required=self.checkbox("reason_required"),
                ticket_required=self.checkbox("ticket_required"),
            )
        except ValidationError as exc:
            self.refuse("vault_account_form.html", str(exc), **back, **choices)
            return
        _, error = await self.attempt(
            self.services.vault.edit_account, self.user, self.source_ip, aid, changes
        )
        if error is not None:
            self.refuse("vault_account_form.html", error, **back, **choices)
            return
        self.done("Account saved.", f"/accounts/{aid}")


class AccountDeletePage(VaultPage):
    @needs(Action.MANAGE_OWN_RESOURCES)
    async def post(self, account_id: str) -> None:
        aid = self.object_id(account_id)
        a = await self.call(self.services.vault.get_account, self.user, aid)
        if not self.confirmed():  # an account has no trash: one click must not be enough
            settings = await self.call(self.services.vault.get_settings, self.user)
            self.refuse(
                "vault_account.html",
                'The account was not deleted: tick "I understand the account and its'
                ' password history are deleted for good" to delete it.',
                a=a,
                settings=settings,
            )
            return
        await self.call(self.services.vault.delete_account, self.user, self.source_ip, aid)
        self.done(f"Account '{a.username}' deleted.", f"/resources/{a.resource_id}")


class RevealPage(VaultPage):
    """View or copy a password: a POST with the reason (and ticket id) the settings ask
    for. The answer is the only place the password appears."""

    operation = "view"

    async def reveal(self, account_id: str) -> None:
        aid = self.object_id(account_id)
        a = await self.call(self.services.vault.get_account, self.user, aid)
        settings = await self.call(self.services.vault.get_settings, self.user)
        try:
            reason = self.field("reason", 1024)
            ticket = self.field("ticket", 128)
        except ValidationError as exc:
            self.refuse("vault_account.html", str(exc), a=a, settings=settings)
            return
        fn = (
            self.services.vault.copy_password
            if self.operation == "copy"
            else self.services.vault.view_password
        )
        password, error = await self.attempt(fn, self.user, self.source_ip, aid, reason, ticket)
        if password is None:
            self.refuse("vault_account.html", error or "", a=a, settings=settings)
            return
        self.render("vault_password.html", a=a, password=password, operation=self.operation)


class ViewPasswordPage(RevealPage):
    operation = "view"

    @needs(Action.VIEW_PASSWORD)
    async def post(self, account_id: str) -> None:
        await self.reveal(account_id)


class CopyPasswordPage(RevealPage):
    operation = "copy"

    @needs(Action.VIEW_PASSWORD)
    async def post(self, account_id: str) -> None:
        await self.reveal(account_id)


class ChangePasswordPage(VaultPage):
    async def policy_of(self, account: Any) -> Any:
        policies = await self.call(self.services.policies.list_policies, self.user)
        return next((p for p in policies if p.name == account.policy_name), None)

    @needs(Action.CHANGE_SHARED_PASSWORD)
    async def get(self, account_id: str) -> None:
        a = await self.call(self.services.vault.get_account, self.user, self.object_id(account_id))
        self.render("vault_change_password.html", a=a, policy=await self.policy_of(a), error=None)

    @needs(Action.CHANGE_SHARED_PASSWORD)
    async def post(self, account_id: str) -> None:
        aid = self.object_id(account_id)
        a = await self.call(self.services.vault.get_account, self.user, aid)
        back: dict[str, Any] = {"a": a, "policy": await self.policy_of(a)}
        try:
            reason = self.field("reason", 1024)
            ticket = self.field("ticket", 128)
            generate = self.checkbox("generate")
            new = self.secret_field("new")
            if not generate and new != self.secret_field("confirm"):
                raise ValidationError("the new password and its confirmation differ")
        except ValidationError as exc:
            self.refuse("vault_change_password.html", str(exc), **back)
            return
        if generate:
            new = await self.call(self.services.vault.generate_for_account, self.user, aid)
        _, error = await self.attempt(
            self.services.vault.change_password,
            self.user,
            self.source_ip,
            aid,
            new,
            reason,
            ticket=ticket,
        )
        if error is not None:
            self.refuse("vault_change_password.html", error, **back)
            return
        how = "A new password was generated and saved" if generate else "Password changed"
        self.done(f"{how} for '{a.username}'.", f"/accounts/{aid}")


class PasswordHistoryPage(VaultPage):
    @needs(Action.MANAGE_OWN_RESOURCES)
    async def get(self, account_id: str) -> None:
        aid = self.object_id(account_id)
        a = await self.call(self.services.vault.get_account, self.user, aid)
        history = await self.call(self.services.vault.password_history, self.user, aid)
        self.render("vault_history.html", a=a, history=history)


# --- trash, resource types, settings ------------------------------------------------------


class TrashPage(VaultPage):
    @needs(Action.MANAGE_TRASH)
    async def get(self) -> None:
        items = await self.call(self.services.vault.list_trash, self.user)
        self.render("vault_trash.html", items=items, error=None)


class TrashRestorePage(VaultPage):
    @needs(Action.MANAGE_TRASH)
    async def post(self, resource_id: str) -> None:
        rid = self.object_id(resource_id)
        await self.call(self.services.vault.restore_resource, self.user, self.source_ip, rid)
        self.done("Resource restored from the trash.", f"/resources/{rid}")


class TrashPurgePage(VaultPage):
    @needs(Action.MANAGE_TRASH)
    async def post(self, resource_id: str) -> None:
        rid = self.object_id(resource_id)
        if not self.confirmed():  # purging cannot be undone: one click must not be enough
            items = await self.call(self.services.vault.list_trash, self.user)
            self.refuse(
                "vault_trash.html",
                'The resource was not purged: tick "I understand it is deleted for good,'
                ' with its accounts" to purge it.',
                items=items,
            )
            return
        await self.call(self.services.vault.purge_resource, self.user, self.source_ip, rid)
        self.done("Resource deleted for good, with its accounts and history.", "/trash")


class ResourceTypesPage(VaultPage):
    async def show(self, error: str | None = None, name: str = "") -> None:
        types = await self.call(self.services.vault.list_resource_types, self.user)
        self.render("vault_resource_types.html", types=types, error=error, name=name)

    @needs(Action.MANAGE_RESOURCE_TYPES)
    async def get(self) -> None:
        await self.show()

    @needs(Action.MANAGE_RESOURCE_TYPES)
    async def post(self) -> None:
        name = self.get_body_argument("name", "")[:64]
        delete = self.get_body_argument("delete", "")
        if delete:
            _, error = await self.attempt(
                self.services.vault.delete_resource_type, self.user, self.source_ip, delete[:64]
            )
            if error is None:
                self.done(f"Resource type '{delete[:64]}' deleted.", "/resource-types")
                return
            await self.show(error)
            return
        try:
            name = self.field("name", 64)
        except ValidationError as exc:
            self.set_status(400)
            await self.show(str(exc), name)
            return
        _, error = await self.attempt(
            self.services.vault.add_resource_type, self.user, self.source_ip, name
        )
        if error is not None:
            await self.show(error, name)
            return
        self.done(f"Resource type '{name}' added.", "/resource-types")


class VaultSettingsPage(VaultPage):
    async def show(self, error: str | None = None) -> None:
        settings = await self.call(self.services.vault.get_settings, self.user)
        policies = await self.call(self.services.policies.list_policies, self.user)
        self.render("vault_settings.html", settings=settings, policies=policies, error=error)

    @needs(Action.MANAGE_SETTINGS)
    async def get(self) -> None:
        await self.show()

    @needs(Action.MANAGE_SETTINGS)
    async def post(self) -> None:
        mode = self.get_body_argument("password_reason", "")
        try:
            policy_id = self.int_field("default_policy_id", label="default policy")
        except ValidationError as exc:
            self.set_status(400)
            await self.show(str(exc))
            return
        # the policy is looked up before anything is saved: a refused form changes nothing
        current = await self.call(self.services.vault.get_settings, self.user)
        policies = await self.call(self.services.policies.list_policies, self.user)
        chosen = next((p for p in policies if p.id == policy_id), None)
        if policy_id is not None and chosen is None:
            raise Refused(400, "No such password policy.")
        _, error = await self.attempt(
            self.services.vault.set_password_reason, self.user, self.source_ip, mode
        )
        if error is None and chosen is not None and chosen.name != current.default_policy:
            _, error = await self.attempt(
                self.services.vault.set_default_policy, self.user, self.source_ip, chosen.id
            )
        if error is not None:
            await self.show(error)
            return
        self.done("Settings saved.", "/settings")


ROUTES = [
    (r"/resources", ResourceListPage),
    (r"/resources/new", ResourceNewPage),
    (r"/resources/([0-9]+)", ResourcePage),
    (r"/resources/([0-9]+)/edit", ResourceEditPage),
    (r"/resources/([0-9]+)/delete", ResourceDeletePage),
    (r"/resources/([0-9]+)/accounts/new", AccountNewPage),
    (r"/accounts/([0-9]+)", AccountPage),
    (r"/accounts/([0-9]+)/edit", AccountEditPage),
    (r"/accounts/([0-9]+)/delete", AccountDeletePage),
    (r"/accounts/([0-9]+)/view", ViewPasswordPage),
    (r"/accounts/([0-9]+)/copy", CopyPasswordPage),
    (r"/accounts/([0-9]+)/password", ChangePasswordPage),
    (r"/accounts/([0-9]+)/history", PasswordHistoryPage),
    (r"/trash", TrashPage),
    (r"/trash/([0-9]+)/restore", TrashRestorePage),
    (r"/trash/([0-9]+)/purge", TrashPurgePage),
    (r"/resource-types", ResourceTypesPage),
    (r"/settings", VaultSettingsPage),
]
