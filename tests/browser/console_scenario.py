"""The console scenario the browser test runs, in a real browser (Debian's Chromium
through Playwright) against a real node process: the first administrator logs in with the
one-time password and must change it, adds a Password User, a resource with an account,
and shares it; the user logs in, changes their one-time password and views the password;
the audit page shows the view with the user's address. Screenshots of the main pages go
to test-artifacts/screenshots/.

Run as ``python -m tests.browser.console_scenario TMPDIR`` (tests/browser/test_console.py
runs it in a network namespace of its own); exits non-zero with the failure on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from node.store.models import AuditRow
from tests.helpers import ROOT, NodeProcess, free_port

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "test-artifacts" / "screenshots"
SECRET = "Db-Secret-2025-x"


def new_page(browser: Browser) -> Page:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(15000)
    return page


def watch(page: Page, errors: list[str]) -> None:
    """Collect failed requests and console errors (a CSP violation is one)."""
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in_first_time(page: Page, base: str, username: str, otp: str, new: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", otp)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/change-password")
    page.fill("input[name=current]", otp)
    page.fill("input[name=new]", new)
    page.fill("input[name=confirm]", new)
    page.click("button.primary")
    expect(page).to_have_url(f"{base}/")


LONG_NAME = "long-unbroken-name-" + "x" * 102  # 120 characters, no space


def check_long_names_wrap(page: Page, base: str) -> None:
    """A long unbroken name wraps in the list's cells and the page's heading: it made
    /resources 2491 pixels wide in a 1366-pixel window."""
    page.goto(f"{base}/resources/new")
    page.fill("input[name=name]", LONG_NAME)
    page.fill("input[name=department]", "d" * 100)
    page.click("button.primary")
    expect(page.locator(".flash")).to_contain_text("added")
    long_url = page.url
    for url, name in ((f"{base}/resources", "08b-resources-long-name"), (long_url, "08c-long")):
        page.goto(url)
        width = page.evaluate("document.documentElement.scrollWidth")
        shot(page, name)
        assert width <= 1366, f"{url} is {width} pixels wide in a 1366-pixel window"
        # and within the page's column, not only the window
        overflow = page.evaluate(
            "Math.max(...[...document.querySelectorAll('main table, main h1')].map("
            "e => e.getBoundingClientRect().right)) - "
            "document.querySelector('main').getBoundingClientRect().right"
        )
        assert overflow <= 0, f"{url}: a table or heading sticks out {overflow} pixels"
    # to the trash, where purging it asks for the box to be ticked
    page.goto(long_url)
    page.click("button.danger:has-text('Move to trash')")
    page.goto(f"{base}/trash")
    expect(page.locator("table.list")).to_contain_text(LONG_NAME[:20])
    page.click("button.danger:has-text('Purge for good')")  # the required box stops it
    expect(page).to_have_url(f"{base}/trash")
    expect(page.locator("table.list")).to_contain_text(LONG_NAME[:20])
    shot(page, "08d-trash")
    page.goto(f"{base}/resources")


def scenario(node: NodeProcess, browser: Browser) -> None:
    base = f"https://127.0.0.1:{node.port}"
    errors: list[str] = []

    # The administrator: one-time password, forced change.
    admin = new_page(browser)
    watch(admin, errors)
    admin.goto(f"{base}/login")
    shot(admin, "01-login")
    log_in_first_time(admin, base, "admin", node.initial_password(), "admins-own-password-1")
    shot(admin, "02-home")

    # A Password User; the one-time password is shown once.
    admin.click("nav >> text=Users")
    admin.click("text=Add user")
    admin.fill("input[name=username]", "pat")
    admin.fill("input[name=full_name]", "Pat Example")
    admin.select_option("select[name=role]", "password_user")
    shot(admin, "03-add-user")
    admin.click("button.primary")
    expect(admin.locator("h1")).to_contain_text("User pat added")
    pat_otp = admin.locator("#otp").inner_text().strip()
    assert len(pat_otp) >= 12
    shot(admin, "04-user-one-time-password")

    # A resource with its first account.
    admin.click("nav >> text=Resources")
    admin.click("text=Add resource")
    admin.fill("input[name=name]", "billing-db")
    admin.fill("input[name=dns_name]", "billing-db.internal")
    admin.select_option("select[name=resource_type]", "PostgreSQL")
    admin.fill("input[name=department]", "Finance")
    admin.fill("input[name=location]", "DC1 rack 4")
    admin.fill("textarea[name=description]", "Billing database, primary.")
    admin.fill("input[name=account_username]", "postgres")
    admin.fill("input[name=account_password]", SECRET)
    admin.fill("input[name=account_confirm]", SECRET)
    shot(admin, "05-add-resource")
    admin.click("button.primary")
    expect(admin.locator(".flash")).to_contain_text("Resource 'billing-db' added")
    shot(admin, "06-resource")
    resource_url = admin.url

    # Share it with pat at View.
    admin.click("a.button >> text=Share")
    option = admin.locator("select[name=principal] option", has_text="pat (Pat Example)")
    admin.select_option("select[name=principal]", option.get_attribute("value"))
    admin.select_option("form.card select[name=access]", "view")
    admin.click("form.card button.primary")
    expect(admin.locator(".flash")).to_contain_text("Shared.")
    expect(admin.locator("table.list")).to_contain_text("pat")
    shot(admin, "07-share")
    admin.click("nav >> text=Resources")
    expect(admin.locator("table.list")).to_contain_text("billing-db")
    shot(admin, "08-resources")
    check_long_names_wrap(admin, base)
    for path, name in (
        ("/policies", "09-policies"),
        ("/admin", "10-admin"),
        ("/users", "11-users"),
    ):
        admin.goto(base + path)
        shot(admin, name)
    admin.click("table.list >> text=pat")
    expect(admin.locator("h1")).to_contain_text("pat")
    shot(admin, "11b-user")
    more = (
        ("/settings", "11c-settings"),
        ("/groups", "11d-groups"),
        ("/policies/new", "11e-policy-new"),
        ("/custom-fields", "11f-custom-fields"),
        ("/user-groups", "11g-user-groups"),
        ("/trash", "11h-trash"),
    )
    for path, name in more:
        admin.goto(base + path)
        expect(admin.locator("h1")).to_be_visible()
        shot(admin, name)
    admin.goto(resource_url)
    admin.click("table.list >> text=postgres")
    admin.click("a.button >> text=Change password")
    expected_refusal = len(errors)
    admin.fill("input[name=new]", "abc")
    admin.fill("input[name=confirm]", "abc")
    admin.click("button.primary")
    expect(admin.locator("p.error")).to_contain_text("at least 4 characters are required")
    assert len(errors) == expected_refusal + 2 and "400" in errors[-1]  # the refused form
    del errors[expected_refusal:]
    shot(admin, "11i-change-password-refused")
    admin.goto(resource_url)
    admin.click("table.list >> text=postgres")
    shot(admin, "11j-account-as-owner")
    admin.click("text=Log out")
    expect(admin).to_have_url(f"{base}/login")

    # pat logs in, changes the one-time password, finds the resource and views the password.
    pat = new_page(browser)
    watch(pat, errors)
    log_in_first_time(pat, base, "pat", pat_otp, "pats-own-password-1")
    expect(pat.locator("nav")).not_to_contain_text("Users")
    pat.click("nav >> text=Resources")
    pat.click("table.list >> text=billing-db")
    expect(pat).to_have_url(resource_url)
    pat.click("table.list >> text=postgres")
    shot(pat, "12-account")
    pat.fill("input[name=reason]", "incident 42")
    pat.click("button:has-text('View password')")
    expect(pat.locator("#secret")).to_have_text(SECRET)
    assert SECRET not in pat.url
    shot(pat, "13-password-shown")
    pat.context.grant_permissions(["clipboard-read", "clipboard-write"])
    pat.click("button[data-copy-from=secret]")
    expect(pat.locator("[data-copy-status=secret]")).to_have_text("Copied.")
    assert pat.evaluate("navigator.clipboard.readText()") == SECRET

    # The audit trail has the view, by pat, from pat's address, with the reason.
    admin2 = new_page(browser)
    watch(admin2, errors)
    admin2.goto(f"{base}/login")
    admin2.fill("input[name=username]", "admin")
    admin2.fill("input[name=password]", "admins-own-password-1")
    admin2.click("button[type=submit]")
    expect(admin2).to_have_url(f"{base}/")
    admin2.click("nav >> text=Audit")
    row = admin2.locator("tr", has_text="view password").first
    expect(row).to_contain_text("pat")
    expect(row).to_contain_text("127.0.0.1")
    expect(row).to_contain_text("billing-db")
    expect(row).to_contain_text("incident 42")
    shot(admin2, "14-audit")
    engine = create_engine(f"sqlite:///{node.data_dir / 'strongroom.db'}")
    with Session(engine) as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.operation == "view password")).all()
    engine.dispose()
    assert [(r.username, r.source_ip, r.reason, r.result) for r in rows] == [
        ("pat", "127.0.0.1", "incident 42", "success")
    ]
    assert not errors, errors


def run(tmp: Path) -> None:
    os.environ.setdefault("SR_TEST_FAST_KDF", "1")
    node = NodeProcess(tmp / "node", free_port()).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                scenario(node, browser)
            finally:
                browser.close()
    finally:
        node.stop()


if __name__ == "__main__":
    run(Path(sys.argv[1]))
    print("console scenario passed")
