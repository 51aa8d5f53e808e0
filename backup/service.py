"""The backup service of a running node: configuration (schedule, targets, retention,
recovery passphrase), runs (now or scheduled), retention, history, and the scheduler.

Configuration lives in ``app_settings`` (replicated with the vault data): ``backup.config``
holds the schedule and targets, ``backup.passphrase`` the recovery passphrase's Argon2id
key-encryption key, itself encrypted by the key ring (the passphrase is never stored), and
``backup.last_slot`` the last scheduled time that was handled.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backup import crypto
from backup.archive import (
    ArchiveInfo,
    PassphraseWrap,
    ProgressFn,
    archive_name,
    no_progress,
    write_archive,
)
from backup.dialect import snapshot_engine
from backup.errors import BackupBusyError, BackupError, TargetError
from backup.restore import RESTORED_MARKER
from backup.schedule import Schedule, latest_slot, next_slot
from backup.targets import BackupTarget, LocalTarget, S3Location, S3Target
from node.audit import AuditEvent, AuditLog
from node.errors import NotPrimaryError, StrongroomError, ValidationError
from node.keyring import KeyRing, master_check, read_key_file
from node.settings import Settings
from node.store.db import Store, head_revision
from node.store.models import AppSetting, BackupRun, Base, KeyringMeta, utcnow

log = logging.getLogger("strongroom.backup")

CONFIG_KEY = "backup.config"
PASSPHRASE_KEY = "backup.passphrase"
LAST_SLOT_KEY = "backup.last_slot"
PAUSED_FILE = RESTORED_MARKER
MIN_PASSPHRASE = 12
SSE_CHOICES = ("", "AES256", "aws:kms")
Clock = Callable[[], dt.datetime]


class NodeRole(Protocol):
    """What the service reads of ``node.services.NodeState`` (kept as a protocol so that
    backups do not import every service of the node)."""

    role: str
    primary_address: str | None


def utc_clock() -> dt.datetime:
    return utcnow()


@dataclass(frozen=True)
class S3Config:
    enabled: bool = False
    bucket: str = ""
    prefix: str = "strongroom"
    endpoint_url: str = ""
    region: str = ""
    sse: str = ""
    kms_key_id: str = ""

    def location(self) -> S3Location:
        return S3Location(
            bucket=self.bucket,
            prefix=self.prefix.strip("/"),
            endpoint_url=self.endpoint_url or None,
            region=self.region or None,
            sse=self.sse,
            kms_key_id=self.kms_key_id,
        )


@dataclass(frozen=True)
class BackupConfig:
    schedule: Schedule = field(default_factory=Schedule)
    keep: int = 7
    local_enabled: bool = True
    s3: S3Config = field(default_factory=S3Config)

    def validate(self) -> BackupConfig:
        if not 1 <= self.keep <= 1000:
            raise ValidationError("'keep the latest N' must be between 1 and 1000")
        if self.s3.enabled:
            bucket = self.s3.bucket
            if not 3 <= len(bucket) <= 63 or not all(c.isalnum() or c in ".-" for c in bucket):
                raise ValidationError("the S3 bucket name must be 3-63 letters, digits, . or -")
            if self.s3.endpoint_url and not self.s3.endpoint_url.startswith(
                ("https://", "http://")
            ):
                raise ValidationError("the S3 endpoint URL must start with https:// or http://")
            if self.s3.sse not in SSE_CHOICES:
                raise ValidationError("server-side encryption must be none, AES256 or aws:kms")
            if ".." in self.s3.prefix or self.s3.prefix.startswith("/"):
                raise ValidationError("the S3 prefix must be a relative path without '..'")
        if not self.local_enabled and not self.s3.enabled:
            raise ValidationError("enable at least one target (local directory or S3)")
        return self

    def target_names(self) -> list[str]:
        return [n for n, on in (("local", self.local_enabled), ("s3", self.s3.enabled)) if on]

    def as_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule.as_dict(),
            "keep": self.keep,
            "local_enabled": self.local_enabled,
            "s3": {
                "enabled": self.s3.enabled,
                "bucket": self.s3.bucket,
                "prefix": self.s3.prefix,
                "endpoint_url": self.s3.endpoint_url,
                "region": self.s3.region,
                "sse": self.s3.sse,
                "kms_key_id": self.s3.kms_key_id,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupConfig:
        s3 = dict(data.get("s3") or {})
        return cls(
            schedule=Schedule.from_dict(dict(data.get("schedule") or {})),
            keep=int(data.get("keep", 7)),
            local_enabled=bool(data.get("local_enabled", True)),
            s3=S3Config(
                enabled=bool(s3.get("enabled", False)),
                bucket=str(s3.get("bucket", "")),
                prefix=str(s3.get("prefix", "strongroom")),
                endpoint_url=str(s3.get("endpoint_url", "")),
                region=str(s3.get("region", "")),
                sse=str(s3.get("sse", "")),
                kms_key_id=str(s3.get("kms_key_id", "")),
            ),
        )


@dataclass(frozen=True)
class RunRecord:
    """One row of the backup history, detached from the database."""

    id: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    target: str
    archive_name: str
    size_bytes: int
    result: str
    message: str

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class RunOutcome:
    record: RunRecord
    info: ArchiveInfo | None
    pruned: dict[str, list[str]]

    def sentence(self) -> str:
        r = self.record
        if r.result == "success" and self.info is not None:
            return (
                f"backup {r.archive_name}: {self.info.total_rows} rows in "
                f"{len(self.info.rows)} tables, {r.size_bytes} bytes, "
                f"{r.seconds or 0:.1f} s -> {r.target}"
            )
        return f"backup {r.result}: {r.message}"


def snapshot_archive(
    store: Store,
    key_path: Path,
    dest: Path,
    *,
    installation_id: str,
    passphrase: PassphraseWrap | None = None,
    created: dt.datetime | None = None,
    progress: ProgressFn = no_progress,
) -> ArchiveInfo:
    """Write an archive of every table of the schema from one consistent read snapshot of
    ``store`` (readers never block the node's writers)."""
    master = read_key_file(key_path)
    url = store.engine.url.render_as_string(hide_password=False)
    engine = snapshot_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            revision = MigrationContext.configure(conn).get_current_revision()
            if revision != head_revision():
                raise BackupError(
                    f"the database is at schema revision {revision}, this Strongroom expects "
                    f"{head_revision()}; start the node once so it migrates, then back up"
                )
            check = conn.execute(
                select(KeyringMeta.master_check).where(KeyringMeta.id == 1)
            ).scalar()
            if check is None or bytes(check) != master_check(master):
                raise BackupError(
                    f"the master key file {key_path} does not fit this database; "
                    "a backup made with it could not be restored"
                )
            return write_archive(
                conn,
                list(Base.metadata.sorted_tables),
                dest,
                master=master,
                schema_revision=revision,
                installation_id=installation_id,
                source_dialect=store.dialect,
                passphrase=passphrase,
                created=created,
                progress=progress,
            )
    finally:
        engine.dispose()


class BackupService:
    """Backups of one node. Thread-safe; one run at a time."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        keyring: KeyRing,
        audit: AuditLog,
        state: NodeRole,
        *,
        clock: Clock = utc_clock,
        target_factory: Callable[[str, BackupConfig], BackupTarget] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.audit = audit
        self.state = state
        self.clock = clock
        self._target_factory = target_factory or self._default_target
        self._run_lock = threading.Lock()
        self.running_since: dt.datetime | None = None

    # configuration -----------------------------------------------------------------------

    @property
    def local_dir(self) -> Path:
        return self.settings.data_dir / "backUp"

    def _default_target(self, name: str, config: BackupConfig) -> BackupTarget:
        if name == "local":
            return LocalTarget(self.local_dir)
        if name == "s3":
            return S3Target(config.s3.location())
        raise ValidationError(f"unknown backup target {name!r} (local or s3)")

    def target(self, name: str, config: BackupConfig | None = None) -> BackupTarget:
        return self._target_factory(name, config or self.config())

    def _get(self, session: Session, key: str) -> Any:
        row = session.get(AppSetting, key)
        return None if row is None else row.value

    def _put(self, session: Session, key: str, value: Any) -> None:
        row = session.get(AppSetting, key)
        if row is None:
            session.add(AppSetting(key=key, value=value))
        else:
            row.value = value

    def config(self) -> BackupConfig:
        with self.store.sessions() as session:
            data = self._get(session, CONFIG_KEY)
        return BackupConfig() if not data else BackupConfig.from_dict(data)

    def has_passphrase(self) -> bool:
        with self.store.sessions() as session:
            return self._get(session, PASSPHRASE_KEY) is not None

    def save_config(self, config: BackupConfig, actor: str, source_ip: str) -> BackupConfig:
        """Validate and store ``config``. A new schedule counts from now: a time already
        past today does not trigger a backup at once."""
        now = self.clock()
        schedule = config.schedule
        if schedule.kind == "days":
            schedule = replace(schedule, anchor=now.date())
        config = replace(config, schedule=schedule).validate()
        slot = latest_slot(config.schedule, now)
        with self.store.transaction() as session:
            self._put(session, CONFIG_KEY, config.as_dict())
            self._put(session, LAST_SLOT_KEY, slot.isoformat() if slot else None)
            self.audit.append(
                session,
                AuditEvent(
                    operation="backup settings changed",
                    username=actor,
                    source_ip=source_ip,
                    category="user",
                    target="backup",
                    detail=f"{config.schedule.describe()}; keep {config.keep}; "
                    f"targets {', '.join(config.target_names())}",
                ),
            )
        return config

    def set_passphrase(self, passphrase: str | None, actor: str, source_ip: str) -> None:
        """Set (or with None, remove) the recovery passphrase. Only its Argon2id key is kept,
        encrypted by the key ring; archives made from now on can be opened with it."""
        value: dict[str, Any] | None = None
        if passphrase is not None:
            if len(passphrase) < MIN_PASSPHRASE:
                raise ValidationError(
                    f"the recovery passphrase must have at least {MIN_PASSPHRASE} characters"
                )
            salt = secrets.token_bytes(16)
            params = crypto.KdfParams()
            kek = crypto.passphrase_kek(passphrase, salt, params)
            value = {
                "salt": crypto.b64(salt),
                "params": params.as_dict(),
                "kek": crypto.b64(
                    self.keyring.encrypt(kek, "app_settings", "value", PASSPHRASE_KEY)
                ),
            }
        with self.store.transaction() as session:
            if value is None:
                row = session.get(AppSetting, PASSPHRASE_KEY)
                if row is not None:
                    session.delete(row)
            else:
                self._put(session, PASSPHRASE_KEY, value)
            self.audit.append(
                session,
                AuditEvent(
                    operation="backup passphrase " + ("set" if value else "removed"),
                    username=actor,
                    source_ip=source_ip,
                    category="user",
                    target="backup",
                ),
            )

    def _passphrase_wrap(self) -> PassphraseWrap | None:
        with self.store.sessions() as session:
            value = self._get(session, PASSPHRASE_KEY)
        if not value:
            return None
        blob = base64.b64decode(value["kek"])
        kek = self.keyring.decrypt(blob, "app_settings", "value", PASSPHRASE_KEY)
        return PassphraseWrap(
            kek=kek,
            salt=base64.b64decode(value["salt"]),
            params=crypto.KdfParams(**value["params"]),
        )

    def installation_id(self) -> str:
        return self.keyring.derive("installation id").hex()[:32]

    # runs --------------------------------------------------------------------------------

    def run(
        self,
        *,
        targets: list[str] | None = None,
        actor: str = "scheduler",
        source_ip: str = "local",
        progress: ProgressFn = no_progress,
    ) -> RunOutcome:
        """Make one archive, store it on ``targets`` (default: the configured ones), prune
        each to the newest N, and record the run in the history (and the audit trail).
        Raises :class:`BackupBusyError` if a run is in progress."""
        self._check_role()
        if not self._run_lock.acquire(blocking=False):
            raise BackupBusyError("a backup is already running on this node")
        try:
            return self._run(targets, actor, source_ip, progress)
        finally:
            self.running_since = None
            self._run_lock.release()

    def _check_role(self) -> None:
        if self.state.role not in ("single", "primary"):
            raise NotPrimaryError(
                f"this node is {self.state.role}; run backups on the primary",
                self.state.primary_address,
            )

    def check_can_run(self) -> None:
        """Raise what :meth:`run` would raise before it starts (busy, not the primary)."""
        self._check_role()
        if self._run_lock.locked():
            raise BackupBusyError("a backup is already running on this node")

    def run_quietly(self, *, actor: str, source_ip: str) -> None:
        """:meth:`run` for a background thread: the outcome goes to the history and log."""
        try:
            self.run(actor=actor, source_ip=source_ip)
        except (BackupBusyError, NotPrimaryError) as exc:
            log.warning("backup not started: %s", exc)

    def _run(
        self, targets: list[str] | None, actor: str, source_ip: str, progress: ProgressFn
    ) -> RunOutcome:
        config = self.config()
        names = targets or config.target_names()
        started = self.clock()
        self.running_since = started
        clock0 = time.monotonic()
        name = archive_name(started)
        info: ArchiveInfo | None = None
        pruned: dict[str, list[str]] = {}
        stored: list[str] = []
        problems: list[str] = []
        staging = Path(tempfile.mkdtemp(prefix="backup-", dir=self._staging_root()))
        try:
            chosen = [self.target(n, config) for n in names]
            info = snapshot_archive(
                self.store,
                self.settings.key_path,
                staging / name,
                installation_id=self.installation_id(),
                passphrase=self._passphrase_wrap(),
                created=started,
                progress=progress,
            )
            for target in chosen:
                try:
                    target.put(info.path, name)
                    stored.append(target.kind)
                    pruned[target.kind] = target.prune(config.keep)
                except TargetError as exc:
                    problems.append(str(exc))
        except StrongroomError as exc:  # a backup, key file, validation or decryption error
            problems.append(str(exc))
        except SQLAlchemyError as exc:
            problems.append(f"the database could not be read ({type(exc).__name__})")
        except (OSError, ValueError) as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = "success" if stored and not problems else ("partial" if stored else "failed")
        finished = started + dt.timedelta(seconds=time.monotonic() - clock0)
        message = "; ".join(problems)[:1000] or f"stored on {', '.join(stored)}"
        record = self._record(
            started,
            finished,
            "+".join(names)[:16],
            name if stored else "",
            info.size if info else 0,
            result,
            message,
            actor,
            source_ip,
        )
        outcome = RunOutcome(record, info, pruned)
        log.info(outcome.sentence())
        return outcome

    def _staging_root(self) -> Path:
        root = self.settings.data_dir / "run" / "backup-staging"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return root

    def _record(
        self,
        started: dt.datetime,
        finished: dt.datetime,
        target: str,
        name: str,
        size: int,
        result: str,
        message: str,
        actor: str,
        source_ip: str,
    ) -> RunRecord:
        with self.store.transaction() as session:
            row = BackupRun(
                started_at=started,
                finished_at=finished,
                target=target,
                archive_name=name,
                size_bytes=size,
                result=result,
                message=message,
            )
            session.add(row)
            session.flush()
            self.audit.append(
                session,
                AuditEvent(
                    operation="backup",
                    username=actor,
                    source_ip=source_ip,
                    category="user",
                    target=name or target,
                    result="success" if result == "success" else "failure",
                    detail=f"{result}: {size} bytes to {target}",
                ),
            )
            return _snapshot(row)

    def history(self, limit: int = 50) -> list[RunRecord]:
        with self.store.sessions() as session:
            rows = session.scalars(
                select(BackupRun).order_by(BackupRun.id.desc()).limit(limit)
            ).all()
            return [_snapshot(r) for r in rows]

    # scheduling --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """True on a node restored from an archive until an administrator resumes scheduled
        backups (so a recovery drill never writes to, or prunes, production's targets)."""
        return (self.settings.data_dir / PAUSED_FILE).exists()

    def resume(self, actor: str, source_ip: str) -> None:
        with self.store.transaction() as session:
            self.audit.append(
                session,
                AuditEvent(
                    operation="backup schedule resumed",
                    username=actor,
                    source_ip=source_ip,
                    category="user",
                    target="backup",
                ),
            )
            (self.settings.data_dir / PAUSED_FILE).unlink(missing_ok=True)

    def next_run(self) -> dt.datetime | None:
        return next_slot(self.config().schedule, self.clock())

    def tick(self) -> str:
        """One scheduler step: run a backup if a scheduled time has come since the last one
        handled. Returns a sentence saying what it decided."""
        if self.state.role not in ("single", "primary"):
            return f"no action: this node is {self.state.role}; only the primary backs up"
        if self.paused:
            return (
                "no action: scheduled backups are paused because this data directory was "
                "restored from an archive; resume them in Admin > Backup"
            )
        config = self.config()
        now = self.clock()
        slot = latest_slot(config.schedule, now)
        if slot is None:
            return "no action: no backup schedule"
        with self.store.sessions() as session:
            last = self._get(session, LAST_SLOT_KEY)
        if last is not None and dt.datetime.fromisoformat(str(last)) >= slot:
            return f"no action: next backup due {next_slot(config.schedule, now)}"
        with self.store.transaction() as session:
            self._put(session, LAST_SLOT_KEY, slot.isoformat())
        try:
            outcome = self.run(actor="scheduler", source_ip="local")
        except BackupBusyError:
            return f"skipped the backup due {slot}: another backup is running"
        return f"ran the backup due {slot}: {outcome.record.result}"


def _snapshot(row: BackupRun) -> RunRecord:
    return RunRecord(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        target=row.target,
        archive_name=row.archive_name,
        size_bytes=row.size_bytes,
        result=row.result,
        message=row.message,
    )


class Scheduler:
    """Calls :meth:`BackupService.tick` every ``interval`` seconds on a daemon thread until
    stopped. The service's clock decides what time it is, so tests inject one."""

    def __init__(self, service: BackupService, interval: float = 30.0) -> None:
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sr-backup-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        last = ""
        while not self._stop.wait(self.interval):
            try:
                sentence = self.service.tick()
            except Exception:  # noqa: BLE001 - the scheduler must survive a bad cycle
                log.exception("backup scheduler cycle failed")
                continue
            if sentence != last or not sentence.startswith("no action"):
                log.info(sentence)
            last = sentence
