"""The vault console through its forms, as a browser would drive it (real app, real
services, SQLite): resources and accounts, viewing and copying passwords with a reason,
policy enforcement, history, trash, users, groups, sharing, transfer; bad input keeps
what was typed; an XSS payload in every free-text field renders inert on every page."""

from __future__ import annotations

import html
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from node.auth import SessionUser
from node.errors import AuthenticationError
from node.roles import Role
from node.services import Services
from node.store.models import AuditRow
from node.vault import NewAccount, NewResource
from tests.integration.live_app import Browser, add_user, browser_for, first_admin, live_app
from web.app import route_table
from web.base import SESSION_COOKIE

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
RAW_MARKERS = ("<script>alert", "<img src=x onerror")


@dataclass
class Console:
    services: Services
    port: int
    admin: SessionUser

    def browser(self, user: SessionUser | None = None) -> Browser:
        return browser_for(self.services, self.port, user or self.admin)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp: Path = tmp_path_factory.mktemp("console")
    with live_app(tmp) as (services, port):
        yield Console(services, port, first_admin(services))


def _location_id(resp_location: str) -> int:
    match = re.search(r"/(\d+)$", resp_location)
    assert match, resp_location
    return int(match.group(1))


def _flash(b: Browser, path: str) -> str:
    """Follow a redirect and return the page's flash message."""
    page = b.get(path).text
    match = re.search(r'<p class="(?:notice|error) flash"[^>]*>(.*?)</p>', page, re.S)
    return html.unescape(match.group(1)) if match else ""


def _audit(services: Services, operation: str) -> list[AuditRow]:
    with services.store.sessions() as s:
        return list(s.scalars(select(AuditRow).where(AuditRow.operation == operation)))


def test_resource_account_and_password_flow(console: Console) -> None:
    b = console.browser()
    resp = b.post(
        "/resources/new",
        {
            "name": "db-prod-1",
            "dns_name": "db1.example.org",
            "resource_type": "PostgreSQL",
            "department": "Finance",
            "account_username": "postgres",
            "account_password": "Initial-pw-2024!",
            "account_confirm": "Initial-pw-2024!",
        },
    )
    assert resp.status == 302
    rid = _location_id(resp.headers["location"])
    assert "Resource 'db-prod-1' added with its first account." in _flash(b, f"/resources/{rid}")
    listing = b.get("/resources?q=prod").text
    assert "db-prod-1" in listing and "PostgreSQL" in listing
    assert "db-prod-1" not in b.get("/resources?q=nomatch").text
    detail = b.get(f"/resources/{rid}").text
    aid = int(re.search(r'href="/accounts/(\d+)"', detail).group(1))  # type: ignore[union-attr]

    # Reason required by the setting: refused without, shown once with.
    assert (
        b.post("/settings", {"password_reason": "required", "default_policy_id": "1"}).status == 302
    )
    refused = b.post(f"/accounts/{aid}/view", {"reason": ""})
    assert refused.status == 400 and "a reason is required" in refused.text
    assert "Initial-pw-2024!" not in refused.text
    shown = b.post(f"/accounts/{aid}/view", {"reason": "monthly check"})
    assert shown.status == 200 and "Initial-pw-2024!" in shown.text
    assert "no-store" in shown.headers["cache-control"]
    copied = b.post(f"/accounts/{aid}/copy", {"reason": "deploy"})
    assert 'class="secret concealed">Initial-pw-2024!<' in copied.text
    assert 'data-copy-from="secret"' in copied.text and "/static/copy.js" in copied.text
    rows = _audit(console.services, "view password") + _audit(console.services, "copy password")
    assert {(r.operation, r.reason, r.result) for r in rows} >= {
        ("view password", "monthly check", "success"),
        ("copy password", "deploy", "success"),
    }
    assert all(r.result == "failure" for r in rows if not r.reason)
    b.post("/settings", {"password_reason": "optional", "default_policy_id": "1"})

    # A custom policy on the account; a password that breaks it is refused with the rule.
    resp = b.post(
        "/policies/new",
        {
            "name": "Twelve",
            "min_length": "12",
            "max_length": "40",
            "require_digit": "on",
            "no_reuse_last": "2",
        },
    )
    pid = _location_id(resp.headers["location"])
    edit = b.post(
        f"/accounts/{aid}/edit",
        {"username": "postgres", "notes": "primary", "password_policy_id": str(pid)},
    )
    assert edit.status == 302
    weak = b.post(f"/accounts/{aid}/password", {"new": "short1", "confirm": "short1"})
    assert weak.status == 400
    assert "password policy &#x27;Twelve&#x27;: at least 12 characters are required" in weak.text
    nodigit = b.post(
        f"/accounts/{aid}/password",
        {"new": "no-digits-here-at-all", "confirm": "no-digits-here-at-all"},
    )
    assert "must contain a digit" in nodigit.text
    reuse = b.post(
        f"/accounts/{aid}/password", {"new": "Initial-pw-2024!", "confirm": "Initial-pw-2024!"}
    )
    assert "must not reuse" in reuse.text
    ok = b.post(
        f"/accounts/{aid}/password", {"new": "Second-pw-2025x", "confirm": "Second-pw-2025x"}
    )
    assert ok.status == 302
    assert "Password changed for 'postgres'." in _flash(b, f"/accounts/{aid}")
    gen = b.post(f"/accounts/{aid}/password", {"generate": "on"})
    assert gen.status == 302
    assert "generated" in _flash(b, f"/accounts/{aid}")
    history = b.get(f"/accounts/{aid}/history").text
    assert history.count("<tr><td>") == 3 and "Second-pw-2025x" not in history

    # The built-in policies are read-only.
    builtin = b.get("/policies/1").text
    assert "built-in, read-only" in builtin and "<fieldset disabled" in builtin

    # Trash: delete, restore, delete, purge.
    assert b.post(f"/resources/{rid}/delete").status == 302
    assert b.get(f"/resources/{rid}").status == 404
    assert "db-prod-1" in b.get("/trash").text
    assert b.post(f"/trash/{rid}/restore").status == 302
    assert b.get(f"/resources/{rid}").status == 200
    b.post(f"/resources/{rid}/delete")
    assert 'name="confirm" value="1" required' in b.get("/trash").text
    # Purging cannot be undone: without the box ticked, nothing is purged.
    for confirm in ({}, {"confirm": ""}, {"confirm": "on"}):
        unconfirmed = b.post(f"/trash/{rid}/purge", confirm)
        assert unconfirmed.status == 400 and "The resource was not purged: tick" in (
            unconfirmed.text
        )
        assert "db-prod-1" in unconfirmed.text and not _audit(console.services, "purge resource")
    assert b.post(f"/trash/{rid}/purge", {"confirm": "1"}).status == 302
    assert "db-prod-1" not in b.get("/trash").text


