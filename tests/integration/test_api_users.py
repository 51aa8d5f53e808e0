"""API users and their tokens, as an operator and an administrator meet them:
``strongroom apiuser add NAME --role ROLE`` against a running node (over its control socket)
and offline; the console's API users page; revocation. A token is shown once, and only its
prefix ever reaches logs, audit rows or listings."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from sqlalchemy import select

from node.auth import SessionUser
from node.roles import Role
from node.services import Services
from node.store.models import ApiToken, AuditRow
from tests.helpers import API_TOKEN, NodeProcess, free_port, run_cli
from tests.integration.live_app import browser_for, live_app
from tests.integration.vault_helpers import initial_admin, snapshot


def console_user(services: Services, name: str, role: Role) -> SessionUser:
    """A console user added by the initial administrator, who has set their own password."""
    new = services.users.add_user(initial_admin(services), "127.0.0.1", name, role)
    assert new.one_time_password is not None
    services.auth.change_password(new.id, new.one_time_password, f"{name}-own-pass-1", "::1")
    return snapshot(services, new.id)


def _resources(node: NodeProcess, token: str, in_query: bool = False) -> tuple[int, dict]:  # type: ignore[type-arg]
    path = "/restapi/json/v1/resources"
    headers = {"AUTHTOKEN": token}
    if in_query:
        path += "?" + urllib.parse.urlencode({"AUTHTOKEN": token})
        headers = {}
    resp = node.client().request("GET", path, headers=headers)
    return resp.status, resp.json()


def test_cli_adds_api_users_on_a_running_node_and_offline(tmp_path: Path) -> None:
    data = tmp_path / "node"
    NodeProcess(data, free_port()).start().stop()  # the vault exists; no node runs now
    # offline: no node runs, so the CLI opens the data directory under the lock
    first = run_cli(
        "apiuser", "add", "Offline-App", "--role", "password_user", "--data-dir", str(data)
    )
    assert first.returncode == 0, first.stderr
    assert "Password User" in first.stdout
    [offline_token] = API_TOKEN.findall(first.stdout)

    node = NodeProcess(data, free_port()).start()
    try:
        status, body = _resources(node, offline_token)
        assert status == 200 and body["operation"]["result"]["status"] == "Success"

        added = run_cli(
            "apiuser",
            "add",
            "deploy-bot",
            "--role",
            "Password Administrator",
            "--data-dir",
            str(data),
        )
        assert added.returncode == 0, added.stderr
        [token] = API_TOKEN.findall(added.stdout)
        assert "shown only now" in added.stdout
        status, _ = _resources(node, token, in_query=True)
        assert status == 200

        dup = run_cli(
            "apiuser", "add", "deploy-bot", "--role", "password_user", "--data-dir", str(data)
        )
        assert (
            dup.returncode == 1
            and "already exists" in dup.stderr
            and not API_TOKEN.findall(dup.stdout)
        )
        bad_role = run_cli("apiuser", "add", "x", "--role", "root", "--data-dir", str(data))
        assert bad_role.returncode == 1 and "unknown role" in bad_role.stderr

        listed = run_cli("apiuser", "list", "--data-dir", str(data))
        assert listed.returncode == 0
        assert "deploy-bot" in listed.stdout and token[:8] in listed.stdout
        assert re.search(r"deploy-bot\s+\S.*\s+active\s+" + re.escape(token[:8]), listed.stdout)
        assert token not in listed.stdout and offline_token not in listed.stdout

        revoked = run_cli("apiuser", "revoke", "deploy-bot", "--data-dir", str(data))
        assert revoked.returncode == 0 and "revoked 1 token" in revoked.stdout
        status, body = _resources(node, token)
        assert status == 401 and body["operation"]["name"] == "Authentication"
        status, _ = _resources(node, offline_token)
        assert status == 200
    finally:
        node.stop()
    logs = node.stdout() + node.stderr()
    assert token not in logs and offline_token not in logs

    from node.store.db import open_store

    store = open_store(f"sqlite:///{data / 'strongroom.db'}", migrate=False)
    try:
        with store.sessions() as s:
            rows = s.scalars(select(ApiToken)).all()
            audit = " ".join(
                f"{r.target} {r.detail} {r.reason}" for r in s.scalars(select(AuditRow)).all()
            )
            ops = [r.operation for r in s.scalars(select(AuditRow)).all()]
    finally:
        store.dispose()
    assert {r.prefix for r in rows} == {token[:8], offline_token[:8]}
    assert all(len(r.token_hash) == 64 and token not in r.token_hash for r in rows)
    assert token not in audit and offline_token not in audit and token[:8] in audit
    assert ops.count("add api user") == 2 and "revoke api token" in ops


def test_console_page_adds_shows_once_and_revokes(tmp_path: Path) -> None:
    with live_app(tmp_path) as (services, port):
        admin = console_user(services, "boss", Role.ADMINISTRATOR)
        clerk = console_user(services, "clerk", Role.PASSWORD_ADMINISTRATOR)
        b = browser_for(services, port, admin)
        assert 'href="/admin/api-users"' in b.get("/admin").text
        page = b.get("/admin/api-users")
        assert page.status == 200 and "No API users yet" in page.text
        made = b.post("/admin/api-users", {"name": "Billing-Sync", "role": "password_user"})
        assert made.status == 200
        [token] = re.findall(r'id="token">([0-9A-F-]{36})<', made.text)
        assert services.api_tokens.authenticate(token) is not None
        again = b.get("/admin/api-users")
        assert "billing-sync" in again.text and token[:8] in again.text and token not in again.text

        refused = b.post("/admin/api-users", {"name": "bad name!", "role": "password_user"})
        assert refused.status == 400 and "may contain only" in refused.text
        unknown_role = b.post("/admin/api-users", {"name": "ok-name", "role": "god"})
        assert unknown_role.status == 400 and "unknown role" in unknown_role.text
        assert "ok-name" not in b.get("/admin/api-users").text

        renewed = b.post("/admin/api-users/billing-sync/token")
        [fresh] = re.findall(r'id="token">([0-9A-F-]{36})<', renewed.text)
        assert fresh != token
        assert services.api_tokens.authenticate(token) is None
        assert services.api_tokens.authenticate(fresh) is not None

        gone = b.post("/admin/api-users/billing-sync/revoke")
        assert gone.status == 302
        assert "Revoked 1 token" in b.get("/admin/api-users").text
        assert services.api_tokens.authenticate(fresh) is None
        assert b.post("/admin/api-users/nobody/revoke").status == 404

        other = browser_for(services, port, clerk)
        assert other.get("/admin/api-users").status == 403
        assert (
            other.post("/admin/api-users", {"name": "sneaky", "role": "administrator"}).status
            == 403
        )
        assert other.post("/admin/api-users/billing-sync/token").status == 403
        assert [u.username for u in services.api_tokens.list_api_users()] == ["billing-sync"]
        anonymous = browser_for(services, port, None)
        assert anonymous.get("/admin/api-users").status == 302
        for br in (b, other, anonymous):
            br.close()
