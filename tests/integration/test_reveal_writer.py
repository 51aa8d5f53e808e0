"""The audit writer process of `strongroom serve` (node/reveal_writer.py): reveals written
by a real child process on SQLite and PostgreSQL, and every way it can fail closed.

(The API, console and browser tests reach it too: tests/integration/live_app.py and
`strongroom serve` start one, as a node does.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

import node.reveal_writer as reveal_writer
from appliance.server import reveal_writer_command
from node.audit import verify_chain
from node.errors import AuditWriteError, DecryptionError
from node.reveal_writer import WriterProcess
from node.services import Services
from node.store.models import Account, AuditRow
from node.vault import NewAccount, NewResource
from tests.helpers import API_TOKEN, NodeProcess, free_port, run_cli
from tests.integration.api_helpers import Api, one_account, op
from tests.integration.live_app import Browser
from tests.integration.vault_helpers import IP, audit_head_missing, initial_admin
from web.commit_wait import CommitWaiter

SECRET = "Sekrit-Needle-4711"


def _writer(services: Services, loop: asyncio.AbstractEventLoop | None = None) -> WriterProcess:
    config = {"url": services.settings.db_url, "key": services.keyring.audit_hmac_key}
    writer = WriterProcess(reveal_writer_command(), config, loop=loop)
    services.vault.use_reveal_writer(writer)
    return writer


@pytest.fixture
def writer(services: Services) -> Iterator[WriterProcess]:
    made = _writer(services)
    try:
        yield made
    finally:
        made.close()


def _accounts(services: Services, count: int) -> list[int]:
    admin = initial_admin(services)
    ids = []
    for i in range(count):
        made = services.vault.create_resource(
            admin, IP, NewResource(name=f"srv{i}"), NewAccount("root", f"{SECRET}-{i}")
        )
        assert made.account_id is not None
        ids.append(made.account_id)
    return ids


def _audit_count(services: Services, operation: str = "view password") -> int:
    with services.store.sessions() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(AuditRow).where(AuditRow.operation == operation)
            )
            or 0
        )


def _child_pid(writer: WriterProcess) -> int:
    child = writer._child  # noqa: SLF001 - which process to stop, for the test
    assert child is not None
    return child.proc.pid


def _chain_ok(services: Services) -> bool:
    with services.store.sessions() as s:
        return verify_chain(s, services.keyring.audit_hmac_key).ok


def test_concurrent_reveals_are_written_by_the_child(
    services: Services, writer: WriterProcess
) -> None:
    ids = _accounts(services, 4)
    admin = initial_admin(services)

    def reveal(n: int) -> str:
        return services.vault.view_password(admin, f"198.51.100.{n % 250}", ids[n % 4])

    with ThreadPoolExecutor(8) as pool:
        shown = list(pool.map(reveal, range(80)))
    assert shown == [f"{SECRET}-{n % 4}" for n in range(80)]
    assert _audit_count(services) == 80
    with services.store.sessions() as s:
        rows = list(s.scalars(select(AuditRow).where(AuditRow.operation == "view password")))
        assert {r.source_ip for r in rows} == {f"198.51.100.{n}" for n in range(80)}
        for aid in ids:
            account = s.get(Account, aid)
            assert account is not None and account.last_accessed_at is not None
    assert _chain_ok(services)
    assert os.getpid() != _child_pid(writer)


def test_on_the_event_loop_and_stopping_with_reveals_in_flight(services: Services) -> None:
    """As `strongroom serve` runs it: answers read by the loop (no thread), awaited with
    CommitWaiter; close() while reveals wait writes them all before the child exits."""
    (aid,) = _accounts(services, 1)
    admin = initial_admin(services)

    async def main() -> tuple[list[str], list[Future[str]]]:
        writer = _writer(services, asyncio.get_running_loop())
        waiter = CommitWaiter(writer)
        plans = [services.vault.reveal_request("copy password", admin, IP, aid) for _ in range(30)]
        shown = await asyncio.gather(*(waiter.wait(services.vault.submit_reveal(p)) for p in plans))
        in_flight = [services.vault.submit_reveal(p) for p in plans[:10]]
        writer.close()  # on the loop: reads the last answers itself
        return list(shown), in_flight

    shown, in_flight = asyncio.run(main())
    assert shown == [SECRET + "-0"] * 30
    assert [f.result(timeout=0) for f in in_flight] == [SECRET + "-0"] * 10
    assert _audit_count(services, "copy password") == 40
    assert _chain_ok(services)


def test_a_batch_that_cannot_commit_shows_nothing(
    services: Services, writer: WriterProcess
) -> None:
    (aid,) = _accounts(services, 1)
    admin = initial_admin(services)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"
    with audit_head_missing(services):
        for op in (services.vault.view_password, services.vault.copy_password):
            with pytest.raises(AuditWriteError) as err:
                op(admin, IP, aid)
            assert SECRET not in str(err.value)
    pid = _child_pid(writer)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"  # the same child
    assert _child_pid(writer) == pid
    assert _audit_count(services) == 2
    assert _audit_count(services, "copy password") == 0
    assert _chain_ok(services)


@contextmanager
def _audit_head_held(services: Services) -> Iterator[None]:
    """Hold the audit chain's head in a transaction of the test's own: a batch of the child
    then waits for it (SQLite: the database's write lock, BEGIN IMMEDIATE; PostgreSQL: the
    head row's lock)."""
    lock = " FOR UPDATE" if services.store.dialect == "postgresql" else ""
    with services.store.transaction() as s:
        s.execute(text("SELECT last_id FROM audit_head WHERE id = 1" + lock))
        yield
        s.rollback()


def test_a_dead_child_fails_what_it_held_and_another_takes_over(
    services: Services, writer: WriterProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reveal_writer, "RESTART_INTERVAL", 0.0)
    (aid,) = _accounts(services, 1)
    admin = initial_admin(services)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"
    with _audit_head_held(services):
        plans = [services.vault.reveal_request("view password", admin, IP, aid) for _ in range(5)]
        waiting = [services.vault.submit_reveal(p) for p in plans]
        time.sleep(0.3)
        assert not any(f.done() for f in waiting)
        first = _child_pid(writer)
        os.kill(first, signal.SIGKILL)
        for future in waiting:
            with pytest.raises(AuditWriteError) as err:
                future.result(timeout=10)
            assert SECRET not in str(err.value)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"  # a new child
    assert _child_pid(writer) != first
    assert _audit_count(services) == 2  # none of the five
    assert _chain_ok(services)


def test_a_stuck_child_is_replaced_without_holding_the_caller(
    services: Services, writer: WriterProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that stops reading (SIGSTOP) fills its pipe: when a reveal finds no room
    within SEND_TIMEOUT, the child is killed and all it held fails; the next reveal starts
    another child."""
    monkeypatch.setattr(reveal_writer, "SEND_TIMEOUT", 0.2)
    monkeypatch.setattr(reveal_writer, "RESTART_INTERVAL", 0.0)
    (aid,) = _accounts(services, 1)
    admin = initial_admin(services)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"
    stuck = _child_pid(writer)
    os.kill(stuck, signal.SIGSTOP)
    plan = services.vault.reveal_request("view password", admin, IP, aid, reason="x" * 1000)
    sent: list[Future[str]] = []
    began = time.monotonic()
    while _child_pid(writer) == stuck and len(sent) < 10_000:
        sent.append(services.vault.submit_reveal(plan))
    assert time.monotonic() - began < 30
    assert _child_pid(writer) != stuck  # the reveal after the one that found no room
    *to_stuck, to_next = sent
    assert len(to_stuck) > 1
    for future in to_stuck:
        with pytest.raises(AuditWriteError):
            future.result(timeout=10)
    assert to_next.result(timeout=10) == SECRET + "-0"
    assert _audit_count(services) == 2
    assert _chain_ok(services)


def test_a_child_that_takes_reveals_but_never_answers_is_replaced(
    services: Services, writer: WriterProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that reads reveals but never answers (stopped with room left in its pipe; a
    database call that never returns looks the same) would hold its callers for good, and
    with them the worker threads of the console. Once a reveal has waited ANSWER_TIMEOUT
    the child is killed: what it held fails closed, and the next reveal starts another."""
    monkeypatch.setattr(reveal_writer, "RESTART_INTERVAL", 0.0)
    (aid,) = _accounts(services, 1)
    admin = initial_admin(services)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"
    stuck = _child_pid(writer)
    os.kill(stuck, signal.SIGSTOP)
    try:
        plan = services.vault.reveal_request("view password", admin, IP, aid)
        waiting = services.vault.submit_reveal(plan)
        assert not writer.stop_if_stuck()  # just sent: not waited long yet
        later = time.monotonic() + reveal_writer.ANSWER_TIMEOUT
        assert writer.stop_if_stuck(now=later)
        with pytest.raises(AuditWriteError) as err:
            waiting.result(timeout=10)
        assert SECRET not in str(err.value)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGCONT)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"  # a new child
    assert _child_pid(writer) != stuck
    assert _audit_count(services) == 2  # not the one the stopped child held
    assert _chain_ok(services)


@pytest.mark.parametrize("in_child", [True, False], ids=["writer process", "in process"])
def test_a_password_that_does_not_decrypt_is_not_shown_and_says_so(
    services: Services, in_child: bool
) -> None:
    """An account whose ciphertext was swapped for another account's in the database: the
    reveal is granted and recorded, then the password does not decrypt (its associated data
    names the other row), so nothing is shown and a second audit row says why."""
    first, second = _accounts(services, 2)
    admin = initial_admin(services)
    writer = _writer(services) if in_child else None
    try:
        with services.store.transaction() as s:
            other = s.scalar(select(Account.password_ct).where(Account.id == second))
            s.execute(update(Account).where(Account.id == first).values(password_ct=other))
        with pytest.raises(DecryptionError) as err:
            services.vault.view_password(admin, IP, first, reason="audit check")
        assert SECRET not in str(err.value)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with services.store.sessions() as s:
                rows = s.scalars(
                    select(AuditRow)
                    .where(AuditRow.operation == "view password", AuditRow.account_id == first)
                    .order_by(AuditRow.id)
                ).all()
            if len(rows) == 2:
                break
            time.sleep(0.05)
        assert [(r.result, r.reason) for r in rows] == [
            ("success", "audit check"),
            ("failure", "audit check"),
        ]
        assert "could not be decrypted" in rows[1].detail and rows[1].target == f"account {first}"
        assert services.vault.view_password(admin, IP, second) == SECRET + "-1"
        assert _chain_ok(services)
    finally:
        if writer is not None:
            writer.close()


def test_after_close_reveals_fail_closed(services: Services) -> None:
    (aid,) = _accounts(services, 1)
    admin = initial_admin(services)
    writer = _writer(services)
    assert services.vault.view_password(admin, IP, aid) == SECRET + "-0"
    writer.close()
    with pytest.raises(AuditWriteError):
        services.vault.view_password(admin, IP, aid)
    assert _audit_count(services) == 1


def test_the_child_ends_with_its_node(services: Services) -> None:
    """The node dies without closing: the kernel closes its end of the pipe, and that end
    stops the child (nothing else tells it, as it ignores SIGTERM and SIGINT)."""
    (aid,) = _accounts(services, 1)
    writer = _writer(services)
    assert services.vault.view_password(initial_admin(services), IP, aid) == SECRET + "-0"
    child = writer._child  # noqa: SLF001 - to close its pipe as the kernel would
    assert child is not None
    os.kill(child.proc.pid, signal.SIGTERM)  # ignored
    os.close(child.send_fd)
    child.send_fd = -1
    assert child.proc.wait(timeout=20) == 0
    writer.close()


def test_console_writes_go_on_while_reveals_flow(services: Services, writer: WriterProcess) -> None:
    """The node's own transactions and the child's batches share one database: on SQLite
    they take turns at its write lock (busy handler), on PostgreSQL at the audit head's
    row. Neither side's writes may fail while the other's flow."""
    ids = _accounts(services, 4)
    admin = initial_admin(services)
    stop = threading.Event()
    shown: list[str] = []

    def reveal_until_stopped() -> None:
        n = 0
        while not stop.is_set():
            shown.append(services.vault.view_password(admin, IP, ids[n % 4]))
            n += 1

    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(reveal_until_stopped) for _ in range(4)]
        try:
            for i in range(15):
                services.vault.create_resource(admin, IP, NewResource(name=f"during-{i}"))
                services.vault.change_password(admin, IP, ids[i % 4], f"Changed-{i}-pass!x")
        finally:
            stop.set()
        for reader in readers:
            reader.result(timeout=60)
    assert len(shown) >= 4
    assert _audit_count(services) == len(shown)
    assert _audit_count(services, "change password") == 15
    assert services.vault.list_resources(admin).total == 19
    assert _chain_ok(services)


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"appliance.reveal_writer" in cmdline:
                found.append(int(entry.name))
    return found


