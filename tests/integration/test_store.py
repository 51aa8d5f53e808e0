"""The store on both dialects: migrations, the key ring and the audit chain."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, event, func, insert, select, text, update

from node.audit import AuditEvent, verify_chain
from node.errors import DecryptionError, ValidationError
from node.keyring import KeyRing
from node.reveals import check_reveal, record_reveal
from node.services import Services
from node.store.db import (
    COMMIT_BATCH,
    Store,
    current_revision,
    head_revision,
    make_engine,
    open_store,
)
from node.store.models import Account, AppSetting, AuditRow, User
from node.vault import AccountChanges, NewAccount, NewResource
from tests.integration.group_commit_helpers import HeldBatch, add_setting
from tests.integration.vault_helpers import initial_admin


def test_migrations_reach_head(store: Store) -> None:
    assert current_revision(store.engine) == head_revision()


def test_secret_is_not_stored_in_plaintext(store: Store, keyring: KeyRing) -> None:
    secret = "Pl@intext-Needle-93817"
    with store.transaction() as s:
        s.add(User(username="u1", role="password_user"))
        s.flush()
        blob = keyring.encrypt(secret, "users", "custom", 1)
        s.execute(
            text("INSERT INTO app_settings (key, value) VALUES ('probe', :v)"),
            {"v": f'"{blob.hex()}"'},
        )
    with store.engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM app_settings")))
    assert secret not in dump
    assert keyring.decrypt_text(blob, "users", "custom", 1) == secret


def test_ciphertext_is_bound_to_its_row(keyring: KeyRing) -> None:
    blob = keyring.encrypt("s3cret", "accounts", "password_ct", 7)
    with pytest.raises(DecryptionError):
        keyring.decrypt(blob, "accounts", "password_ct", 8)
    with pytest.raises(DecryptionError):
        keyring.decrypt(blob, "accounts", "notes", 7)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        keyring.decrypt(bytes(tampered), "accounts", "password_ct", 7)


def test_rotation_and_rekey_keep_secrets(store: Store, keyring: KeyRing, tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = keyring.encrypt("before-rotate", "accounts", "password_ct", 1)
    new_id = keyring.rotate()
    newer = keyring.encrypt("after-rotate", "accounts", "password_ct", 2)
    assert KeyRing.key_id_of(newer) == new_id != KeyRing.key_id_of(old)
    backup = keyring.rekey()
    assert backup.exists()
    reopened = KeyRing.open(store, keyring._key_path)
    assert reopened.decrypt_text(old, "accounts", "password_ct", 1) == "before-rotate"
    assert reopened.decrypt_text(newer, "accounts", "password_ct", 2) == "after-rotate"


def test_audit_chain_detects_edit_delete_reorder(services: Services, store: Store) -> None:
    key = services.keyring.audit_hmac_key
    with store.transaction() as s:
        for i in range(5):
            services.audit.append(
                s,
                AuditEvent(
                    operation="view password",
                    username="alice",
                    source_ip="10.0.0.1",
                    target=f"acct{i}",
                ),
            )
    with store.sessions() as s:
        assert verify_chain(s, key).ok
    with store.transaction() as s:
        s.execute(update(AuditRow).where(AuditRow.id == 3).values(username="mallory"))
    with store.sessions() as s:
        report = verify_chain(s, key)
    assert not report.ok and report.first_broken_id == 3


# --- group commit ----------------------------------------------------------------------------


def _setting_keys(store: Store) -> set[str]:
    with store.reading() as conn:
        return {str(k) for k in conn.execute(select(AppSetting.key)).scalars()}


def _count_commits(store: Store) -> list[int]:
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    return commits


def test_the_write_epoch_moves_once_a_write_transaction_has_ended(store: Store) -> None:
    """What the API token cache relies on (node/api_tokens.py): reads leave the epoch alone;
    a write transaction, committed or rolled back, or a group commit moves it, and only
    once it has ended."""
    start = store.write_epoch
    with store.sessions() as s:
        s.scalar(select(func.count()).select_from(User))
    assert store.write_epoch == start
    with store.transaction() as s:
        s.execute(insert(AppSetting).values(key="epoch-1", value=1))
        during = store.write_epoch
    assert during == start and store.write_epoch != start
    committed = store.write_epoch
    with pytest.raises(ValueError), store.transaction() as s:
        s.execute(insert(AppSetting).values(key="epoch-2", value=2))
        raise ValueError("rolled back")
    assert store.write_epoch != committed
    rolled_back = store.write_epoch
    store.group_commit(lambda c: c.execute(insert(AppSetting).values(key="epoch-3", value=3)))
    assert store.write_epoch != rolled_back
    assert {"epoch-1", "epoch-3"} <= _setting_keys(store) and "epoch-2" not in _setting_keys(store)


def test_group_commit_of_the_waiting_works_is_one_commit(store: Store) -> None:
    commits = _count_commits(store)

    def add(i: int) -> Callable[[], object]:
        return lambda: store.group_commit(
            lambda c: c.execute(insert(AppSetting).values(key=f"w{i}", value=i))
        )

    HeldBatch(store).run_behind([add(i) for i in range(10)], commits.clear)
    assert len(commits) == 2  # the held batch, then the ten together
    assert {"held", *(f"w{i}" for i in range(10))} <= _setting_keys(store)


def test_group_commit_isolates_a_failing_work(store: Store) -> None:
    """A work that raises fails only its own caller, and nothing it wrote is kept; the
    others in its batch commit."""
    commits = _count_commits(store)
    outcomes: dict[str, object] = {}

    def call(key: str, fail: bool) -> None:
        def work(conn: Connection) -> str:
            conn.execute(insert(AppSetting).values(key=key, value="v"))
            if fail:
                raise ValueError(f"{key} refused")
            return key

        try:
            outcomes[key] = store.group_commit(work)
        except ValueError as exc:
            outcomes[key] = exc

    calls = [lambda i=i: call(f"gc-{i}", i == 3) for i in range(12)]
    HeldBatch(store).run_behind(calls, commits.clear)  # type: ignore[misc]
    # the held batch; then the twelve roll back on gc-3's error and run again one by one:
    # eleven commits (gc-3's own transaction rolls back)
    assert len(commits) == 1 + 11
    assert isinstance(outcomes["gc-3"], ValueError)
    assert all(outcomes[f"gc-{i}"] == f"gc-{i}" for i in range(12) if i != 3)
    keys = _setting_keys(store)
    assert "gc-3" not in keys
    assert {f"gc-{i}" for i in range(12) if i != 3} <= keys


def test_concurrent_password_fetches_keep_one_intact_chain(
    services: Services, store: Store
) -> None:
    """Many threads fetch at once: each fetch has its audit row, the rows of a batch are
    chained in memory and written together, and the chain verifies."""
    admin = initial_admin(services)
    made = services.vault.create_resource(
        admin, "10.0.0.9", NewResource(name="chain-srv"), NewAccount("root", "pw-Chain-1")
    )
    assert made.account_id is not None
    aid = made.account_id
    with store.reading() as conn:
        before = conn.execute(select(func.count()).select_from(AuditRow)).scalar_one()
    errors: list[BaseException] = []

    def fetch(n: int) -> None:
        try:
            for _ in range(n):
                assert services.vault.view_password(admin, "10.0.0.9", aid) == "pw-Chain-1"
        except BaseException as exc:  # noqa: BLE001  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(6,)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with store.sessions() as s:
        report = verify_chain(s, services.keyring.audit_hmac_key)
        views = s.scalar(
            select(func.count()).select_from(AuditRow).where(AuditRow.operation == "view password")
        )
        total = s.scalar(select(func.count()).select_from(AuditRow))
    assert report.ok, report.sentence()
    assert views == 16 * 6
    assert total == before + 16 * 6


def test_a_caller_that_stops_waiting_does_not_stop_the_committer(store: Store) -> None:
    held = HeldBatch(store)
    dropped = store.submit(lambda c: c.execute(insert(AppSetting).values(key="dropped", value=1)))
    held.wait_queued(1)
    assert dropped.cancel()
    held.finish()
    after = store.submit(lambda c: c.execute(insert(AppSetting).values(key="after", value=2)))
    after.result(timeout=20)  # a dead committer would leave it pending
    assert {"held", "after"} <= _setting_keys(store)


def test_a_refused_and_a_shown_reveal_in_one_batch(services: Services, store: Store) -> None:
    """A batch whose first reveal is refused (no last-access row) and whose second is
    shown: both audited in order, in an intact chain, and only the shown account's last
    access recorded."""
    admin = initial_admin(services)
    ip = "10.0.0.9"
    strict = services.vault.create_resource(
        admin, ip, NewResource(name="strict-srv"), NewAccount("root", "pw-Strict-1")
    ).account_id
    easy = services.vault.create_resource(
        admin, ip, NewResource(name="easy-srv"), NewAccount("root", "pw-Easy-1")
    ).account_id
    assert strict is not None and easy is not None
    services.vault.edit_account(admin, ip, strict, AccountChanges(reason_required=True))
    refused = services.vault.reveal_request("view password", admin, ip, strict)
    shown = services.vault.reveal_request("view password", admin, ip, easy)
    held = HeldBatch(store)
    first = services.vault.submit_reveal(refused)
    second = services.vault.submit_reveal(shown)
    held.wait_queued(2)
    held.finish()
    with pytest.raises(ValidationError, match="reason"):
        first.result(20)
    assert second.result(20) == "pw-Easy-1"
    with store.sessions() as s:
        rows = list(s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(2)))
        accessed = {
            a.id: a.last_accessed_at
            for a in s.scalars(select(Account).where(Account.id.in_([strict, easy])))
        }
        report = verify_chain(s, services.keyring.audit_hmac_key)
    assert [(r.target, r.result) for r in reversed(rows)] == [
        ("strict-srv/root", "failure"),
        ("easy-srv/root", "success"),
    ]
    assert accessed[strict] is None and accessed[easy] is not None
    assert report.ok, report.sentence()


def test_a_batch_records_each_accounts_latest_access(services: Services, store: Store) -> None:
    """Reveals of three accounts in one batch, one of them revealed twice: each account's
    last access is its latest reveal's time, whatever the order they were submitted in."""
    admin = initial_admin(services)
    ids = []
    for name in ("touch-a", "touch-b", "touch-c"):
        made = services.vault.create_resource(
            admin, "10.0.0.9", NewResource(name=name), NewAccount("root", "pw-Touch-1")
        )
        assert made.account_id is not None
        ids.append(made.account_id)
    a, b, c = ids
    records = []
    for n, aid in enumerate((a, b, a, c)):
        request = services.vault.reveal_request("view password", admin, "10.0.0.9", aid)
        with store.reading() as conn:
            record, refusal, _ = check_reveal(conn, request)
        assert refusal is None
        records.append(dataclasses.replace(record, at=dt.datetime(2026, 11, 30, 12, n)))
    held = HeldBatch(store)
    # the later reveal of a first: the earlier one, submitted after it, must not win
    futures = [store.submit(record_reveal(services.audit, records[i])) for i in (2, 1, 0, 3)]
    held.wait_queued(4)
    held.finish()
    for f in futures:
        f.result(20)
    with store.sessions() as s:
        accessed = {
            row.id: row.last_accessed_at
            for row in s.scalars(select(Account).where(Account.id.in_(ids)))
        }
        report = verify_chain(s, services.keyring.audit_hmac_key)
    assert accessed == {a: records[2].at, b: records[1].at, c: records[3].at}
    assert report.ok, report.sentence()


