"""Point reads (Store.reading) on both dialects: the same rows and values as the ORM gives,
every commit seen at once, and clear errors for what they cannot do."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from node.errors import StoreError
from node.services import Services
from node.store.db import Store, open_store
from node.store.models import Account, AppSetting, Resource
from node.store.point_reads import write_rows
from node.vault import NewAccount, NewResource
from tests.integration.vault_helpers import initial_admin

# A statement with what the hot paths use: a join, a label, a parameter used twice, a value
# bound in the statement itself, and booleans, bytes and datetimes to convert.
_ACCOUNT = (
    select(
        Account.id,
        Account.username,
        Account.password_ct,
        Account.reason_required,
        Account.last_changed_at,
        Resource.name.label("resource_name"),
    )
    .join(Resource, Resource.id == Account.resource_id)
    .where(
        Account.id == bindparam("aid"),
        (Account.id + 0) == bindparam("aid"),
        Resource.description != "never-this-text",
    )
)


def _one_account(services: Services, name: str) -> int:
    admin = initial_admin(services)
    made = services.vault.create_resource(
        admin, "10.0.0.1", NewResource(name=name), NewAccount("root", "pw-Point-1")
    )
    assert made.account_id is not None
    return made.account_id


def test_point_reads_give_what_the_orm_gives(services: Services, store: Store) -> None:
    aid = _one_account(services, "point-srv")
    with store.transaction() as s:
        s.execute(update(Account).where(Account.id == aid).values(reason_required=True))
    with store.sessions() as s:
        expected = s.execute(_ACCOUNT, {"aid": aid}).one()
    with store.reading() as reader:
        got = reader.execute(_ACCOUNT, {"aid": aid}).first()
        assert reader.execute(_ACCOUNT, {"aid": aid + 1000}).first() is None
    assert tuple(got) == tuple(expected)
    assert got.resource_name == "point-srv" and got.username == "root"
    assert got.reason_required is True
    assert isinstance(got.password_ct, bytes) and got.password_ct == expected.password_ct
    assert got.last_changed_at is not None and got.last_changed_at == expected.last_changed_at


def test_point_reads_see_each_commit_at_once(services: Services, store: Store) -> None:
    key = select(AppSetting.value).where(AppSetting.key == "point-probe")
    with store.reading() as reader:
        assert reader.execute(key).scalar() is None
        with store.transaction() as s:
            s.add(AppSetting(key="point-probe", value="one"))
        # the same reader, and the same thread's next reader, see it: no snapshot is kept
        assert reader.execute(key).scalar() == "one"
    with store.transaction() as s:
        s.execute(update(AppSetting).where(AppSetting.key == "point-probe").values(value="two"))
    with store.reading() as reader:
        assert reader.execute(key).scalar() == "two"


def test_point_reads_in_many_threads(services: Services, store: Store) -> None:
    aid = _one_account(services, "threads-srv")
    names: list[str] = []
    lock = threading.Lock()

    def read() -> None:
        for _ in range(20):
            with store.reading() as reader:
                row = reader.execute(_ACCOUNT, {"aid": aid}).first()
            with lock:
                names.append(row.resource_name)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert names == ["threads-srv"] * 120


def test_values_bound_in_the_statement_are_converted_every_time(
    services: Services, store: Store
) -> None:
    """A datetime written into the statement itself is converted for the driver on each
    run, never in the compiled statement's own copy."""
    aid = _one_account(services, "bound-srv")
    since = dt.datetime(2000, 1, 1)
    newer = select(Account.id).where(Account.created_at > since, Account.id == bindparam("aid"))
    for _ in range(3):
        with store.reading() as reader:
            assert reader.execute(newer, {"aid": aid}).scalars() == [aid]