def test_bad_input_keeps_what_was_typed(console: Console) -> None:
    b = console.browser()
    long_name = "n" * 300
    resp = b.post(
        "/resources/new", {"name": long_name, "department": "Kept Department", "location": "Rack 7"}
    )
    assert resp.status == 400
    assert "name is too long (at most 256 characters)" in resp.text
    assert 'value="Kept Department"' in resp.text and 'value="Rack 7"' in resp.text
    b.post("/resources/new", {"name": "dup-box"})
    dup = b.post("/resources/new", {"name": "dup-box", "location": "Second"})
    assert dup.status == 409 and "exists already" in dup.text and 'value="Second"' in dup.text
    mismatch = b.post(
        "/resources/new",
        {
            "name": "x-box",
            "account_username": "root",
            "account_password": "a",
            "account_confirm": "b",
        },
    )
    assert mismatch.status == 400 and "confirmation differ" in mismatch.text
    assert b.get("/resources?q=x-box").text.count("x-box</a>") == 0
    bad_policy = b.post("/policies/new", {"name": "Bad", "min_length": "9", "max_length": "3"})
    assert bad_policy.status == 400 and "maximum length" in bad_policy.text
    assert 'value="Bad"' in bad_policy.text
    assert b.get("/resources/99999999999999999999").status == 404


def test_users_groups_sharing_and_transfer(console: Console) -> None:
    b = console.browser()
    created = b.post(
        "/users/new", {"username": "Carol", "full_name": "Carol C", "role": "password_user"}
    )
    assert created.status == 200
    otp = re.search(r'id="otp" class="secret">([^<]+)<', created.text).group(1)  # type: ignore[union-attr]
    uid = int(re.search(r'href="/users/(\d+)"', created.text).group(1))  # type: ignore[union-attr]
    assert otp not in b.get(f"/users/{uid}").text
    # Carol logs in with the one-time password and must change it.
    carol = Browser(console.port)
    login = carol.post("/login", {"username": "carol", "password": otp})
    assert login.status == 302 and login.headers["location"] == "/change-password"
    assert carol.get("/resources").headers["location"] == "/change-password"
    carol.post(
        "/change-password",
        {"current": otp, "new": "carols-own-password", "confirm": "carols-own-password"},
    )
    assert carol.get("/resources").status == 200
    assert carol.get("/users").status == 403

    # A resource shared with a group Carol is in, then with Carol herself.
    rid = _location_id(
        b.post(
            "/resources/new",
            {
                "name": "web-1",
                "account_username": "www",
                "account_password": "Www-pw-1234",
                "account_confirm": "Www-pw-1234",
            },
        ).headers["location"]
    )
    assert "web-1" not in carol.get("/resources").text
    gid = _location_id(
        b.post("/user-groups", {"name": "ops", "description": "Ops"}).headers["location"]
    )
    assert b.post(f"/user-groups/{gid}", {"op": "add", "user_id": str(uid)}).status == 302
    assert "carol" in b.get(f"/user-groups/{gid}").text
    share = b.post(f"/resources/{rid}/share", {"principal": f"group:{gid}", "access": "view"})
    assert share.status == 302
    page = b.get(f"/resources/{rid}/share").text
    assert "ops" in page and 'value="view" selected' in page
    assert "web-1" in carol.get("/resources").text
    bad = b.post(f"/resources/{rid}/share", {"principal": f"user:{uid}", "access": "owner"})
    assert bad.status == 400 and "View, Modify or Full" in bad.text
    b.post(f"/resources/{rid}/share", {"principal": f"group:{gid}", "remove": "1"})
    assert "web-1" not in carol.get("/resources").text

    # Roles, disabling, Super Administrator scope.
    assert b.post(f"/users/{uid}/role", {"role": "password_administrator"}).status == 302
    assert "Password Administrator" in _flash(b, f"/users/{uid}")
    assert b.post(f"/users/{uid}/super-admin", {"grant": "1"}).status == 302
    assert "Super Administrator" in b.get(f"/users/{uid}").text
    b.post(f"/users/{uid}/super-admin", {"grant": "0"})
    assert not console.services.users.get_user(console.admin, uid).super_admin
    dave = add_user(console.services, console.admin, "dave", Role.ADMINISTRATOR)
    own = console.browser(dave).post(f"/users/{dave.id}/super-admin", {"grant": "1"})
    assert own.status == 403
    assert "cannot grant the Super Administrator scope to yourself" in own.text
    assert not console.services.users.get_user(console.admin, dave.id).super_admin
    # dave, without the scope, gets no new login password for the scoped admin
    taken = console.browser(dave).post(f"/users/{console.admin.id}/reset-password", {})
    assert taken.status == 403 and "only a Super Administrator" in taken.text
    assert "one-time" not in taken.text.lower()
    assert b.get("/").status == 200  # the admin's session was not ended either
    for path, field in (
        (f"/users/{uid}/status", "enabled"),
        (f"/users/{uid}/super-admin", "grant"),
    ):
        odd = b.post(path, {field: "yes"})  # neither 0 nor 1: refused, not read as 0
        assert odd.status == 400 and f"{field} must be 0 or 1" in odd.text
    assert console.services.users.get_user(console.admin, uid).status == "active"
    assert b.post(f"/users/{uid}/role", {"role": "PASSWORD_ADMINISTRATOR"}).status == 302
    assert "is now Password Administrator." in _flash(b, f"/users/{uid}")
    assert b.post(f"/users/{uid}/status", {"enabled": "0"}).status == 302
    assert carol.get("/resources").headers["location"] == "/login?next=%2Fresources"
    b.post(f"/users/{uid}/status", {"enabled": "1"})

    # Transfer everything admin owns to carol (now an administrator type), then back.
    moved = b.post("/transfer", {"from": str(console.admin.id), "to": str(uid)})
    assert moved.status == 302 and "Transferred" in _flash(b, "/transfer")
    to_user = b.post("/transfer", {"from": str(uid), "to": str(uid)})
    assert to_user.status == 400
    b.post("/transfer", {"from": str(uid), "to": str(console.admin.id)})
    assert b.post(f"/users/{uid}/delete").status == 302
    assert b.get(f"/users/{uid}").status == 404


