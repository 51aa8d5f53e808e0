"""A small REST API client for the API tests: it speaks PMP's conventions (AUTHTOKEN header,
INPUT_DATA in the query for GET/DELETE and in a form body for POST/PUT) over a keep-alive
HTTPS connection, and a module-wide world (one app, an administrator, API users)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.auth import SessionUser
from node.roles import Role
from node.services import Services
from node.store.models import AuditRow
from tests.helpers import Response
from tests.integration.live_app import Browser, live_app
from tests.integration.vault_helpers import initial_admin

PREFIX = "/restapi/json/v1"


@dataclass
class Api:
    """Calls the API as one token holder."""

    browser: Browser
    token: str | None

    def call(
        self,
        method: str,
        path: str,
        details: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
        raw_input: str | None = None,
        content_type: str = "text/json",
        token_in_query: bool = False,
    ) -> Response:
        params = dict(query or {})
        headers: dict[str, str] = {}
        if self.token is not None:
            if token_in_query:
                params["AUTHTOKEN"] = self.token
            else:
                headers["AUTHTOKEN"] = self.token
        text = raw_input
        if details is not None:
            text = json.dumps({"operation": {"Details": details}})
        body = None
        if text is not None:
            if method in ("GET", "DELETE"):
                params["INPUT_DATA"] = text
            else:
                body = urllib.parse.urlencode({"INPUT_DATA": text}).encode()
                headers["Content-Type"] = content_type
        url = PREFIX + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return self.browser.request(method, url, body=body, headers=headers)

    def get(self, path: str, details: dict[str, Any] | None = None, **kw: Any) -> Response:
        return self.call("GET", path, details, **kw)

    def post(self, path: str, details: dict[str, Any] | None = None, **kw: Any) -> Response:
        return self.call("POST", path, details, **kw)

    def put(self, path: str, details: dict[str, Any] | None = None, **kw: Any) -> Response:
        return self.call("PUT", path, details, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.call("DELETE", path, **kw)

    def ids(self, resource: str, account: str) -> tuple[str, str]:
        r = self.get(
            "/resources/getResourceIdAccountId",
            query={"RESOURCENAME": resource, "ACCOUNTNAME": account},
        )
        assert r.status == 200, r.text
        d = r.json()["operation"]["Details"]
        return d["RESOURCEID"], d["ACCOUNTID"]


def op(resp: Response, expect: int = 200) -> dict[str, Any]:
    """The ``operation`` object of a reply, after checking its status and the envelope."""
    assert resp.status == expect, (resp.status, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"operation"}, body
    operation = body["operation"]
    assert set(operation) <= {"name", "result", "Details", "totalRows"}, operation
    assert set(operation["result"]) == {"status", "message"}, operation
    expected = "Success" if resp.status < 400 else "Failed"
    assert operation["result"]["status"] == expected, (resp.status, operation)
    assert isinstance(operation["result"]["message"], str) and operation["result"]["message"]
    if expected == "Failed" and operation["name"] != "ADD ACCOUNTS":
        assert "Details" not in operation, operation
    return dict(operation)


def one_account(api: Api, resource: str, password: str) -> tuple[str, str]:
    """A new resource with one account "a" holding ``password``: its ids."""
    op(api.post("/resources", {"RESOURCENAME": resource, "ACCOUNTNAME": "a", "PASSWORD": password}))
    return api.ids(resource, "a")


@dataclass
class World:
    services: Services
    port: int
    admin: SessionUser
    tokens: dict[str, str] = field(default_factory=dict)
    browsers: list[Browser] = field(default_factory=list)

    def api(self, who: str | None) -> Api:
        b = Browser(self.port)
        self.browsers.append(b)
        return Api(b, None if who is None else self.tokens.get(who, who))

    def close(self) -> None:
        for b in self.browsers:
            b.close()


API_USERS = {
    "app-admin": Role.ADMINISTRATOR,
    "app-padmin": Role.PASSWORD_ADMINISTRATOR,
    "app-padmin2": Role.PASSWORD_ADMINISTRATOR,
    "app-user": Role.PASSWORD_USER,
    "app-auditor": Role.PASSWORD_AUDITOR,
}


@contextmanager
def api_world(tmp: Path) -> Iterator[World]:
    """The real app over HTTPS on a fresh vault, with the initial administrator and one API
    user per role (tokens issued through the product's own service)."""
    with live_app(tmp) as (services, port):
        world = World(services, port, initial_admin(services))
        for name, role in API_USERS.items():
            issued = services.api_tokens.add_api_user(name, role, "test", "127.0.0.1")
            world.tokens[name] = issued.token
        try:
            yield world
        finally:
            world.close()


def audit_rows(services: Services, operation: str) -> list[AuditRow]:
    with services.store.sessions() as s:
        return list(
            s.scalars(select(AuditRow).where(AuditRow.operation == operation).order_by(AuditRow.id))
        )