def test_the_committer_gets_a_new_connection_when_postgres_drops_its_own(pg_url: str) -> None:
    """PostgreSQL only (a server that ends a session): a batch after the server ended the
    committer's last session runs on a live connection, so the caller sees nothing."""
    store = open_store(pg_url)
    try:

        def backend_pid(conn: Connection) -> int:
            return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

        first = store.group_commit(backend_pid)
        other = make_engine(pg_url)  # not the store's pool, which holds that session
        with other.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        other.dispose()

        def add(conn: Connection) -> int:
            conn.execute(insert(AppSetting).values(key="after-kill", value="kept"))
            return backend_pid(conn)

        assert store.group_commit(add) != first
        with store.reading() as reader:
            got = reader.execute(select(AppSetting.value).where(AppSetting.key == "after-kill"))
            assert got.scalar_one() == "kept"
    finally:
        store.dispose()


def test_under_concurrency_the_committer_gathers_a_fuller_batch(store: Store) -> None:
    """After a batch of several works, the next batch waits (here up to 30 s) until
    COMMIT_BATCH works are queued: a work and the ones that follow it share one commit."""
    store.commit_delay = 30.0
    commits = _count_commits(store)
    pair = [lambda k=k: store.group_commit(add_setting(k)) for k in ("cd-a", "cd-b")]
    HeldBatch(store).run_behind(pair, lambda: None)  # a batch of two: concurrency  # type: ignore[arg-type]
    commits.clear()
    futures = [store.submit(add_setting("cd-0"))]
    time.sleep(0.2)  # the committer has long taken it up: without the wait it would commit alone
    futures += [store.submit(add_setting(f"cd-{i}")) for i in range(1, COMMIT_BATCH)]
    for f in futures:
        f.result(20)  # far less than the delay: the full queue ended the wait
    assert len(commits) == 1
    assert {f"cd-{i}" for i in range(COMMIT_BATCH)} <= _setting_keys(store)


def test_a_lone_caller_is_never_delayed(store: Store) -> None:
    store.commit_delay = 60.0
    for i in range(3):  # one at a time: each batch holds one work
        assert store.submit(add_setting(f"lone-{i}")).result(20) == f"lone-{i}"
