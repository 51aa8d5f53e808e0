"""The replicated cluster state (Raft, through pysyncobj) and the facade the node uses.

:class:`ClusterMachine` is the state machine. Only its state-changing methods are
``@replicated``; each is deterministic (callers pass times, names and epochs), checks its
own preconditions against the replicated state and answers with a plain value, so two
nodes racing for the same change are serialised by the Raft log and exactly one wins.

:class:`ClusterState` is the facade: it owns the tick thread and the clocks, turns
pysyncobj's callbacks into plain calls with a deadline, and raises one domain error,
:class:`ClusterStateError`. Raft traffic is always encrypted with a password derived from
the cluster secret (pysyncobj unpickles what it receives), the journal and dump files are
private (0600 in a 0700 directory), and ``useFork`` is off.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from node.errors import StrongroomError

log = logging.getLogger("strongroom.raft")

RAFT_PORT = 7273
DATA = "data"
WITNESS = "witness"
_FAIL_TEXT = {
    FAIL_REASON.QUEUE_FULL: "the Raft command queue is full",
    FAIL_REASON.MISSING_LEADER: "there is no Raft leader (no majority of members reachable)",
    FAIL_REASON.DISCARDED: "a new Raft leader discarded the change",
    FAIL_REASON.NOT_LEADER: "the Raft leader changed before the change committed",
    FAIL_REASON.LEADER_CHANGED: "the Raft leader changed before the change committed",
    FAIL_REASON.REQUEST_DENIED: "the Raft leader denied the change",
    FAIL_REASON.UNKNOWN_OUTCOME: "the outcome of the change is unknown",
}


class ClusterStateError(StrongroomError):
    """A change to the cluster state did not commit (no majority, timeout, refused)."""


def raft_password(cluster_secret: bytes) -> str:
    """The password that encrypts Raft traffic, derived from the cluster secret."""
    return hmac.new(cluster_secret, b"strongroom raft transport v1", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Member:
    """One member of the cluster as recorded in Raft."""

    name: str
    kind: str  # data | witness
    raft_address: str  # host:port of its Raft endpoint
    api_url: str  # https://host:7272 (empty for a witness)
    db_host: str  # address PostgreSQL listens on (empty for a witness)
    db_port: int
    joined_at: float

    @property
    def is_data(self) -> bool:
        return self.kind == DATA

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "raft_address": self.raft_address,
            "api_url": self.api_url,
            "db_host": self.db_host,
            "db_port": self.db_port,
            "joined_at": self.joined_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Member:
        return cls(
            name=str(d["name"]),
            kind=str(d["kind"]),
            raft_address=str(d["raft_address"]),
            api_url=str(d.get("api_url", "")),
            db_host=str(d.get("db_host", "")),
            db_port=int(d.get("db_port", 0)),
            joined_at=float(d.get("joined_at", 0.0)),
        )


@dataclass(frozen=True)
class ClusterView:
    """An immutable snapshot of the replicated state, rebuilt for every HA cycle."""

    cluster_id: str = ""
    members: tuple[Member, ...] = ()
    primary: str | None = None
    epoch: int = 0
    sync_standby: str | None = None
    lease_counter: int = 0
    switchover_to: str | None = None
    # After a planned handover: the former primary, which still holds the VIP until it
    # has drained its connections; the new primary takes the VIP once this is None.
    vip_release_from: str | None = None
    vip: str = ""
    vip_interface: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    token_count: int = 0

    def member(self, name: str | None) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    @property
    def data_members(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.is_data)


def _empty_state() -> dict[str, Any]:
    return {
        "cluster_id": "",
        "members": {},
        "primary": None,
        "epoch": 0,
        "sync_standby": None,
        "lease_counter": 0,
        "switchover_to": None,
        "vip_release_from": None,
        "vip": "",
        "vip_interface": "",
        "tokens": {},
        "settings": {},
        "blobs": {},
    }


class ClusterMachine(SyncObj):
    """The Raft state machine. Its state is one plain dict (``self._s``) so pysyncobj can
    dump it; the lock is made before ``SyncObj.__init__`` so it is never serialised."""

    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        self._lock = threading.Lock()
        # Local, never replicated nor dumped (made before SyncObj.__init__): when this node
        # applied the latest lease renewal (monotonic seconds; 0.0 = none yet).
        self._lease_applied_at = 0.0
        super().__init__(self_address, partners, conf)
        self._s: dict[str, Any] = _empty_state()

    # reading ----------------------------------------------------------------------------

    def snapshot(self) -> ClusterView:
        with self._lock:
            s = self._s
            return ClusterView(
                cluster_id=s["cluster_id"],
                members=tuple(Member.from_dict(m) for _n, m in sorted(s["members"].items())),
                primary=s["primary"],
                epoch=s["epoch"],
                sync_standby=s["sync_standby"],
                lease_counter=s["lease_counter"],
                switchover_to=s["switchover_to"],
                vip_release_from=s.get("vip_release_from"),
                vip=s["vip"],
                vip_interface=s["vip_interface"],
                settings=dict(s["settings"]),
                blobs=dict(s["blobs"]),
                token_count=len(s["tokens"]),
            )

    @replicated
    def barrier(self) -> bool:
        """Changes nothing: once it is applied here, so is everything committed before."""
        return True

    # membership -------------------------------------------------------------------------

    @replicated
    def bootstrap(self, cluster_id: str, first: dict[str, Any]) -> bool:
        """Create the cluster with its first member (a data node, primary at epoch 1).
        Does nothing on a cluster that already exists."""
        with self._lock:
            if self._s["cluster_id"]:
                return bool(self._s["cluster_id"] == cluster_id)
            self._s["cluster_id"] = cluster_id
            self._s["members"][first["name"]] = dict(first)
            if first["kind"] == DATA:
                self._s["primary"] = first["name"]
                self._s["epoch"] = 1
            return True

    @replicated
    def add_member(self, member: dict[str, Any]) -> bool:
        with self._lock:
            members = self._s["members"]
            existing = members.get(member["name"])
            if existing is not None and existing["raft_address"] != member["raft_address"]:
                return False
            if member["kind"] == WITNESS and any(
                m["kind"] == WITNESS and n != member["name"] for n, m in members.items()
            ):
                return False
            members[member["name"]] = dict(member)
            return True

    @replicated
    def remove_member(self, name: str) -> bool:
        """Forget a member; never the primary, and never the synchronous standby."""
        with self._lock:
            if name not in self._s["members"]:
                return False
            if name in (self._s["primary"], self._s["sync_standby"]):
                return False
            del self._s["members"][name]
            return True

    # the primary and its fencing token --------------------------------------------------

    @replicated
    def renew_lease(self, name: str, epoch: int) -> bool:
        """The primary says it is alive. Only the current primary at the current epoch."""
        with self._lock:
            if self._s["primary"] != name or self._s["epoch"] != epoch:
                return False
            self._s["lease_counter"] += 1
            # Not state: a local observation (the HA loop's failover clock starts here).
            self._lease_applied_at = time.monotonic()
            return True

    def lease_applied_at(self) -> float:
        """When this node applied the latest lease renewal (monotonic; 0.0 = never)."""
        with self._lock:
            return self._lease_applied_at

    @replicated
    def set_sync_standby(self, primary: str, epoch: int, standby: str) -> bool:
        """The primary records the standby that its PostgreSQL already waits for."""
        with self._lock:
            s = self._s
            member = s["members"].get(standby)
            if s["primary"] != primary or s["epoch"] != epoch or standby == primary:
                return False
            if member is None or member["kind"] != DATA:
                return False
            s["sync_standby"] = standby
            return True

    @replicated
    def clear_sync_standby(self, primary: str, epoch: int) -> bool:
        """The primary records that its standby is gone, before it stops waiting for it,
        so the stale standby can no longer be promoted."""
        with self._lock:
            s = self._s
            if s["primary"] != primary or s["epoch"] != epoch:
                return False
            s["sync_standby"] = None
            return True

    @replicated
    def promote(self, candidate: str, expected_epoch: int, expected_lease: int = -1) -> int:
        """Make ``candidate`` primary if it is the recorded synchronous standby, nobody was
        promoted since ``expected_epoch`` and, unless ``expected_lease`` is -1 (a planned
        handover), the primary has not renewed its lease since the caller saw counter
        ``expected_lease``. After a planned handover the former primary keeps the VIP
        until it calls :meth:`vip_released`. Returns the new epoch, or 0 if refused."""
        with self._lock:
            s = self._s
            if s["epoch"] != expected_epoch or s["sync_standby"] != candidate:
                return 0
            if expected_lease != -1 and s["lease_counter"] != expected_lease:
                return 0
            if s["primary"] == candidate:
                return 0
            s["vip_release_from"] = s["primary"] if expected_lease == -1 else None
            s["primary"] = candidate
            s["epoch"] += 1
            s["sync_standby"] = None
            s["switchover_to"] = None
            return int(s["epoch"])

    @replicated
    def vip_released(self, name: str) -> bool:
        """The former primary of a planned handover no longer holds the VIP."""
        with self._lock:
            if self._s.get("vip_release_from") != name:
                return False
            self._s["vip_release_from"] = None
            return True

    @replicated
    def request_switchover(self, target: str, expected_epoch: int) -> bool:
        """Ask the primary to hand over to ``target`` (the synchronous standby)."""
        with self._lock:
            s = self._s
            if s["epoch"] != expected_epoch or s["sync_standby"] != target:
                return False
            s["switchover_to"] = target
            return True

    @replicated
    def cancel_switchover(self, expected_epoch: int) -> bool:
        with self._lock:
            if self._s["epoch"] != expected_epoch:
                return False
            self._s["switchover_to"] = None
            return True

    # settings, secrets and join tokens --------------------------------------------------

    @replicated
    def set_vip(self, vip: str, interface: str) -> bool:
        with self._lock:
            self._s["vip"] = vip
            self._s["vip_interface"] = interface
            return True

    @replicated
    def set_setting(self, key: str, value: Any) -> bool:
        """Licence, backup settings and the like (plain JSON-able values)."""
        with self._lock:
            self._s["settings"][key] = value
            return True

    @replicated
    def set_blob(self, key: str, value: bytes) -> bool:
        """A secret value, already encrypted with the master key by the caller."""
        with self._lock:
            self._s["blobs"][key] = bytes(value)
            return True

    @replicated
    def add_join_token(self, token_hash: str, expires_at: float, now: float) -> bool:
        with self._lock:
            tokens = self._s["tokens"]
            for h in [h for h, exp in tokens.items() if exp <= now]:
                del tokens[h]
            tokens[token_hash] = expires_at
            return True

    @replicated
    def use_join_token(self, token_hash: str, now: float) -> bool:
        """Consume a token: True once for a known, unexpired token, then never again."""
        with self._lock:
            expires = self._s["tokens"].pop(token_hash, None)
            return expires is not None and now < expires


@dataclass(frozen=True)
class RaftTimings:
    """Raft timings chosen for failover in about three seconds (see docs/ha.md)."""

    min_timeout: float = 0.4
    max_timeout: float = 0.9
    append_entries_period: float = 0.1
    connection_timeout: float = 1.0
    connection_retry: float = 0.5


@dataclass(frozen=True)
class RaftStatus:
    self_address: str
    leader: str | None
    term: int
    has_quorum: bool
    connected: dict[str, bool]
    commit_index: int
    last_applied: int = 0


class ClusterState:
    """The facade over :class:`ClusterMachine`: one tick thread, calls with a deadline."""

    def __init__(
        self,
        self_address: str,
        partners: list[str],
        cluster_secret: bytes,
        raft_dir: Path,
        timings: RaftTimings | None = None,
        bind_address: str | None = None,
    ) -> None:
        t = timings or RaftTimings()
        raft_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(raft_dir, 0o700)
        self.raft_dir = raft_dir
        conf = SyncObjConf(
            password=raft_password(cluster_secret),
            journalFile=str(raft_dir / "raft.journal"),
            fullDumpFile=str(raft_dir / "raft.dump"),
            useFork=False,
            autoTick=False,
            dynamicMembershipChange=True,
            commandsWaitLeader=False,
            raftMinTimeout=t.min_timeout,
            raftMaxTimeout=t.max_timeout,
            appendEntriesPeriod=t.append_entries_period,
            # Send each new entry, and each advance of the commit index, at once rather than
            # with the next heartbeat: a lease renewal is then known as committed on the
            # standby a few milliseconds after the primary sent it, so a crash of the
            # primary (the Raft leader) rarely leaves the standby holding a renewal it may
            # apply only after a new election (docs/ha.md, "Promotion").
            appendEntriesUseBatch=False,
            connectionTimeout=t.connection_timeout,
            connectionRetryTime=t.connection_retry,
            bindAddress=bind_address,
        )
        self.self_address = self_address
        old_umask = os.umask(0o077)  # the journal is created now, private from the start
        try:
            self._machine = ClusterMachine(self_address, partners, conf)
        finally:
            os.umask(old_umask)
        self._fix_modes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="sr-raft", daemon=True)

    def start(self) -> ClusterState:
        self._thread.start()
        return self

    def _tick(self) -> None:
        last_fix = 0.0
        while not self._stop.is_set():
            try:
                self._machine.doTick(0.02)
            except Exception:  # noqa: BLE001 - the Raft thread must keep running
                log.exception("raft tick failed")
            now = time.monotonic()
            if now - last_fix > 1.0:
                self._fix_modes()
                last_fix = now

    def _fix_modes(self) -> None:
        # pysyncobj writes its dump and journal metadata through temporary files; keep
        # every file in the Raft directory private whatever the process umask is.
        try:
            for entry in os.scandir(self.raft_dir):
                if entry.is_file() and entry.stat().st_mode & 0o077:
                    os.chmod(entry.path, 0o600)
        except OSError:
            pass

    def stop(self) -> None:
        """Stop ticking, close the Raft sockets and the journal. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._machine.destroy()
        self._fix_modes()

    # reading ----------------------------------------------------------------------------

    def view(self) -> ClusterView:
        return self._machine.snapshot()

    def lease_applied_at(self) -> float:
        """When this node applied the latest lease renewal (monotonic; 0.0 = never)."""
        return self._machine.lease_applied_at()

    def status(self) -> RaftStatus:
        st = self._machine.getStatus()
        leader = st.get("leader")
        connected = {
            key[len("partner_node_status_server_") :]: value == 2
            for key, value in st.items()
            if key.startswith("partner_node_status_server_")
        }
        return RaftStatus(
            self_address=self.self_address,
            leader=str(leader) if leader is not None else None,
            term=int(st.get("raft_term", 0)),
            has_quorum=bool(st.get("has_quorum", False)),
            connected=connected,
            commit_index=int(st.get("commit_idx", 0)),
            last_applied=int(st.get("last_applied", 0)),
        )

    def is_leader(self) -> bool:
        return self.status().leader == self.self_address

    # changing ---------------------------------------------------------------------------

    def call(self, method: str, *args: Any, timeout: float = 3.0) -> Any:
        """Run a replicated method and wait until it committed; its result, or
        :class:`ClusterStateError` when no majority committed it within ``timeout``."""
        fn: Callable[..., Any] = getattr(self._machine, method)
        return self._wait(lambda cb: fn(*args, callback=cb), method, timeout)

    def add_raft_node(self, address: str, timeout: float = 5.0) -> None:
        self._wait(
            lambda cb: self._machine.addNodeToCluster(address, callback=cb),
            "add Raft member",
            timeout,
        )

    def remove_raft_node(self, address: str, timeout: float = 5.0) -> None:
        self._wait(
            lambda cb: self._machine.removeNodeFromCluster(address, callback=cb),
            "remove Raft member",
            timeout,
        )

    def transfer_leadership(self, address: str | None, timeout: float = 3.0) -> None:
        self._wait(
            lambda cb: self._machine.transferLeadership(address, callback=cb),
            "transfer Raft leadership",
            timeout,
        )

    @staticmethod
    def _wait(start: Callable[[Any], None], what: str, timeout: float) -> Any:
        done = threading.Event()
        box: dict[str, Any] = {}

        def callback(result: Any, error: int | None) -> None:
            box["result"] = result
            box["error"] = error
            done.set()

        start(callback)
        if not done.wait(timeout):
            raise ClusterStateError(f"{what}: no Raft majority committed it within {timeout:g} s")
        error = box.get("error")
        if error not in (None, FAIL_REASON.SUCCESS):
            reason = _FAIL_TEXT.get(int(error), f"Raft error {error}")
            raise ClusterStateError(f"{what}: {reason}")
        return box.get("result")


__all__ = [
    "ClusterMachine",
    "ClusterState",
    "ClusterStateError",
    "ClusterView",
    "Member",
    "RaftStatus",
    "RaftTimings",
    "raft_password",
    "DATA",
    "WITNESS",
    "RAFT_PORT",
]
