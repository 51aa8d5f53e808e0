"""The real Tornado application, served in-process on a free port over HTTPS, with real
services on a SQLite vault in a temp dir; and a keep-alive client per browser user.

Used by the role-by-route matrix and the console page tests, which need to seed data
through the services and then look at what each user is shown.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
from sqlalchemy import select

from appliance.server import start_reveal_writer
from node.auth import SessionUser
from node.keyring import KeyRing
from node.roles import Role
from node.seed import seed_builtins
from node.services import Services, build_services
from node.settings import Settings
from node.store.db import open_store
from node.store.models import User
from node.tls import ensure_certificate
from tests.helpers import Response, insecure_context
from web.app import make_app, make_ssl_context
from web.base import SESSION_COOKIE

XSRF_INPUT = re.compile(r'name="_xsrf" value="[^"]*"')


@contextmanager
def live_app(tmp: Path) -> Iterator[tuple[Services, int]]:
    """Services on a fresh SQLite vault and the web app serving them on 127.0.0.1."""
    settings = Settings(data_dir=tmp / "data")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.db_url)
    keyring = KeyRing.open(store, settings.key_path)
    services = build_services(settings, store, keyring)
    seed_builtins(store)
    tls, _ = ensure_certificate(settings.tls_dir, ())
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = int(sockets[0].getsockname()[1])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            # as `strongroom serve` does: reveals' audit rows written by a child process
            holder["writer"] = start_reveal_writer(settings, keyring, services, loop)
            app = make_app(services)
            server = tornado.httpserver.HTTPServer(app, ssl_options=make_ssl_context(tls))
            server.add_sockets(sockets)
            holder["server"] = server
            started.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True, name="live-app")
    thread.start()
    started.wait(10)
    try:
        yield services, port
    finally:

        async def stop() -> None:
            holder["server"].stop()
            await holder["server"].close_all_connections()
            if holder["writer"] is not None:
                holder["writer"].close()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        store.dispose()


def first_admin(services: Services) -> SessionUser:
    """The bootstrap administrator ``admin`` (Super Administrator scope), password set."""
    otp = services.auth.bootstrap_admin()
    assert otp is not None
    with services.store.sessions() as session:
        uid = session.scalars(select(User.id).where(User.username == "admin")).one()
    services.auth.change_password(uid, otp, "first-admin-password-1", "127.0.0.1")
    return snapshot(services, uid)


def add_user(
    services: Services,
    admin: SessionUser,
    username: str,
    role: Role,
    *,
    super_admin: bool = False,
) -> SessionUser:
    """A console user added through the user service, who has set their own password."""
    new = services.users.add_user(admin, "127.0.0.1", username, role)
    assert new.one_time_password is not None
    services.auth.change_password(
        new.id, new.one_time_password, f"{username}-own-password", "127.0.0.1"
    )
    if super_admin:
        services.users.grant_super_admin(admin, "127.0.0.1", new.id)
    return snapshot(services, new.id)


def snapshot(services: Services, user_id: int) -> SessionUser:
    with services.store.sessions() as session:
        u = session.get(User, user_id)
        assert u is not None
        return SessionUser(
            u.id, u.username, Role(u.role), u.super_admin, u.must_change_password, u.full_name
        )


@dataclass
class Browser:
    """A keep-alive HTTPS client that keeps cookies and sends the XSRF token with forms."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    ctx: ssl.SSLContext = field(default_factory=insecure_context)
    _conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self.ctx, timeout=30
            )
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self._conn = None
                if attempt:
                    raise
        for key, value in resp.getheaders():
            if key.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                val = rest.split(";", 1)[0]
                if val in ("", '""') or "expires=thu, 01 jan 1970" in value.lower():
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = val
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def xsrf(self) -> str:
        if "_xsrf" not in self.cookies:
            self.get("/login")
        return self.cookies["_xsrf"]

    def post(
        self, path: str, fields: dict[str, str] | list[tuple[str, str]] | None = None
    ) -> Response:
        data = list(fields.items()) if isinstance(fields, dict) else list(fields or [])
        data.append(("_xsrf", self.xsrf()))
        return self.request(
            "POST",
            path,
            body=urllib.parse.urlencode(data).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def browser_for(services: Services, port: int, user: SessionUser | None) -> Browser:
    """A browser logged in as ``user`` (a fresh session), or anonymous."""
    b = Browser(port)
    b.xsrf()
    if user is not None:
        b.cookies[SESSION_COOKIE] = services.auth.create_session(user.id, "127.0.0.1")
    return b


def normalized(text: str) -> str:
    """A page with its per-request parts (XSRF tokens) blanked, for comparing pages."""
    return XSRF_INPUT.sub('name="_xsrf" value=""', text)
