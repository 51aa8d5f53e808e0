"""The Admin page: one place that links every administration page, in sections.

Each link names the action its page declares, so a user sees only what they may open. To
add a page, append one :class:`AdminLink` to :data:`ADMIN_LINKS` (keep sections in the
order they should appear).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.permissions import Action
from web.base import BaseHandler, needs

SECTIONS = ("People", "Vault", "Audit and reports", "Appliance")


@dataclass(frozen=True)
class AdminLink:
    section: str
    label: str
    href: str
    action: Action
    hint: str = ""


ADMIN_LINKS: list[AdminLink] = [
    AdminLink(
        "Audit and reports", "Resource audit", "/audit/resource", Action.VIEW_AUDIT, "who did what"
    ),
    AdminLink("Audit and reports", "User audit", "/audit/user", Action.VIEW_AUDIT, "logins"),
    AdminLink(
        "Audit and reports",
        "Verify audit chain",
        "/audit/verify",
        Action.VIEW_AUDIT,
        "detect edited, deleted or reordered audit rows",
    ),
    AdminLink("Audit and reports", "Reports", "/reports", Action.VIEW_REPORTS, "CSV and XML"),
    AdminLink(
        "Audit and reports",
        "Query reports",
        "/reports/query",
        Action.RUN_QUERY_REPORTS,
        "read-only SQL on documented views",
    ),
    AdminLink(
        "Appliance", "Rebranding", "/admin/branding", Action.REBRAND, "logo on login and header"
    ),
    AdminLink("People", "Users", "/users", Action.MANAGE_USERS, "add, edit, disable, roles"),
    AdminLink("People", "User groups", "/user-groups", Action.MANAGE_USERS, "share with many"),
    AdminLink(
        "People",
        "Transfer ownership",
        "/transfer",
        Action.TRANSFER_OWNERSHIP,
        "hand a departing user's resources to another administrator",
    ),
    AdminLink(
        "People",
        "Custom fields",
        "/custom-fields",
        Action.MANAGE_CUSTOM_FIELDS,
        "extra attributes on users, resources and accounts",
    ),
    AdminLink(
        "People",
        "API users",
        "/admin/api-users",
        Action.MANAGE_API_USERS,
        "applications with an AUTHTOKEN for the REST API",
    ),
    AdminLink("Vault", "Password policies", "/policies", Action.MANAGE_POLICIES, "rules, age"),
    AdminLink(
        "Vault", "Resource types", "/resource-types", Action.MANAGE_RESOURCE_TYPES, "add types"
    ),
    AdminLink("Vault", "Trash", "/trash", Action.MANAGE_TRASH, "restore or purge resources"),
    AdminLink(
        "Vault",
        "Password access settings",
        "/settings",
        Action.MANAGE_SETTINGS,
        "reason for viewing and copying passwords",
    ),
    AdminLink(
        "Appliance",
        "Backup",
        "/admin/backup",
        Action.MANAGE_BACKUP,
        "schedule, targets, retention, run now, history",
    ),
    AdminLink(
        "Appliance",
        "Cluster",
        "/admin/cluster",
        Action.VIEW_CLUSTER,
        "members, primary, standby, replication lag, VIP",
    ),
    AdminLink(
        "Appliance",
        "License",
        "/admin/license",
        Action.MANAGE_LICENCE,
        "edition, administrators and resources allowed, expiry, install a licence",
    ),
]


def visible_sections(handler: BaseHandler) -> list[tuple[str, list[AdminLink]]]:
    """The sections with at least one link the user may follow, in order."""
    out: list[tuple[str, list[AdminLink]]] = []
    names = list(SECTIONS) + [link.section for link in ADMIN_LINKS if link.section not in SECTIONS]
    for name in dict.fromkeys(names):
        links = [ln for ln in ADMIN_LINKS if ln.section == name and handler.can(ln.action)]
        if links:
            out.append((name, links))
    return out


class AdminIndexPage(BaseHandler):
    @needs(Action.MANAGE_SETTINGS)
    async def get(self) -> None:
        self.render("admin_index.html", sections=visible_sections(self))


ROUTES = [
    (r"/admin", AdminIndexPage),
]
