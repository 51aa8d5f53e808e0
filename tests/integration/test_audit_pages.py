"""The audit pages in the browser, on SQLite and PostgreSQL: filters, who sees which rows,
the CSV export, "Verify audit chain" after tampering, and the client address recorded
behind trusted and untrusted proxies."""

from __future__ import annotations

import csv
import dataclasses
import io
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update

from node.audit_query import AuditFilter
from node.services import Services
from node.store.models import AuditRow
from tests.integration.live_app import Browser
from tests.integration.report_web import browser, serving
from tests.integration.report_world import XSS, World, build_world


@pytest.fixture
def site(services: Services, tmp_path: Path) -> Iterator[tuple[World, int]]:
    world = build_world(services)
    with serving(services, tmp_path / "tls") as port:
        yield world, port


def _get(b: Browser, path: str, **query: str) -> tuple[int, str]:
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    r = b.get(url)
    return r.status, r.text


def test_resource_and_user_audit_with_filters(services: Services, site: tuple[World, int]) -> None:
    world, port = site
    admin = browser(services, port, world.admin)
    status, page = _get(admin, "/audit/resource")
    assert status == 200 and "Resource audit" in page
    assert "web-01/root" in page and "view password" in page and "192.0.2.10" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page  # inert everywhere

    status, page = _get(admin, "/audit/resource", operation="view password", resource="secret")
    assert status == 200 and "db-secret-7/dba" in page and "web-01/root" not in page
    assert "1 row." in page

    status, page = _get(admin, "/audit/user", user="admin2")
    assert status == 200 and "User audit" in page and "No audit rows match." in page
    status, page = _get(admin, "/audit/user", operation="add user")
    assert "<td>add user</td>" in page and "<td>login</td>" not in page
    assert "auditor" in page and "puser" in page

    status, page = _get(admin, "/audit/resource", **{"from": "2999-01-01"})
    assert status == 200 and "No audit rows match." in page
    status, page = _get(admin, "/audit/resource", to="last tuesday")
    assert status == 400 and "is not a date" in page
    status, page = _get(admin, "/audit/resource", user="x" * 300)
    assert status == 400 and "longer than 256" in page
    status, page = _get(admin, "/audit/resource", resource_id=str(world.db))
    assert status == 200 and "db-secret-7/dba" in page and "web-01/root" not in page
    assert _get(admin, "/audit/resource", resource_id="1e3")[0] == 400
    status, page = _get(admin, "/audit/user", result="maybe")
    assert status == 400 and "success" in page
    # the calendar's edges are refused, not a 500; so are date forms other than YYYY-MM-DD
    for bound in ({"to": "9999-12-31"}, {"from": "0001-01-01T00:00+01:00"}, {"to": "20261130"}):
        status, page = _get(admin, "/audit/user", **bound)
        assert status == 400 and "is not a date" in page, bound
    status, page = _get(admin, "/audit/user", format="xml")
    assert status == 400 and "the format must be html or csv" in page

    status, text = _get(admin, "/audit/resource", resource="web-01", format="csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["Time (UTC)", "User", "Source IP"]
    assert {r[4] for r in rows[1:]} >= {"web-01/root", f"web-01/{XSS}"}


def test_paging(services: Services, site: tuple[World, int]) -> None:
    world, port = site
    admin = browser(services, port, world.admin)
    total = services.audit_query.search(world.admin, AuditFilter(category="user")).total
    assert total >= 5
    from node.audit import AuditEvent

    with services.store.transaction() as s:
        for i in range(60):
            services.audit.append(
                s, AuditEvent(operation="login", username=f"u{i}", source_ip="::1", category="user")
            )
    _, first = _get(admin, "/audit/user")
    assert f"{total + 60} rows. Page 1 of 2" in first and "page=2" in first and "u59" in first
    _, second = _get(admin, "/audit/user", page="2")
    assert "Page 2 of 2" in second and "u59" not in second
    status, _ = _get(admin, "/audit/user", page="zero")
    assert status == 400


def test_who_may_read_the_audit(services: Services, site: tuple[World, int]) -> None:
    world, port = site
    status, page = _get(browser(services, port, world.auditor), "/audit/resource")
    assert status == 200 and "web-01/root" in page
    assert "zz-hidden-9" not in page and "db-secret-7/dba" not in page
    assert _get(browser(services, port, world.user), "/audit/resource")[0] == 403
    assert _get(browser(services, port, world.pwadmin), "/audit/verify")[0] == 403
    anon = browser(services, port, None).get("/audit/user")
    assert anon.status == 302 and anon.headers["location"].startswith("/login")


def test_verify_page_after_tampering(services: Services, site: tuple[World, int]) -> None:
    world, port = site
    admin = browser(services, port, world.admin)
    status, page = _get(admin, "/audit/verify")
    assert status == 200 and "Intact." in page

    with services.store.transaction() as s:  # reorder 9 and 10
        s.execute(update(AuditRow).where(AuditRow.id == 9).values(id=99999))
        s.execute(update(AuditRow).where(AuditRow.id == 10).values(id=9))
        s.execute(update(AuditRow).where(AuditRow.id == 99999).values(id=10))
    _, page = _get(admin, "/audit/verify")
    assert "Broken." in page and "broken at row 9" in page and "reordered" in page

    with services.store.transaction() as s:
        s.execute(delete(AuditRow).where(AuditRow.id == 6))
    _, page = _get(admin, "/audit/verify")
    assert "broken at row 6" in page and "Row #6 is no longer in the database." in page

    with services.store.transaction() as s:
        s.execute(update(AuditRow).where(AuditRow.id == 3).values(source_ip="203.0.113.99"))
    _, page = _get(admin, "/audit/verify")
    assert "broken at row 3" in page and "altered" in page and "203.0.113.99" in page
    # an auditor learns the state, but not the content of a row they may not read
    _, page = _get(browser(services, port, world.auditor), "/audit/verify")
    assert "broken at row 3" in page and "203.0.113.99" not in page

    if services.store.engine.dialect.name == "sqlite":  # PostgreSQL's types refuse this
        # a value the node cannot read back: the listings still show every other row
        row_id = 2  # before the rows broken above: the first broken row now
        with services.store.engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET ts = 'garbage' WHERE id = :i"), {"i": row_id})
        for category in ("resource", "user"):
            for args in ({}, {"from": "2000-01-01"}, {"format": "csv"}):
                status, page = _get(admin, f"/audit/{category}", **args)
                assert status == 200, (category, args)
        pages = _get(admin, "/audit/user")[1] + _get(admin, "/audit/resource")[1]
        assert f'<td class="num">{row_id}</td>' in pages and "unreadable" in pages
        assert '<td class="num">1</td>' in pages and '<td class="num">4</td>' in pages
        _, page = _get(admin, "/audit/verify")
        assert f"Row #{row_id} is in the database, but its stored values cannot be read" in page
        assert "no longer in the database" not in page


def _failed_login_ip(
    services: Services, tmp_path: Path, trusted: tuple[str, ...], xff: str | None
) -> str:
    """Log in with a wrong password through the page; return the audited source IP."""
    configured = dataclasses.replace(
        services, settings=dataclasses.replace(services.settings, trusted_proxies=trusted)
    )
    with serving(configured, tmp_path / "tls-xff") as port:
        b = browser(configured, port, None)
        body = urllib.parse.urlencode(
            {"username": "nobody", "password": "wrong", "_xsrf": b.xsrf()}
        ).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if xff is not None:
            headers["X-Forwarded-For"] = xff
        assert b.request("POST", "/login", body=body, headers=headers).status == 401
    rows = services.audit_query.search(None, AuditFilter(operation="failed login")).entries
    return rows[0].source_ip


def test_x_forwarded_for_only_from_trusted_proxies(services: Services, tmp_path: Path) -> None:
    # no trusted proxy configured: the header is ignored
    assert _failed_login_ip(services, tmp_path, (), "203.0.113.5") == "127.0.0.1"
    # from a trusted proxy: the client it reports
    assert _failed_login_ip(services, tmp_path, ("127.0.0.1/32",), "203.0.113.5") == "203.0.113.5"
    # a client-supplied hop before the proxy's own entry cannot spoof the address
    spoofed = "10.66.66.66, 203.0.113.5"
    assert _failed_login_ip(services, tmp_path, ("127.0.0.0/8",), spoofed) == "203.0.113.5"
    # a chain of trusted proxies: the right-most untrusted hop
    chain = "198.51.100.1, 203.0.113.5"
    assert _failed_login_ip(services, tmp_path, ("127.0.0.1", "203.0.113.0/24"), chain) == (
        "198.51.100.1"
    )
    # garbage in the header: the proxy's own address, never the garbage
    assert _failed_login_ip(services, tmp_path, ("127.0.0.1",), "<script>") == "127.0.0.1"
    # a proxy that is not trusted cannot set it
    assert _failed_login_ip(services, tmp_path, ("192.0.2.0/24",), "203.0.113.5") == "127.0.0.1"
    # an IPv4 address written as IPv6 is that address: trusted, and recorded as IPv4
    mapped = "1.2.3.4, ::ffff:203.0.113.5"
    assert _failed_login_ip(services, tmp_path, ("127.0.0.1", "203.0.113.0/24"), mapped) == (
        "1.2.3.4"
    )
    assert _failed_login_ip(services, tmp_path, ("127.0.0.1",), "::ffff:198.51.100.7") == (
        "198.51.100.7"
    )
    zoned = "fe80::7%" + "z" * 80  # the zone is the sender's interface: not recorded
    assert _failed_login_ip(services, tmp_path, ("127.0.0.1",), zoned) == "fe80::7"
