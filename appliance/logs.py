"""Structured logging: one JSON object per line, with the extra fields a call passes.

Secrets never reach a log line because no code passes them; as a second guard, fields whose
name suggests a secret are replaced by ``[redacted]``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET_WORDS = ("password", "secret", "token", "passphrase", "key_material", "authtoken")
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # made once: json.dumps makes one a call
_QUOTE = json.encoder.encode_basestring  # what _ENCODE does to a str (C code)


def _redacted(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # A line is written for every request, so what can be is decided once: per extra
        # field name, shown as is (True) or redacted (False); per second, its ISO text.
        self._shown: dict[str, bool] = {}
        self._second: tuple[int, str] = (-1, "")

    def timestamp(self, created: float) -> str:
        """``created`` in UTC, ISO 8601 to the millisecond (``...T09:30:00.123+00:00``)."""
        whole = int(created)
        micro = round((created - whole) * 1_000_000)  # as datetime.fromtimestamp rounds
        if micro >= 1_000_000:
            whole, micro = whole + 1, micro - 1_000_000
        second = self._second
        if second[0] != whole:
            text = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            second = self._second = (whole, text)
        return f"{second[1]}.{micro // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        names = getattr(record, "json_fields", None)
        if names is not None and not record.exc_info:
            return self._format_known(record, names)
        out: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        shown = self._shown
        for key, value in vars(record).items():
            if key in _STD or key[0] == "_":
                continue
            ok = shown.get(key)
            if ok is None:
                ok = shown[key] = not _redacted(key)
            if not ok:
                value = "[redacted]"
            out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _ENCODE(out)

    def _format_known(self, record: logging.LogRecord, names: tuple[str, ...]) -> str:
        """The line :meth:`format` would write for a record whose extra fields are exactly
        ``names`` (its class's ``json_fields``: the access log's, one line per request),
        written without looking for them among the record's attributes or building a
        dict. The same text, field for field (tests/unit/test_logs.py)."""
        parts = [
            f'{{"ts": "{self.timestamp(record.created)}", "level": "{record.levelname.lower()}", '
            f'"logger": {_QUOTE(record.name)}, "msg": {_QUOTE(record.getMessage())}'
        ]
        shown = self._shown
        for key in names:
            value = getattr(record, key)
            ok = shown.get(key)
            if ok is None:
                ok = shown[key] = not _redacted(key)
            if not ok:
                value = "[redacted]"
            kind = type(value)
            if kind is str:
                text = _QUOTE(value)
            elif kind is int:
                text = int.__repr__(value)
            else:
                shown_as = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
                text = _ENCODE(shown_as)
            parts.append(f", {_QUOTE(key)}: {text}")
        parts.append("}")
        return "".join(parts)


# Tornado's line for a request it cannot parse quotes the header value it refused
# ("Invalid header value '...'"): an AUTHTOKEN or a session cookie with one stray byte.
_HEADER_VALUE = re.compile(r"(Invalid header value)\b.*", re.DOTALL)


class HeaderValueFilter(logging.Filter):
    """Keeps what was wrong with a refused header, never its value."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("tornado"):
            text = record.getMessage()
            hidden = _HEADER_VALUE.sub(r"\1 (its value is not logged)", text)
            if hidden != text:
                record.msg, record.args = hidden, None
        return True


def setup_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(HeaderValueFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # Tornado's own access log is replaced by web.base.access_log (no query strings).
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
