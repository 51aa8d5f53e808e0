"""Role by route: every route of web.app.route_table(), for every role, for Super
Administrator scope and for an anonymous client.

- every handler method declares the action it needs (``required_action``), or the route is
  one of the few public ones listed here with the reason;
- anonymous: pages send the browser to /login, API routes answer 401;
- a role whose permissions lack the action gets 403; a role that has it does not (and the
  server never fails with a 5xx);
- nothing unshared leaks: for pages a user may open, the page is the same before and after
  another administrator adds resources, accounts and groups the user has no share on
  (so no name, id or count of them shows), and asking for an unshared object's id gives the
  same answer as asking for an id that does not exist.

Routes that engineers add later are covered without touching this file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tornado.web

from node.auth import SessionUser
from node.permissions import PERMISSIONS, Action
from node.roles import Role
from node.services import Services
from tests.integration.live_app import (
    Browser,
    add_user,
    browser_for,
    first_admin,
    live_app,
    normalized,
)
from tests.integration.vault_seed import VaultSeed, seed_unshared, seed_vault
from web.app import route_table

METHODS = ("get", "post", "put", "delete", "patch")

# Public routes: reachable without logging in, each for a reason. Nothing else may be.
PUBLIC = {
    r"/login": "the login form",
    r"/change-password": "one's own login password, or the forced change (checks the session)",
    r"/logout": "ends the session, if any",
    r"/health": "load balancers and operators; reveals no vault data",
    r"/branding/logo": "the logo shown on the login page",
    r"/restapi/openapi.json": "the published API description",
    r"/cluster/ca": "the cluster CA certificate, pinned by its hash when a node joins",
    r"/cluster/join": "the join handshake, authenticated by a single-use join token",
    r"/cluster/raft-join": "a joining node's Raft registration, authenticated by its token",
}

# Actions whose pages show only what the user owns or has been shared: these are checked
# for leaks. Other actions (audit, reports, users, trash...) are administration views of
# the whole vault, given only to roles that may see it all.
SCOPED = {
    Action.USE_VAULT,
    Action.VIEW_PASSWORD,
    Action.CHANGE_SHARED_PASSWORD,
    Action.ADD_RESOURCE,
    Action.MANAGE_OWN_RESOURCES,
    Action.SHARE,
    Action.MANAGE_RESOURCE_GROUPS,
}

MISSING_ID = "987654"
MISSING_NAME = "No-Such-Object-7"
GROUP = re.compile(r"\((?:\?P<\w+>)?((?:[^()\\]|\\.)*)\)")


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role | None
    super_admin: bool = False


PRINCIPALS = [
    Principal("anonymous", None),
    Principal("user", Role.PASSWORD_USER),
    Principal("auditor", Role.PASSWORD_AUDITOR),
    Principal("padmin", Role.PASSWORD_ADMINISTRATOR),
    Principal("admin", Role.ADMINISTRATOR),
    Principal("super", Role.ADMINISTRATOR, super_admin=True),
]


@dataclass(frozen=True)
class Route:
    pattern: str
    handler: type[tornado.web.RequestHandler]
    method: str
    action: Action | None

    @property
    def is_api(self) -> bool:
        return self.pattern.startswith("/restapi")

    @property
    def has_ids(self) -> bool:
        return bool(GROUP.search(self.pattern))

    def path(self, value: str) -> str:
        """The pattern with every group filled with ``value`` (or a fitting stand-in)."""

        def fill(m: re.Match[str]) -> str:
            inner = m.group(1)
            for candidate in (value, "x" + value, "name", example(inner)):
                if re.fullmatch(inner, candidate):
                    return candidate
            raise AssertionError(f"cannot fill {inner!r} in {self.pattern}")

        path = GROUP.sub(fill, self.pattern)
        return path.replace("\\.", ".").rstrip("$").lstrip("^").replace("/?", "/")


def example(regex: str) -> str:
    """A short string that ``regex`` matches (first choice of every alternative)."""
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    def walk(items: Any) -> str:
        out = ""
        for op, arg in items:
            if op is c.LITERAL:
                out += chr(arg)
            elif op is c.IN:
                first = arg[0]
                if first[0] is c.RANGE:
                    out += chr(first[1][0])
                elif first[0] is c.LITERAL:
                    out += chr(first[1])
                else:
                    out += "a"
            elif op is c.BRANCH:
                out += walk(arg[1][0])
            elif op is c.SUBPATTERN:
                out += walk(arg[-1])
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
                low, _high, sub = arg
                out += walk(sub) * max(low, 1)
            elif op is c.ANY:
                out += "a"
        return out

    return walk(_parser.parse(regex))


def declared_routes() -> list[Route]:
    routes = []
    for pattern, handler in route_table():
        for method in METHODS:
            fn = getattr(handler, method, None)
            if fn is None or fn is getattr(tornado.web.RequestHandler, method):
                continue
            routes.append(Route(pattern, handler, method, getattr(fn, "required_action", None)))
    return routes


ROUTES = declared_routes()


def test_every_route_declares_its_action() -> None:
    undeclared = [
        f"{r.method.upper()} {r.pattern} ({r.handler.__name__})"
        for r in ROUTES
        if r.action is None and r.pattern not in PUBLIC
    ]
    assert not undeclared, "routes without @needs(Action.X): " + ", ".join(undeclared)
    assert all(isinstance(r.action, Action) for r in ROUTES if r.pattern not in PUBLIC)


def test_the_route_walk_sees_pages_of_every_kind() -> None:
    """The walk is not vacuous: it finds the vault, administration and session routes."""
    patterns = {r.pattern for r in ROUTES}
    for expected in ("/", "/login", "/resources", "/users", "/policies", "/admin"):
        assert expected in patterns
    assert sum(1 for r in ROUTES if r.action is not None) >= 20


# --- a live application with seeded data --------------------------------------------------


@dataclass
class World:
    services: Services
    port: int
    users: dict[str, SessionUser]
    seed: VaultSeed
    api_tokens: dict[str, str]

    def browser(self, who: str) -> Browser:
        return browser_for(self.services, self.port, self.users.get(who))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("matrix")
    with live_app(tmp) as (services, port):
        admin = first_admin(services)
        users = {
            p.name: add_user(services, admin, f"{p.name}-person", p.role, super_admin=p.super_admin)
            for p in PRINCIPALS
            if p.role is not None
        }
        owner = add_user(services, admin, "owner-admin", Role.ADMINISTRATOR)
        sharees = [users[n] for n in ("user", "auditor", "padmin", "admin")]
        seed = seed_vault(services, owner, sharees)
        tokens = {}
        for p in PRINCIPALS:
            if p.role is not None and not p.super_admin:
                issued = services.api_tokens.add_api_user(
                    f"api-{p.name}", p.role, "admin", "127.0.0.1"
                )
                tokens[p.name] = issued.token
        yield World(services, port, users, seed, tokens)


def _allowed(p: Principal, action: Action) -> bool:
    return p.role is not None and action in PERMISSIONS[p.role]


def _api_request(world: World, who: str, route: Route, path: str) -> int:
    b = Browser(world.port)
    headers = {}
    if who in world.api_tokens:
        headers["AUTHTOKEN"] = world.api_tokens[who]
    body = None if route.method == "get" else b""
    status = b.request(route.method.upper(), path, body=body, headers=headers).status
    b.close()
    return status


def test_anonymous_is_sent_to_login_or_refused(world: World) -> None:
    b = world.browser("anonymous")
    wrong = []
    for r in ROUTES:
        if r.pattern in PUBLIC:
            continue
        path = r.path(MISSING_ID)
        if r.is_api:
            status = _api_request(world, "anonymous", r, path)
            if status != 401:
                wrong.append(f"{r.method.upper()} {path}: {status}, expected 401")
            continue
        resp = b.get(path) if r.method == "get" else b.post(path, {})
        to_login = resp.status in (302, 303) and resp.headers.get("location", "").startswith(
            "/login"
        )
        if r.method == "get" and not to_login:
            wrong.append(f"GET {path}: {resp.status}, expected a redirect to /login")
        if r.method != "get" and not (to_login or resp.status == 401):
            wrong.append(f"{r.method.upper()} {path}: {resp.status}, expected 401 or /login")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("who", [p.name for p in PRINCIPALS if p.role is not None])
def test_roles_get_exactly_what_the_permission_table_allows(world: World, who: str) -> None:
    """Every declared route: 403 exactly when the role lacks the action, never a 5xx.
    Write requests use an id that does not exist (or an empty form), so they change
    nothing that later checks rely on."""
    principal = next(p for p in PRINCIPALS if p.name == who)
    b = world.browser(who)
    wrong = []
    for r in ROUTES:
        if r.pattern in PUBLIC or r.action is None:
            continue
        path = r.path(MISSING_ID)
        if r.is_api:
            if who not in world.api_tokens:
                continue
            status = _api_request(world, who, r, path)
        elif r.method == "get":
            status = b.get(path).status
        else:
            status = b.post(path, {}).status
        allowed = _allowed(principal, r.action)
        if allowed and status in (401, 403):
            wrong.append(f"{r.method.upper()} {path} ({r.action}): {status} but the role may")
        if not allowed and status != 403:
            wrong.append(f"{r.method.upper()} {path} ({r.action}): {status}, expected 403")
        if status >= 500:
            wrong.append(f"{r.method.upper()} {path}: server error {status}")
    b.close()
    assert not wrong, f"{who}:\n" + "\n".join(wrong)


def _scoped_get_routes(principal: Principal) -> list[Route]:
    return [
        r
        for r in ROUTES
        if r.method == "get"
        and r.action in SCOPED
        and _allowed(principal, r.action)
        and r.pattern not in PUBLIC
    ]


def without_asked(text: str, value: str) -> str:
    """The page with the id or name it was asked for blanked where it is echoed back (in
    a message "... id N" or "... 'NAME'", or in a link ".../N"), so that the answers for
    two different ids or names can be compared."""
    v = re.escape(value)
    return re.sub(rf"(?:(?<=id )|(?<=/)|(?<=')|(?<=\")){v}(?![\w-])", "<asked>", text)


@dataclass(frozen=True)
class Probe:
    """What to ask for in a route's path groups: the unshared objects and a missing one."""

    ids: list[str]
    names: list[str]

    def values(self, r: Route) -> tuple[list[str], str]:
        """(values to try, the missing one) for this route."""
        if not r.has_ids:
            return [MISSING_ID], MISSING_ID
        if MISSING_NAME in r.path(MISSING_NAME):
            return [*self.names, MISSING_NAME], MISSING_NAME
        return [*self.ids, MISSING_ID], MISSING_ID


