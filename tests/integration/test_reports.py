"""The built-in reports and their exports, on SQLite and PostgreSQL: content, who sees
which lines, no secret anywhere, CSV safe against formulas, XML escaped."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import xml.etree.ElementTree as ET  # noqa: S405 - parsing our own output in a test

import pytest
from sqlalchemy import update

from node.audit_query import AuditFilter
from node.errors import PermissionDeniedError, ValidationError
from node.export import Table, to_csv, to_xml
from node.reports import parse_days
from node.services import Services
from node.store.models import Account
from tests.integration.report_world import XSS, World, build_world

IP = "198.51.100.7"
SECRETS = ("Weak-pass1", "aaaa1111", "Adm1n-Str0ng!pass#", "Rep0rt-Str0ng!pw#", "xxxx1")


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


def _column(table: Table, name: str) -> list[object]:
    i = table.columns.index(name)
    return [row[i] for row in table.rows]


def _no_secret(table: Table) -> None:
    blob = to_csv(table) + to_xml(table).decode()
    for secret in SECRETS:
        assert secret not in blob


def test_inventory_for_admin_and_auditor(services: Services, world: World) -> None:
    full = services.reports.run(world.admin2, "inventory", IP)
    assert sorted(set(_column(full, "Resource"))) == ["db-secret-7", "web-01", "zz-hidden-9"]
    assert len(full.rows) == 5
    assert set(_column(full, "Owner")) == {"owner"}
    assert set(_column(full, "Password policy")) == {"Strong", "Low (default)"}
    _no_secret(full)

    mine = services.reports.run(world.auditor, "inventory", IP)
    pairs = {
        (r, a) for r, a in zip(_column(mine, "Resource"), _column(mine, "Account"), strict=True)
    }
    assert pairs == {("web-01", "root"), ("web-01", XSS), ("db-secret-7", "report")}
    _no_secret(mine)
    with pytest.raises(PermissionDeniedError):
        services.reports.run(world.user, "inventory", IP)
    with pytest.raises(ValidationError):
        services.reports.run(world.admin, "passwords", IP)


def test_passwords_older_than_n_days(services: Services, world: World) -> None:
    old = dt.datetime(2020, 1, 1)
    with services.store.transaction() as s:
        s.execute(update(Account).where(Account.id == world.web_root).values(last_changed_at=old))
    now = dt.datetime(2020, 1, 31)
    table = services.reports.run(world.admin, "aged", IP, days=20, now=now)
    assert table.title == "Passwords older than 20 days"
    assert _column(table, "Account") == ["root"] and _column(table, "Password age (days)") == [30]
    assert services.reports.run(world.admin, "aged", IP, days=31, now=now).rows == []
    assert parse_days("") == 90 and parse_days(" 7 ") == 7
    for bad in ("0", "-3", "abc", "99999999"):
        with pytest.raises(ValidationError):
            parse_days(bad)


def test_policy_compliance(services: Services, world: World) -> None:
    table = services.reports.run(world.admin, "compliance", IP)
    by_account = {
        (r[0], r[1]): (r[2], r[3], r[4])
        for r in table.rows  # resource, account -> verdict
    }
    # db-secret-7 follows "Strong": both passwords meet it
    assert by_account[("db-secret-7", "dba")][:2] == ("Strong", "yes")
    # web-01 follows the default policy ("Low"), which "aaaa1111" meets
    assert by_account[("web-01", XSS)][1] == "yes"
    _no_secret(table)
    # make an account break its policy: it is reported with the rule, never the password
    with services.store.sessions() as s:
        strong = s.get(Account, world.db_admin)
        assert strong is not None
        resource_policy = strong.resource.password_policy_id
    with services.store.transaction() as s:
        s.execute(
            update(Account)
            .where(Account.id == world.web_root)
            .values(password_policy_id=resource_policy)
        )
    table = services.reports.run(world.admin, "compliance", IP)
    row = next(r for r in table.rows if r[:2] == ["web-01", "root"])
    assert row[2:4] == ["Strong", "no"]
    assert str(row[4]) == "at least 12 characters are required"  # the one rule it breaks
    _no_secret(table)
    # and much later, the maximum age of 90 days is broken too
    later = services.reports.run(world.admin, "compliance", IP, now=dt.datetime(2099, 1, 1))
    row = next(r for r in later.rows if r[:2] == ["db-secret-7", "dba"])
    assert row[3] == "no" and "maximum age of 90 days" in str(row[4])


def test_users_and_roles(services: Services, world: World) -> None:
    table = services.reports.run(world.auditor, "users", IP)
    roles = dict(zip(_column(table, "Username"), _column(table, "Role"), strict=True))
    assert roles["auditor"] == "Password Auditor" and roles["admin"] == "Administrator"
    assert set(roles) >= {"admin", "admin2", "owner", "auditor", "puser"}
    blob = to_csv(table)
    assert "$argon2" not in blob and "password_hash" not in blob
    # e-mail addresses only for those who manage users
    services.users.add_user(world.admin, IP, "mailer", "password_user", email="m@example.org")
    seen_by_admin = services.reports.run(world.admin, "users", IP)
    assert "m@example.org" in _column(seen_by_admin, "Email")
    by_auditor = services.reports.run(world.auditor, "users", IP)
    assert "Email" not in by_auditor.columns and "m@example.org" not in to_csv(by_auditor)
    # running a report is audited
    rows = services.audit_query.search(world.admin, AuditFilter(operation="run report")).entries
    assert rows[0].username == "auditor" and rows[0].target == "Users and roles"
    assert rows[0].source_ip == IP


def test_sharing_report_visibility(services: Services, world: World) -> None:
    full = services.reports.run(world.admin, "sharing", IP)
    objects = set(_column(full, "Shared object"))
    assert objects == {"web-01", "db-secret-7 / report"}
    assert set(_column(full, "Shared with")) == {"auditor"}
    assert set(_column(full, "Granted by")) == {"owner"}
    services.sharing.share_resource(
        world.pwadmin, IP, world.hidden, "modify", user_id=world.user.id
    )
    assert len(services.reports.run(world.admin, "sharing", IP).rows) == 3
    mine = services.reports.run(world.auditor, "sharing", IP)
    assert "zz-hidden-9" not in set(_column(mine, "Shared object"))
    assert len(mine.rows) == 2
    # a resource in the trash, and its accounts, leave the report with it
    services.vault.delete_resource(world.pwadmin, IP, world.hidden)
    assert "zz-hidden-9" not in set(
        _column(services.reports.run(world.admin, "sharing", IP), "Shared object")
    )


def test_csv_is_formula_safe_and_xml_escaped(services: Services, world: World) -> None:
    table = services.reports.run(world.admin, "inventory", IP)
    parsed = list(csv.reader(io.StringIO(to_csv(table))))
    header, rows = parsed[0], parsed[1:]
    dept = header.index("Department")
    assert {r[dept] for r in rows if r[0] == "web-01"} == {"'=ops"}
    accounts = [r[header.index("Account")] for r in rows]
    assert XSS in accounts  # kept as text, quoted by the CSV writer
    hostile = Table("t", ["a"], [[v] for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok")])
    cells = [r[0] for r in csv.reader(io.StringIO(to_csv(hostile), newline=""))][1:]
    assert cells == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "ok"]
    assert to_csv(Table("n", ["n"], [[-5]])).splitlines()[1] == "-5"  # numbers stay numbers
    # text is quoted, so a spreadsheet splitting at ";" finds no cell that starts a formula
    split = Table("s", ["a", "b"], [["routine;=1+1;check", "T-1;=cmd|' /C calc'!A0;"], [3, "ok"]])
    for row in csv.reader(io.StringIO(to_csv(split), newline=""), delimiter=";"):
        assert not any(c.startswith(("=", "+", "-", "@")) for c in row), row
    read_right = list(csv.reader(io.StringIO(to_csv(split), newline="")))
    assert read_right[1] == ["routine;'=1+1;check", "T-1;'=cmd|' /C calc'!A0;"]
    assert read_right[2] == ["3", "ok"]
    # a break right after a ";" or another break: the cell after the second one is guarded
    # too ("a;<CR>=1" is a cell "a", then a new row whose first cell is "=1")
    stacked = ["a;\r=1+1", "a\r\r=1+1", "a\n\r@SUM(A1)", "\r\r-2", "a;\r\n+3", "x\r\t=4"]
    for written in next(csv.reader(io.StringIO(to_csv(Table("t", stacked)), newline=""))):
        for piece in re.split("[;\r\n]", written):
            assert not piece.startswith(("=", "+", "-", "@", "\t")), (written, piece)

    xml = to_xml(table)
    assert b"<script>" not in xml and b"&lt;script&gt;" in xml
    root = ET.fromstring(xml)  # noqa: S314 - our own output
    names = [f.text for f in root.iter("field") if f.get("name") == "Account"]
    assert XSS in names
    odd = to_xml(Table("x", ["a"], [["bell\x07 and \x00 nul"]]))
    assert ET.fromstring(odd).find("row/field").text == "bell\ufffd and \ufffd nul"  # noqa: S314
    # line breaks as typed in a browser's textarea (CR LF), and a lone CR, read back as written
    breaks = to_xml(Table("x", ["a"], [["one\r\ntwo\rthree\nfour"]]))
    assert ET.fromstring(breaks).find("row/field").text == "one\r\ntwo\rthree\nfour"  # noqa: S314