def test_what_an_api_user_owns_is_transferred_from_the_console(console: Console) -> None:
    """An application creates resources through the REST API, so it owns them: the
    transfer page offers it as the user who gives, else it could never be deleted."""
    svc = console.services
    bot = svc.api_tokens.add_api_user("deploy-bot", Role.PASSWORD_ADMINISTRATOR, "t", "::1")
    actor = SessionUser(bot.user_id, bot.username, bot.role, False, False)
    svc.vault.create_resource(actor, "::1", NewResource(name="bot-made-1"))
    b = console.browser()
    page = b.get(f"/transfer?from={bot.user_id}").text
    assert f'<option value="{bot.user_id}" selected>deploy-bot' in page
    assert "API user" in page
    refused = b.post(f"/users/{bot.user_id}/delete")
    assert refused.status == 302 and "transfer ownership first" in _flash(
        b, refused.headers["location"]
    )
    moved = b.post("/transfer", {"from": str(bot.user_id), "to": str(console.admin.id)})
    assert moved.status == 302 and "Transferred 1 resources" in _flash(b, "/transfer")
    assert b.post(f"/users/{bot.user_id}/delete").status == 302
    assert b.get(f"/users/{bot.user_id}").status == 404


def _fill(pattern: str, value: str) -> str | None:
    path = re.sub(r"\((?:\?P<\w+>)?[^()]*\)", value, pattern)
    return path if re.fullmatch(pattern, path) else None


def test_xss_payload_in_every_free_text_field_renders_inert(console: Console) -> None:
    b = console.browser()
    svc = console.services
    for kind in ("resource", "account", "user"):
        svc.users.define_field(console.admin, "127.0.0.1", kind, "Note <b>x</b>", "text")
    assert b.post("/resource-types", {"name": XSS[:64]}).status == 302
    rid = _location_id(
        b.post(
            "/resources/new",
            {
                "name": XSS,
                "resource_type": XSS[:64],
                "description": XSS,
                "department": XSS[:128],
                "location": XSS[:128],
                "url": "HTTPS://example.org/<script>alert(1)</script>",
                "domain_name": XSS,
                "attr_Note <b>x</b>": XSS,
                "account_username": XSS,
                "account_password": "Xss-pw-12345",
                "account_confirm": "Xss-pw-12345",
            },
        ).headers["location"]
    )
    aid = int(re.search(r'href="/accounts/(\d+)"', b.get(f"/resources/{rid}").text).group(1))  # type: ignore[union-attr]
    resource_page = b.get(f"/resources/{rid}").text
    assert "<dt>Note &lt;b&gt;x&lt;/b&gt;</dt><dd>&lt;script&gt;alert" in resource_page
    assert '<a href="HTTPS://example.org/&lt;script&gt;alert' in resource_page
    # a DNS name or a URL that would run something is refused, with what was typed kept
    for field, value in (("dns_name", XSS), ("url", "javascript:alert(1)")):
        refused = b.post(f"/resources/{rid}/edit", {"name": "kept-name", field: value})
        assert refused.status == 400 and 'value="kept-name"' in refused.text
        assert ("DNS name or IP must be" if field == "dns_name" else "URL must start") in (
            refused.text
        )
    b.post(f"/accounts/{aid}/edit", {"username": XSS, "notes": XSS, "attr_Note <b>x</b>": XSS})
    account_page = b.get(f"/accounts/{aid}").text
    assert "<dt>Note &lt;b&gt;x&lt;/b&gt;</dt><dd>&lt;script&gt;alert" in account_page
    uid = int(
        re.search(  # type: ignore[union-attr]
            r'href="/users/(\d+)"',
            b.post(
                "/users/new",
                {
                    "username": "mallory",
                    "full_name": XSS,
                    "role": "password_user",
                    "attr_Note <b>x</b>": XSS,
                },
            ).text,
        ).group(1)
    )
    user_page = b.get(f"/users/{uid}").text
    assert 'name="attr_Note &lt;b&gt;x&lt;/b&gt;" value="&lt;script&gt;alert' in user_page
    gid = _location_id(
        b.post("/user-groups", {"name": XSS, "description": XSS}).headers["location"]
    )
    pid = _location_id(
        b.post("/policies/new", {"name": XSS, "min_length": "8", "max_length": "20"}).headers[
            "location"
        ]
    )
    b.post(f"/resources/{rid}/share", {"principal": f"group:{gid}", "access": "view"})
    rgid = _location_id(b.post("/groups", {"name": XSS, "description": XSS}).headers["location"])
    assert b.post(f"/groups/{rgid}", {"op": "add", "resource_id": str(rid)}).status == 302
    b.post(f"/groups/{rgid}/share", {"principal": f"group:{gid}", "access": "view"})
    b.post(f"/accounts/{aid}/view", {"reason": XSS})
    shown = b.post(f"/accounts/{aid}/view", {"reason": "again"}).text
    assert "Xss-pw-12345" in shown and not any(m in shown for m in RAW_MARKERS)
    # A failed form echoes the payload back escaped too.
    echo = b.post("/resources/new", {"name": XSS, "location": XSS[:128]})
    assert echo.status == 409 and not any(m in echo.text for m in RAW_MARKERS)

    ids = sorted({rid, aid, uid, gid, pid, rgid})
    checked = 0
    escaped_seen = 0
    for pattern, _handler in route_table():
        if pattern.startswith("/restapi") or getattr(_handler, "get", None) is None:
            continue
        paths = [pattern] if "(" not in pattern else [_fill(pattern, str(i)) for i in ids]
        for path in paths:
            if path is None or not re.fullmatch(pattern, path):
                continue
            resp = b.get(path)
            assert resp.status < 500, path
            leaked = [m for m in RAW_MARKERS if m in resp.text]
            assert not leaked, f"{path} renders {leaked}"
            assert 'href="javascript:' not in resp.text, path
            checked += 1
            escaped_seen += "&lt;script&gt;alert" in resp.text
    assert checked >= 20 and escaped_seen >= 8


