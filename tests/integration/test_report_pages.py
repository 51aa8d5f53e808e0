"""Report, query-report and rebranding pages in the browser, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
import urllib.parse
import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - parsing our own output in a test
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from node.audit_query import AuditFilter
from node.services import Services
from node.store.models import Account, BrandingLogo, Resource
from tests.integration.live_app import Browser
from tests.integration.report_web import browser, serving
from tests.integration.report_world import XSS, World, build_world
from tests.logo_images import jpeg, png


@pytest.fixture
def site(services: Services, tmp_path: Path) -> Iterator[tuple[World, int]]:
    world = build_world(services)
    with serving(services, tmp_path / "tls") as port:
        yield world, port


def test_reports_in_the_browser(services: Services, site: tuple[World, int]) -> None:
    world, port = site
    auditor = browser(services, port, world.auditor)
    index = auditor.get("/reports")
    assert index.status == 200 and "Password inventory" in index.text
    assert "/reports/query" not in index.text  # auditors do not run query reports
    page = auditor.get("/reports/inventory")
    assert page.status == 200 and "web-01" in page.text and "db-secret-7" in page.text
    assert "zz-hidden-9" not in page.text
    assert not re.search(r"\bdba\b", page.text)  # the unshared account's name
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text

    download = auditor.get("/reports/inventory?format=csv")
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(download.text)))
    assert "'=ops" in rows[1] or "'=ops" in rows[2]  # formula-safe
    xml = auditor.get("/reports/sharing?format=xml")
    assert xml.headers["content-type"].startswith("application/xml")
    assert ET.fromstring(xml.body).get("title") == "Sharing"  # noqa: S314

    admin = browser(services, port, world.admin)
    aged = admin.get("/reports/aged?days=1")
    assert aged.status == 200 and "Passwords older than 1 days" in aged.text
    assert admin.get("/reports/aged?days=-4").status == 400
    for odd in ("0000000000015", "1_0", "١٠", "1e2"):  # not read as 1, 10, 10, 100
        refused = admin.get("/reports/aged?days=" + urllib.parse.quote(odd))
        assert refused.status == 400 and "number of days" in refused.text, odd
    for fmt in ("pdf", "CSV"):
        refused = admin.get(f"/reports/inventory?format={fmt}")
        assert refused.status == 400 and "html, csv, xml" in refused.text
    assert _query(admin, "SELECT 1", fmt="pdf")[0] == 400
    assert admin.get("/reports/nosuch").status == 404
    assert browser(services, port, world.user).get("/reports/users").status == 403
    assert browser(services, port, world.pwadmin).get("/reports").status == 403


def _query(b: Browser, sql: str, fmt: str = "html") -> tuple[int, str, dict[str, str]]:
    r = b.post("/reports/query", {"sql": sql, "format": fmt})
    return r.status, r.text, r.headers


def test_query_reports_in_the_browser(services: Services, site: tuple[World, int]) -> None:
    world, port = site
    admin = browser(services, port, world.admin)
    assert admin.get("/reports/query").status == 200
    status, page, _ = _query(admin, "SELECT name, department FROM report_resources ORDER BY name")
    assert status == 200 and "zz-hidden-9" in page and "3 rows" in page
    status, text, headers = _query(admin, "SELECT username FROM report_accounts", "csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert [XSS] in list(csv.reader(io.StringIO(text)))
    status, body, headers = _query(admin, "SELECT username FROM report_accounts", "xml")
    assert "&lt;script&gt;" in body and "<script>" not in body

    def counts() -> tuple[int, int]:
        with services.store.sessions() as s:
            return (
                int(s.scalar(select(func.count()).select_from(Account)) or 0),
                int(s.scalar(select(func.count()).select_from(Resource)) or 0),
            )

    before = counts()
    for sql, why in [
        ("DELETE FROM report_accounts", "only a single SELECT"),
        ("DROP TABLE accounts", "only a single SELECT"),
        ("UPDATE accounts SET username = 'x'", "only a single SELECT"),
        ("INSERT INTO users (username) VALUES ('x')", "only a single SELECT"),
        ("SELECT * FROM report_users; DROP TABLE accounts", "found 2 statements"),
        ("SELECT password_ct FROM accounts", "not a report view"),
        ("PRAGMA query_only = OFF", "SELECT"),
        ("ATTACH DATABASE 'x.db' AS x", "SELECT"),
    ]:
        status, page, _ = _query(admin, sql)
        assert status == 400, sql
        assert why in page, sql
    assert counts() == before
    # the form must come from our page (XSRF), and only administrators may use it
    nox = admin.request(
        "POST",
        "/reports/query",
        body=b"sql=SELECT+1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert nox.status == 403
    assert browser(services, port, world.auditor).get("/reports/query").status == 403


def _upload(b: Browser, data: bytes, filename: str = "logo.png", ctype: str = "image/png") -> int:
    boundary = uuid.uuid4().hex
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="_xsrf"\r\n\r\n{b.xsrf()}\r\n'
        ).encode(),
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="logo"; filename="{filename}"'
            f"\r\nContent-Type: {ctype}\r\n\r\n"
        ).encode()
        + data
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    r = b.request(
        "POST",
        "/admin/branding",
        body=b"".join(parts),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    return r.status


def test_rebranding(services: Services, site: tuple[World, int]) -> None:
    world, port = site
    admin = browser(services, port, world.admin)
    built_in = admin.get("/branding/logo")
    assert built_in.headers["content-type"] == "image/svg+xml"
    assert "The built-in Strongroom logo is shown." in admin.get("/admin/branding").text

    logo = png(420, 100)
    assert _upload(admin, logo) == 302
    served = admin.get("/branding/logo")
    assert served.headers["content-type"] == "image/png" and served.body == logo
    assert "PNG, 420x100 pixels" in admin.get("/admin/branding").text
    login = browser(services, port, None).get("/login").text
    assert 'src="/branding/logo"' in login and 'width="210" height="50"' in login
    row = services.audit_query.search(world.admin, AuditFilter(operation="settings")).entries[0]
    assert (row.target, row.category, row.username) == ("branding logo", "user", "admin")

    # refusals: 400 with the rule, and the current logo stays
    assert _upload(admin, b"GIF89a\x01\x00\x01\x00;", "logo.png") == 400
    assert _upload(admin, b"<svg onload=alert(1)>", "logo.png", "image/png") == 400
    assert _upload(admin, png(10, 10, pad_to=200 * 1024 + 1)) == 400
    assert _upload(admin, b"") == 400
    assert admin.get("/branding/logo").body == logo
    page = admin.post("/admin/branding", {})
    assert page.status == 400 and "choose an image file" in page.text

    jpg = jpeg(300, 80)
    assert _upload(admin, jpg, "brand.jpg", "image/jpeg") == 302
    assert admin.get("/branding/logo").headers["content-type"] == "image/jpeg"
    with services.store.sessions() as s:
        assert s.scalar(select(func.count()).select_from(BrandingLogo)) == 1

    # a logo stored before a check was added (two JPEGs in one file, as a phone's MPO):
    # the page still shows, says so, and offers the way out
    with services.store.transaction() as s:
        s.execute(update(BrandingLogo).values(data=jpg + jpeg(30, 8)))
    old = admin.get("/admin/branding")
    assert old.status == 200 and "which the current checks refuse" in old.text
    assert "Use the built-in logo" in old.text

    assert browser(services, port, world.pwadmin).get("/admin/branding").status == 403
    assert _upload(browser(services, port, world.auditor), logo) == 403
    assert admin.post("/admin/branding/reset", {}).status == 302
    assert admin.get("/branding/logo").headers["content-type"] == "image/svg+xml"
