"""A password reveal (view or copy), what it reads and what it writes, wherever it runs:
in the serving process (the CLI, the tests: node/reveal_writer.py's InProcessWriter) or in
the audit writer process of ``strongroom serve`` (WriterProcess).

A reveal goes in three steps. :class:`RevealRequest`: the caller's input, checked without
reading anything (VaultService.reveal_request). :func:`check_reveal`: one read of the
account (with its resource and the reason setting) and its shares decides whether the
caller may see the password and whether a reason or ticket is missing, and makes the audit
record. :func:`record_reveal`: the group-commit work that writes that record. Only once it
is committed does the caller get the password's ciphertext, which the serving process
decrypts; the writer process never holds a key that opens a password.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Update, bindparam, case, select, update
from sqlalchemy.engine import Connection

from node.access import Access, account_access_by_id, need_access
from node.audit import AuditEvent, AuditLog, resource_event
from node.auth import SessionUser
from node.errors import NotFoundError, ValidationError
from node.store.db import deferred_rows
from node.store.models import Account, AppSetting, Resource, utcnow
from node.store.point_reads import PointReader, in_chunks, numbered, write_rows

SETTING_REASON = "password_reason"  # "optional" | "required"
REVEALS = ("view password", "copy password")


@dataclass(frozen=True)
class RevealRequest:
    """A password reveal asked for, its input checked (VaultService.reveal_request):
    ``op`` one of REVEALS; ``resource_id``: the resource the caller named the account on
    (the REST API's paths), or None; ``reason`` and ``ticket`` already single lines."""

    op: str
    actor: SessionUser
    ip: str
    account_id: int
    resource_id: int | None
    reason: str
    ticket: str


# Every password fetch runs this (on a point reader): built once, in Core, it skips the
# ORM's per-call statement building and object loading.
_REVEAL_ACCOUNT = (
    select(
        Account.id,
        Account.resource_id,
        Account.username,
        Account.password_ct,
        Account.reason_required,
        Account.ticket_required,
        Resource.name.label("resource_name"),
        Resource.owner_id,
        # the reason setting rides along: one statement fewer on every reveal
        select(AppSetting.value)
        .where(AppSetting.key == SETTING_REASON)
        .scalar_subquery()
        .label("reason_setting"),
    )
    .join(Resource, Resource.id == Account.resource_id)
    .where(Account.id == bindparam("aid"), Resource.deleted_at.is_(None))
)


@dataclass(frozen=True)
class RevealRecord:
    """What a reveal writes: its audit event and time; ``touch``: record the account's last
    access (a refused reveal is audited, but the account was not accessed)."""

    event: AuditEvent
    at: dt.datetime
    touch: bool


def check_reveal(
    conn: PointReader, request: RevealRequest
) -> tuple[RevealRecord, ValidationError | None, bytes]:
    """Decide ``request`` on what ``conn`` reads now: its audit record, the refusal it is
    recorded with (a reason or ticket the account needs is missing) or None, and the
    password's ciphertext (empty when refused). Raises NotFoundError for an account that
    is not there, in the trash, on another resource than the one named, or not visible to
    the caller (the same answer for all), or that has no password; PermissionDeniedError
    for access below View. Nothing is recorded for those."""
    aid = request.account_id
    a = conn.execute(_REVEAL_ACCOUNT, {"aid": aid}).first()
    if a is None or (request.resource_id is not None and a.resource_id != request.resource_id):
        raise NotFoundError(f"no account with id {aid}")
    level = account_access_by_id(conn, request.actor, a.owner_id, a.resource_id, a.id)
    if level == Access.NONE:
        raise NotFoundError(f"no account with id {aid}")
    need_access(level, Access.VIEW, "seeing this password")
    refusal: ValidationError | None = None
    ciphertext = b""
    mode = "optional" if a.reason_setting is None else a.reason_setting
    if (mode == "required" or a.reason_required) and not request.reason:
        refusal = ValidationError("a reason is required to see this password")
    elif a.ticket_required and not request.ticket:
        refusal = ValidationError("a ticket id is required to see this password")
    elif a.password_ct is None:
        raise NotFoundError("this account has no stored password")
    else:
        ciphertext = bytes(a.password_ct)
    details = [f"ticket {request.ticket}"] if request.ticket else []
    if refusal is not None:
        details.append(f"refused: {refusal}")
    event = resource_event(
        request.actor,
        request.ip,
        request.op,
        f"{a.resource_name}/{a.username}",
        a.resource_id,
        aid,
        request.reason,
        "; ".join(details),
        "failure" if refusal is not None else "success",
    )
    return RevealRecord(event, utcnow(), touch=refusal is None), refusal, ciphertext


# --- the work a reveal adds to a group commit ------------------------------------------------

_TOUCH_STATEMENTS: dict[int, Update] = {}


def _touch_statement(size: int) -> Update:
    """The last-access UPDATE of ``size`` accounts in one statement, made once per size:
    account i's id and time are bound as ``aid__i`` and ``at__i``."""
    made = _TOUCH_STATEMENTS.get(size)
    if made is None:
        columns = Account.__table__.c
        aids = [bindparam(f"aid__{i}", type_=columns.id.type) for i in range(size)]
        ats = [bindparam(f"at__{i}", type_=columns.last_accessed_at.type) for i in range(size)]
        made = _TOUCH_STATEMENTS[size] = (
            update(Account)
            .where(Account.id.in_(aids))
            .values(
                last_accessed_at=case(
                    *((Account.id == a, t) for a, t in zip(aids, ats, strict=True))
                )
            )
        )
    return made


def _touch_accounts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record the last access of the accounts a group commit revealed: each account's
    latest time, several accounts per statement (one statement, not one per reveal: on
    SQLite each is a hand-over of the GIL, see node/store/point_reads.py)."""
    latest: dict[int, dt.datetime] = {}
    for row in rows:
        aid, at = row["aid"], row["at"]
        if aid not in latest or at > latest[aid]:
            latest[aid] = at
    accounts = [{"aid": aid, "at": at} for aid, at in sorted(latest.items())]
    for chunk in in_chunks(accounts):
        write_rows(conn, _touch_statement(len(chunk)), [numbered(chunk)])


def record_reveal(audit: AuditLog, record: RevealRecord) -> Callable[[Connection], None]:
    """The group-commit work writing ``record``."""

    def work(conn: Connection) -> None:
        # The accounts' last access first, the audit rows last: both are written just
        # before the commit in the order they were first asked for, and every work asks
        # for the last-access rows first (a refusal adds none), so the audit head is
        # always the last lock the batch takes.
        touched = deferred_rows(conn, "vault.last_accessed", _touch_accounts)
        if record.touch:
            touched.append({"aid": record.event.account_id, "at": record.at})
        audit.append(conn, record.event, record.at)

    return work
