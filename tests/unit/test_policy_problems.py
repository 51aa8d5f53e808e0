"""The compliance report names every rule a password breaks, in the policy check's words."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from node.policies import BUILTIN_POLICIES
from node.reports import policy_problems

STRONG = next(p for p in BUILTIN_POLICIES if p.name == "Strong")
NOW = dt.datetime(2030, 1, 1)


def test_every_broken_rule_is_named() -> None:
    problems = policy_problems(STRONG, "abc", NOW, NOW)
    assert problems == [
        "at least 12 characters are required",
        "the password must contain an upper-case letter",
        "the password must contain a digit",
        "the password must contain a special character",
    ]
    assert all("abc" not in p for p in problems)


def test_a_compliant_password_and_the_maximum_age() -> None:
    good = "Corr3ct-Horse-Battery!"
    assert policy_problems(STRONG, good, NOW, NOW) == []
    old = NOW - dt.timedelta(days=91)
    assert policy_problems(STRONG, good, old, NOW) == ["older than the maximum age of 90 days"]
    assert policy_problems(STRONG, "x" * 65, NOW, NOW)[0] == "at most 64 characters are allowed"


def test_a_policy_name_with_a_colon_is_not_part_of_the_rule() -> None:
    named = replace(STRONG, name="Ops: strict")
    assert policy_problems(named, "abcdefghijkl", NOW, NOW) == [
        "the password must contain an upper-case letter",
        "the password must contain a digit",
        "the password must contain a special character",
    ]
