"""The PostgreSQL manager as a cluster member: two real servers on loopback, TLS and scram,
synchronous replication, promotion, and a crashed former primary rewound to follow."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from cluster.pki import issue, make_ca
from cluster.postgres import APP_DATABASE, ClusterMember, LocalPostgres, PostgresError
from tests.cluster.netns import reachable_dir
from tests.helpers import free_port

pytestmark = pytest.mark.postgres


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


@pytest.fixture
def pair() -> Iterator[tuple[LocalPostgres, LocalPostgres]]:
    where = reachable_dir("repl")
    ca_cert, ca_key = make_ca("test")
    cert, key = issue(ca_cert, ca_key, ["127.0.0.1"])
    base = dict(
        advertise="127.0.0.1",
        cert_pem=cert,
        key_pem=key,
        superuser_password="su-pw-1",
        replication_password="repl-pw-1",
        peers=("127.0.0.1",),
    )
    a = LocalPostgres(where / "a", free_port())
    b = LocalPostgres(where / "b", free_port())
    a.configure_cluster(ClusterMember(name="a", **base))  # type: ignore[arg-type]
    a.initdb()
    b.configure_cluster(ClusterMember(name="b", **base))  # type: ignore[arg-type]
    a.start()
    a.setup_primary_roles("repl-pw-1", "app-pw-1")
    try:
        yield a, b
    finally:
        for s in (a, b):
            try:
                s.stop("immediate")
            except PostgresError:
                pass


def rows(pg: LocalPostgres) -> list[str]:
    return [r[0] for r in pg.query("SELECT v FROM t ORDER BY v", APP_DATABASE)]


def test_standby_replicates_synchronously_and_a_rewound_former_primary_follows(
    pair: tuple[LocalPostgres, LocalPostgres],
) -> None:
    a, b = pair
    a.psql("CREATE TABLE t (v text primary key)", APP_DATABASE)
    a.psql("INSERT INTO t VALUES ('before-standby')", APP_DATABASE)

    assert b.follow("127.0.0.1", a.port) == "base backup"
    assert b.in_recovery()
    eventually(lambda: b.upstream() == "127.0.0.1")
    a.set_sync_standbys(("b",))
    eventually(lambda: any(r["sync_state"] == "sync" for r in a.replication()))
    assert a.sync_standbys() == ("b",)
    # Replication is over TLS.
    ssl_rows = a.query("SELECT ssl FROM pg_stat_ssl JOIN pg_stat_replication USING (pid)")
    assert ssl_rows == [["t"]]

    a.psql("INSERT INTO t VALUES ('acked-on-a')", APP_DATABASE)
    # Synchronous: acknowledged on a means flushed on b; visible once replayed.
    eventually(lambda: "acked-on-a" in rows(b))

    # Failover: b is promoted; a (not told yet) takes a write b never sees, then crashes.
    b.promote()
    b.checkpoint()
    assert not b.in_recovery()
    b.psql("INSERT INTO t VALUES ('on-b')", APP_DATABASE)
    a.set_sync_standbys(())
    a.psql("INSERT INTO t VALUES ('diverged-on-a')", APP_DATABASE)
    pid = int((a.data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not a.is_running())

    # a comes back as b's standby: crash recovery, then pg_rewind drops the divergence.
    assert a.follow("127.0.0.1", b.port) == "rewind"
    assert a.in_recovery()
    eventually(lambda: "on-b" in rows(a))
    assert rows(a) == ["acked-on-a", "before-standby", "on-b"]
    b.set_sync_standbys(("a",))
    eventually(lambda: any(r["sync_state"] == "sync" for r in b.replication()))
    b.psql("INSERT INTO t VALUES ('after-rejoin')", APP_DATABASE)
    eventually(lambda: "after-rejoin" in rows(a))


def test_pg_hba_admits_only_members_and_replication_needs_the_password(
    pair: tuple[LocalPostgres, LocalPostgres],
) -> None:
    a, b = pair
    hba = a.hba_file.read_text()
    assert "0.0.0.0/0" not in hba and "trust" not in hba
    assert "hostssl replication replicator 127.0.0.1/32 scram-sha-256" in hba
    wrong = ClusterMember(
        name="b",
        advertise="127.0.0.1",
        cert_pem=b"",
        key_pem=b"",
        superuser_password="su-pw-1",
        replication_password="wrong",
    )
    b.configure_cluster(wrong)
    with pytest.raises(PostgresError, match="pg_basebackup failed"):
        b.follow("127.0.0.1", a.port)
