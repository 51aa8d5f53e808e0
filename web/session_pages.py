"""Login, the forced password change, logout, the home page and /health."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from node.errors import AuthenticationError, ValidationError
from node.permissions import Action
from node.store.models import BrandingLogo
from web.base import SESSION_COOKIE, BaseHandler, needs

MAX_FIELD = 256
HERE = Path(__file__).parent


def local_page(text: str) -> str:
    """``text`` if it is a path on this site (what a login may go on to), else "/": never
    another host (``//host``, ``/\\host``, a scheme), never a control character."""
    if (
        not text.startswith("/")
        or text.startswith(("//", "/\\"))
        or len(text) > 512
        or any(ord(c) < 0x20 or c == "\x7f" for c in text)
    ):
        return "/"
    parts = urllib.parse.urlsplit(text)
    return "/" if parts.scheme or parts.netloc else text


class LoginPage(BaseHandler):
    async def get(self) -> None:
        after = local_page(self.get_query_argument("next", "/"))
        if self.get_current_user() is not None:
            self.redirect(after)
            return
        self.render("login.html", error=None, username="", after=after)

    async def post(self) -> None:
        username = self.get_body_argument("username", "")[:MAX_FIELD]
        password = self.get_body_argument("password", "")[:MAX_FIELD]
        after = local_page(self.get_body_argument("next", "/"))
        try:
            user = await self.run(
                self.services.auth.authenticate, username, password, self.source_ip
            )
        except AuthenticationError as exc:
            self.set_status(401)
            self.render("login.html", error=str(exc), username=username, after=after)
            return
        token = await self.run(
            self.services.auth.create_session,
            user.id,
            self.source_ip,
            self.get_cookie(SESSION_COOKIE),  # a session this browser had ends here
        )
        self.start_session(token)
        self.redirect("/change-password" if user.must_change_password else after)


class ChangePasswordPage(BaseHandler):
    async def get(self) -> None:
        if self.get_current_user() is None:
            self.redirect("/login")
            return
        self.render("change_password.html", error=None)

    async def post(self) -> None:
        user = self.get_current_user()
        if user is None:
            self.redirect("/login")
            return
        current = self.get_body_argument("current", "")[:MAX_FIELD]
        new = self.get_body_argument("new", "")[:MAX_FIELD]
        confirm = self.get_body_argument("confirm", "")[:MAX_FIELD]
        try:
            if new != confirm:
                raise ValidationError("the new password and its confirmation differ")
            token = await self.run(
                self.services.auth.change_password, user.id, current, new, self.source_ip
            )
        except ValidationError as exc:
            held = self.get_cookie(SESSION_COOKIE) or ""
            if await self.run(self.services.auth.session_user, held) is None:
                self.clear_cookie(SESSION_COOKIE, path="/")  # locked: its sessions ended
                self.redirect("/login")
                return
            self.set_status(400)
            self.render("change_password.html", error=str(exc))
            return
        self.start_session(token)  # every other session of the user has ended
        await self.run(self.services.forget_initial_password, user.username)
        self.flash("Your login password was changed.")
        self.redirect("/")


class LogoutPage(BaseHandler):
    async def post(self) -> None:
        token = self.get_cookie(SESSION_COOKIE)
        user = self.get_current_user()
        if token and user is not None:
            await self.run(self.services.auth.logout, token, user.username, self.source_ip)
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.redirect("/login")


class HomePage(BaseHandler):
    @needs(Action.USE_VAULT)
    async def get(self) -> None:
        self.render("home.html")


class HealthHandler(BaseHandler):
    """Liveness and role, for load balancers and operators. Reveals no vault data."""

    async def prepare(self) -> None:
        return None

    async def get(self) -> None:
        db_ok = await self.run(self._db_ok)
        state = self.services.state
        body: dict[str, Any] = {
            "status": "ok" if db_ok else "degraded",
            "version": self.ctx.version,
            "role": state.role,
            "writable": state.writable,
            "database": "ok" if db_ok else "unreachable",
        }
        if state.primary_address:
            body["primary"] = state.primary_address
        self.set_status(200 if db_ok else 503)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def _db_ok(self) -> bool:
        try:
            with self.services.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True


ROUTES = [
    (r"/login", LoginPage),
    (r"/change-password", ChangePasswordPage),
    (r"/logout", LogoutPage),
    (r"/", HomePage),
    (r"/health", HealthHandler),
]


class LogoHandler(BaseHandler):
    """The console's logo: the uploaded one (rebranding) or the built-in one."""

    async def prepare(self) -> None:
        return None

    async def get(self) -> None:
        logo = await self.run(self._load)
        self.set_header("Cache-Control", "no-cache")
        if logo is None:
            self.set_header("Content-Type", "image/svg+xml")
            self.finish((HERE / "static" / "logo.svg").read_bytes())
            return
        content_type, data = logo
        self.set_header("Content-Type", content_type)
        self.finish(data)

    def _load(self) -> tuple[str, bytes] | None:
        with self.services.store.sessions() as session:
            row = session.scalars(select(BrandingLogo).order_by(BrandingLogo.id.desc())).first()
            return None if row is None else (row.content_type, row.data)


ROUTES.append((r"/branding/logo", LogoHandler))