def test_resource_groups_and_group_shares(console: Console) -> None:
    b = console.browser()
    erin = add_user(console.services, console.admin, "erin", Role.PASSWORD_USER)
    e = console.browser(erin)
    rid = _location_id(b.post("/resources/new", {"name": "grouped-box"}).headers["location"])
    gid = _location_id(b.post("/groups", {"name": "lab", "description": "Lab"}).headers["location"])
    assert b.post(f"/groups/{gid}", {"op": "add", "resource_id": str(rid)}).status == 302
    assert "grouped-box" in b.get(f"/groups/{gid}").text
    assert "grouped-box" not in e.get("/resources").text
    assert e.get(f"/groups/{gid}").status == 404
    assert e.post("/groups", {"name": "mine"}).status == 403
    shared = b.post(f"/groups/{gid}/share", {"principal": f"user:{erin.id}", "access": "view"})
    assert shared.status == 302
    assert "grouped-box" in e.get("/resources").text
    assert "lab" in e.get("/groups").text and "grouped-box" in e.get(f"/groups/{gid}").text
    assert 'name="op" value="add"' not in e.get(f"/groups/{gid}").text
    bad = b.post(f"/groups/{gid}", {"op": "add", "resource_id": "987654"})
    assert bad.status == 404
    assert b.post(f"/groups/{gid}", {"op": "delete"}).status == 302
    assert "grouped-box" not in e.get("/resources").text
    assert b.get(f"/resources/{rid}").status == 200


def test_share_levels_decide_what_a_password_user_may_do(console: Console) -> None:
    b = console.browser()
    vic = add_user(console.services, console.admin, "vic", Role.PASSWORD_USER)
    v = console.browser(vic)
    rid = _location_id(
        b.post(
            "/resources/new",
            {
                "name": "levels-box",
                "account_username": "svc",
                "account_password": "Svc-pw-12345",
                "account_confirm": "Svc-pw-12345",
            },
        ).headers["location"]
    )
    aid = int(re.search(r'href="/accounts/(\d+)"', b.get(f"/resources/{rid}").text).group(1))  # type: ignore[union-attr]
    assert v.get(f"/accounts/{aid}").status == 404
    b.post(f"/accounts/{aid}/share", {"principal": f"user:{vic.id}", "access": "view"})
    page = v.get(f"/accounts/{aid}").text
    assert "View password" in page and "Change password" not in page and "Share" not in page
    refused = v.post(
        f"/accounts/{aid}/password", {"new": "Other-pw-12345", "confirm": "Other-pw-12345"}
    )
    assert refused.status == 403 and "does not allow changing this password" in refused.text
    assert "Svc-pw-12345" in v.post(f"/accounts/{aid}/view", {}).text
    b.post(f"/accounts/{aid}/share", {"principal": f"user:{vic.id}", "access": "modify"})
    assert "Change password" in v.get(f"/accounts/{aid}").text
    changed = v.post(
        f"/accounts/{aid}/password", {"new": "Other-pw-12345", "confirm": "Other-pw-12345"}
    )
    assert changed.status == 302
    assert "Other-pw-12345" in b.post(f"/accounts/{aid}/view", {}).text
    assert v.get(f"/accounts/{aid}/share").status == 403  # Modify: not to pass on
    assert v.get(f"/resources/{rid}/edit").status == 403
    # Full may re-share, a Password User's too
    b.post(f"/accounts/{aid}/share", {"principal": f"user:{vic.id}", "access": "full"})
    assert "Share" in v.get(f"/accounts/{aid}").text
    wes = add_user(console.services, console.admin, "wes", Role.PASSWORD_USER)
    dialog = v.get(f"/accounts/{aid}/share")
    assert dialog.status == 200 and "wes" in dialog.text
    passed = v.post(f"/accounts/{aid}/share", {"principal": f"user:{wes.id}", "access": "view"})
    assert passed.status == 302
    assert "Other-pw-12345" in console.browser(wes).post(f"/accounts/{aid}/view", {}).text
    assert v.get(f"/resources/{rid}/edit").status == 403


def _account_asking_a_ticket(b: Browser, resource: str) -> int:
    """A new resource whose one account, root, asks for a ticket id to show its password."""
    rid = _location_id(
        b.post(
            "/resources/new",
            {
                "name": resource,
                "account_username": "root",
                "account_password": "Root-pw-12345",
                "account_confirm": "Root-pw-12345",
            },
        ).headers["location"]
    )
    aid = int(re.search(r'href="/accounts/(\d+)"', b.get(f"/resources/{rid}").text).group(1))  # type: ignore[union-attr]
    b.post(f"/accounts/{aid}/edit", {"username": "root", "ticket_required": "on"})
    return aid


def test_ticket_id_and_over_long_reason(console: Console) -> None:
    b = console.browser()
    aid = _account_asking_a_ticket(b, "ticket-box")
    page = b.get(f"/accounts/{aid}").text
    assert 'name="ticket" maxlength="128" required' in page
    no_ticket = b.post(f"/accounts/{aid}/copy", {"reason": "r"})
    assert no_ticket.status == 400 and "a ticket id is required" in no_ticket.text
    assert "Root-pw-12345" not in no_ticket.text
    too_long = b.post(f"/accounts/{aid}/view", {"reason": "r" * 1025, "ticket": "T-1"})
    assert too_long.status == 400 and "reason is too long" in too_long.text
    ok = b.post(f"/accounts/{aid}/view", {"reason": "r", "ticket": "T-1"})
    assert ok.status == 200 and "Root-pw-12345" in ok.text
    rows = _audit(console.services, "view password")
    assert any(r.detail == "ticket T-1" and r.account_id == aid for r in rows)
    # a change asks for what a view asks for
    b.post(
        f"/accounts/{aid}/edit",
        {"username": "root", "ticket_required": "on", "reason_required": "on"},
    )
    form = b.get(f"/accounts/{aid}/password").text
    assert 'name="reason" maxlength="1024" required' in form
    assert 'name="ticket" maxlength="128" required' in form
    new = {"new": "Root-pw-67890", "confirm": "Root-pw-67890"}
    no_reason = b.post(f"/accounts/{aid}/password", {**new, "ticket": "T-2"})
    assert no_reason.status == 400 and "a reason is required to change" in no_reason.text
    no_ticket = b.post(f"/accounts/{aid}/password", {**new, "reason": "rotation"})
    assert no_ticket.status == 400 and "a ticket id is required to change" in no_ticket.text
    assert "Root-pw-12345" in b.post(f"/accounts/{aid}/view", {"reason": "r", "ticket": "T-1"}).text
    done = b.post(f"/accounts/{aid}/password", {**new, "reason": "rotation", "ticket": "T-2"})
    assert done.status == 302
    assert "Root-pw-67890" in b.post(f"/accounts/{aid}/view", {"reason": "r", "ticket": "T-1"}).text
    change = _audit(console.services, "change password")[-1]
    assert (change.account_id, change.reason) == (aid, "rotation (ticket T-2)")