def test_strongroom_serve_runs_one_and_takes_it_down(tmp_path: Path) -> None:
    """Through a real node: the password comes back once its row is written by the child;
    a killed child is replaced for the next fetch; the child ends with the node."""
    node = NodeProcess(tmp_path / "node", free_port()).start()
    try:
        added = run_cli(
            "apiuser", "add", "app", "--role", "password_administrator",
            "--data-dir", str(node.data_dir),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        (token,) = API_TOKEN.findall(added.stdout)
        api = Api(Browser(node.port), token)
        rid, aid = one_account(api, "db1", SECRET)
        path = f"/resources/{rid}/accounts/{aid}/password"
        assert op(api.get(path))["Details"]["PASSWORD"] == SECRET
        assert node.proc is not None
        (first,) = _children_of(node.proc.pid)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:  # the first fetch after the kill may find it dying: fails closed
            reply = api.get(path)
            if reply.status == 200:
                break
            assert "audit trail could not be written" in op(reply, 500)["result"]["message"]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert op(reply)["Details"]["PASSWORD"] == SECRET
        (second,) = _children_of(node.proc.pid)
        assert second != first
        assert "the audit writer process stopped" in node.stderr()
    finally:
        api.browser.close()
        node.stop()
    assert node.proc is not None and node.proc.returncode == 0
    assert not Path(f"/proc/{second}").exists()
    with sqlite3.connect(node.data_dir / "strongroom.db") as db:
        (views,) = db.execute(
            "SELECT count(*) FROM audit_log WHERE operation = 'view password'"
            " AND result = 'success'"
        ).fetchone()
    assert views == 2


def test_the_child_never_runs_code_from_the_working_directory(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node started from a directory holding a package named like ours runs our child."""
    trap = tmp_path / "cwd" / "appliance"
    trap.mkdir(parents=True)
    (trap / "__init__.py").write_text("")
    ran = tmp_path / "trap-ran"
    (trap / "reveal_writer.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    monkeypatch.chdir(trap.parent)
    (aid,) = _accounts(services, 1)
    writer = _writer(services)
    try:
        assert services.vault.view_password(initial_admin(services), IP, aid) == SECRET + "-0"
    finally:
        writer.close()
    assert not ran.exists()
