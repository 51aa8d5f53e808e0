"""Tables of report rows, and their CSV and XML exports.

CSV is safe to open in a spreadsheet: a text cell that begins with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return is prefixed with a single quote, so it is shown as text and
never evaluated as a formula; so is such a character after a ``;`` or a line break inside a
cell (where a spreadsheet splitting at ``;`` starts a new cell), and every text cell is
quoted. XML is written by ``xml.etree`` (every value escaped), with
characters that XML 1.0 cannot carry replaced by U+FFFD.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import xml.etree.ElementTree as ET  # noqa: S405 - used only to write XML, never to parse it
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

Cell = str | int | float | bool | Decimal | dt.datetime | dt.date | None

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# a lookahead, so that a break right after a ";" or another break is itself checked
_FORMULA_INSIDE = re.compile("([;\r\n])(?=[=+\\-@\t\r])")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def cell_text(value: Cell | object) -> str:
    """The one text form of a cell, used by the pages and both exports."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.replace(microsecond=0).isoformat() + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return str(value)


def display_text(value: Cell | object) -> str:
    """A cell as shown on a page: like :func:`cell_text`, but times read "YYYY-MM-DD
    HH:MM:SS" (the page says they are UTC)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return cell_text(value)


def csv_safe(value: Cell | object) -> str | int | float:
    """A cell for the CSV file: a number as itself (written unquoted), anything else as
    text, with a leading quote when it would start a formula."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = cell_text(value)
    if not isinstance(value, str):
        return text
    if text.startswith(FORMULA_START):
        text = "'" + text
    # A spreadsheet that splits at ";" (the list separator in many locales), or that
    # reads a line break inside a cell as a new row, starts a cell there: the same quote
    # keeps that one from being a formula too.
    return _FORMULA_INSIDE.sub(r"\1'", text)


@dataclass
class Table:
    """A report's result: a title, column names and rows of cells."""

    title: str
    columns: list[str]
    rows: list[Sequence[Cell | object]] = field(default_factory=list)
    generated_at: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None)
    )
    note: str = ""  # e.g. "the first 10000 rows of more"

    def text_rows(self) -> list[list[str]]:
        return [[display_text(c) for c in row] for row in self.rows]


def to_csv(table: Table) -> str:
    out = io.StringIO()
    # Every text cell in quotes: a spreadsheet that splits at ";" (the list separator in
    # many locales) splits an unquoted "note;=1+1" into a cell that starts a formula.
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow([csv_safe(c) for c in table.columns])
    for row in table.rows:
        writer.writerow([csv_safe(c) for c in row])
    return out.getvalue()


def _xml_text(value: str) -> str:
    return _XML_INVALID.sub("\ufffd", value)


def to_xml(table: Table) -> bytes:
    root = ET.Element(
        "report",
        {
            "title": _xml_text(table.title),
            "generated": cell_text(table.generated_at),
            "rows": str(len(table.rows)),
        },
    )
    if table.note:
        ET.SubElement(root, "note").text = _xml_text(table.note)
    columns = ET.SubElement(root, "columns")
    for name in table.columns:
        ET.SubElement(columns, "column").text = _xml_text(name)
    for row in table.rows:
        element = ET.SubElement(root, "row")
        for name, value in zip(table.columns, row, strict=True):
            field_el = ET.SubElement(element, "field", {"name": _xml_text(name)})
            field_el.text = _xml_text(cell_text(value))
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    # ElementTree writes a carriage return in text as it is, and every XML parser reads it
    # back as a line feed: as a character reference it survives (attributes have theirs).
    return body.replace(b"\r", b"&#13;") + b"\n"