def test_new_account_with_a_generated_password(console: Console) -> None:
    b = console.browser()
    rid = _location_id(b.post("/resources/new", {"name": "gen-box"}).headers["location"])
    strong = next(
        p for p in console.services.policies.list_policies(console.admin) if p.name == "Strong"
    )
    resp = b.post(
        f"/resources/{rid}/accounts/new",
        {"username": "gen", "generate": "on", "password_policy_id": str(strong.id)},
    )
    assert resp.status == 302
    assert "with a generated password" in _flash(b, resp.headers["location"])
    aid = _location_id(resp.headers["location"])
    shown = b.post(f"/accounts/{aid}/view", {}).text
    password = html.unescape(re.search(r'id="secret" class="secret">([^<]+)<', shown).group(1))  # type: ignore[union-attr]
    assert len(password) >= 12
    assert re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
    assert re.search(r"\d", password) and re.search(r"[^A-Za-z0-9]", password)
    # Without generate, the password is needed.
    empty = b.post(f"/resources/{rid}/accounts/new", {"username": "nopw", "notes": "kept"})
    assert (
        empty.status == 400
        and "must not be empty" in empty.text
        and ">\nkept</textarea>" in empty.text
    )


def _refusals(services: Services, username: str, count: int) -> list[AuditRow]:
    """The user's "refused" audit rows, once there are ``count`` of them: they are
    written off the event loop, after the answer (at most 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in _audit(services, "refused") if r.username == username]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_a_refused_request_is_audited(console: Console) -> None:
    """A request refused for want of permission (403) leaves a user-audit row: who, from
    where, the method and path (no query string), and why."""
    pat = add_user(console.services, console.admin, "pat-refused", Role.PASSWORD_USER)
    p = console.browser(pat)
    assert p.post("/users/new", {"username": "evil", "role": "administrator"}).status == 403
    eve = add_user(console.services, console.admin, "eve-admin", Role.ADMINISTRATOR)
    own = console.browser(eve).post(f"/users/{eve.id}/super-admin?x=1", {"grant": "1"})
    assert own.status == 403
    [row] = _refusals(console.services, "pat-refused", 1)
    assert (row.target, row.result, row.category) == ("POST /users/new", "failure", "user")
    assert row.source_ip == "127.0.0.1" and "role" in row.detail
    [grab] = _refusals(console.services, "eve-admin", 1)
    assert grab.target == f"POST /users/{eve.id}/super-admin"  # no query string
    assert "cannot grant the Super Administrator scope to yourself" in grab.detail
    assert "evil" not in {r.username for r in _audit(console.services, "add user")}
    # a form posted by nobody in particular (no session, no XSRF token): the access log only
    nobody = Browser(console.port).request("POST", "/logout", body=b"")
    assert nobody.status == 403
    time.sleep(0.5)
    assert not [r for r in _audit(console.services, "refused") if r.username == ""]


def test_the_add_a_type_form_starts_empty(console: Console) -> None:
    """The type list's loop variable once filled the "Add a type" field with the last type
    listed (a trap: submitting it added a duplicate)."""
    page = console.browser().get("/resource-types").text
    assert "Windows Domain" in page
    [field] = re.findall(r'<input name="name"[^>]*>', page)
    assert 'value=""' in field


def test_login_goes_on_to_the_page_asked_for_on_this_site_only(console: Console) -> None:
    """A page asked for while logged out is where the login goes on to; a ``next`` that
    names another site (or is no path) goes home instead."""
    add_user(console.services, console.admin, "nina-next", Role.PASSWORD_USER)
    login = {"username": "nina-next", "password": "nina-next-own-password"}
    anon = Browser(console.port)
    asked = anon.get("/resources?q=web")
    assert asked.headers["location"] == "/login?next=%2Fresources%3Fq%3Dweb"
    assert 'name="next" value="/resources?q=web"' in anon.get(asked.headers["location"]).text
    landed = anon.post("/login", {**login, "next": "/resources?q=web"})
    assert landed.status == 302 and landed.headers["location"] == "/resources?q=web"
    for elsewhere in ("//evil.example/x", "/\\evil.example", "https://evil.example/", "x"):
        other = Browser(console.port)
        form = other.get("/login?" + urllib.parse.urlencode({"next": elsewhere})).text
        assert 'name="next" value="/"' in form, elsewhere
        sent = other.post("/login", {**login, "next": elsewhere})
        assert sent.status == 302 and sent.headers["location"] == "/", elsewhere


def test_a_locked_account_shows_on_its_page_until_reset(console: Console) -> None:
    services = console.services
    lou = add_user(services, console.admin, "lou-locked", Role.PASSWORD_USER)
    b = console.browser()
    assert "Locked after failed logins" not in b.get(f"/users/{lou.id}").text
    for _ in range(services.auth.lockout_threshold):
        with pytest.raises(AuthenticationError):
            services.auth.authenticate("lou-locked", "wrong-password", "127.0.0.1")
    page = b.get(f"/users/{lou.id}").text
    assert "Locked after failed logins until" in page and "UTC" in page
    assert b.post(f"/users/{lou.id}/reset-password", {}).status == 200
    assert "Locked after failed logins" not in b.get(f"/users/{lou.id}").text


def test_a_resource_s_owner_sees_and_leaves_the_groups_that_reach_it(console: Console) -> None:
    """A group's shares reach its resources: the share dialog shows the owner the groups
    that hold the resource, with their shares, and lets them take it out of one."""
    services, admin = console.services, console.admin
    owner = add_user(services, admin, "grp-owner", Role.PASSWORD_ADMINISTRATOR)
    keeper = add_user(services, admin, "grp-keeper", Role.PASSWORD_ADMINISTRATOR)
    reader = add_user(services, admin, "grp-reader", Role.PASSWORD_USER)
    made = services.vault.create_resource(
        owner, "127.0.0.1", NewResource(name="reach-box"), NewAccount("root", "Reach-pw-123")
    )
    rid = made.resource_id
    gid = services.resource_groups.create_group(keeper, "127.0.0.1", "keepers-shelf")
    services.sharing.share_group(keeper, "127.0.0.1", gid, "modify", user_id=owner.id)
    services.resource_groups.add_resource(owner, "127.0.0.1", gid, rid)
    services.sharing.unshare_group(keeper, "127.0.0.1", gid, user_id=owner.id)
    services.sharing.share_group(keeper, "127.0.0.1", gid, "full", user_id=reader.id)
    as_reader = console.browser(reader)
    assert "Reach-pw-123" in as_reader.post(f"/accounts/{made.account_id}/view", {}).text
    b = console.browser(owner)
    dialog = b.get(f"/resources/{rid}/share").text
    assert "Also reached through resource groups" in dialog
    assert "keepers-shelf" in dialog and "grp-reader (Full)" in dialog
    assert b.get(f"/groups/{gid}").status == 404  # the owner cannot see the group itself
    left = b.post(f"/resources/{rid}/share", {"leave_group": str(gid)})
    assert left.status == 302
    assert "keepers-shelf" not in b.get(f"/resources/{rid}/share").text
    assert as_reader.post(f"/accounts/{made.account_id}/view", {}).status == 404
    # someone who does not own the resource (here with Full on it) sees no such list
    services.sharing.share_resource(owner, "127.0.0.1", rid, "full", user_id=keeper.id)
    assert "Also reached" not in console.browser(keeper).get(f"/resources/{rid}/share").text


def test_a_new_login_password_keeps_this_browser_in_and_ends_the_others(
    console: Console,
) -> None:
    user = add_user(console.services, console.admin, "two-tabs", Role.PASSWORD_USER)
    here, elsewhere = console.browser(user), console.browser(user)
    before = here.cookies[SESSION_COOKIE]
    done = here.post(
        "/change-password",
        {
            "current": "two-tabs-own-password",
            "new": "Two-tabs-new-pw-9",
            "confirm": "Two-tabs-new-pw-9",
        },
    )
    assert done.status == 302 and here.cookies[SESSION_COOKIE] != before
    assert here.get("/resources").status == 200
    gone = elsewhere.get("/resources")
    assert gone.status == 302 and gone.headers["location"].startswith("/login")


def test_custom_fields_with_letters_beyond_ascii(console: Console) -> None:
    """A browser sends a field's name as UTF-8 (tornado reads form keys as Latin-1)."""
    services = console.services
    services.users.define_field(console.admin, "127.0.0.1", "resource", "Numéro", "text")
    b = console.browser()
    made = b.post("/resources/new", {"name": "numbered", "attr_Numéro": "N° 7"})
    assert made.status == 302, made.text[:300]
    rid = _location_id(made.headers["location"])
    view = services.vault.get_resource(console.admin, rid).resource
    assert view.custom_attributes == {"Numéro": "N° 7"}
    assert "N° 7" in b.get(f"/resources/{rid}").text


