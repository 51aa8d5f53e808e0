"""Admin > Backup: schedule, targets, retention, recovery passphrase, "run now" and the
history of runs. Handlers parse the form, authorise (MANAGE_BACKUP) and call
:class:`backup.service.BackupService`, which validates and audits every change."""

from __future__ import annotations

import dataclasses
from typing import Any

from backup.errors import BackupError
from backup.schedule import WEEKDAYS, Schedule, parse_time
from backup.service import BackupConfig, BackupService, S3Config
from node.errors import NotPrimaryError, ValidationError
from node.permissions import Action
from web.base import BaseHandler, needs

PATH = "/admin/backup"
SETTING = "strongroom_backup"
NOTICES = {
    "saved": "Backup settings saved.",
    "started": "A backup is running now; reload this page to see it in the history.",
    "passphrase": "The recovery passphrase was changed. Archives made from now on open with it.",
    "nopassphrase": "The recovery passphrase was removed from future archives.",
    "resumed": "Scheduled backups are running again.",
}


def backup_service(handler: BaseHandler) -> BackupService:
    """The node's backup service (put in the application settings by the composition root;
    made on first use when the application was built without one)."""
    service = handler.application.settings.get(SETTING)
    if service is None:
        s = handler.services
        service = BackupService(s.settings, s.store, s.keyring, s.audit, s.state)
        handler.application.settings[SETTING] = service
    assert isinstance(service, BackupService)
    return service


def _int(handler: BaseHandler, name: str, default: int) -> int:
    raw = handler.get_body_argument(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"{name.replace('_', ' ')} must be a whole number") from None


class BackupPage(BaseHandler):
    async def _render(self, error: str | None = None, notice: str = "") -> None:
        service = backup_service(self)
        config, history, has_pp, nxt = await self.run(self._load, service)
        self.render(
            "backup_admin.html",
            config=config,
            history=history,
            has_passphrase=has_pp,
            next_run=nxt,
            running_since=service.running_since,
            paused=service.paused,
            weekdays=WEEKDAYS,
            local_dir=str(service.local_dir),
            error=error,
            notice=NOTICES.get(notice, ""),
        )

    @staticmethod
    def _load(service: BackupService) -> tuple[BackupConfig, list[Any], bool, Any]:
        return service.config(), service.history(50), service.has_passphrase(), service.next_run()

    @needs(Action.MANAGE_BACKUP)
    async def get(self) -> None:
        await self._render(notice=self.get_query_argument("done", ""))


class BackupSettingsPage(BackupPage):
    @needs(Action.MANAGE_BACKUP)
    async def post(self) -> None:
        service = backup_service(self)
        try:
            config = self._parse(await self.run(service.config))
            await self.run(service.save_config, config, self.user.username, self.source_ip)
        except ValidationError as exc:
            self.set_status(400)
            await self._render(error=str(exc))
            return
        self.redirect(PATH + "?done=saved")

    def _parse(self, current: BackupConfig) -> BackupConfig:
        arg = self.get_body_argument
        schedule = Schedule(
            kind=arg("kind", "off"),
            every_days=_int(self, "every_days", 1),
            weekday=_int(self, "weekday", 6),
            day=_int(self, "day", 1),
            at=parse_time(arg("at", "02:00")),
            anchor=current.schedule.anchor,
        )
        sse = arg("s3_sse", "")
        s3 = S3Config(
            enabled=arg("s3_enabled", "") == "on",
            bucket=arg("s3_bucket", "").strip()[:63],
            prefix=arg("s3_prefix", "").strip()[:256],
            endpoint_url=arg("s3_endpoint_url", "").strip()[:512],
            region=arg("s3_region", "").strip()[:64],
            sse="" if sse == "none" else sse,
            kms_key_id=arg("s3_kms_key_id", "").strip()[:256],
        )
        return dataclasses.replace(
            current,
            schedule=schedule,
            keep=_int(self, "keep", current.keep),
            local_enabled=arg("local_enabled", "") == "on",
            s3=s3,
        )


class BackupPassphrasePage(BackupPage):
    @needs(Action.MANAGE_BACKUP)
    async def post(self) -> None:
        service = backup_service(self)
        remove = self.get_body_argument("remove", "") == "1"
        passphrase = self.get_body_argument("passphrase", "")[:1024]
        confirm = self.get_body_argument("confirm", "")[:1024]
        try:
            if not remove and passphrase != confirm:
                raise ValidationError("the passphrase and its confirmation differ")
            await self.run(
                service.set_passphrase,
                None if remove else passphrase,
                self.user.username,
                self.source_ip,
            )
        except ValidationError as exc:
            self.set_status(400)
            await self._render(error=str(exc))
            return
        self.redirect(PATH + "?done=" + ("nopassphrase" if remove else "passphrase"))


class BackupRunPage(BackupPage):
    @needs(Action.MANAGE_BACKUP)
    async def post(self) -> None:
        service = backup_service(self)
        try:
            service.check_can_run()
        except (BackupError, NotPrimaryError) as exc:
            self.set_status(409)
            await self._render(error=str(exc))
            return
        # The run takes as long as the vault is big: start it and answer at once.
        self.ctx.executor.submit(
            service.run_quietly, actor=self.user.username, source_ip=self.source_ip
        )
        self.redirect(PATH + "?done=started")


class BackupResumePage(BackupPage):
    @needs(Action.MANAGE_BACKUP)
    async def post(self) -> None:
        service = backup_service(self)
        await self.run(service.resume, self.user.username, self.source_ip)
        self.redirect(PATH + "?done=resumed")


ROUTES = [
    (PATH, BackupPage),
    (PATH + "/settings", BackupSettingsPage),
    (PATH + "/passphrase", BackupPassphrasePage),
    (PATH + "/run", BackupRunPage),
    (PATH + "/resume", BackupResumePage),
]
