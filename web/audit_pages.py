"""Audit pages: the resource audit and the user audit with filters and paging, a CSV export
of the filtered rows, and "Verify audit chain" (the chain's state and the first broken row).

Every page needs Action.VIEW_AUDIT; which rows a reader sees is decided by the service
(node.audit_query), inside its query.
"""

from __future__ import annotations

import urllib.parse

from node.audit_query import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    AuditEntry,
    AuditFilter,
    parse_time_bound,
    sees_everything,
)
from node.errors import StrongroomError, ValidationError
from node.export import Table, to_csv
from node.inputs import is_decimal
from node.permissions import Action
from web.base import BaseHandler, needs, status_for

FILTER_FIELDS = ("from", "to", "user", "operation", "resource", "result", "resource_id")
COLUMNS = ["Time (UTC)", "User", "Source IP", "Operation", "Target", "Reason", "Result", "Detail"]


class AuditRedirect(BaseHandler):
    @needs(Action.VIEW_AUDIT)
    async def get(self) -> None:
        self.redirect("/audit/resource")


class AuditPage(BaseHandler):
    """/audit/resource and /audit/user: one category each."""

    def _arg(self, name: str) -> str:
        """A filter as typed; too long a value is refused by the filter, not cut."""
        return self.get_query_argument(name, "")[:4096]

    def _filter(self, category: str) -> AuditFilter:
        return AuditFilter(
            category=category,
            since=parse_time_bound(self._arg("from")),
            until=parse_time_bound(self._arg("to"), end=True),
            username=self._arg("user"),
            operation=self._arg("operation"),
            resource=self._arg("resource"),
            result=self._arg("result"),
            resource_id=self._resource_id(),
        )

    def _resource_id(self) -> int | None:
        """``resource_id=N`` narrows to one resource (links from a resource's page)."""
        raw = self._arg("resource_id").strip()
        if not raw:
            return None
        if not is_decimal(raw) or len(raw) > 9:
            raise ValidationError("resource_id must be a whole number")
        return int(raw)

    def _page(self) -> int:
        raw = self._arg("page").strip() or "1"
        if not is_decimal(raw) or len(raw) > 6 or int(raw) < 1:
            raise ValidationError("the page number must be a whole number from 1")
        return int(raw)

    @needs(Action.VIEW_AUDIT)
    async def get(self, category: str) -> None:
        values = {name: self._arg(name) for name in FILTER_FIELDS}
        query = self.services.audit_query
        try:
            flt = self._filter(category)
            if self._arg("format") not in ("", "html", "csv"):
                raise ValidationError("the format must be html or csv")
            export = self._arg("format") == "csv"
            page = 1 if export else self._page()
            size = MAX_PAGE_SIZE if export else DEFAULT_PAGE_SIZE
            result = await self.run(query.search, self.user, flt, page, size)
        except StrongroomError as exc:
            self.set_status(status_for(exc))
            operations = await self.run(query.operations, self.user, category)
            self.render(
                "audit_list.html",
                category=category,
                values=values,
                result=None,
                operations=operations,
                error=str(exc),
                page_url=lambda _n: "",
                export_url="",
            )
            return
        if export:
            self._send_csv(category, result.entries)
            return
        operations = await self.run(query.operations, self.user, category)

        def page_url(n: int) -> str:
            args = {k: v for k, v in values.items() if v}
            args["page"] = str(n)
            return f"/audit/{category}?{urllib.parse.urlencode(args)}"

        args = {k: v for k, v in values.items() if v}
        args["format"] = "csv"
        self.render(
            "audit_list.html",
            category=category,
            values=values,
            result=result,
            operations=operations,
            error=None,
            page_url=page_url,
            export_url=f"/audit/{category}?{urllib.parse.urlencode(args)}",
        )

    def _send_csv(self, category: str, entries: list[AuditEntry]) -> None:
        table = Table(f"{category.title()} audit", COLUMNS)
        for e in entries:
            table.rows.append(
                [e.ts, e.username, e.source_ip, e.operation, e.target, e.reason, e.result, e.detail]
            )
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{category}-audit.csv"')
        self.finish(to_csv(table).encode())


class VerifyPage(BaseHandler):
    @needs(Action.VIEW_AUDIT)
    async def get(self) -> None:
        state = await self.run(self.services.audit_query.verify)
        # The broken row's content is shown to those who may read every row.
        self.render(
            "audit_verify.html",
            state=state,
            show_row=state.broken_row is not None and sees_everything(self.user),
        )


ROUTES = [
    (r"/audit", AuditRedirect),
    (r"/audit/(resource|user)", AuditPage),
    (r"/audit/verify", VerifyPage),
]
