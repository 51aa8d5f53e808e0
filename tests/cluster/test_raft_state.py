"""The replicated cluster state: three real pysyncobj nodes on loopback ports, encrypted."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster.state import DATA, WITNESS, ClusterState, ClusterStateError, Member
from tests.helpers import free_port

SECRET = b"s" * 32


def member(name: str, kind: str = DATA, addr: str = "127.0.0.1:1") -> dict[str, object]:
    return Member(name, kind, addr, f"https://{name}:7272", "127.0.0.1", 2345, 0.0).to_dict()


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[ClusterState]]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = [
        ClusterState(a, [b for b in addrs if b != a], SECRET, tmp_path / f"raft{i}").start()
        for i, a in enumerate(addrs)
    ]
    try:
        eventually(lambda: all(n.status().leader is not None for n in nodes))
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def call_anywhere(nodes: list[ClusterState], method: str, *args: object) -> object:
    """Like an HA loop would: retry while an election is in progress."""
    last: Exception | None = None
    for _ in range(40):
        for n in nodes:
            try:
                return n.call(method, *args, timeout=2.0)
            except ClusterStateError as exc:
                last = exc
        time.sleep(0.1)
    raise AssertionError(f"{method} never committed: {last}")


def test_a_change_on_one_node_is_seen_on_every_node(trio: list[ClusterState]) -> None:
    assert call_anywhere(trio, "bootstrap", "cid-1", member("n1")) is True
    eventually(lambda: all(n.view().primary == "n1" for n in trio))
    view = trio[2].view()
    assert view.cluster_id == "cid-1"
    assert view.epoch == 1
    assert [m.name for m in view.members] == ["n1"]


def test_only_the_recorded_synchronous_standby_is_promoted_once(
    trio: list[ClusterState],
) -> None:
    call_anywhere(trio, "bootstrap", "cid", member("n1"))
    call_anywhere(trio, "add_member", member("n2"))
    call_anywhere(trio, "add_member", member("w", WITNESS))
    # n2 is not yet the synchronous standby: it may not be promoted.
    assert call_anywhere(trio, "promote", "n2", 1) == 0
    assert call_anywhere(trio, "set_sync_standby", "n1", 1, "n2") is True
    # The witness can never be a standby.
    assert call_anywhere(trio, "set_sync_standby", "n1", 1, "w") is False
    assert call_anywhere(trio, "promote", "n2", 1) == 2
    # A second promotion racing from the same epoch loses.
    assert call_anywhere(trio, "promote", "n2", 1) == 0
    view = trio[0].view()
    assert (view.primary, view.epoch, view.sync_standby) == ("n2", 2, None)
    # The former primary's lease renewals and standby changes are refused now.
    assert call_anywhere(trio, "renew_lease", "n1", 1) is False
    assert call_anywhere(trio, "clear_sync_standby", "n1", 1) is False
    assert call_anywhere(trio, "renew_lease", "n2", 2) is True
    # A planned handover (no lease named): n1 keeps the VIP until it records the release,
    # which only n1 can do, once.
    eventually(lambda: trio[1].view().vip_release_from == "n1")
    assert call_anywhere(trio, "vip_released", "n2") is False
    assert call_anywhere(trio, "vip_released", "n1") is True
    assert call_anywhere(trio, "vip_released", "n1") is False
    eventually(lambda: trio[2].view().vip_release_from is None)


def test_a_dropped_standby_can_no_longer_be_promoted(trio: list[ClusterState]) -> None:
    call_anywhere(trio, "bootstrap", "cid", member("n1"))
    call_anywhere(trio, "add_member", member("n2"))
    call_anywhere(trio, "set_sync_standby", "n1", 1, "n2")
    assert call_anywhere(trio, "clear_sync_standby", "n1", 1) is True
    assert call_anywhere(trio, "promote", "n2", 1) == 0
    assert trio[1].view().primary == "n1"


def test_join_tokens_are_single_use_and_expire(trio: list[ClusterState]) -> None:
    call_anywhere(trio, "add_join_token", "h1", 100.0, 0.0)
    call_anywhere(trio, "add_join_token", "h2", 100.0, 0.0)
    assert call_anywhere(trio, "use_join_token", "h1", 50.0) is True
    assert call_anywhere(trio, "use_join_token", "h1", 50.0) is False
    assert call_anywhere(trio, "use_join_token", "h2", 100.0) is False  # expired
    assert call_anywhere(trio, "use_join_token", "unknown", 1.0) is False


def test_the_primary_and_standby_cannot_be_removed(trio: list[ClusterState]) -> None:
    call_anywhere(trio, "bootstrap", "cid", member("n1"))
    call_anywhere(trio, "add_member", member("n2"))
    call_anywhere(trio, "add_member", member("n3"))
    call_anywhere(trio, "set_sync_standby", "n1", 1, "n2")
    assert call_anywhere(trio, "remove_member", "n1") is False
    assert call_anywhere(trio, "remove_member", "n2") is False
    assert call_anywhere(trio, "remove_member", "n3") is True
    assert [m.name for m in trio[0].view().members] == ["n1", "n2"]


def test_without_a_majority_nothing_commits(trio: list[ClusterState]) -> None:
    call_anywhere(trio, "bootstrap", "cid", member("n1"))
    survivor = trio[0]
    for n in trio[1:]:
        n.stop()
    eventually(lambda: not survivor.status().has_quorum)
    with pytest.raises(ClusterStateError):
        survivor.call("renew_lease", "n1", 1, timeout=1.5)


def test_state_and_term_survive_a_restart_and_files_are_private(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    one = ClusterState(addr, [], SECRET, tmp_path / "raft").start()
    try:
        eventually(lambda: one.status().leader == addr)
        one.call("bootstrap", "cid", member("n1"))
        one.call("set_blob", "tls_key", b"\x00encrypted")
    finally:
        one.stop()
    again = ClusterState(addr, [], SECRET, tmp_path / "raft").start()
    try:
        # The journal replays entry by entry: wait for the last one, not the first.
        eventually(lambda: "tls_key" in again.view().blobs)
        assert again.view().cluster_id == "cid"
        assert again.view().blobs["tls_key"] == b"\x00encrypted"
    finally:
        again.stop()
    assert stat.S_IMODE(os.stat(tmp_path / "raft").st_mode) == 0o700
    files = list((tmp_path / "raft").iterdir())
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_a_node_with_another_secret_cannot_join_or_read(tmp_path: Path) -> None:
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    good = ClusterState(a, [b], SECRET, tmp_path / "a").start()
    bad = ClusterState(b, [a], b"x" * 32, tmp_path / "b").start()
    try:
        time.sleep(2.0)
        # With a wrong transport password neither side ever sees the other connected,
        # so there is no leader of two and nothing from one reaches the other.
        assert good.status().connected.get(b) is not True
        assert good.status().leader is None
        assert bad.view().cluster_id == ""
    finally:
        good.stop()
        bad.stop()


def test_a_promotion_is_refused_once_the_primary_renewed_its_lease(
    trio: list[ClusterState],
) -> None:
    call_anywhere(trio, "bootstrap", "cid", member("n1"))
    call_anywhere(trio, "add_member", member("n2"))
    call_anywhere(trio, "set_sync_standby", "n1", 1, "n2")
    seen = trio[1].view().lease_counter
    assert call_anywhere(trio, "renew_lease", "n1", 1) is True
    # n2 saw the lease at ``seen``; the primary renewed since, so it is alive.
    assert call_anywhere(trio, "promote", "n2", 1, seen) == 0
    eventually(lambda: trio[1].view().lease_counter == seen + 1)
    assert call_anywhere(trio, "promote", "n2", 1, seen + 1) == 2
    # A failover: the old primary is fenced already; the new one takes the VIP at once.
    eventually(lambda: trio[1].view().primary == "n2")
    assert trio[1].view().vip_release_from is None
