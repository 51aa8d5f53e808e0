"""The sharing precedence rule, over every pair of tiers and levels."""

from __future__ import annotations

import itertools

import pytest

from node.access import SHAREABLE, Access, Grant, Tier, parse_access, resolve
from node.errors import ValidationError

ORDER = [
    Tier.ACCOUNT_TO_USER,
    Tier.ACCOUNT_TO_USER_GROUP,
    Tier.RESOURCE_TO_USER,
    Tier.RESOURCE_TO_USER_GROUP,
    Tier.GROUP_TO_USER,
    Tier.GROUP_TO_USER_GROUP,
]


def test_more_specific_tier_wins_whatever_the_levels() -> None:
    for i, j in itertools.combinations(range(len(ORDER)), 2):
        strong, weak = ORDER[i], ORDER[j]
        for a, b in itertools.product(SHAREABLE, repeat=2):
            grants = [Grant(weak, b), Grant(strong, a)]
            assert resolve(grants) == a, (strong, weak, a, b)
            assert resolve(reversed(grants)) == a


def test_same_tier_takes_the_most_generous() -> None:
    for tier in ORDER:
        assert resolve([Grant(tier, Access.VIEW), Grant(tier, Access.FULL)]) == Access.FULL
        assert resolve([Grant(tier, Access.MODIFY), Grant(tier, Access.VIEW)]) == Access.MODIFY


def test_no_grant_is_no_access() -> None:
    assert resolve([]) == Access.NONE


def test_parse_access() -> None:
    assert parse_access(" Full ") == Access.FULL
    assert parse_access("view") == Access.VIEW
    for bad in ("owner", "none", "", None, "admin"):
        with pytest.raises(ValidationError):
            parse_access(bad)
