"""Admin > License: the licence in force, its limits and warnings, and installing a new
licence file (uploaded or pasted). The page only parses, authorises and calls
:class:`node.licence_service.LicenceService`, which verifies the file and records the install
in the audit trail; the new licence holds on every node of the cluster at once."""

from __future__ import annotations

from node.errors import ValidationError
from node.licence import MAX_FILE_BYTES
from node.permissions import Action
from web.base import BaseHandler, needs

PATH = "/admin/license"


class LicencePage(BaseHandler):
    async def _render(
        self, error: str | None = None, installed: bool = False, pasted: str = ""
    ) -> None:
        status = await self.run(self.services.licence.status)
        self.render(
            "licence_show.html",
            status=status.to_dict(),
            error=error,
            installed=installed,
            pasted=pasted,
            max_kib=MAX_FILE_BYTES // 1024,
        )

    @needs(Action.MANAGE_LICENCE)
    async def get(self) -> None:
        await self._render(installed=self.get_query_argument("installed", "") == "1")

    @needs(Action.MANAGE_LICENCE)
    async def post(self) -> None:
        try:
            text = self._licence_text()
            await self.run(self.services.licence.install, text, self.user.username, self.source_ip)
        except ValidationError as exc:
            self.set_status(400)
            pasted = self.get_body_argument("licence_text", "")[:MAX_FILE_BYTES]
            await self._render(error=str(exc), pasted=pasted)
            return
        self.redirect(PATH + "?installed=1")

    def _licence_text(self) -> str:
        uploads = self.request.files.get("licence_file") or []
        raw = uploads[0].body if uploads and uploads[0].body else b""
        if not raw:
            raw = self.get_body_argument("licence_text", "").strip().encode()
        if not raw:
            raise ValidationError("choose a licence file, or paste its text")
        if len(raw) > MAX_FILE_BYTES:
            raise ValidationError("the licence file is too large (at most 64 KiB)")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("the file is not a Strongroom licence (not text)") from None


ROUTES = [
    (PATH, LicencePage),
]
