"""The licence applied to a vault: the checks other services call, installing a licence,
and the status shown on Admin > License and by ``strongroom licence show``.

Checks (:meth:`LicenceService.check_add_administrator`, :meth:`check_add_resource`) take the
caller's session, so they run in the transaction of the operation they guard and hold a
lock that keeps two nodes from both adding the last allowed administrator. Feature checks
(:meth:`require`) read the state on their own. Every check re-reads the licence version
from the replicated store, and parses and verifies the licence file again only when that
version changed, so a licence installed on one node holds on every node at once.

Reading passwords is never checked here: a licence never stops it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from node.audit import AuditEvent, AuditLog
from node.errors import LicenceError
from node.licence import (
    Entitlement,
    Feature,
    InvalidLicenceError,
    Licence,
    LicenceWarning,
    admin_refusal,
    compute_entitlement,
    feature_refusal,
    parse_licence_file,
    resource_refusal,
)
from node.licence_store import AppSettingsLicenceStorage, LicenceRecord, LicenceStorage
from node.permissions import Action, allowed
from node.roles import Role
from node.store.db import Store
from node.store.models import Resource, User, utcnow

log = logging.getLogger("strongroom.licence")

# How often the latest time seen is written (it only has to beat the one-day tolerance).
TOUCH_EVERY = dt.timedelta(minutes=5)

ADMIN_ROLES = tuple(r.value for r in Role if r.is_admin_type)


def count_administrators(session: Session) -> int:
    """Users that count against the licence: people (not API users) with an admin-type
    role (Administrator, Password Administrator), enabled or not."""
    return int(
        session.scalar(
            select(func.count(User.id)).where(User.role.in_(ADMIN_ROLES), User.kind == "person")
        )
        or 0
    )


def count_resources(session: Session) -> int:
    """Resources that count against the licence: those not in the trash."""
    return int(
        session.scalar(select(func.count(Resource.id)).where(Resource.deleted_at.is_(None))) or 0
    )


@dataclass(frozen=True)
class LicenceStatus:
    """What Admin > License and ``licence show`` display."""

    entitlement: Entitlement
    admins_used: int
    resources_used: int

    def to_dict(self) -> dict[str, Any]:
        ent = self.entitlement
        lic = ent.licence
        return {
            "edition": ent.edition.value,
            "edition_label": ent.edition.label,
            "state": ent.state,
            "licence_id": lic.id if lic else None,
            "licensee": lic.licensee if lic else None,
            "type": lic.type.value if lic else "evaluation" if ent.state == "evaluation" else None,
            "licensed_edition": lic.edition.value if lic else None,
            "admins_used": self.admins_used,
            "admins_allowed": ent.admins,
            "resources_used": self.resources_used,
            "resources_allowed": ent.resources,
            "issued": lic.issued.isoformat() if lic else None,
            "expires": ent.ends_on.isoformat() if ent.ends_on else None,
            "licence_expires": lic.expires.isoformat() if lic and lic.expires else None,
            "support_until": lic.support_until.isoformat() if lic and lic.support_until else None,
            "days_left": ent.days_left,
            "ended_on": ent.ended_on.isoformat() if ent.ended_on else None,
            "clock_rollback": ent.clock_rollback,
            "warnings": [{"level": w.level, "text": w.text} for w in ent.warnings],
        }


def status_lines(data: dict[str, Any]) -> list[str]:
    """``licence show`` as text, from :meth:`LicenceStatus.to_dict` (which is also what the
    control socket sends)."""
    edition = str(data["edition_label"])
    state = str(data["state"])
    if state == "evaluation":
        edition += " (30-day evaluation)"
    elif state == "licence expired":
        edition += f" (the {str(data['licensed_edition']).title()} licence has expired)"
    elif state == "evaluation ended":
        edition += " (the evaluation has ended)"
    allowed = data["resources_allowed"]
    expires = data["expires"] or data["licence_expires"]
    if data["ended_on"]:
        expiry = f"{data['ended_on']} (ended)"
    elif expires is None:
        expiry = "never"
    elif data["days_left"] is not None:
        expiry = f"{expires} ({data['days_left']} days left)"
    else:
        expiry = f"{expires} (expired)"
    lines = [
        f"Edition:        {edition}",
        f"Licensee:       {data['licensee'] or '-'}",
        f"Type:           {data['type'] or '-'}",
        f"Licence id:     {data['licence_id'] or '-'}",
        f"Administrators: {data['admins_used']} of {data['admins_allowed']} allowed",
        f"Resources:      {data['resources_used']} of "
        f"{'unlimited' if allowed is None else allowed}",
        f"Expires:        {expiry}",
    ]
    if data["support_until"]:
        lines.append(f"Support until:  {data['support_until']}")
    for warning in data["warnings"]:
        lines.append(f"{str(warning['level']).upper()}: {warning['text']}")
    return lines


class LicenceService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        storage: LicenceStorage | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._audit = audit
        self._storage = storage or AppSettingsLicenceStorage()
        self._clock = clock
        self._cache: tuple[int, Licence | None, str | None] | None = None
        self._cache_lock = threading.Lock()
        self._rollback_logged: dt.datetime | None = None

    # reading the state ------------------------------------------------------------------

    def _licence(self, session: Session, version: int) -> tuple[Licence | None, str | None]:
        cached = self._cache
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        text = self._storage.read_file(session)
        licence: Licence | None = None
        problem: str | None = None
        if text is not None:
            try:
                licence = parse_licence_file(text)
            except InvalidLicenceError as exc:
                problem = str(exc)
                log.warning("installed licence cannot be used", extra={"problem": problem})
        with self._cache_lock:
            self._cache = (version, licence, problem)
        return licence, problem

    def _compute(self, session: Session) -> tuple[Entitlement, LicenceRecord, dt.datetime]:
        now = self._clock().replace(tzinfo=None)
        record = self._storage.read(session)
        licence, problem = self._licence(session, record.version)
        installed_at = record.installed_at or now
        ent = compute_entitlement(licence, installed_at, now, record.latest_seen, problem)
        if ent.clock_rollback and record.latest_seen != self._rollback_logged:
            self._rollback_logged = record.latest_seen
            log.warning(
                "system clock is behind the latest time seen; licence terms count from it",
                extra={"latest_seen": str(record.latest_seen), "clock": str(now)},
            )
        return ent, record, now

    @staticmethod
    def _needs_touch(record: LicenceRecord, now: dt.datetime) -> bool:
        return (
            record.installed_at is None
            or record.latest_seen is None
            or now - record.latest_seen >= TOUCH_EVERY
        )

    def _touch(self, session: Session, record: LicenceRecord, now: dt.datetime) -> None:
        if record.installed_at is None:
            self._storage.set_installed_at(session, now)
        if record.latest_seen is None or now - record.latest_seen >= TOUCH_EVERY:
            self._storage.set_latest_seen(session, now)

    def entitlement_in(self, session: Session, *, locked: bool = False) -> Entitlement:
        """The entitlement, read in the caller's transaction. With ``locked`` (the caller
        holds :meth:`LicenceStorage.lock`), the latest time seen is recorded there too; rows
        are always locked in the same order (version, then clocks), so two nodes never
        deadlock on them."""
        ent, record, now = self._compute(session)
        if locked and self._needs_touch(record, now):
            self._touch(session, record, now)
        return ent

    def entitlement(self) -> Entitlement:
        """The entitlement now, read in a session of its own. The latest time seen is
        recorded on the side; a node that cannot write (a standby) still answers."""
        with self._store.sessions() as session:
            ent, record, now = self._compute(session)
        if self._needs_touch(record, now):
            try:
                with self._store.transaction() as session:
                    self._storage.lock(session)
                    self._touch(session, self._storage.read(session), now)
            except SQLAlchemyError:
                log.debug("could not record the latest time seen (read-only node?)")
        return ent

    def ensure_started(self) -> None:
        """At a node's start: record the installation time on a new vault (which starts the
        evaluation) and the latest time seen."""
        try:
            with self._store.transaction() as session:
                now = self._clock().replace(tzinfo=None)
                self._storage.lock(session)
                if self._storage.set_installed_at(session, now):
                    log.info("new installation: the 30-day evaluation starts now")
                self._storage.set_latest_seen(session, now)
        except SQLAlchemyError:
            log.warning("could not record the installation time (read-only node?)")

    def status(self) -> LicenceStatus:
        ent = self.entitlement()
        with self._store.sessions() as session:
            admins = count_administrators(session)
            resources = count_resources(session)
        return LicenceStatus(ent, admins, resources)

    def warnings_for(self, role: Role) -> tuple[LicenceWarning, ...]:
        """The licence warnings for the console banner: shown to those who manage the
        licence (expiry 30, 7 and 1 days ahead, an expired licence or evaluation, a clock
        that went back)."""
        if not allowed(role, Action.MANAGE_LICENCE):
            return ()
        return self.entitlement().warnings

    # the checks other services call -----------------------------------------------------

    def require(self, feature: Feature) -> None:
        """Raise :class:`LicenceError` unless the licence includes ``feature``."""
        ent = self.entitlement()
        if not ent.includes(feature):
            raise feature_refusal(ent, feature)

    def require_in(self, session: Session, feature: Feature) -> None:
        """:meth:`require` inside the caller's transaction."""
        ent = self.entitlement_in(session)
        if not ent.includes(feature):
            raise feature_refusal(ent, feature)

    def check_add_administrator(self, session: Session, adding: int = 1) -> None:
        """Call in the transaction that creates an administrator or gives a user an
        admin-type role, before the change is flushed. Raises :class:`LicenceError` when the
        licence does not allow ``adding`` more administrators."""
        self._storage.lock(session)
        ent = self.entitlement_in(session, locked=True)
        in_use = count_administrators(session)
        if in_use + adding > ent.admins:
            raise admin_refusal(ent, in_use)

    def check_add_resource(self, session: Session, adding: int = 1) -> None:
        """Call in the transaction that creates (or restores) resources, before the change
        is flushed. Raises :class:`LicenceError` over the licence's resource limit."""
        ent = self.entitlement_in(session)
        if ent.resources is None:
            return
        self._storage.lock(session)
        ent = self.entitlement_in(session, locked=True)
        in_use = count_resources(session)
        if ent.resources is not None and in_use + adding > ent.resources:
            raise resource_refusal(ent, in_use, adding)

    def check_join_cluster(self) -> None:
        """Call before a second node joins: high availability needs Premium or higher."""
        self.require(Feature.HIGH_AVAILABILITY)

    # installing -------------------------------------------------------------------------

    def install(self, text: str | bytes, actor: str, source_ip: str) -> Licence:
        """Verify a licence file and make it the vault's licence, audited. Raises
        :class:`InvalidLicenceError` (and changes nothing) for a file that is malformed,
        altered, not signed by the vendor, or already expired."""
        licence = parse_licence_file(text)
        stored = text.decode("utf-8") if isinstance(text, bytes) else text
        with self._store.transaction() as session:
            self._storage.lock(session)
            ent = self.entitlement_in(session, locked=True)
            if licence.expires_at is not None and ent.now >= licence.expires_at:
                raise InvalidLicenceError(
                    f"this licence expired on {licence.expires:%Y-%m-%d}; it was not installed"
                )
            version = self._storage.write_file(session, stored)
            expiry = licence.expires.isoformat() if licence.expires else "never"
            self._audit.append(
                session,
                AuditEvent(
                    operation="install licence",
                    username=actor,
                    source_ip=source_ip,
                    target=f"licence {licence.id}",
                    category="user",
                    detail=f"{licence.edition.label} {licence.type.value} for "
                    f"{licence.licensee}, {licence.admins} administrators, expires {expiry}",
                ),
            )
        log.info(
            "licence installed",
            extra={"licence": licence.id, "edition": licence.edition.value, "version": version},
        )
        return licence


__all__ = [
    "LicenceError",
    "LicenceService",
    "LicenceStatus",
    "count_administrators",
    "count_resources",
    "status_lines",
]
