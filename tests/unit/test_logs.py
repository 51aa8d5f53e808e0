"""The node's JSON log lines: one object per line, extra fields kept, secret-looking fields
redacted whatever their value."""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import sys

from appliance.logs import JsonFormatter


def _line(formatter: JsonFormatter, **extra: object) -> dict[str, object]:
    record = logging.LogRecord(
        "strongroom.test", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    text = formatter.format(record)
    assert "\n" not in text
    parsed = json.loads(text)
    assert isinstance(parsed, dict)
    return parsed


def test_a_line_carries_the_message_and_the_extra_fields() -> None:
    line = _line(JsonFormatter(), path="/x", status=200, ms=1.5, nested={"a": 1})
    assert line["msg"] == "hello you" and line["level"] == "warning"
    assert line["logger"] == "strongroom.test" and str(line["ts"]).endswith("+00:00")
    assert (line["path"], line["status"], line["ms"]) == ("/x", 200, 1.5)
    assert line["nested"] == "{'a': 1}"  # anything else is shown as text


def test_secret_looking_fields_are_redacted_every_time() -> None:
    formatter = JsonFormatter()
    for _ in range(2):  # the decision per field name is remembered: the same both times
        line = _line(
            formatter, token_prefix="abcd1234", db_password="hunter2", AuthToken="t", ip="10.0.0.1"
        )
        assert line["token_prefix"] == "[redacted]"
        assert line["db_password"] == "[redacted]" and line["AuthToken"] == "[redacted]"
        assert line["ip"] == "10.0.0.1"
        assert "hunter2" not in json.dumps(line)


def test_the_time_is_utc_iso_to_the_millisecond_as_datetime_writes_it() -> None:
    formatter = JsonFormatter()
    # the same second twice (its text is remembered), the next one, and the edges where
    # rounding to the microsecond carries into the next millisecond or second
    for created in (
        1796043000.25,
        1796043000.9994996,
        1796043000.9999996,
        1796043001.0,
        1796043001.0004999,
        1700000000.123456,
        1796043000.5,
    ):
        expected = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")
        assert formatter.timestamp(created) == expected
    record = logging.LogRecord("strongroom.test", logging.INFO, __file__, 1, "m", None, None)
    record.created = 1796043000.9999996
    assert json.loads(formatter.format(record))["ts"] == "2026-11-30T12:50:01.000+00:00"


class _Fielded(logging.LogRecord):
    json_fields = (
        "path",
        "note",
        "status",
        "code",
        "ms",
        "ratio",
        "ok",
        "gone",
        "thing",
        "secret_key",
    )


def test_records_that_name_their_fields_get_the_same_line() -> None:
    """The access log's records name their extra fields (``json_fields``, web.base.AccessRecord)
    and are written by a shorter path: the text must be the one the general path writes."""

    class Code(enum.IntEnum):
        OK = 200

    values = {
        "path": '/a "quoted" \\ path\twith\nbreaks and \u00e9\u20ac \u0001',
        "note": "",
        "status": 404,
        "code": Code.OK,
        "ms": 1.25,
        "ratio": float("nan"),
        "ok": True,
        "gone": None,
        "thing": {"a": [1, 2]},
        "secret_key": "hunter2",
    }
    formatter = JsonFormatter()
    lines = []
    for cls in (_Fielded, logging.LogRecord, _Fielded):
        record = cls("strongroom.access", logging.ERROR, __file__, 1, "request %s", ("x",), None)
        record.created = 1796043000.25
        for key, value in values.items():
            setattr(record, key, value)
        lines.append(formatter.format(record))
    assert lines[0] == lines[1] == lines[2]
    line = json.loads(lines[0])
    assert line["path"] == values["path"] and line["code"] == 200 and line["gone"] is None
    assert line["secret_key"] == "[redacted]" and "hunter2" not in lines[0]


def test_a_record_with_an_exception_still_carries_it() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = _Fielded(
            "strongroom.access", logging.ERROR, __file__, 1, "m", None, sys.exc_info()
        )
    for key in _Fielded.json_fields:
        setattr(record, key, "v")
    line = json.loads(JsonFormatter().format(record))
    assert "ValueError: broken" in line["exc"] and line["path"] == "v"
