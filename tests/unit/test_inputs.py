"""node.inputs.is_decimal: ids and numbers are written in the digits 0-9 only."""

from __future__ import annotations

import pytest

from node.errors import ValidationError
from node.inputs import is_decimal, multi_line, one_line, shows_something, visible


def test_only_the_digits_0_to_9_make_a_decimal() -> None:
    assert is_decimal("0123456789")
    # str.isdigit() (and int()) take all of these but the last five as numbers
    for text in ("\uff11", "\u0663", "\u0967", "\u00b2", "1\uff10", "", "1 ", "-1", "1_0", "+1"):
        assert not is_decimal(text), repr(text)


def test_text_direction_controls_are_refused_and_shown_escaped() -> None:
    """A right-to-left override (U+202E) makes "txt.exe" read as "exe.txt": refused in
    names and free text, and written as an escape where typed text is only recorded."""
    for control in ("\u202e", "\u2066", "\u202a", "\u2028", "\u2029"):
        with pytest.raises(ValidationError, match="control characters"):
            one_line("resource name", f"web{control}01", 256)
        if control in "\u2028\u2029":  # a line break where lines may break
            assert multi_line("notes", f"line{control}two", 1000) == "line\ntwo"
            continue
        with pytest.raises(ValidationError, match="control characters"):
            multi_line("notes", f"line\n{control}two", 1000)
    assert one_line("reason", "\u05e9\u05dc\u05d5\u05dd\u200f ok", 256)  # RLM is a mark: kept
    assert visible("adm\u202enimda") == "adm\\u202enimda"
    assert visible("a\x00b\nc") == "a\\u0000b\\u000ac"
    assert visible("plain name") == "plain name"
    assert visible("two\u2028lines") == "two\\u2028lines"


def test_invisible_characters_are_refused_in_names_and_shown_escaped() -> None:
    """ "prod\\u200b-db" reads as "prod-db": refused in any single-line field; kept in
    multi-line text (a pasted note may start with a BOM); written out in a failed
    login's recorded name."""
    for ch in ("\u200b", "\u2060", "\ufeff", "\u00ad"):
        with pytest.raises(ValidationError, match="invisible"):
            one_line("resource name", f"prod{ch}-db", 256)
        assert multi_line("notes", f"a{ch}b", 100) == f"a{ch}b"
    assert visible("admin\u200b") == "admin\\u200b"
    # the joiners some scripts and emoji need, and the right-to-left marks, stay
    for kept in ("\u200c", "\u200d", "\u200e", "\u200f"):
        assert one_line("name", f"a{kept}b", 10) == f"a{kept}b"


def test_a_required_field_must_show_something() -> None:
    """A resource or policy name made only of text-direction marks, joiners, combining
    marks or blank-looking letters (Hangul fillers, the blank Braille pattern) would list
    as an empty name: refused as missing. Such characters beside a visible one stay."""
    for blank in ("\u200e", "\u200d\u200c", "\u3164", "\u2800\u115f", "\u034f", "\uffa0"):
        assert not shows_something(blank)
        with pytest.raises(ValidationError, match="resource name is required"):
            one_line("resource name", blank, 256, required=True)
        assert one_line("notes title", blank, 256) == blank  # optional: taken as typed
    for shown in ("web01", "\u05e9\u05dc\u05d5\u05dd\u200f", "\u00e9", "\u4e2d", "e\u0301"):
        assert shows_something(shown)
        assert one_line("resource name", shown, 256, required=True) == shown