def test_notes_keep_their_leading_line_breaks_through_an_edit(console: Console) -> None:
    """A browser drops one line break right after <textarea>: the form writes one there,
    so the notes' own survive a plain save."""
    services, admin = console.services, console.admin
    made = services.vault.create_resource(
        admin, "127.0.0.1", NewResource(name="notes-box"), NewAccount("root", "Notes-pw-123")
    )
    assert made.account_id is not None
    from node.vault import AccountChanges

    services.vault.edit_account(
        admin, "127.0.0.1", made.account_id, AccountChanges(notes="\n\nindented")
    )
    b = console.browser()
    form = b.get(f"/accounts/{made.account_id}/edit").text
    shown = re.search(r'<textarea name="notes"[^>]*>(.*?)</textarea>', form, re.S)
    assert shown is not None
    as_browser_reads = html.unescape(shown.group(1)).removeprefix("\n")
    assert as_browser_reads == "\n\nindented"
    saved = b.post(
        f"/accounts/{made.account_id}/edit", {"username": "root", "notes": as_browser_reads}
    )
    assert saved.status == 302
    assert services.vault.get_account(admin, made.account_id).notes == "\n\nindented"


def test_form_limits_are_the_services_limits(console: Console) -> None:
    """The forms' maxlength said 4000 for notes, descriptions and custom attributes; the
    services take 4096 of notes and descriptions and 1024 of an attribute."""
    services, admin = console.services, console.admin
    for kind in ("resource", "account", "user"):
        services.users.define_field(admin, "127.0.0.1", kind, "Limit", "text")
    made = services.vault.create_resource(
        admin, "127.0.0.1", NewResource(name="limits-box"), NewAccount("root", "Limits-pw-123")
    )
    b = console.browser()
    pages = [
        "/resources/new",
        f"/resources/{made.resource_id}/edit",
        f"/accounts/{made.account_id}/edit",
        "/users/new",
    ]
    for path in pages:
        page = b.get(path).text
        assert 'name="attr_Limit" value="" maxlength="1024"' in page, path
        assert 'maxlength="4000"' not in page, path
    assert '<textarea name="description" rows="3" maxlength="4096">' in b.get(pages[0]).text
    assert '<textarea name="notes" rows="3" maxlength="4096">' in b.get(pages[2]).text
    long_notes = "n" * 4096
    saved = b.post(f"/accounts/{made.account_id}/edit", {"username": "root", "notes": long_notes})
    assert saved.status == 302, saved.text[:300]
    assert services.vault.get_account(admin, made.account_id).notes == long_notes


def test_a_resource_type_clash_names_the_type_as_stored(console: Console) -> None:
    refused = console.browser().post("/resource-types", {"name": "linux"})
    assert refused.status == 409
    assert (
        "a resource type named &#x27;Linux&#x27; exists already"
        " (names are unique regardless of case)" in refused.text
    )


