"""The node's domain services, assembled once by the composition root (appliance/) and
handed to the web layer and control verbs. Later features add their service here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from node.api_tokens import ApiTokenService
from node.audit import AuditLog
from node.audit_query import AuditQueryService
from node.auth import INITIAL_ADMIN, AuthService
from node.branding import BrandingService
from node.keyring import KeyRing
from node.licence_service import LicenceService
from node.policies import PolicyService
from node.query_reports import QueryReportService
from node.reports import ReportService
from node.resource_groups import ResourceGroupService
from node.seed import seed_builtins
from node.settings import Settings
from node.sharing import SharingService
from node.store.db import Store
from node.store.dialect import ReadOnlyStore
from node.users import UserService
from node.vault import VaultService

log = logging.getLogger("strongroom.node")

INITIAL_PASSWORD_FILE = "initial-admin-password.txt"


@dataclass
class NodeState:
    """What the web layer needs to know about this node's place in a cluster."""

    role: str = "single"  # single | primary | standby | fenced
    writable: bool = True
    primary_address: str | None = None
    detail: str = ""
    node_name: str = ""  # a cluster member's name (sent as X-Strongroom-Node)


@dataclass
class Services:
    settings: Settings
    store: Store
    keyring: KeyRing
    audit: AuditLog
    auth: AuthService
    api_tokens: ApiTokenService
    licence: LicenceService
    users: UserService
    vault: VaultService
    sharing: SharingService
    policies: PolicyService
    resource_groups: ResourceGroupService
    audit_query: AuditQueryService
    reports: ReportService
    query_reports: QueryReportService
    branding: BrandingService
    state: NodeState = field(default_factory=NodeState)

    @property
    def initial_password_path(self) -> Path:
        return self.settings.data_dir / INITIAL_PASSWORD_FILE

    def forget_initial_password(self, username: str) -> None:
        """The initial administrator changed the one-time password: drop its file."""
        if username == INITIAL_ADMIN and self.initial_password_path.exists():
            self.initial_password_path.unlink()
            log.info("removed the initial password file")


def build_services(settings: Settings, store: Store, keyring: KeyRing) -> Services:
    audit = AuditLog(keyring.audit_hmac_key)
    reader = ReadOnlyStore(store.engine)  # audit verification and query reports
    auth = AuthService(
        store,
        audit,
        lockout_threshold=settings.lockout_threshold,
        lockout_minutes=settings.lockout_minutes,
        idle_timeout_s=settings.session_idle_timeout,
    )
    seed_builtins(store)
    licence = LicenceService(store, audit)
    return Services(
        settings=settings,
        store=store,
        keyring=keyring,
        audit=audit,
        auth=auth,
        api_tokens=ApiTokenService(store, audit),
        licence=licence,
        users=UserService(store, audit, licence),
        vault=VaultService(store, keyring, audit, licence),
        sharing=SharingService(store, audit),
        policies=PolicyService(store, audit),
        resource_groups=ResourceGroupService(store, audit),
        audit_query=AuditQueryService(store, reader, keyring.audit_hmac_key),
        reports=ReportService(store, keyring, audit),
        query_reports=QueryReportService(store, reader, audit, licence),
        branding=BrandingService(store, audit),
    )
