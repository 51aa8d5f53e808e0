"""Built-in rows every vault has: resource types and password policies.

:func:`seed_builtins` is idempotent (adds only what is missing) and writes nothing when all
built-ins exist already, so it is safe at every node start, also on a read-only standby
whose replicated data has them.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from node.policies import BUILTIN_POLICIES, seed_policies
from node.store.db import Store
from node.store.models import PasswordPolicy, ResourceType
from node.vault import BUILTIN_RESOURCE_TYPES, seed_resource_types

log = logging.getLogger("strongroom.seed")


def seed_builtins(store: Store) -> int:
    """Add missing built-in resource types and policies; returns how many rows were added."""
    with store.sessions() as s:
        types = s.scalar(
            select(func.count())
            .select_from(ResourceType)
            .where(ResourceType.name.in_(BUILTIN_RESOURCE_TYPES))
        )
        policies = s.scalar(
            select(func.count())
            .select_from(PasswordPolicy)
            .where(PasswordPolicy.name.in_([p.name for p in BUILTIN_POLICIES]))
        )
    if types == len(BUILTIN_RESOURCE_TYPES) and policies == len(BUILTIN_POLICIES):
        return 0
    with store.transaction() as s:
        added = seed_resource_types(s) + seed_policies(s)
    if added:
        log.info("added built-in resource types and policies", extra={"rows": added})
    return added
