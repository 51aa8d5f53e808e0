"""The tamper-evident audit trail.

Each row carries the previous row's HMAC and an HMAC over its own canonical content, keyed
by the key ring's audit key. Rows are appended inside the caller's transaction, so an
audited operation and its audit row commit together or not at all (fail closed). The
``audit_head`` row names the last row; it is locked while appending, which serialises the
chain, and lets :func:`verify_chain` notice a deleted tail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from node.errors import AUDIT_NOT_WRITTEN, AuditWriteError
from node.store.db import AUDITED, deferred_rows, transaction_state
from node.store.dialect import is_postgres
from node.store.models import AuditHead, AuditRow, User, utcnow
from node.store.point_reads import write_rows

if TYPE_CHECKING:
    from node.auth import SessionUser

GENESIS = "0" * 64

# The user-audit row of a query report holds the SQL as it ran, which may name any resource
# or account: it is for readers who see the whole vault (node.audit_query), not for every
# auditor, as the rest of the user audit is.
QUERY_REPORT_OPERATION = "run query report"
# Its user-audit row counts the resources and groups a user owned: for the same readers.
TRANSFER_OWNERSHIP_OPERATION = "transfer ownership"
# Core statements on the tables, built once: appending runs for every password fetch.
_ROWS = cast(Table, AuditRow.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_ROW_COLUMNS = tuple(c.key for c in _ROWS.columns)
_READ_HEAD = select(_HEAD.c.last_id, _HEAD.c.last_hmac).where(_HEAD.c.id == 1)
_NEW_HEAD = insert(_HEAD).values(id=1, last_id=0, last_hmac=GENESIS, head_hmac="")
_INSERT_ROW = insert(_ROWS)
_UPDATE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(
        last_id=bindparam("new_last_id"),
        last_hmac=bindparam("new_last_hmac"),
        head_hmac=bindparam("new_head_hmac"),
    )
)
_BATCH_ROWS = "audit.events"  # this group commit's events, not yet written
MAX_FIELD = {"target": 512, "reason": 1024, "detail": 1024, "username": 128, "source_ip": 64}


@dataclass(frozen=True)
class AuditEvent:
    """What to record. Never put a secret in any field."""

    operation: str
    username: str
    source_ip: str
    target: str = ""
    category: str = "resource"  # resource | user
    result: str = "success"
    reason: str = ""
    detail: str = ""
    resource_id: int | None = None
    account_id: int | None = None


def user_event(
    actor: SessionUser, ip: str, operation: str, target: str, detail: str = ""
) -> AuditEvent:
    """A user-audit row of ``actor``'s operation (on users, settings, ownership)."""
    return AuditEvent(
        operation=operation,
        username=actor.username,
        source_ip=ip,
        target=target,
        category="user",
        detail=detail,
    )


def resource_event(
    actor: SessionUser,
    ip: str,
    operation: str,
    target: str,
    resource_id: int | None,
    account_id: int | None,
    reason: str,
    detail: str,
    result: str,
) -> AuditEvent:
    """A resource-audit row of ``actor``'s operation."""
    return AuditEvent(
        operation=operation,
        username=actor.username,
        source_ip=ip,
        target=target,
        category="resource",
        resource_id=resource_id,
        account_id=account_id,
        reason=reason,
        detail=detail,
        result=result,
    )


def _canonical(row: AuditRow) -> bytes:
    return _encode({c: getattr(row, c) for c in _ROW_COLUMNS})


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def _encode(values: Mapping[str, Any]) -> bytes:
    """The bytes an audit row's HMAC covers: its columns (``hmac`` aside), canonical JSON."""
    fields = {
        "id": values["id"],
        "ts": values["ts"].isoformat(timespec="microseconds"),
        "category": values["category"],
        "username": values["username"],
        "source_ip": values["source_ip"],
        "operation": values["operation"],
        "target": values["target"],
        "resource_id": values["resource_id"],
        "account_id": values["account_id"],
        "reason": values["reason"],
        "result": values["result"],
        "detail": values["detail"],
        "prev": values["prev_hmac"],
    }
    return _CANONICAL(fields).encode()


def row_hmac(key: bytes, row: AuditRow) -> str:
    return hmac.new(key, _canonical(row), hashlib.sha256).hexdigest()


def head_hmac(key: bytes, last_id: int, last_hmac: str) -> str:
    return hmac.new(key, f"head|{last_id}|{last_hmac}".encode(), hashlib.sha256).hexdigest()