def test_point_reads_refuse_what_they_cannot_do(store: Store) -> None:
    by_id = select(Account.id).where(Account.id == bindparam("aid"))
    with store.reading() as reader, pytest.raises(StoreError, match="missing its parameters: aid"):
        reader.execute(by_id)  # not silently "WHERE id = NULL"
    in_list = select(Account.id).where(Account.id.in_(bindparam("ids", expanding=True)))
    with store.reading() as reader, pytest.raises(StoreError, match="IN list"):
        reader.execute(in_list, {"ids": [1, 2]})
    for label in ("account id", "class", "_hidden"):
        odd = select(Account.id.label(label))
        with store.reading() as reader, pytest.raises(StoreError, match="identifiers"):
            reader.execute(odd)
    write = update(AppSetting).values(value="x")
    with store.reading() as reader, pytest.raises(StoreError, match="SELECT statements only"):
        reader.execute(write)  # type: ignore[arg-type]


_SETTING_ROWS = insert(AppSetting)
_RENAME = update(AppSetting).where(AppSetting.key == bindparam("old")).values(key=bindparam("new"))


def test_write_rows_in_a_transaction_and_its_errors(store: Store) -> None:
    rows = [{"key": f"batch-{i}", "value": f"v{i}"} for i in range(5)]
    with store.engine.begin() as conn:
        write_rows(conn, _SETTING_ROWS, rows)
        write_rows(conn, _RENAME, [{"old": "batch-0", "new": "batch-renamed"}])
        write_rows(conn, _SETTING_ROWS, [])  # nothing to do
    keys = select(AppSetting.key).where(AppSetting.key.like("batch-%")).order_by(AppSetting.key)
    with store.reading() as reader:
        assert reader.execute(keys).scalars() == [
            "batch-1", "batch-2", "batch-3", "batch-4", "batch-renamed"
        ]  # fmt: skip
    # A failing row fails the statement as SQLAlchemy's error, without the values, and the
    # transaction rolls back: the row before it is not there either.
    again = [{"key": "batch-new", "value": "x"}, {"key": "batch-1", "value": "secret-value"}]
    with pytest.raises(IntegrityError) as err, store.engine.begin() as conn:
        write_rows(conn, _SETTING_ROWS, again)
    assert "secret-value" not in str(err.value)
    with store.reading() as reader:
        assert "batch-new" not in reader.execute(keys).scalars()
    # Columns whose defaults SQLAlchemy computes in Python must be given (else they would be
    # left NULL on SQLite's fast path and filled on the other).
    some = [{"resource_id": 1, "username": "u", "password_ct": b"x"}]
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            with pytest.raises(StoreError, match="every column it sets"):
                write_rows(conn, insert(Account), some)


def test_write_rows_inserts_many_rows_in_a_few_statements(store: Store) -> None:
    # 45 rows: on SQLite four INSERTs (32 + 8 + 4 + 1 rows); each row's values converted
    # (JSON here) and in its own row whichever statement carried it
    rows = [{"key": f"many-{i:02d}", "value": {"n": i, "list": [i, f"v{i}"]}} for i in range(45)]
    with store.engine.begin() as conn:
        sent: list[str] = []
        if store.dialect == "sqlite":
            conn.connection.driver_connection.set_trace_callback(sent.append)  # type: ignore[union-attr]
        try:
            write_rows(conn, _SETTING_ROWS, rows)
        finally:
            if store.dialect == "sqlite":
                conn.connection.driver_connection.set_trace_callback(None)  # type: ignore[union-attr]
    if store.dialect == "sqlite":
        assert [s.count("), (") + 1 for s in sent if s.startswith("INSERT")] == [32, 8, 4, 1]
    with store.engine.connect() as conn:  # read back the ordinary way
        got = conn.execute(
            select(AppSetting.key, AppSetting.value)
            .where(AppSetting.key.like("many-%"))
            .order_by(AppSetting.key)
        ).all()
    assert [(k, v) for k, v in got] == [(r["key"], r["value"]) for r in rows]


def test_point_reads_after_the_store_is_closed(db_url: str) -> None:
    store = open_store(db_url)
    with store.transaction() as s:
        s.add(AppSetting(key="closing-probe", value="here"))
    probe = select(AppSetting.value).where(AppSetting.key == "closing-probe")
    with store.reading() as reader:
        assert reader.execute(probe).scalar_one() == "here"
    store.dispose()
    with pytest.raises(StoreError, match="closed"), store.reading():
        pass
