"""A checked AUTHTOKEN is trusted without reading it again for at most KNOWN_FOR seconds,
and never past a write of the node itself (node/api_tokens.py): whatever the node changes
about an API user (another role, disabled, token revoked, user deleted) applies to the very
next request; a change made behind the node's back, straight in the database, applies within
KNOWN_FOR, and at once after the node's next write."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

import node.api_tokens
from node.roles import Role
from node.store.db import open_store
from tests.integration.api_helpers import Api, api_world, one_account, op


def _password_path(api: Api, resource: str) -> str:
    rid, aid = one_account(api, resource, "Cache-pass-1!")
    return f"/resources/{rid}/accounts/{aid}/password"


def test_what_the_node_changes_applies_to_the_next_request(tmp_path: Path) -> None:
    with api_world(tmp_path) as w:
        users, tokens = w.services.users, w.services.api_tokens
        api = w.api("app-padmin")
        uid = users.user_id_by_name(w.admin, "app-padmin")
        # owned by another, shared with app-padmin: an owner keeps an administrator's role
        owner = w.api("app-padmin2")
        rid, aid = one_account(owner, "cache-host", "Cache-pass-1!")
        share = {"ACCESSTYPE": "view", "USERID": str(uid)}
        op(owner.put(f"/resources/{rid}/accounts/{aid}/share", share))
        path = f"/resources/{rid}/accounts/{aid}/password"

        assert op(api.get(path))["Details"]["PASSWORD"] == "Cache-pass-1!"
        users.change_role(w.admin, "::1", uid, Role.PASSWORD_USER)
        refused = api.post("/resources", {"RESOURCENAME": "r2", "ACCOUNTNAME": "a"})
        assert "Password User" in op(refused, 403)["result"]["message"]

        users.change_role(w.admin, "::1", uid, Role.PASSWORD_ADMINISTRATOR)
        assert op(api.get(path))["Details"]["PASSWORD"] == "Cache-pass-1!"
        users.set_enabled(w.admin, "::1", uid, False)
        assert op(api.get(path), 401)["name"] == "Authentication"
        users.set_enabled(w.admin, "::1", uid, True)
        assert op(api.get(path))["Details"]["PASSWORD"] == "Cache-pass-1!"

        tokens.revoke("app-padmin", "test", "::1")
        assert op(api.get(path), 401)["name"] == "Authentication"

        other = w.api("app-user")
        op(other.get("/resources"))
        users.delete_user(w.admin, "::1", users.user_id_by_name(w.admin, "app-user"))
        assert op(other.get("/resources"), 401)["name"] == "Authentication"


def _revoke_in_the_database(db_url: str, token: str) -> None:
    """Revoke ``token`` the way a person typing SQL would: not through the node."""
    store = open_store(db_url, migrate=False)
    try:
        with store.engine.begin() as conn:
            done = conn.execute(
                text("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE prefix = :p"),
                {"p": token[:8]},
            )
            assert done.rowcount == 1
    finally:
        store.dispose()


def test_a_change_behind_the_nodes_back_applies_after_its_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node.api_tokens, "KNOWN_FOR", 600.0)  # only a write can end it
    with api_world(tmp_path) as w:
        api = w.api("app-padmin")
        path = _password_path(api, "cache-host")
        op(api.get(path))
        _revoke_in_the_database(str(w.services.store.engine.url), w.tokens["app-padmin"])
        # The node has not read the token since: it still trusts what it checked.
        assert op(api.get(path))["Details"]["PASSWORD"] == "Cache-pass-1!"
        # Any write of the node (here another API user's new resource) ends that.
        op(w.api("app-admin").post("/resources", {"RESOURCENAME": "r3", "ACCOUNTNAME": "a"}))
        assert op(api.get(path), 401)["name"] == "Authentication"


def test_a_change_behind_the_nodes_back_applies_within_known_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node.api_tokens, "KNOWN_FOR", 0.3)
    with api_world(tmp_path) as w:
        api = w.api("app-padmin")
        path = _password_path(api, "cache-host")
        op(api.get(path))
        _revoke_in_the_database(str(w.services.store.engine.url), w.tokens["app-padmin"])
        time.sleep(0.4)  # past KNOWN_FOR, with no write of the node meanwhile
        assert op(api.get(path), 401)["name"] == "Authentication"


def test_refused_tokens_are_not_kept(tmp_path: Path) -> None:
    with api_world(tmp_path) as w:
        tokens = w.services.api_tokens
        good = w.tokens["app-user"]
        assert tokens.known(good) is None  # issued, never presented
        assert tokens.authenticate(good) is not None  # read now, so known
        assert tokens.known(good) is not None and tokens.known(f"  {good} ") is not None
        for n in range(20):
            bad = f"{good[:-4]}{n:04X}"
            assert op(w.api(bad).get("/resources"), 401)["name"] == "Authentication"
            assert tokens.known(bad) is None
        assert tokens.known("short") is None and tokens.known("x" * 10_000) is None
