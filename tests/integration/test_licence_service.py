"""Licences applied to a real vault on SQLite and PostgreSQL: limits enforced in the user and
vault services, evaluation and expiry with an injected clock, a clock turned back, and a
licence installed through one store holding on another store of the same database."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, text

from node.audit import verify_chain
from node.auth import SessionUser
from node.errors import LicenceError
from node.licence import Edition, Feature, InvalidLicenceError, LicenceType
from node.licence_service import LicenceService, status_lines
from node.query_reports import QueryReportService
from node.roles import Role
from node.services import Services
from node.store.db import Store, open_store
from node.store.dialect import ReadOnlyStore
from node.store.models import AuditRow, Resource, User
from node.users import UserService
from node.vault import NewAccount, NewResource, VaultService
from tests.licence_support import Clock, Vendor, trust

IP = "192.0.2.20"


@dataclass
class Vault:
    """The real services of one vault, built with a clock the test moves."""

    services: Services
    clock: Clock
    licence: LicenceService
    users: UserService
    vault: VaultService
    admin: SessionUser

    def add_user(self, name: str, role: Role) -> int:
        return self.users.add_user(self.admin, IP, name, role).id

    def add_resource(self, name: str) -> int:
        return self.vault.create_resource(self.admin, IP, NewResource(name=name)).resource_id

    def count(self, model: type[User] | type[Resource]) -> int:
        with self.services.store.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Vendor:
    v = Vendor()
    trust(monkeypatch, v)
    return v


def build(services: Services, store: Store, clock: Clock) -> Vault:
    licence = LicenceService(store, services.audit, clock=clock)
    licence.ensure_started()
    services.auth.bootstrap_admin()
    with store.sessions() as s:
        row = s.scalars(select(User).where(User.username == "admin")).one()
        admin = SessionUser(row.id, row.username, Role(row.role), True, False)
    return Vault(
        services=services,
        clock=clock,
        licence=licence,
        users=UserService(store, services.audit, licence),
        vault=VaultService(store, services.keyring, services.audit, licence),
        admin=admin,
    )


@pytest.fixture
def v(services: Services, store: Store) -> Vault:
    return build(services, store, Clock())


def test_free_refuses_the_third_administrator_counting_admin_roles_only(v: Vault) -> None:
    v.clock.advance(31)  # the evaluation is over: Free, 2 administrators
    assert v.licence.status().entitlement.edition is Edition.FREE
    shown = status_lines(v.licence.status().to_dict())
    assert "Edition:        Free (the evaluation has ended)" in shown
    assert "Expires:        2026-12-01 (ended)" in shown
    for i in range(3):
        v.add_user(f"user{i}", Role.PASSWORD_USER)
    v.add_user("auditor", Role.PASSWORD_AUDITOR)
    v.add_user("padmin", Role.PASSWORD_ADMINISTRATOR)  # the 2nd admin-type user
    assert v.licence.status().admins_used == 2
    users_before = v.count(User)
    with pytest.raises(LicenceError) as refused:
        v.add_user("admin3", Role.ADMINISTRATOR)
    message = str(refused.value)
    assert message.startswith("The licence does not allow a 3rd administrator")
    assert "Free edition" in message and "evaluation ended" in message
    assert v.count(User) == users_before
    with pytest.raises(LicenceError):
        v.add_user("padmin2", Role.PASSWORD_ADMINISTRATOR)
    # Promoting a password user to an admin-type role is adding an administrator too.
    with v.services.store.sessions() as s:
        user0 = s.scalars(select(User).where(User.username == "user0")).one()
    with pytest.raises(LicenceError, match="3rd administrator"):
        v.users.change_role(v.admin, IP, user0.id, Role.ADMINISTRATOR)
    with v.services.store.sessions() as s:
        assert s.get(User, user0.id).role == Role.PASSWORD_USER.value  # type: ignore[union-attr]
    # Non-admin users are still welcome.
    v.add_user("user9", Role.PASSWORD_USER)


def test_free_refuses_the_eleventh_resource_and_a_restore_over_the_limit(v: Vault) -> None:
    v.clock.advance(30)
    ids = [v.add_resource(f"server-{i:02d}") for i in range(10)]
    with pytest.raises(LicenceError) as refused:
        v.add_resource("server-10")
    assert "11th resource" in str(refused.value) and "licence" in str(refused.value)
    assert v.count(Resource) == 10
    v.vault.delete_resource(v.admin, IP, ids[0])  # to the trash: no longer counted
    v.add_resource("server-10")
    with pytest.raises(LicenceError, match="11th resource"):
        v.vault.restore_resource(v.admin, IP, ids[0])


def test_evaluation_allows_five_administrators_then_passwords_stay_readable(v: Vault) -> None:
    for i in range(4):
        v.add_user(f"admin{i}", Role.ADMINISTRATOR)
    with pytest.raises(LicenceError, match="6th administrator.*30-day evaluation"):
        v.add_user("admin9", Role.ADMINISTRATOR)
    created = v.vault.create_resource(
        v.admin, IP, NewResource(name="db1"), NewAccount(username="root", password="S3cret-db1!")
    )
    for i in range(11):
        v.add_resource(f"host{i}")  # unlimited during the evaluation
    assert created.account_id is not None
    v.licence.require(Feature.QUERY_REPORTS)
    v.clock.advance(30)
    with pytest.raises(LicenceError, match="query reports"):
        v.licence.require(Feature.QUERY_REPORTS)
    with pytest.raises(LicenceError, match="13th resource"):
        v.add_resource("host-more")
    assert v.vault.view_password(v.admin, IP, created.account_id) == "S3cret-db1!"


def test_expired_licence_stops_additions_not_reading(v: Vault, vendor: Vendor) -> None:
    today = v.clock.now.date()
    v.licence.install(
        vendor.issue(edition=Edition.PREMIUM, admins=10, expires=today + dt.timedelta(days=10)),
        "admin",
        IP,
    )
    v.add_user("admin2", Role.ADMINISTRATOR)
    v.add_user("admin3", Role.ADMINISTRATOR)
    created = v.vault.create_resource(
        v.admin, IP, NewResource(name="fw"), NewAccount(username="enable", password="Fw-pass-77")
    )
    v.licence.check_join_cluster()  # Premium includes high availability
    warnings = v.licence.status().entitlement.warnings
    assert [w.level for w in warnings] == ["notice"] and "expires in 10 days" in warnings[0].text
    v.clock.advance(11)
    status = v.licence.status()
    assert status.entitlement.state == "licence expired"
    with pytest.raises(LicenceError, match="licence SR-TEST-1 for ACME Ltd expired"):
        v.add_user("admin4", Role.ADMINISTRATOR)
    with pytest.raises(LicenceError, match="high availability"):
        v.licence.check_join_cluster()
    assert v.vault.view_password(v.admin, IP, created.account_id or 0) == "Fw-pass-77"


def test_install_checks_the_file_and_is_audited(v: Vault, vendor: Vendor) -> None:
    good = vendor.issue(edition=Edition.STANDARD, admins=4)
    bad = [
        good.replace('"admins": 4', '"admins": 40'),
        Vendor().issue(),
        vendor.issue(expires=v.clock.now.date() - dt.timedelta(days=1)),
    ]
    for bad_text in bad:
        with pytest.raises(InvalidLicenceError):
            v.licence.install(bad_text, "admin", IP)
        assert v.licence.status().entitlement.state == "evaluation"
    installed = v.licence.install(good.encode(), "admin", IP)
    assert installed.edition is Edition.STANDARD
    status = v.licence.status().to_dict()
    assert (status["edition"], status["licensee"], status["admins_allowed"]) == (
        "standard",
        "ACME Ltd",
        4,
    )
    with v.services.store.sessions() as s:
        row = s.scalars(select(AuditRow).where(AuditRow.operation == "install licence")).one()
        assert row.target == "licence SR-TEST-1" and "Standard subscription" in row.detail
        assert verify_chain(s, v.services.keyring.audit_hmac_key).ok


def test_a_clock_turned_back_does_not_extend_the_evaluation(
    v: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    v.clock.advance(40)
    assert v.licence.entitlement().edition is Edition.FREE  # records the latest time seen
    v.clock.advance(-35)  # five days after installation, by the (wrong) clock
    with caplog.at_level(logging.WARNING, logger="strongroom.licence"):
        ent = v.licence.status().entitlement
    assert ent.edition is Edition.FREE and ent.clock_rollback
    assert any("clock is 35 days behind" in w.text for w in ent.warnings)
    assert "system clock is behind the latest time seen" in caplog.text
    assert any(
        "clock is 35 days behind" in line for line in status_lines(v.licence.status().to_dict())
    )
    v.add_user("padmin", Role.PASSWORD_ADMINISTRATOR)  # Free allows two
    with pytest.raises(LicenceError, match="3rd administrator"):
        v.add_user("admin2", Role.ADMINISTRATOR)


def test_a_clock_turned_back_does_not_extend_a_term(v: Vault, vendor: Vendor) -> None:
    v.licence.install(
        vendor.issue(admins=5, expires=v.clock.now.date() + dt.timedelta(days=5)), "admin", IP
    )
    v.clock.advance(8)
    v.licence.entitlement()  # any check records the latest time seen
    v.clock.advance(-6)
    ent = v.licence.entitlement()
    assert ent.state == "licence expired" and ent.clock_rollback


@pytest.fixture
def second_store(settings: object, store: Store) -> Iterator[Store]:
    other = open_store(str(store.engine.url.render_as_string(hide_password=False)))
    yield other
    other.dispose()


def test_a_licence_installed_through_one_store_holds_on_another(
    v: Vault, vendor: Vendor, second_store: Store
) -> None:
    other = LicenceService(second_store, v.services.audit, clock=v.clock)
    assert other.entitlement().edition is Edition.ENTERPRISE  # evaluation, now cached
    v.licence.install(vendor.issue(edition=Edition.STANDARD, admins=2), "admin", IP)
    ent = other.entitlement()
    assert ent.edition is Edition.STANDARD and ent.admins == 2
    with pytest.raises(LicenceError, match="the REST API"):
        other.require(Feature.REST_API)
    v.licence.install(
        vendor.issue(edition=Edition.ENTERPRISE, kind=LicenceType.PERPETUAL, admins=9),
        "admin",
        IP,
    )
    other.require(Feature.REST_API)
    assert other.entitlement().admins == 9


def test_query_reports_need_the_enterprise_edition(v: Vault, vendor: Vendor, store: Store) -> None:
    reports = QueryReportService(store, ReadOnlyStore(store.engine), v.services.audit, v.licence)
    query = "SELECT username FROM report_users"
    assert ["admin"] in [list(row) for row in reports.run(v.admin, query, IP).rows]
    v.licence.install(vendor.issue(edition=Edition.PREMIUM, admins=5), "admin", IP)
    with pytest.raises(LicenceError) as refused:
        reports.run(v.admin, query, IP)
    assert str(refused.value).startswith("The licence does not include query reports")
    assert "Enterprise edition" in str(refused.value)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_nodes_cannot_both_add_the_last_allowed_administrator(v: Vault, store: Store) -> None:
    v.clock.advance(31)  # Free: two administrators, one in use
    v.licence.entitlement()  # the time is recorded: the checks below write nothing
    outcome: list[BaseException | None] = []

    def second_node_adds() -> None:
        try:
            v.add_user("admin3", Role.ADMINISTRATOR)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    waiting = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with store.transaction() as s:  # the first node adds the 2nd administrator ...
        v.licence.check_add_administrator(s)
        s.add(User(username="admin2", role=Role.ADMINISTRATOR.value))
        s.flush()
        other = threading.Thread(target=second_node_adds)
        other.start()
        deadline = time.monotonic() + 60
        with store.engine.connect() as probe:  # ... while the second waits for its lock
            while not probe.execute(waiting).scalar():
                probe.rollback()  # pg_stat_activity is a snapshot per transaction
                assert other.is_alive(), f"the second add did not wait: {outcome}"
                assert time.monotonic() < deadline, "the second add never waited for the lock"
                time.sleep(0.02)
    other.join(60)
    assert isinstance(outcome[0], LicenceError), outcome
    assert "3rd administrator" in str(outcome[0])
    assert v.licence.status().admins_used == 2
