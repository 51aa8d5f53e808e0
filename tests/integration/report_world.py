"""A small vault made through the real services, for the audit, report and query-report
tests: who owns what, what is shared with the auditor, and what is not."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from node.auth import SessionUser
from node.roles import Role
from node.services import Services
from node.store.models import PasswordPolicy, User
from node.vault import NewAccount, NewResource
from tests.integration.vault_helpers import IP, initial_admin, make_user, snapshot

XSS = "<script>alert('x')</script>\"'&"


@dataclass
class World:
    admin: SessionUser  # the initial administrator (Super Administrator)
    admin2: SessionUser  # an Administrator without Super Administrator scope
    pwadmin: SessionUser  # owns the resources
    auditor: SessionUser
    user: SessionUser  # a Password User
    web: int  # resource "web-01", shared with the auditor
    web_root: int
    web_deploy: int
    db: int  # resource "db-secret-7", not shared with the auditor
    db_admin: int
    db_report: int  # account of db-secret-7 shared one by one with the auditor
    hidden: int  # resource "zz-hidden-9", shared with nobody


def build_world(services: Services) -> World:
    admin = initial_admin(services)
    admin2 = make_user(services, admin, "admin2", Role.ADMINISTRATOR)
    pwadmin = make_user(services, admin, "owner", Role.PASSWORD_ADMINISTRATOR)
    auditor = make_user(services, admin, "auditor", Role.PASSWORD_AUDITOR)
    user = make_user(services, admin, "puser", Role.PASSWORD_USER)
    with services.store.transaction() as s:  # as if each had set their own password
        s.execute(update(User).values(must_change_password=False))
    admin, admin2, pwadmin, auditor, user = (
        snapshot(services, u.id) for u in (admin, admin2, pwadmin, auditor, user)
    )
    with services.store.sessions() as s:
        strong = s.query(PasswordPolicy).filter_by(name="Strong").one().id
    web = services.vault.create_resource(
        pwadmin,
        IP,
        NewResource(name="web-01", dns_name="10.1.1.1", resource_type="Linux", department="=ops"),
        NewAccount(username="root", password="Weak-pass1"),
    )
    assert web.account_id is not None
    deploy = services.vault.add_account(
        pwadmin, IP, web.resource_id, NewAccount(username=XSS, password="aaaa1111")
    )
    db = services.vault.create_resource(
        pwadmin,
        IP,
        NewResource(name="db-secret-7", password_policy_id=strong),
        NewAccount(username="dba", password="Adm1n-Str0ng!pass#"),
    )
    assert db.account_id is not None
    report = services.vault.add_account(
        pwadmin, IP, db.resource_id, NewAccount(username="report", password="Rep0rt-Str0ng!pw#")
    )
    hidden = services.vault.create_resource(
        pwadmin, IP, NewResource(name="zz-hidden-9"), NewAccount(username="x", password="xxxx1")
    )
    services.sharing.share_resource(pwadmin, IP, web.resource_id, "view", user_id=auditor.id)
    services.sharing.share_account(pwadmin, IP, report, "view", user_id=auditor.id)
    services.vault.view_password(pwadmin, IP, db.account_id)
    services.vault.view_password(pwadmin, IP, web.account_id)
    return World(
        admin=admin,
        admin2=admin2,
        pwadmin=pwadmin,
        auditor=auditor,
        user=user,
        web=web.resource_id,
        web_root=web.account_id,
        web_deploy=deploy,
        db=db.resource_id,
        db_admin=db.account_id,
        db_report=report,
        hidden=hidden.resource_id,
    )
