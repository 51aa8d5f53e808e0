"""Alembic environment: the engine is handed over by ``node.store.db``."""

from __future__ import annotations

from alembic import context

from node.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    context.run_migrations()
