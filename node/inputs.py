"""Checks of free-text input shared by the vault services.

Functions:
- :func:`one_line` and :func:`multi_line` return the cleaned text or raise
  :class:`~node.errors.ValidationError` naming the field and the rule (required, too long,
  control characters). Text is stored verbatim otherwise: escaping is the web's job.
- :func:`conflict_on_duplicate` turns a unique-constraint race lost at commit into a
  :class:`~node.errors.ConflictError` (the checks before the insert catch the usual case).
- :func:`in_range` and :func:`get_row`: an id outside the database's integer range (or
  not an int) matches nothing, instead of failing inside the driver.
- :func:`is_decimal` tells whether a text is a whole number written in the digits 0-9.
- :func:`shows_something` tells whether a text shows anything when printed (a required
  reason made of invisible or blank-looking characters is no reason).
- :func:`unique_keys` is a ``json.loads`` object hook refusing a key given twice.
- :func:`host_name` and :func:`resource_url` check a resource's DNS name or IP and its
  URL (a scheme the console may link to).
- :func:`clean_attributes` checks custom attributes against the admin-defined fields
  (``custom_fields``) for users, resources or accounts; unknown names, ill-typed or
  over-long values raise ValidationError (a date is YYYY-MM-DD, a number plain decimal).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from node.errors import ConflictError, ValidationError
from node.store.dialect import serialize_on
from node.store.models import CustomField

M = TypeVar("M")
MAX_ID = 2**31 - 1  # ids are INTEGER columns on both dialects
MAX_ATTRIBUTE_VALUE = 1024
MAX_TEXT = 4096  # notes and descriptions
MAX_ATTRIBUTES = 50
FIELD_KINDS = ("user", "resource", "account")
FIELD_TYPES = ("text", "number", "date")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def unique_keys(pairs: list[tuple[str, Any]], refuse: Callable[[str], Exception]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, or ``refuse(key)`` raised for the first key given
    twice: which of the two counts would otherwise be the parser's choice, not the
    writer's. Use with ``object_pairs_hook=functools.partial(unique_keys, refuse=...)``."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise refuse(key)
        out[key] = value
    return out


def is_decimal(text: str) -> bool:
    """Whether ``text`` is written in the digits 0-9 only. ``str.isdigit`` and ``int`` also
    take other scripts' digits (a full-width or an Arabic-Indic 1 is ``int`` 1), which
    would give ids and numbers aliases."""
    return text.isascii() and text.isdigit()


# Text-direction embeddings, overrides and isolates: they reorder the text around them
# when shown, so a name could read as another (an audit row, say). The marks LRM and RLM,
# which right-to-left writing needs, are not among them.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# Control characters, and the line and paragraph separators U+2028/U+2029 (which some
# viewers break a line at, as at a newline).
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# ... and, in what someone typed that is recorded as typed, format characters too (the
# invisible ones, text-direction marks): written out, not shown
_SHOWN_ESCAPED = _CONTROL_CATEGORIES | {"Cf"}


# Characters that show as nothing at all (zero-width space, word joiner, soft hyphen, BOM
# ...): in a name they make two names that read the same ("prod-db", "prod\u200b-db"). The
# joiners ZWJ and ZWNJ, which some scripts and emoji need, are not among them.
INVISIBLE = frozenset(
    "\u00ad\u180e\u200b\u2060\u2061\u2062\u2063\u2064\ufeff\u206a\u206b\u206c\u206d\u206e\u206f"
)


def _has_control(text: str, allowed: str = "") -> bool:
    return any(
        (unicodedata.category(c) in _CONTROL_CATEGORIES and c not in allowed) or c in BIDI_CONTROLS
        for c in text
    )


def visible(text: str) -> str:
    """``text`` with its control and format (invisible, text-direction) characters written
    as ``\\u`` and four hex digits: for recording what someone typed that no check has
    passed (a failed login's name)."""
    if text.isprintable():
        return text
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in _SHOWN_ESCAPED or c in BIDI_CONTROLS else c
        for c in text
    )


