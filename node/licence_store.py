"""Where the licence state of a vault is kept.

The licence is cluster-wide state: every node must enforce the same one, and an install on
one node must hold on the others without a restart. Today it lives in ``app_settings``,
which PostgreSQL replicates to every data node; a node notices a new licence through a
version counter that each install increments. The service reads it through
:class:`LicenceStorage` only, so the state can move (for example into the Raft state)
without touching the rules.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.store.dialect import for_update
from node.store.models import AppSetting

KEY_FILE = "licence.file"
KEY_VERSION = "licence.version"
KEY_INSTALLED_AT = "licence.installed_at"
KEY_LATEST_SEEN = "licence.latest_seen"


@dataclass(frozen=True)
class LicenceRecord:
    """The small, cheap-to-read part of the state: read on every check."""

    version: int
    installed_at: dt.datetime | None
    latest_seen: dt.datetime | None


class LicenceStorage(abc.ABC):
    """The licence state of one vault. Every method works inside the caller's session, so a
    check runs in the same transaction as the operation it guards."""

    @abc.abstractmethod
    def read(self, session: Session) -> LicenceRecord:
        """The version counter and the two clocks. Cheap: called on every check."""

    @abc.abstractmethod
    def read_file(self, session: Session) -> str | None:
        """The text of the installed licence file, or None when none was installed."""

    @abc.abstractmethod
    def write_file(self, session: Session, text: str) -> int:
        """Replace the installed licence and increment the version; returns the version.
        Every node sees the new version on its next check."""

    @abc.abstractmethod
    def set_installed_at(self, session: Session, when: dt.datetime) -> bool:
        """Record the installation time unless one is recorded; True if it wrote."""

    @abc.abstractmethod
    def set_latest_seen(self, session: Session, when: dt.datetime) -> None:
        """Record ``when`` as the latest time seen, unless a later one is recorded."""

    @abc.abstractmethod
    def lock(self, session: Session) -> None:
        """Serialise limit checks: held until the session's transaction ends, so two nodes
        cannot both add the last allowed administrator or resource."""


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        return None


def _text(when: dt.datetime) -> str:
    return when.replace(tzinfo=None).isoformat(timespec="seconds")


class AppSettingsLicenceStorage(LicenceStorage):
    """The licence state in ``app_settings`` rows (replicated with the vault data)."""

    def read(self, session: Session) -> LicenceRecord:
        rows: dict[str, Any] = dict(
            session.execute(
                select(AppSetting.key, AppSetting.value).where(
                    AppSetting.key.in_((KEY_VERSION, KEY_INSTALLED_AT, KEY_LATEST_SEEN))
                )
            ).all()
        )
        version = rows.get(KEY_VERSION)
        return LicenceRecord(
            version=version if isinstance(version, int) else 0,
            installed_at=_time(rows.get(KEY_INSTALLED_AT)),
            latest_seen=_time(rows.get(KEY_LATEST_SEEN)),
        )

    def read_file(self, session: Session) -> str | None:
        row = session.get(AppSetting, KEY_FILE)
        return row.value if row is not None and isinstance(row.value, str) else None

    def _put(self, session: Session, key: str, value: Any) -> None:
        row = session.get(AppSetting, key)
        if row is None:
            session.add(AppSetting(key=key, value=value))
        else:
            row.value = value

    def write_file(self, session: Session, text: str) -> int:
        row = session.scalars(
            for_update(session, select(AppSetting).where(AppSetting.key == KEY_VERSION))
        ).first()
        version = (row.value if row is not None and isinstance(row.value, int) else 0) + 1
        self._put(session, KEY_FILE, text)
        self._put(session, KEY_VERSION, version)
        session.flush()
        return version

    def set_installed_at(self, session: Session, when: dt.datetime) -> bool:
        if session.get(AppSetting, KEY_INSTALLED_AT) is not None:
            return False
        session.add(AppSetting(key=KEY_INSTALLED_AT, value=_text(when)))
        if session.get(AppSetting, KEY_VERSION) is None:
            session.add(AppSetting(key=KEY_VERSION, value=0))
        session.flush()
        return True

    def set_latest_seen(self, session: Session, when: dt.datetime) -> None:
        row = session.get(AppSetting, KEY_LATEST_SEEN)
        if row is None:
            session.add(AppSetting(key=KEY_LATEST_SEEN, value=_text(when)))
        else:
            current = _time(row.value)
            if current is not None and current >= when:
                return
            row.value = _text(when)
        session.flush()

    def lock(self, session: Session) -> None:
        session.scalars(
            for_update(session, select(AppSetting).where(AppSetting.key == KEY_VERSION))
        ).first()