def test_deleting_an_account_asks_for_the_box_to_be_ticked(console: Console) -> None:
    """An account has no trash: the delete form carries a required "I understand" box, and
    a request without it deletes nothing."""
    services, admin = console.services, console.admin
    made = services.vault.create_resource(
        admin, "127.0.0.1", NewResource(name="confirm-box"), NewAccount("root", "Confirm-pw-123")
    )
    b = console.browser()
    page = b.get(f"/accounts/{made.account_id}").text
    assert 'name="confirm" value="1" required> I understand the account and its password' in page
    for confirm in ({}, {"confirm": "on"}):
        refused = b.post(f"/accounts/{made.account_id}/delete", confirm)
        assert refused.status == 400
        assert "The account was not deleted: tick &quot;I understand" in refused.text
        assert "Delete account" in refused.text  # the account's page, shown again
    assert services.vault.get_account(admin, made.account_id).username == "root"
    deleted = b.post(f"/accounts/{made.account_id}/delete", {"confirm": "1"})
    assert deleted.status == 302
    assert "Account 'root' deleted." in _flash(b, deleted.headers["location"])
    assert b.get(f"/accounts/{made.account_id}").status == 404


def test_the_move_to_trash_card_says_who_can_bring_a_resource_back(tmp_path: Path) -> None:
    # a node of its own: the module's has no administrator seat left in the licence
    with live_app(tmp_path) as (services, port):
        console = Console(services, port, first_admin(services))
        _trash_card_says_who_can_bring_it_back(console)


def _trash_card_says_who_can_bring_it_back(console: Console) -> None:
    services, admin = console.services, console.admin
    padmin = add_user(services, admin, "trash-padmin", Role.PASSWORD_ADMINISTRATOR)
    own = services.vault.create_resource(padmin, "127.0.0.1", NewResource(name="pa-trash-box"))
    page = console.browser(padmin).get(f"/resources/{own.resource_id}").text
    rule = (
        "go to the trash, where an Administrator with the Super Administrator scope, or its"
        " owner if their role is Administrator, can restore or purge them."
    )
    assert rule in page and "an administrator can restore them" not in page
    assert "Your role does not see the trash: only an Administrator with the Super" in page
    admin_page = console.browser().get(f"/resources/{own.resource_id}").text
    assert rule in admin_page and "Your role does not see the trash" not in admin_page


def test_a_group_offers_the_resources_one_may_add_all_of_them(tmp_path: Path) -> None:
    """The "Add a resource" list offered every visible resource (Full shares included,
    which adding refuses: only the owner groups a resource), and only the first 1000."""
    with live_app(tmp_path) as (services, port):
        admin = first_admin(services)
        padmin = add_user(services, admin, "grouper", Role.PASSWORD_ADMINISTRATOR)
        own = services.vault.create_resource(padmin, "127.0.0.1", NewResource(name="pa-own"))
        shared = services.vault.create_resource(admin, "127.0.0.1", NewResource(name="full-one"))
        services.sharing.share_resource(
            admin, "127.0.0.1", shared.resource_id, "full", user_id=padmin.id
        )
        p = browser_for(services, port, padmin)
        gid = _location_id(p.post("/groups", {"name": "pa-group"}).headers["location"])
        page = p.get(f"/groups/{gid}").text
        offered = re.findall(r'<option value="(\d+)">([^<]*)</option>', page)
        assert offered == [(str(own.resource_id), "pa-own")]
        assert "Only a resource's owner adds it to a group" in page
        assert "Full access" not in page
        assert (
            p.post(f"/groups/{gid}", {"op": "add", "resource_id": str(own.resource_id)}).status
            == 302
        )
        emptied = p.get(f"/groups/{gid}").text
        assert '<select name="resource_id">' not in emptied
        assert "No resource to add: only a resource's owner adds it" in emptied

        # a Super Administrator may group any resource: all are offered, past 1000
        for i in range(1001):
            services.vault.create_resource(admin, "127.0.0.1", NewResource(name=f"zz-{i:04d}"))
        b = browser_for(services, port, admin)
        agid = _location_id(b.post("/groups", {"name": "all"}).headers["location"])
        names = re.findall(r'<option value="\d+">([^<]*)</option>', b.get(f"/groups/{agid}").text)
        assert len(names) == 1003 and names[-1] == "zz-1000" and "pa-own" in names


def test_a_refused_group_edit_keeps_what_was_typed(console: Console) -> None:
    """A duplicate name answered 409 with the old name and description back in the form, as
    if the typing had been lost."""
    b = console.browser()
    for path in ("/groups", "/user-groups"):
        b.post(path, {"name": f"taken{path[1]}"})
        gid = _location_id(
            b.post(path, {"name": f"mine{path[1]}", "description": "old"}).headers["location"]
        )
        refused = b.post(
            f"{path}/{gid}", {"op": "edit", "name": f"TAKEN{path[1]}", "description": "new words"}
        )
        assert refused.status == 409, path
        assert f'name="name" value="TAKEN{path[1]}"' in refused.text, path
        assert 'name="description" value="new words"' in refused.text, path
        assert f"<h1>mine{path[1]}</h1>" in refused.text, path  # the stored name, as it is
        shown = b.get(f"{path}/{gid}").text
        assert f'name="name" value="mine{path[1]}"' in shown and 'value="old"' in shown


def test_an_own_password_policy_can_be_given_up_in_the_edit_forms(console: Console) -> None:
    """The edit forms' first option ("As the resource", "Vault default") takes away the
    account's or the resource's own policy; a form without the field changes nothing."""
    services, admin = console.services, console.admin
    strong = next(p.id for p in services.policies.list_policies(admin) if p.name == "Strong")
    made = services.vault.create_resource(
        admin,
        "127.0.0.1",
        NewResource(name="own-policy-box", password_policy_id=strong),
        NewAccount("root", "Own-policy-pw-1!", password_policy_id=strong),
    )
    assert made.account_id is not None
    aid, rid = made.account_id, made.resource_id
    b = console.browser()

    kept = b.post(f"/accounts/{aid}/edit", {"username": "root", "notes": ""})
    assert kept.status == 302
    assert services.vault.get_account(admin, aid).password_policy_id == strong
    given_up = b.post(
        f"/accounts/{aid}/edit", {"username": "root", "notes": "", "password_policy_id": ""}
    )
    assert given_up.status == 302
    assert services.vault.get_account(admin, aid).password_policy_id is None

    fields = {"name": "own-policy-box", "resource_type": "Generic"}
    assert b.post(f"/resources/{rid}/edit", fields).status == 302
    assert services.vault.get_resource(admin, rid).resource.password_policy_id == strong
    given_up = b.post(f"/resources/{rid}/edit", {**fields, "password_policy_id": ""})
    assert given_up.status == 302
    assert services.vault.get_resource(admin, rid).resource.password_policy_id is None
    assert services.vault.get_account(admin, aid).policy_name == "Low"  # the vault default


