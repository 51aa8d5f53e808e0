"""report views for query reports

The only tables query reports may read (docs/query-reports.md). None of them has a secret
column: no ciphertext, no login password hash, no token, no key, no session.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS: dict[str, str] = {
    "report_resources": """
        SELECT r.id, r.name, r.dns_name, r.resource_type, r.description, r.department,
               r.location, r.url, r.domain_name, r.owner_id, u.username AS owner,
               r.password_policy_id, r.created_at, r.deleted_at
        FROM resources r JOIN users u ON u.id = r.owner_id
    """,
    "report_accounts": """
        SELECT a.id, a.resource_id, r.name AS resource_name, a.username,
               CASE WHEN a.password_ct IS NULL THEN 0 ELSE 1 END AS has_password,
               a.password_policy_id, a.reason_required, a.ticket_required,
               a.last_changed_at, a.last_accessed_at, a.created_at
        FROM accounts a JOIN resources r ON r.id = a.resource_id
    """,
    "report_password_changes": """
        SELECT h.id, h.account_id, h.changed_at, h.changed_by, u.username AS changed_by_name
        FROM password_history h LEFT JOIN users u ON u.id = h.changed_by
    """,
    "report_users": """
        SELECT id, username, full_name, email, role, super_admin, kind, status,
               must_change_password, locked_until, last_login_at, password_changed_at,
               created_at
        FROM users
    """,
    "report_user_groups": "SELECT id, name, description FROM user_groups",
    "report_user_group_members": "SELECT group_id, user_id FROM user_group_members",
    "report_resource_groups": "SELECT id, name, description, owner_id FROM resource_groups",
    "report_resource_group_members": "SELECT group_id, resource_id FROM resource_group_members",
    "report_shares": """
        SELECT id, resource_id, account_id, resource_group_id, user_id, user_group_id, access,
               granted_by, created_at
        FROM shares
    """,
    "report_password_policies": """
        SELECT id, name, builtin, min_length, max_length, require_lower, require_upper,
               require_digit, require_special, no_reuse_last, max_age_days
        FROM password_policies
    """,
    "report_resource_types": "SELECT id, name, builtin FROM resource_types",
    "report_audit": """
        SELECT id, ts, category, username, source_ip, operation, target, resource_id,
               account_id, reason, result, detail
        FROM audit_log
    """,
}


def upgrade() -> None:
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body.strip()}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
