"""node.inputs.is_decimal: ids and numbers are written in the digits 0-9 only."""

from __future__ import annotations

from node.inputs import is_decimal


def test_only_the_digits_0_to_9_make_a_decimal() -> None:
    assert is_decimal("0123456789")
    # str.isdigit() (and int()) take all of these but the last five as numbers
    for text in ("\uff11", "\u0663", "\u0967", "\u00b2", "1\uff10", "", "1 ", "-1", "1_0", "+1"):
        assert not is_decimal(text), repr(text)