def test_a_refused_settings_form_changes_nothing(console: Console) -> None:
    """A default policy that does not exist refuses the whole form: the reason setting
    sent with it is not saved either."""
    services, admin = console.services, console.admin
    b = console.browser()
    assert services.vault.get_settings(admin).password_reason == "optional"
    refused = b.post("/settings", {"password_reason": "required", "default_policy_id": "999999"})
    assert refused.status == 400
    assert services.vault.get_settings(admin).password_reason == "optional"


def test_a_refused_view_or_change_keeps_the_reason_and_ticket_typed(console: Console) -> None:
    """A view refused for a missing ticket id, or a change refused for a mistyped
    confirmation, shows the form again with the reason and ticket id still in it."""
    b = console.browser()
    aid = _account_asking_a_ticket(b, "kept-reason-box")
    no_ticket = b.post(f"/accounts/{aid}/view", {"reason": "night <call> 42"})
    assert no_ticket.status == 400 and "a ticket id is required" in no_ticket.text
    assert 'value="night &lt;call&gt; 42"' in no_ticket.text
    mismatch = b.post(
        f"/accounts/{aid}/password",
        {"new": "Root-pw-67890", "confirm": "Root-pw-6789", "reason": "rotation", "ticket": "T-7"},
    )
    assert mismatch.status == 400 and "confirmation differ" in mismatch.text
    assert 'name="reason" maxlength="1024" value="rotation"' in mismatch.text
    assert 'name="ticket" maxlength="128" required value="T-7"' in mismatch.text
    assert "Root-pw-6789" not in mismatch.text  # the passwords are never sent back
    fresh = b.get(f"/accounts/{aid}/password").text
    assert 'name="reason" maxlength="1024" value=""' in fresh


def test_every_role_finds_how_to_change_its_own_login_password(console: Console) -> None:
    """The header links to /change-password for every role; the page has a way back, and
    a change says it was made."""
    user = add_user(console.services, console.admin, "own-pw-user", Role.PASSWORD_USER)
    b = console.browser(user)
    for path in ("/", "/resources", "/groups"):
        assert 'href="/change-password"' in b.get(path).text
    form = b.get("/change-password").text
    assert '<a href="/">Cancel</a>' in form
    done = b.post(
        "/change-password",
        {"current": "own-pw-user-own-password", "new": "Own-pw-new-12", "confirm": "Own-pw-new-12"},
    )
    assert done.status == 302 and done.headers["location"] == "/"
    assert _flash(b, "/") == "Your login password was changed."


def test_your_access_says_owner_only_to_the_owner(tmp_path: Path) -> None:
    # a node of its own: the module's has no administrator seat left in the licence
    with live_app(tmp_path) as (services, port):
        _your_access_says_owner_only_to_the_owner(Console(services, port, first_admin(services)))


def _your_access_says_owner_only_to_the_owner(console: Console) -> None:
    """A Super Administrator holds owner-level access on what others own: the "Your
    access" lines name the scope, not "Owner", next to the real owner's name."""
    services, admin = console.services, console.admin
    owner = add_user(services, admin, "access-owner", Role.PASSWORD_ADMINISTRATOR)
    created = services.vault.create_resource(
        owner,
        "127.0.0.1",
        NewResource(name="owned-by-another"),
        NewAccount(username="svc", password="Svc-pw-123456!"),
    )
    gid = services.resource_groups.create_group(owner, "127.0.0.1", "group-of-another")
    listing = re.compile(r"owned-by-another</a></td>.*?</tr>", re.S)
    for who, expected in ((admin, "Super Administrator"), (owner, "Owner")):
        b = console.browser(who)
        row = listing.search(b.get("/resources?q=owned-by-another").text)
        assert row and f'<span class="badge">{expected}</span>' in row.group(0)
        resource = b.get(f"/resources/{created.resource_id}").text
        assert f"<dt>Your access</dt><dd>{expected}</dd>" in resource
        assert f'<td><span class="badge">{expected}</span></td>' in resource  # its account
        account = b.get(f"/accounts/{created.account_id}").text
        assert f"<dt>Your access</dt><dd>{expected}</dd>" in account
        assert f"<dt>Your access</dt><dd>{expected}</dd>" in b.get(f"/groups/{gid}").text
        groups = re.search(r"group-of-another</a></td>.*?</tr>", b.get("/groups").text, re.S)
        assert groups and f'<span class="badge">{expected}</span>' in groups.group(0)


def test_an_administrator_s_own_page_offers_no_reset_disable_or_delete(console: Console) -> None:
    """On one's own user page, "Reset login password" ended this very session and showed
    one's own new password as if to pass on to someone else; Disable and Delete always
    failed. The page offers the change of one's own password instead, and a reset of
    oneself posted anyway is refused with nothing changed."""
    b = console.browser()
    me = console.admin.id
    page = b.get(f"/users/{me}").text
    assert f'action="/users/{me}/reset-password"' not in page
    assert f'action="/users/{me}/status"' not in page
    assert f'action="/users/{me}/delete"' not in page
    assert '<a class="button" href="/change-password">Change my login password</a>' in page
    refused = b.post(f"/users/{me}/reset-password", {})
    assert refused.status == 302 and refused.headers["location"] == f"/users/{me}"
    assert "change your login password with My password" in _flash(b, f"/users/{me}")
    assert b.get("/resources").status == 200  # still logged in: the session was not ended
    other = add_user(console.services, console.admin, "not-me", Role.PASSWORD_USER)
    theirs = b.get(f"/users/{other.id}").text
    for action in ("reset-password", "status", "delete"):
        assert f'action="/users/{other.id}/{action}"' in theirs
