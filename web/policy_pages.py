"""Password policies (administrators): list, add and edit custom policies, read the
built-in ones."""

from __future__ import annotations

from node.errors import ValidationError
from node.inputs import is_decimal
from node.permissions import Action
from node.policies import PolicySpec
from web.base import needs
from web.console import ConsolePage

BLANK = PolicySpec(name="", min_length=12, max_length=64, require_upper=True, require_digit=True)


class PolicyListPage(ConsolePage):
    @needs(Action.MANAGE_POLICIES)
    async def get(self) -> None:
        policies = await self.call(self.services.policies.list_policies, self.user)
        self.render("policy_list.html", policies=policies)


class PolicyFormMixin(ConsolePage):
    def read_spec(self) -> PolicySpec:
        max_age = self.int_field("max_age_days", required=False, label="maximum age")
        return PolicySpec(
            name=self.field("name", 128),
            min_length=self.int_field("min_length", label="minimum length") or 0,
            max_length=self.int_field("max_length", label="maximum length") or 0,
            require_lower=self.checkbox("require_lower"),
            require_upper=self.checkbox("require_upper"),
            require_digit=self.checkbox("require_digit"),
            require_special=self.checkbox("require_special"),
            no_reuse_last=self.int_field(
                "no_reuse_last", required=False, label="no reuse of the last N"
            )
            or 0,
            max_age_days=max_age,
        )

    def typed_back(self) -> PolicySpec:
        """What the user typed, for showing the form again (numbers that do not parse
        fall back to the defaults; the error message names them)."""

        def num(name: str, default: int) -> int:
            raw = self.get_body_argument(name, "").strip()
            return int(raw) if is_decimal(raw) and len(raw) < 9 else default

        age = self.get_body_argument("max_age_days", "").strip()
        return PolicySpec(
            name=self.get_body_argument("name", "")[:128],
            min_length=num("min_length", BLANK.min_length),
            max_length=num("max_length", BLANK.max_length),
            require_lower=self.checkbox("require_lower"),
            require_upper=self.checkbox("require_upper"),
            require_digit=self.checkbox("require_digit"),
            require_special=self.checkbox("require_special"),
            no_reuse_last=num("no_reuse_last", 0),
            max_age_days=int(age) if is_decimal(age) and len(age) < 9 else None,
        )


class PolicyNewPage(PolicyFormMixin):
    @needs(Action.MANAGE_POLICIES)
    async def get(self) -> None:
        self.render("policy_form.html", policy=BLANK, error=None)

    @needs(Action.MANAGE_POLICIES)
    async def post(self) -> None:
        try:
            spec = self.read_spec()
        except ValidationError as exc:
            self.refuse("policy_form.html", str(exc), policy=self.typed_back())
            return
        new_id, error = await self.attempt(
            self.services.policies.create_policy, self.user, self.source_ip, spec
        )
        if error is not None:
            self.refuse("policy_form.html", error, policy=self.typed_back())
            return
        self.done(f"Password policy '{spec.name}' added.", f"/policies/{new_id}")


class PolicyPage(PolicyFormMixin):
    @needs(Action.MANAGE_POLICIES)
    async def get(self, policy_id: str) -> None:
        policy = await self.call(
            self.services.policies.get_policy, self.user, self.object_id(policy_id)
        )
        self.render("policy_form.html", policy=policy, error=None)

    @needs(Action.MANAGE_POLICIES)
    async def post(self, policy_id: str) -> None:
        current = await self.call(
            self.services.policies.get_policy, self.user, self.object_id(policy_id)
        )
        try:
            spec = self.read_spec()
        except ValidationError as exc:
            back = self.typed_back()
            self.refuse("policy_form.html", str(exc), policy=_with_id(back, current))
            return
        _, error = await self.attempt(
            self.services.policies.update_policy,
            self.user,
            self.source_ip,
            self.object_id(policy_id),
            spec,
        )
        if error is not None:
            self.refuse("policy_form.html", error, policy=_with_id(self.typed_back(), current))
            return
        self.done(f"Password policy '{spec.name}' saved.", f"/policies/{policy_id}")


class PolicyDeletePage(ConsolePage):
    @needs(Action.MANAGE_POLICIES)
    async def post(self, policy_id: str) -> None:
        policy = await self.call(
            self.services.policies.get_policy, self.user, self.object_id(policy_id)
        )
        _, error = await self.attempt(
            self.services.policies.delete_policy,
            self.user,
            self.source_ip,
            self.object_id(policy_id),
        )
        if error is not None:
            self.flash(error, "error")
            self.redirect(f"/policies/{policy_id}")
            return
        self.done(f"Password policy '{policy.name}' deleted.", "/policies")


def _with_id(typed: PolicySpec, current: PolicySpec) -> PolicySpec:
    return PolicySpec(
        **{**typed.__dict__, "id": current.id, "builtin": current.builtin},
    )


ROUTES = [
    (r"/policies", PolicyListPage),
    (r"/policies/new", PolicyNewPage),
    (r"/policies/([0-9]+)", PolicyPage),
    (r"/policies/([0-9]+)/delete", PolicyDeletePage),
]
