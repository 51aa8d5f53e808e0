"""The one permission table: which role may do which action.

Every page and API route declares the action it needs (``web.base.needs``); services check
the same actions again, and filter objects by ownership, shares and scope inside their
queries. An action name that does not exist fails at import time (it is an enum member).
"""

from __future__ import annotations

from enum import StrEnum

from node.errors import PermissionDeniedError
from node.roles import Role


class Action(StrEnum):
    # everyone who can log in
    USE_VAULT = "use vault"  # home page, own profile, resources shared with me
    VIEW_PASSWORD = "view password"  # still subject to the share on the object
    CHANGE_SHARED_PASSWORD = "change shared password"  # where the share allows it
    # password administrators and administrators
    ADD_RESOURCE = "add resource"
    MANAGE_OWN_RESOURCES = "manage own resources"
    SHARE = "share"
    MANAGE_RESOURCE_GROUPS = "manage resource groups"
    # auditors and administrators
    VIEW_AUDIT = "view audit"
    VIEW_REPORTS = "view reports"
    # administrators only
    MANAGE_USERS = "manage users"
    MANAGE_POLICIES = "manage policies"
    MANAGE_RESOURCE_TYPES = "manage resource types"
    MANAGE_CUSTOM_FIELDS = "manage custom fields"
    TRANSFER_OWNERSHIP = "transfer ownership"
    GRANT_SUPER_ADMIN = "grant super admin"
    RUN_QUERY_REPORTS = "run query reports"
    MANAGE_SETTINGS = "manage settings"
    REBRAND = "rebrand"
    MANAGE_TRASH = "manage trash"
    MANAGE_API_USERS = "manage api users"
    MANAGE_BACKUP = "manage backup"
    MANAGE_LICENCE = "manage licence"
    VIEW_CLUSTER = "view cluster"


# SHARE for every role: a Full share may be passed on by whoever holds it (node/sharing.py
# still requires Full or Owner on the object itself).
_USER = frozenset(
    {Action.USE_VAULT, Action.VIEW_PASSWORD, Action.CHANGE_SHARED_PASSWORD, Action.SHARE}
)
_AUDITOR = _USER | {Action.VIEW_AUDIT, Action.VIEW_REPORTS}
_PASSWORD_ADMIN = _USER | {
    Action.ADD_RESOURCE,
    Action.MANAGE_OWN_RESOURCES,
    Action.MANAGE_RESOURCE_GROUPS,
}
_ADMIN = frozenset(Action)

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.PASSWORD_USER: _USER,
    Role.PASSWORD_AUDITOR: frozenset(_AUDITOR),
    Role.PASSWORD_ADMINISTRATOR: frozenset(_PASSWORD_ADMIN),
    Role.ADMINISTRATOR: _ADMIN,
}


def allowed(role: Role, action: Action) -> bool:
    return action in PERMISSIONS[role]


def require(role: Role, action: Action) -> None:
    if not allowed(role, action):
        raise PermissionDeniedError(f"your role ({role.label}) does not allow: {action.value}")
