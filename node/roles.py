"""The roles of a vault user."""

from __future__ import annotations

from enum import StrEnum

from node.errors import ValidationError


class Role(StrEnum):
    ADMINISTRATOR = "administrator"
    PASSWORD_ADMINISTRATOR = "password_administrator"
    PASSWORD_AUDITOR = "password_auditor"
    PASSWORD_USER = "password_user"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").title()

    @property
    def is_admin_type(self) -> bool:
        """Administrator and Password Administrator count as administrators (licences,
        Super Administrator scope)."""
        return self in (Role.ADMINISTRATOR, Role.PASSWORD_ADMINISTRATOR)


def parse_role(text: str) -> Role:
    key = text.strip().lower().replace(" ", "_").replace("-", "_")
    try:
        return Role(key)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise ValidationError(f"unknown role '{text}' (one of: {names})") from None
