"""Rebranding (Action.REBRAND): upload the logo shown on the login page and in the header,
or go back to the built-in one. The file is checked by node.branding (PNG or JPEG by its own
bytes, at most 200 KB); GET /branding/logo (web.session_pages) serves it."""

from __future__ import annotations

from node.branding import MAX_LOGO_BYTES
from node.errors import StrongroomError
from node.permissions import Action
from web.base import BaseHandler, needs, status_for


class BrandingPage(BaseHandler):
    async def _show(self, error: str | None = None) -> None:
        current = await self.run(self.services.branding.current)
        self.render(
            "branding.html",
            current=current,
            error=error,
            max_kb=MAX_LOGO_BYTES // 1024,
        )

    @needs(Action.REBRAND)
    async def get(self) -> None:
        await self._show()

    @needs(Action.REBRAND)
    async def post(self) -> None:
        files = self.request.files.get("logo") or []
        data = files[0]["body"] if files else b""
        try:
            info = await self.run(self.services.branding.upload, self.user, self.source_ip, data)
        except StrongroomError as exc:
            self.set_status(status_for(exc))
            await self._show(error=str(exc))
            return
        self.flash(f"New logo saved ({info.describe()}).")
        self.redirect("/admin/branding")


class BrandingResetPage(BaseHandler):
    @needs(Action.REBRAND)
    async def post(self) -> None:
        try:
            await self.run(self.services.branding.reset, self.user, self.source_ip)
        except StrongroomError as exc:
            self.set_status(status_for(exc))
            self.render("error.html", status=status_for(exc), message=str(exc))
            return
        self.flash("The built-in logo is shown again.")
        self.redirect("/admin/branding")


ROUTES = [
    (r"/admin/branding", BrandingPage),
    (r"/admin/branding/reset", BrandingResetPage),
]