# Letters and symbols to Unicode that show as blank space: the Hangul fillers and the
# blank Braille pattern.
BLANK_LOOKING = frozenset("\u115f\u1160\u2800\u3164\uffa0")
_SHOWS_NOTHING = frozenset({"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"})


def shows_something(text: str) -> bool:
    """Whether ``text`` has a character that shows as something when printed: not white
    space, a control, a format character (invisible, a text-direction mark, a joiner), a
    combining mark on its own, nor a :data:`BLANK_LOOKING` one. A text that is required
    (a reason, a ticket id) is given only when it shows something."""
    return any(
        not c.isspace() and unicodedata.category(c) not in _SHOWS_NOTHING and c not in BLANK_LOOKING
        for c in text
    )


def one_line(field: str, value: object, max_len: int, *, required: bool = False) -> str:
    """A single-line text field: stripped, no control characters (text-direction controls
    included), no invisible ones (:data:`INVISIBLE`), at most ``max_len``; when
    ``required``, it must show something (:func:`shows_something`)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text")
    text = value.strip()
    if required and not text:
        raise ValidationError(f"{field} is required")
    if len(text) > max_len:
        raise ValidationError(f"{field} is too long (at most {max_len} characters)")
    if _has_control(text):
        raise ValidationError(f"{field} must not contain control characters")
    if INVISIBLE.intersection(text):
        raise ValidationError(
            f"{field} must not contain invisible characters (a zero-width space, say)"
        )
    if required and not shows_something(text):
        # a name of marks and blank-looking letters reads as empty wherever it is listed
        raise ValidationError(f"{field} is required (this shows as nothing)")
    return text


def multi_line(field: str, value: object, max_len: int) -> str:
    """A free-text field that may span lines (tabs and line breaks allowed; the Unicode
    line and paragraph separators become line breaks)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text")
    value = value.replace("\u2028", "\n").replace("\u2029", "\n")
    if len(value) > max_len:
        raise ValidationError(f"{field} is too long (at most {max_len} characters)")
    if _has_control(value, "\n\r\t"):
        raise ValidationError(f"{field} must not contain control characters")
    return value


# Typed custom attributes are written one way only: a date as the edit form's
# <input type="date"> reads it back (another ISO form, 20240101 or 2024-W01-1, shows there
# as blank and the next save wipes it), a number as plain decimal digits (float() also
# takes nan, inf, 1_000, 1e999 and other scripts' digits). [0-9], not \d: \d matches
# every script's digits.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _check_typed(name: str, field_type: str, value: str) -> None:
    if not value:
        return
    if field_type == "number":
        if not _NUMBER.fullmatch(value) or not math.isfinite(float(value)):
            raise ValidationError(
                f"custom attribute '{name}' must be a number written in the digits 0-9,"
                " with an optional minus sign and decimal point (-12.5, say)"
            )
    elif field_type == "date":
        try:
            if not _DATE.fullmatch(value):
                raise ValueError(value)
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                f"custom attribute '{name}' must be a date written YYYY-MM-DD"
            ) from None


# A DNS label as RFC 1123 has it (letters, digits, hyphens; not starting or ending with a
# hyphen; at most 63), with the underscore too: Windows hosts and SRV-style names carry it
# in real DNS (ms_sql01.corp.example), and refusing them would leave those hosts out.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def host_name(field: str, value: object) -> str:
    """A DNS name or IP address field: empty, an IPv4 or IPv6 address, or a host name of
    :data:`_LABEL` labels (at most 253 characters, one trailing dot allowed)."""
    text = one_line(field, value, 256)
    if not text:
        return text
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    # all-numeric dotted names (999.999.999.999) are an IPv4 address mistyped, not a name
    if (
        len(name) > 253
        or not all(_LABEL.fullmatch(label) for label in labels)
        or all(label.isdigit() for label in labels)
    ):
        raise ValidationError(
            f"{field} must be an IP address or a host name of letters, digits, hyphens,"
            " underscores and dots (db01.example.org, say)"
        )
    return text