Pages = dict[str, tuple[int, str]]


def _snapshot(world: World, who: str, probe: Probe) -> tuple[Pages, list[tuple[str, str]]]:
    """Every scoped page and API GET this user may open, asked with the unshared and the
    missing ids or names; and pairs of (unshared path, missing path) to compare."""
    principal = next(p for p in PRINCIPALS if p.name == who)
    b = world.browser(who)
    api = Browser(world.port)
    pages: Pages = {}
    pairs = []
    for r in _scoped_get_routes(principal):
        if r.is_api and who not in world.api_tokens:
            continue
        values, missing = probe.values(r)
        for value in values:
            path = r.path(value)
            if r.is_api:
                resp = api.request("GET", path, headers={"AUTHTOKEN": world.api_tokens[who]})
            else:
                resp = b.get(path)
            pages[path] = (resp.status, without_asked(normalized(resp.text), value))
            if value != missing:
                pairs.append((path, r.path(missing)))
    b.close()
    api.close()
    return pages, pairs


@pytest.mark.parametrize("who", ["user", "auditor", "padmin", "admin"])
def test_nothing_unshared_leaks(world: World, who: str) -> None:
    seed = world.seed
    probe = Probe([str(i) for i in seed.unshared_ids], seed.unshared_names[:2])
    before, _ = _snapshot(world, who, probe)
    later = seed_unshared(world.services, seed.owner, f"late-{who}")
    after, pairs = _snapshot(world, who, probe)
    problems = []
    for path, (_status, body) in after.items():
        for marker in [*seed.unshared_names, *later.names]:
            if marker in body and marker not in path:
                problems.append(f"{path} shows the unshared name {marker!r}")
    for path, page in before.items():
        if after[path] != page:
            problems.append(f"{path} changed when unshared objects were added")
    for path, missing in pairs:
        if after[path] != after[missing]:
            problems.append(f"{path}: an unshared object answers unlike a missing one")
    assert not problems, f"{who}:\n" + "\n".join(sorted(set(problems)))
    # The check can fail: the shared resource is on this user's resource list, and the
    # walk did ask for the unshared objects by id and by name.
    assert seed.shared_name in after["/resources"][1]
    assert any(f"/resources/{seed.unshared_ids[0]}" == p for p, _ in pairs)


def test_super_administrator_sees_what_others_do_not(world: World) -> None:
    """The control for the leak test: the same snapshot does change for Super
    Administrator scope, which sees every resource."""
    seed = world.seed
    probe = Probe([], [])
    before, _ = _snapshot(world, "super", probe)
    later = seed_unshared(world.services, seed.owner, "late-super")
    after, _ = _snapshot(world, "super", probe)
    assert before["/resources"] != after["/resources"]
    assert all(name in after["/resources"][1] for name in later.names[:1])
    assert json.dumps(sorted(after)) == json.dumps(sorted(before))
