"""The data model of one vault, as SQLAlchemy 2 typed models.

Secret columns are ``*_ct`` byte strings produced by the key ring; they are never read by
reports, query views or logs. Every schema change goes through an Alembic revision in
``node/store/migrations/versions``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


UTCDateTime = DateTime(timezone=False)  # naive UTC everywhere, the same on both dialects


# --- key ring ------------------------------------------------------------------------------


class KeyringMeta(Base):
    """One row: a check value that tells whether the master key fits this database."""

    __tablename__ = "keyring_meta"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    master_check: Mapped[bytes] = mapped_column(LargeBinary)
    rekeyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class DataKey(Base):
    """A 256-bit key wrapped by the master key. ``purpose`` is ``data`` or ``audit``."""

    __tablename__ = "data_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), default="data")
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- people --------------------------------------------------------------------------------


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    full_name: Mapped[str] = mapped_column(String(256), default="")
    email: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(32))
    super_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    super_admin_granted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(8), default="person")  # person | api
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    password_hash: Mapped[str | None] = mapped_column(String(256))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    custom_attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginSession(Base):
    """A browser session. Only the SHA-256 of the cookie value is stored, so sessions
    survive a failover (they live in the replicated database) without exposing tokens."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    source_ip: Mapped[str] = mapped_column(String(64), default="")


class ApiToken(Base):
    """An AUTHTOKEN of an API user, stored as a short prefix plus its SHA-256."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class UserGroup(Base):
    __tablename__ = "user_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(String(512), default="")


class UserGroupMember(Base):
    __tablename__ = "user_group_members"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


# --- vault ---------------------------------------------------------------------------------


class PasswordPolicy(Base):
    __tablename__ = "password_policies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    min_length: Mapped[int] = mapped_column(Integer, default=8)
    max_length: Mapped[int] = mapped_column(Integer, default=64)
    require_lower: Mapped[bool] = mapped_column(Boolean, default=True)
    require_upper: Mapped[bool] = mapped_column(Boolean, default=False)
    require_digit: Mapped[bool] = mapped_column(Boolean, default=False)
    require_special: Mapped[bool] = mapped_column(Boolean, default=False)
    no_reuse_last: Mapped[int] = mapped_column(Integer, default=0)
    max_age_days: Mapped[int | None] = mapped_column(Integer)


class ResourceType(Base):
    __tablename__ = "resource_types"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)


class Resource(Base):
    __tablename__ = "resources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    dns_name: Mapped[str] = mapped_column(String(256), default="")
    resource_type: Mapped[str] = mapped_column(String(64), default="Generic")
    description: Mapped[str] = mapped_column(Text, default="")
    department: Mapped[str] = mapped_column(String(128), default="")
    location: Mapped[str] = mapped_column(String(128), default="")
    url: Mapped[str] = mapped_column(String(1024), default="")
    domain_name: Mapped[str] = mapped_column(String(256), default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    password_policy_id: Mapped[int | None] = mapped_column(ForeignKey("password_policies.id"))
    custom_attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    deleted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    accounts: Mapped[list[Account]] = relationship(back_populates="resource")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("resource_id", "username", name="uq_accounts_resource_user"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(256))
    password_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    notes: Mapped[str] = mapped_column(Text, default="")
    custom_attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    password_policy_id: Mapped[int | None] = mapped_column(ForeignKey("password_policies.id"))
    reason_required: Mapped[bool] = mapped_column(Boolean, default=False)
    ticket_required: Mapped[bool] = mapped_column(Boolean, default=False)
    last_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_accessed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    resource: Mapped[Resource] = relationship(back_populates="accounts")


class PasswordHistory(Base):
    __tablename__ = "password_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    password_ct: Mapped[bytes] = mapped_column(LargeBinary)
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class ResourceGroup(Base):
    __tablename__ = "resource_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


class ResourceGroupMember(Base):
    __tablename__ = "resource_group_members"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("resource_groups.id", ondelete="CASCADE"), primary_key=True
    )
    resource_id: Mapped[int] = mapped_column(
        ForeignKey("resources.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Share(Base):
    """A grant of ``access`` (view, modify, full) on exactly one of a resource, an account or
    a resource group, to exactly one of a user or a user group."""

    __tablename__ = "shares"
    __table_args__ = (
        Index("ix_shares_user", "user_id"),
        Index("ix_shares_group", "user_group_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[int | None] = mapped_column(ForeignKey("resources.id", ondelete="CASCADE"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    resource_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("resource_groups.id", ondelete="CASCADE")
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    user_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_groups.id", ondelete="CASCADE")
    )
    access: Mapped[str] = mapped_column(String(8))
    granted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CustomField(Base):
    """An admin-defined attribute on users, resources or accounts."""

    __tablename__ = "custom_fields"
    __table_args__ = (UniqueConstraint("applies_to", "name", name="uq_custom_fields_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    applies_to: Mapped[str] = mapped_column(String(16))  # user | resource | account
    name: Mapped[str] = mapped_column(String(64))
    field_type: Mapped[str] = mapped_column(String(16), default="text")


class AppSetting(Base):
    """Vault-wide settings kept in the database (replicated with the data)."""

    __tablename__ = "app_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class BrandingLogo(Base):
    __tablename__ = "branding_logo"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- audit ---------------------------------------------------------------------------------


class AuditRow(Base):
    """One audited operation. ``prev_hmac`` is the previous row's ``hmac``; ``hmac`` covers
    this row's canonical content and ``prev_hmac``, so an edited, deleted or reordered row
    breaks the chain. Never holds a secret."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_ts", "ts"),
        Index("ix_audit_user", "username"),
        Index("ix_audit_resource", "resource_id"),
        Index("ix_audit_account", "account_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    category: Mapped[str] = mapped_column(String(16))  # resource | user
    username: Mapped[str] = mapped_column(String(128))
    source_ip: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512))
    resource_id: Mapped[int | None] = mapped_column(Integer)
    account_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(1024), default="")
    result: Mapped[str] = mapped_column(String(16))  # success | failure
    detail: Mapped[str] = mapped_column(String(1024), default="")
    prev_hmac: Mapped[str] = mapped_column(String(64))
    hmac: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row naming the last audit row, so a deleted tail is detected and appends are
    serialised (the row is locked FOR UPDATE on PostgreSQL)."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hmac: Mapped[str] = mapped_column(String(64), default="")
    head_hmac: Mapped[str] = mapped_column(String(64), default="")


# --- operations ----------------------------------------------------------------------------


class BackupRun(Base):
    __tablename__ = "backup_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    target: Mapped[str] = mapped_column(String(16))
    archive_name: Mapped[str] = mapped_column(String(256), default="")
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str] = mapped_column(String(16), default="running")
    message: Mapped[str] = mapped_column(String(1024), default="")


class ClusterEpoch(Base):
    """The fencing token written by each newly promoted primary (see cluster/)."""

    __tablename__ = "cluster_epoch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    node_id: Mapped[str] = mapped_column(String(64), default="")
    promoted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
