"""`strongroom init --ha --from-data-dir DIR`: a single node's SQLite vault moves into the
first cluster node's managed PostgreSQL. Runs in a private network namespace, so the
cluster's fixed ports (2345, 7273) are its own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.netns import STRONGROOM, reachable_dir, sh
from tests.helpers import NodeProcess, free_port

pytestmark = pytest.mark.cluster


@pytest.fixture
def netns() -> Iterator[str]:
    assert os.geteuid() == 0, "this test makes a network namespace: run it as root"
    name = f"srmig{os.getpid() % 100000}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    try:
        yield name
    finally:
        for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", name, check=False)


def test_a_single_node_vault_moves_into_the_cluster(netns: str) -> None:
    where = reachable_dir("migrate")
    single = NodeProcess(where / "single", free_port()).start()
    try:
        otp = single.initial_password()
    finally:
        single.stop()
    new = where / "ha"
    env = {**os.environ, "SR_TEST_FAST_KDF": "1"}
    done = subprocess.run(
        ["ip", "netns", "exec", netns, STRONGROOM, "init", "--ha", "--advertise", "127.0.0.1",
         "--name", "n1", "--from-data-dir", str(single.data_dir), "--data-dir", str(new)],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "moved the vault of" in done.stdout
    # The cluster's master key is the single node's, and its PostgreSQL holds the vault:
    # the administrator with the one-time password from the single node.
    assert (new / "keys" / "master.key").read_bytes() == (
        single.data_dir / "keys" / "master.key"
    ).read_bytes()
    pg = new / "postgres"
    password = (pg / "superuser.password").read_text().strip()
    users = subprocess.run(
        ["ip", "netns", "exec", netns, "runuser", "-u", "postgres", "--", "env",
         f"PGPASSWORD={password}", "psql", "-X", "-At", "-h", str(pg / "socket"), "-p", "2345",
         "-U", "postgres", "-d", "strongroom", "-c", "SELECT username FROM users"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert users.returncode == 0, users.stderr
    assert "admin" in users.stdout.split()
    assert otp  # the single node had its first administrator
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "-D",
         str(pg / "data"), "-m", "immediate", "stop"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
