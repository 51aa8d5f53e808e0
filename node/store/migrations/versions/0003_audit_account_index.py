"""index the audit trail by account

New accounts and resources take an id that no row of the audit trail names yet
(node/store/dialect.py ``unused_id``): on SQLite that is the next id above the highest the
trail names, found through this index (and ix_audit_resource) without reading the trail.
It also serves the auditors' view of the trail, which selects rows by account.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_account", "audit_log", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_account", table_name="audit_log")