# Schemes the console may link to: web consoles and the remote-access clients a browser
# hands over to. Others (javascript:, data:, vbscript:, file:) run or read something when
# clicked, and a URL without "scheme://" is not an address anyone can follow.
URL_SCHEMES = ("http", "https", "ssh", "rdp", "sftp", "ftp", "telnet")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://\S+")


def resource_url(field: str, value: object) -> str:
    """A resource's URL: empty, or ``scheme://...`` with a scheme of :data:`URL_SCHEMES`
    (letter case as typed), no spaces."""
    text = one_line(field, value, 1024)
    if not text:
        return text
    match = _URL.fullmatch(text)
    if match is None or match.group(1).lower() not in URL_SCHEMES:
        raise ValidationError(
            f"{field} must start with one of {', '.join(s + '://' for s in URL_SCHEMES)}"
        )
    return text


def clean_attributes(
    session: Session, applies_to: str, attributes: Mapping[str, object] | None
) -> dict[str, str]:
    """Check ``attributes`` against the custom fields defined for ``applies_to``."""
    if not attributes:
        return {}
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValidationError(f"too many custom attributes (at most {MAX_ATTRIBUTES})")
    defined = {
        f.name: f.field_type
        for f in session.scalars(select(CustomField).where(CustomField.applies_to == applies_to))
    }
    cleaned: dict[str, str] = {}
    for name, raw in attributes.items():
        if name not in defined:
            raise ValidationError(f"unknown custom attribute '{name}' for {_a(applies_to)}")
        value = one_line(f"custom attribute '{name}'", raw, MAX_ATTRIBUTE_VALUE)
        _check_typed(name, defined[name], value)
        cleaned[name] = value
    return cleaned


def updated_attributes(
    session: Session,
    applies_to: str,
    current: Mapping[str, object] | None,
    attributes: Mapping[str, object] | None,
) -> dict[str, object]:
    """An object's custom attributes after an edit that sends ``attributes`` (checked as
    :func:`clean_attributes` does): values of fields whose definition was deleted are
    not in any form, and stay as they were (deleting a definition keeps its values)."""
    cleaned = clean_attributes(session, applies_to, attributes)
    defined = set(
        session.scalars(select(CustomField.name).where(CustomField.applies_to == applies_to))
    )
    kept = {k: v for k, v in (current or {}).items() if k not in defined}
    return {**kept, **cleaned}


def name_clash(
    session: Session,
    column: InstrumentedAttribute[str],
    name: str,
    *scope: ColumnElement[bool],
    except_id: int | None = None,
) -> Any | None:
    """Another row of ``column``'s table (within ``scope``; not ``except_id``) whose name is
    ``name`` regardless of letter case (``web-01`` and ``WEB-01``), as the database folds
    it: every letter on PostgreSQL, A-Z on SQLite; else None. Writers of names that fold
    alike take turns until their transaction ends (node/store/dialect.py
    ``serialize_on``), so two cannot both pass the check."""
    model = column.class_
    serialize_on(session, model.__tablename__, name.casefold())
    for row in session.scalars(select(model).where(func.lower(column) == func.lower(name), *scope)):
        if row.id != except_id:
            return row
    return None


@contextmanager
def conflict_on_duplicate(message: str) -> Iterator[None]:
    """Wrap a transaction: an IntegrityError (another writer won a race for the same unique
    name) becomes ConflictError(message)."""
    try:
        yield
    except IntegrityError:
        raise ConflictError(message) from None


def in_range(row_id: object) -> bool:
    return isinstance(row_id, int) and not isinstance(row_id, bool) and 0 < row_id <= MAX_ID


def get_row(session: Session, model: type[M], row_id: object) -> M | None:
    """``session.get`` for a single integer id; None for an id that cannot exist."""
    return session.get(model, row_id) if in_range(row_id) else None