def _clip(name: str, value: str) -> str:
    limit = MAX_FIELD.get(name)
    return value if limit is None or len(value) <= limit else value[: limit - 1] + "…"


class AuditLog:
    """Appends to and verifies the chain. ``key`` is the key ring's audit HMAC key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def append(
        self, session: Session | Connection, event: AuditEvent, now: dt.datetime | None = None
    ) -> None:
        """Add ``event`` in ``session``'s transaction (an ORM session, or a Core connection
        in a transaction). Raises :class:`AuditWriteError` if the row cannot be written, so
        the caller's transaction rolls back and the audited operation does not happen.

        In a group commit (:meth:`node.store.db.Store.submit`) the events of the whole
        batch are gathered and chained just before the commit: one read and one update of
        the head, one multi-row insert. The head is then locked at the very end of the
        transaction: held for the shortest time, and after the rows the batch changes
        (as an ORM transaction's autoflush does before its append), so a batch and an
        ordinary audited write do not lock the same rows in opposite orders."""
        try:
            if isinstance(session, Connection) and transaction_state(session) is not None:
                pending = deferred_rows(session, _BATCH_ROWS, self._write_batch)
                pending.append({"event": event, "at": now or utcnow()})
                return
            if isinstance(session, Session):
                session.info[AUDITED] = True  # Store.transaction: a failed commit says so
            last_id, last_hmac = self._read_head(session)
            values = self._row(last_id, last_hmac, event, now)
            session.execute(_INSERT_ROW, values)
            session.execute(_UPDATE_HEAD, self._head_params(values))
        except SQLAlchemyError as exc:
            raise AuditWriteError(AUDIT_NOT_WRITTEN) from exc

    def _read_head(self, session: Session | Connection) -> tuple[int, str]:
        """The chain's last id and HMAC, the head row locked until the transaction ends
        (on SQLite, BEGIN IMMEDIATE already holds the database lock)."""
        if isinstance(session, Connection):
            postgres = session.dialect.name == "postgresql"
        else:
            postgres = is_postgres(session)
        head = session.execute(_READ_HEAD.with_for_update() if postgres else _READ_HEAD).first()
        if head is None:
            session.execute(_NEW_HEAD)
            return 0, GENESIS
        return int(head.last_id), str(head.last_hmac)

    def _row(
        self, last_id: int, last_hmac: str, event: AuditEvent, now: dt.datetime | None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "id": last_id + 1,
            "ts": (now or utcnow()).replace(tzinfo=None),
            "category": event.category,
            "username": _clip("username", event.username),
            "source_ip": _clip("source_ip", event.source_ip),
            "operation": event.operation,
            "target": _clip("target", event.target),
            "resource_id": event.resource_id,
            "account_id": event.account_id,
            "reason": _clip("reason", event.reason),
            "result": event.result,
            "detail": _clip("detail", event.detail),
            "prev_hmac": last_hmac or GENESIS,
        }
        values["hmac"] = hmac.new(self._key, _encode(values), hashlib.sha256).hexdigest()
        return values

    def _head_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "new_last_id": values["id"],
            "new_last_hmac": values["hmac"],
            "new_head_hmac": head_hmac(self._key, values["id"], values["hmac"]),
        }

    def _write_batch(self, conn: Connection, pending: list[dict[str, Any]]) -> None:
        try:
            last_id, last_hmac = self._read_head(conn)
            rows = []
            for item in pending:
                values = self._row(last_id, last_hmac, item["event"], item["at"])
                rows.append(values)
                last_id, last_hmac = int(values["id"]), str(values["hmac"])
            write_rows(conn, _INSERT_ROW, rows)
            write_rows(conn, _UPDATE_HEAD, [self._head_params(rows[-1])])
        except SQLAlchemyError as exc:
            raise AuditWriteError(AUDIT_NOT_WRITTEN) from exc


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows_checked: int
    first_broken_id: int | None
    problem: str

    def sentence(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.rows_checked} rows verified"
        if self.first_broken_id is None:
            return f"audit chain BROKEN: {self.problem}"
        return f"audit chain BROKEN at row {self.first_broken_id}: {self.problem}"


UNREADABLE = "its content was altered (a stored value cannot be read)"


@dataclass(frozen=True)
class _Unreadable:
    """A stored row whose values the database layer cannot turn into a row (a time that is
    no time, say): only its id could be read."""

    id: int


# What reading or checking a row whose stored values were replaced by ill-typed ones raises
# (SQLite keeps whatever is written into a column).
DAMAGED = (ValueError, TypeError, AttributeError, UnicodeError, OverflowError)


def _iter_rows(session: Session, batch: int = 5000) -> Iterator[AuditRow | _Unreadable]:
    """Every row in id order, those with an id below 1 too (the chain starts at 1: such a
    row can only have been put there); the first unreadable one as :class:`_Unreadable`,
    then nothing more."""
    last: int | None = None
    while True:
        after = [] if last is None else [AuditRow.id > last]
        try:
            rows = session.scalars(
                select(AuditRow).where(*after).order_by(AuditRow.id).limit(batch)
            ).all()
        except DAMAGED:
            for rid in session.scalars(
                select(AuditRow.id).where(*after).order_by(AuditRow.id).limit(batch)
            ):
                try:
                    row = session.scalars(select(AuditRow).where(AuditRow.id == rid)).one()
                except DAMAGED:
                    yield _Unreadable(rid)
                    return
                yield row
            return  # a row failed as part of the batch: it was found above
        if not rows:
            return
        yield from rows
        last = rows[-1].id
        session.expunge_all()


def _check_row(key: bytes, row: AuditRow | _Unreadable, expected_id: int, prev: str) -> str:
    """What is wrong with ``row`` as the chain's row ``expected_id`` after ``prev``, or ""."""
    if isinstance(row, _Unreadable):
        return UNREADABLE
    if row.id < expected_id:
        return "a row was inserted before the chain's first row"
    if row.id != expected_id:
        return f"row {expected_id} is missing"
    try:
        if row.prev_hmac != prev:
            return "does not follow the previous row (a row was deleted, inserted or reordered)"
        if not hmac.compare_digest(row_hmac(key, row), row.hmac):
            return "its content was altered"
    except DAMAGED:
        return "its content was altered (a stored value is not of its kind)"
    return ""


def verify_chain(session: Session, key: bytes) -> ChainReport:
    """Walk the whole chain in id order and report the first row that does not fit."""
    prev = GENESIS
    expected_id = 1
    count = 0
    for row in _iter_rows(session):
        problem = _check_row(key, row, expected_id, prev)
        if problem:
            missing = isinstance(row, AuditRow) and row.id > expected_id
            return ChainReport(False, count, expected_id if missing else row.id, problem)
        assert isinstance(row, AuditRow)
        prev = row.hmac
        expected_id += 1
        count += 1
    head = session.get(AuditHead, 1)
    last_id = count
    if head is None:
        if count:
            return ChainReport(False, count, None, "the chain head record is missing")
        if session.scalars(select(User.id).limit(1)).first() is not None:
            # Every user is added with an audit row, so users without any audit row and
            # without a head mean the whole trail was deleted.
            return ChainReport(
                False, 0, 1, "the whole audit trail was deleted (users exist, but no audit rows)"
            )
        return ChainReport(True, 0, None, "")
    try:
        head_ok = isinstance(head.last_id, int) and hmac.compare_digest(
            head_hmac(key, head.last_id, head.last_hmac), head.head_hmac
        )
    except DAMAGED:
        head_ok = False
    if not head_ok:
        return ChainReport(False, count, None, "the chain head record was altered")
    if head.last_id > last_id:
        return ChainReport(
            False,
            count,
            last_id + 1,
            f"rows after {last_id} were deleted (head names {head.last_id})",
        )
    if head.last_id != last_id or head.last_hmac != prev:
        return _past_the_head(session, head.last_id, head.last_hmac)
    return ChainReport(True, count, None, "")


def _past_the_head(session: Session, head_id: int, head_row_hmac: str) -> ChainReport:
    """The report on a chain that links up, every row's HMAC valid, yet does not end as
    its (valid) head record says: rows follow the one the head names, or that row is not
    the one the head names. Neither can happen by appending; both do when rows are copied
    in from another copy of the trail (a node restored from the same backup, so with the
    same key), or when an earlier head record is put back."""
    if head_id == 0:
        named = GENESIS
    else:
        named = session.scalar(select(AuditRow.hmac).where(AuditRow.id == head_id)) or ""
    if not hmac.compare_digest(str(named), head_row_hmac):
        return ChainReport(
            False,
            max(head_id - 1, 0),
            head_id,
            "it is not the row the chain head record names (it, and maybe rows before it, "
            "were replaced, for example by rows of another copy of the trail)",
        )
    return ChainReport(
        False,
        head_id,
        head_id + 1,
        f"the chain head record ends the chain at row {head_id}: this row and those after "
        "it were added outside the chain (copied in from another copy of the trail, or an "
        "earlier head record was put back)",
    )
