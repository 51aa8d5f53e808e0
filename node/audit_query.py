"""Reading the audit trail: filtered, paged views of the resource audit and the user audit,
and the chain check with the first broken row.

Who may read what: an Administrator (or anyone with Super Administrator scope) reads every
row. An auditor reads the whole user audit (logins, user management, settings: it names
people, not vault objects) and the rows of the resource audit about accounts they may see,
or about resources they may see (``node.access``: owned or shared at any level); a
resource-audit row that names no resource or account is for administrators only. The filter
is part of the SQL query, so counts and pages never reveal hidden rows.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select, true
from sqlalchemy.orm import Session

from node.access import visible_accounts, visible_resources
from node.audit import (
    DAMAGED,
    QUERY_REPORT_OPERATION,
    TRANSFER_OWNERSHIP_OPERATION,
    ChainReport,
    verify_chain,
)
from node.auth import SessionUser, normalize_username
from node.errors import PermissionDeniedError, ValidationError
from node.permissions import Action, allowed
from node.roles import Role
from node.store.db import Store
from node.store.dialect import ReadOnlyStore
from node.store.models import Account, AuditRow, Resource

CATEGORIES = ("resource", "user")
RESULTS = ("success", "failure")
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_FILTER_TEXT = 256
# User-audit rows that tell of vault objects: for readers of every row only.
ADMIN_ONLY_USER_OPERATIONS = (QUERY_REPORT_OPERATION, TRANSFER_OWNERSHIP_OPERATION)


@dataclass(frozen=True)
class AuditEntry:
    """One audit row as readers see it (the chain hashes are left out)."""

    id: int
    ts: dt.datetime | None  # None: the row is unreadable (see ``damaged``)
    category: str
    username: str
    source_ip: str
    operation: str
    target: str
    resource_id: int | None
    account_id: int | None
    reason: str
    result: str
    detail: str
    damaged: bool = False  # its stored values cannot be read: altered outside Strongroom


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        ts=row.ts,
        category=row.category,
        username=row.username,
        source_ip=row.source_ip,
        operation=row.operation,
        target=row.target,
        resource_id=row.resource_id,
        account_id=row.account_id,
        reason=row.reason,
        result=row.result,
        detail=row.detail,
    )


def _read_entry(session: Session, row_id: int) -> AuditEntry | None:
    """One row by id, as an entry marked ``damaged`` when a stored value cannot be read
    (on SQLite a column can be given any value behind the node's back); None if absent."""
    try:
        row = session.get(AuditRow, row_id)
    except DAMAGED:
        session.expunge_all()
        return AuditEntry(
            id=row_id,
            ts=None,
            category="",
            username="",
            source_ip="",
            operation="",
            target="",
            resource_id=None,
            account_id=None,
            reason="",
            result="unreadable",
            detail="this row's stored values cannot be read: it was altered outside "
            "Strongroom (see Verify audit chain)",
            damaged=True,
        )
    return None if row is None else _entry(row)


@dataclass(frozen=True)
class AuditFilter:
    """Which rows to show. Empty fields do not filter. ``since`` is inclusive and
    ``until`` exclusive (naive UTC)."""

    category: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    username: str = ""
    operation: str = ""
    resource: str = ""  # part of the target's name, case-insensitive
    resource_id: int | None = None
    result: str = ""

    def __post_init__(self) -> None:
        if self.category is not None and self.category not in CATEGORIES:
            raise ValidationError(f"unknown audit category '{self.category}'")
        if self.result and self.result not in RESULTS:
            raise ValidationError("result must be 'success' or 'failure'")
        for name in ("username", "operation", "resource"):
            if len(getattr(self, name)) > MAX_FILTER_TEXT:
                raise ValidationError(
                    f"the {name} filter is longer than {MAX_FILTER_TEXT} characters"
                )
        if self.since and self.until and self.since >= self.until:
            raise ValidationError("the start of the time range must be before its end")


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


@dataclass(frozen=True)
class ChainState:
    report: ChainReport
    broken_row: AuditEntry | None


def sees_everything(viewer: SessionUser) -> bool:
    """Administrators and Super Administrators read every audit row and report line."""
    return viewer.role is Role.ADMINISTRATOR or viewer.super_admin


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def parse_time_bound(text: str, *, end: bool = False) -> dt.datetime | None:
    """A filter bound from a form: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` in UTC, or
    with an offset. A date alone as an end bound means the end of that day. Only these
    forms: Python also reads ``20261130`` or ``2026-W48-1``, which the end-of-day rule
    would not recognise."""
    text = text.strip()
    if not text:
        return None
    if len(text) > 32:
        raise ValidationError("a time bound is at most 32 characters")
    try:
        if _DAY.fullmatch(text):
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day)
            return start + dt.timedelta(days=1) if end else start
        if not _TIME.fullmatch(text):
            raise ValueError(text)
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: past the calendar's last day
        raise ValidationError(
            f"'{text}' is not a date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM) the calendar can hold"
        ) from None
    return value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class AuditQueryService:
    """Read-only access to the audit trail for pages, reports and the CLI."""

    def __init__(self, store: Store, reader: ReadOnlyStore, audit_key: bytes) -> None:
        self._store = store
        self._reader = reader
        self._key = audit_key

    def _scope(self, viewer: SessionUser | None) -> ColumnElement[bool]:
        """The rows ``viewer`` may read (None: the local operator on the CLI)."""
        if viewer is None:
            return true()
        if not allowed(viewer.role, Action.VIEW_AUDIT):
            raise PermissionDeniedError("your role does not allow reading the audit trail")
        if sees_everything(viewer):
            return true()
        resource_rows = and_(
            AuditRow.category == "resource",
            or_(
                AuditRow.account_id.in_(select(Account.id).where(visible_accounts(viewer))),
                and_(
                    AuditRow.account_id.is_(None),
                    AuditRow.resource_id.in_(select(Resource.id).where(visible_resources(viewer))),
                ),
            ),
        )
        # The user audit names people, not vault objects, except a query report's SQL and
        # an ownership transfer's summary (how many resources and groups a user owned:
        # the resource audit has a row for each resource, for those who may see it).
        user_rows = and_(
            AuditRow.category == "user", AuditRow.operation.not_in(ADMIN_ONLY_USER_OPERATIONS)
        )
        return or_(user_rows, resource_rows)

    def _where(self, flt: AuditFilter) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if flt.category:
            clauses.append(AuditRow.category == flt.category)
        if flt.since:
            clauses.append(AuditRow.ts >= flt.since)
        if flt.until:
            clauses.append(AuditRow.ts < flt.until)
        if flt.username.strip():
            clauses.append(AuditRow.username == normalize_username(flt.username))
        if flt.operation.strip():
            clauses.append(AuditRow.operation == flt.operation.strip())
        if flt.resource.strip():
            pattern = f"%{_like_escape(flt.resource.strip().lower())}%"
            clauses.append(func.lower(AuditRow.target).like(pattern, escape="\\"))
        if flt.resource_id is not None:
            clauses.append(AuditRow.resource_id == flt.resource_id)
        if flt.result:
            clauses.append(AuditRow.result == flt.result)
        return clauses

    def search(
        self,
        viewer: SessionUser | None,
        flt: AuditFilter,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AuditPage:
        """Rows matching ``flt`` that ``viewer`` may read, newest first, one page."""
        if page < 1:
            raise ValidationError("page numbers start at 1")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValidationError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
        with self._store.sessions() as session:
            where = [self._scope(viewer), *self._where(flt)]
            total = session.scalar(select(func.count()).select_from(AuditRow).where(*where))
            offset = (page - 1) * page_size
            try:
                rows = session.scalars(
                    select(AuditRow)
                    .where(*where)
                    .order_by(AuditRow.id.desc())
                    .offset(offset)
                    .limit(page_size)
                ).all()
                entries = [_entry(r) for r in rows]
            except DAMAGED:
                # A row altered outside Strongroom (verify names it) must not hide the rest
                # of the trail from investigators: row by row, the damaged one marked.
                session.expunge_all()
                ids = session.scalars(
                    select(AuditRow.id)
                    .where(*where)
                    .order_by(AuditRow.id.desc())
                    .offset(offset)
                    .limit(page_size)
                ).all()
                found = (_read_entry(session, rid) for rid in ids)
                entries = [e for e in found if e is not None]
            return AuditPage(entries, int(total or 0), page, page_size)

    def operations(self, viewer: SessionUser | None, category: str | None = None) -> list[str]:
        """The operation names that occur, for the filter's drop-down list."""
        with self._store.sessions() as session:
            stmt = select(AuditRow.operation).where(self._scope(viewer)).distinct()
            if category:
                stmt = stmt.where(AuditRow.category == category)
            return sorted(session.scalars(stmt).all())

    def verify(self) -> ChainState:
        """Walk the whole chain in one read-only snapshot (appends going on meanwhile are
        neither seen nor blocked); on a break, also return the broken row as stored now
        (None when the row is missing)."""
        with self._reader.session() as session:
            report = verify_chain(session, self._key)
            broken = None
            if report.first_broken_id is not None:
                broken = _read_entry(session, report.first_broken_id)
            return ChainState(report, broken)
