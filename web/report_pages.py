"""Report pages: the built-in reports (Action.VIEW_REPORTS) and query reports
(Action.RUN_QUERY_REPORTS), each shown as a table or downloaded as CSV or XML.

What a report contains, and for whom, is decided by the services (node.reports,
node.query_reports); these handlers parse, authorise, call and render.
"""

from __future__ import annotations

from node.errors import StrongroomError, ValidationError
from node.export import Table, to_csv, to_xml
from node.permissions import Action
from node.query_reports import MAX_SQL, REPORT_VIEWS
from node.reports import DEFAULT_AGE_DAYS, REPORTS, parse_days
from web.base import BaseHandler, needs, status_for

FORMATS = ("html", "csv", "xml")

EXAMPLE_QUERY = (
    "SELECT resource_name, username, last_changed_at\n"
    "FROM report_accounts\n"
    "WHERE has_password = 1\n"
    "ORDER BY last_changed_at\n"
    "LIMIT 50"
)


def _slug(title: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in title.lower())
    return "-".join(part for part in keep.split("-") if part)[:60] or "report"


class ExportMixin(BaseHandler):
    def fmt(self, value: str) -> str:
        """The output format asked for: html (the page), csv or xml; anything else is
        refused rather than answered with the page."""
        if value not in FORMATS:
            raise ValidationError("the format must be one of: " + ", ".join(FORMATS))
        return value

    def send_table(self, table: Table, fmt: str) -> None:
        stamp = table.generated_at.strftime("%Y%m%d-%H%M%S")
        name = f"{_slug(table.title)}-{stamp}"
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{name}.csv"')
            self.finish(to_csv(table).encode())
        else:
            self.set_header("Content-Type", "application/xml; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{name}.xml"')
            self.finish(to_xml(table))


class ReportIndexPage(BaseHandler):
    @needs(Action.VIEW_REPORTS)
    async def get(self) -> None:
        self.render("report_index.html", reports=list(REPORTS.values()), days=DEFAULT_AGE_DAYS)


class ReportPage(ExportMixin):
    @needs(Action.VIEW_REPORTS)
    async def get(self, key: str) -> None:
        info = REPORTS.get(key)
        if info is None:
            self.fail_page(404, "No such report.")
            return
        try:
            fmt = self.fmt(self.get_query_argument("format", "html"))
            days = parse_days(self.get_query_argument("days", ""))
            table = await self.run(
                self.services.reports.run, self.user, key, self.source_ip, days=days
            )
        except StrongroomError as exc:
            self.fail_page(status_for(exc), str(exc))
            return
        if fmt != "html":
            self.send_table(table, fmt)
            return
        self.render("report_table.html", info=info, table=table, days=days, key=key)

    def fail_page(self, status: int, message: str) -> None:
        self.set_status(status)
        self.render("error.html", status=status, message=message)


class QueryReportPage(ExportMixin):
    def _form(self, sql: str, error: str | None, table: Table | None, fmt: str) -> None:
        self.render(
            "report_query.html",
            sql=sql,
            error=error,
            table=table,
            fmt=fmt,
            views=REPORT_VIEWS,
            max_sql=MAX_SQL,
        )

    @needs(Action.RUN_QUERY_REPORTS)
    async def get(self) -> None:
        self._form(EXAMPLE_QUERY, None, None, "html")

    @needs(Action.RUN_QUERY_REPORTS)
    async def post(self) -> None:
        sql = self.get_body_argument("sql", "", strip=False)
        try:
            fmt = self.fmt(self.get_body_argument("format", "html"))
        except ValidationError as exc:
            self.set_status(400)
            self._form(sql[:MAX_SQL], str(exc), None, "html")
            return
        if len(sql) > MAX_SQL:
            self.set_status(400)
            self._form(sql[:MAX_SQL], f"the query is longer than {MAX_SQL} characters", None, fmt)
            return
        try:
            table = await self.run(self.services.query_reports.run, self.user, sql, self.source_ip)
        except StrongroomError as exc:
            self.set_status(status_for(exc))
            self._form(sql, str(exc), None, fmt)
            return
        if fmt != "html":
            self.send_table(table, fmt)
            return
        self._form(sql, None, table, fmt)


ROUTES = [
    (r"/reports", ReportIndexPage),
    (r"/reports/query", QueryReportPage),
    (r"/reports/([a-z]+)", ReportPage),
]
