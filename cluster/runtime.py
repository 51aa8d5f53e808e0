"""A cluster member at run time: its Raft state, its PostgreSQL, its VIP and the HA loop.

The loop runs :func:`cluster.ha.run_cycle` about twice a second on a thread of its own and
logs each new sentence once. A watchdog thread, independent of the loop, refuses writes and
releases the VIP the moment the primary's lease runs out, even if a cycle is stuck.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cluster import config as node_config
from cluster.config import NodeConfig
from cluster.ha import (
    FENCED,
    HaActions,
    HaTimings,
    LocalFacts,
    Memory,
    StandbyLink,
    next_cycle_in,
    run_cycle,
)
from cluster.postgres import ClusterMember, LocalPostgres, PostgresError
from cluster.state import ClusterState, ClusterStateError, ClusterView, Member, RaftTimings
from cluster.vip import Vip, make_vip, run_hooks
from node.errors import DecryptionError, StrongroomError

log = logging.getLogger("strongroom.ha")

RoleListener = Callable[[str, bool, str | None], None]


# --- secrets that travel through Raft ------------------------------------------------------


def _blob_key(master: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, b"strongroom cluster blob v1").derive(master)


def seal(master: bytes, name: str, data: bytes) -> bytes:
    """Encrypt a secret with the master key before it enters Raft (AAD: its name)."""
    import os

    nonce = os.urandom(12)
    return nonce + AESGCM(_blob_key(master)).encrypt(nonce, data, name.encode())


def unseal(master: bytes, name: str, blob: bytes) -> bytes:
    try:
        return AESGCM(_blob_key(master)).decrypt(blob[:12], blob[12:], name.encode())
    except (InvalidTag, ValueError):
        raise DecryptionError() from None


def raft_join_proof(secret: bytes, name: str) -> str:
    return hmac.new(secret, f"raft-join|{name}".encode(), hashlib.sha256).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- talking to another member over HTTPS --------------------------------------------------


def pinned_context(ca_pem: bytes) -> ssl.SSLContext:
    """Trust only the cluster CA; member certificates name their IP addresses."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.check_hostname = False
    return ctx


def post_json(
    url: str, body: dict[str, Any], ctx: ssl.SSLContext, timeout: float = 10.0
) -> dict[str, Any]:
    req = urllib.request.Request(  # noqa: S310 - https URL of a member, CA pinned
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:  # noqa: S310
            reply: dict[str, Any] = json.loads(resp.read())
            return reply
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise StrongroomError(f"{url} refused: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StrongroomError(f"cannot reach {url}: {reason}") from None


# --- the data node -------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    last_contact: float | None = None


class HaRuntime:
    """Raft + PostgreSQL + VIP + HA loop of one data node."""

    def __init__(
        self,
        data_dir: Path,
        cfg: NodeConfig,
        secret: bytes,
        tls_cert: bytes,
        tls_key: bytes,
        timings: HaTimings | None = None,
        raft_timings: RaftTimings | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.cfg = cfg
        self.secret = secret
        self.t = timings or HaTimings()
        self.pg = LocalPostgres(data_dir / "postgres", cfg.db_port)
        self.pg.member = ClusterMember(
            name=cfg.name,
            advertise=cfg.advertise,
            cert_pem=tls_cert,
            key_pem=tls_key,
            superuser_password=cfg.superuser_password,
            replication_password=cfg.replication_password,
            peers=(cfg.advertise,),
        )
        self.vip: Vip = make_vip(cfg.vip, cfg.vip_interface)
        self.state = ClusterState(
            cfg.raft_address,
            list(cfg.raft_peers),
            secret,
            node_config.cluster_dir(data_dir) / "raft",
            raft_timings,
        )
        self.mem = Memory(started_at=time.monotonic())
        self.listeners: list[RoleListener] = []
        self.epoch_writer: Callable[[int, str], None] | None = None
        # Set by the web layer: how many requests are past its writable check.
        self.requests_in_flight: Callable[[], int] = lambda: 0
        self._ca_context: ssl.SSLContext | None = None
        self.last_sentence = ""
        self.last_contact: dict[str, float] = {}
        self.role = "starting"
        self._last_transfer = 0.0
        self.lease_confirmed_at: float | None = None
        self.lease_refused_epoch = -1
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # life cycle -------------------------------------------------------------------------

    def prepare_postgres(self, primary: bool) -> None:
        """Write TLS, password and pg_hba files; adopt a running server, or start the local
        one if Raft names this node ``primary`` (else the caller makes it follow)."""
        assert self.pg.member is not None
        self.pg.configure_cluster(self.pg.member)
        if self.pg.is_running():
            self._adopt_upstream()
            return
        if not self.pg.is_initialised():
            return
        if not primary or (self.pg.data_dir / "standby.signal").exists():
            return  # it restarts following the current primary
        try:
            self.pg.start()
        except PostgresError as exc:
            log.warning("local PostgreSQL did not start: %s", exc)

    def _adopt_upstream(self) -> None:
        """A running standby we did not start: learn whom it follows."""
        assert self.pg.member is not None
        try:
            if not self.pg.in_recovery():
                return
            conninfo = self.pg.query("SHOW primary_conninfo")[0][0]
        except PostgresError:
            return
        fields = dict(f.split("=", 1) for f in conninfo.split() if "=" in f)
        if "host" in fields:
            port = int(fields.get("port", self.cfg.db_port))
            self.pg.member = self.pg.member.following(fields["host"], port)

    def start(self) -> None:
        self.state.start()
        self.prepare_postgres(self.wait_for_state().primary == self.cfg.name)
        self.start_guards()
        self.start_loop()

    def start_guards(self) -> None:
        """The lease keeper and the fencing watchdog."""
        self._spawn(self._keep_lease, "sr-ha-lease")
        self._spawn(self._watchdog, "sr-ha-watchdog")

    def start_loop(self) -> None:
        self._spawn(self._loop, "sr-ha-loop")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        th = threading.Thread(target=target, name=name, daemon=True)
        th.start()
        self._threads.append(th)

    def wait_for_state(self, timeout: float = 30.0) -> ClusterView:
        """The replicated state once it is current: a leader is known and everything it
        committed is applied here (a restarted node's own journal may be stale)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.state.call("barrier", timeout=2.0)
            except ClusterStateError:
                time.sleep(0.2)
                continue
            view = self.state.view()
            if view.cluster_id:
                return view
        raise ClusterStateError("the Raft state did not arrive (is a majority reachable?)")

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=10)
        self.state.stop()

    def on_role(self, listener: RoleListener) -> None:
        self.listeners.append(listener)

    # the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                sentence = self.cycle()
            except StrongroomError as exc:
                sentence = f"cycle failed: {exc}"
            except Exception:  # noqa: BLE001 - the loop must outlive one bad cycle
                log.exception("HA cycle failed")
                sentence = "cycle failed unexpectedly (see the log)"
            if sentence != self.last_sentence:
                log.info("ha: %s", sentence)
                self.last_sentence = sentence
            # A failed lease renewal is retried at once rather than a whole period later;
            # a switchover goes step by step while requests wait, so it goes quickly.
            period = self.t.loop
            if sentence.startswith("no action: lease renewal failed"):
                period = 0.1
            elif sentence.startswith("switchover"):
                period = 0.05
            period = next_cycle_in(
                period,
                self.state.view(),
                self.cfg.name,
                self.mem,
                time.monotonic(),
                self.t.failover_after,
            )
            self._stop.wait(max(0.0, period - (time.monotonic() - started)))

    def _keep_lease(self) -> None:
        """Renew the primary's lease every few tenths of a second, on a thread of its own,
        so a slow HA cycle never lets the lease lapse; remember when the last renewal that
        committed was sent (the watchdog's clock)."""
        while not self._stop.wait(self.t.loop / 2):
            view = self.state.view()
            if view.primary != self.cfg.name:
                self.lease_confirmed_at = None
                continue
            sent = time.monotonic()
            try:
                ok = self.state.call("renew_lease", self.cfg.name, view.epoch, timeout=0.6)
            except ClusterStateError:
                continue
            if ok:
                self.lease_confirmed_at = sent
            else:
                self.lease_refused_epoch = view.epoch

    def _watchdog(self) -> None:
        while not self._stop.wait(self.t.watchdog):
            mem = self.mem
            ok_at = self.lease_confirmed_at or mem.lease_ok_at
            if mem.writable and ok_at is not None and time.monotonic() - ok_at > self.t.lease:
                mem.writable = False
                self._set_role(FENCED, False, None)
                try:
                    self.vip.release()
                except StrongroomError as exc:
                    log.error("watchdog could not release the VIP: %s", exc)
                log.warning("ha: fenced by the watchdog: lease of %.1f s ran out", self.t.lease)

    def cycle(self) -> str:
        view = self.state.view()
        if not view.cluster_id:
            return "waiting for the Raft state"
        self._housekeeping(view)
        facts = self.facts(view)
        return run_cycle(view, facts, self.mem, _Actions(self, view), self.t)

    def _housekeeping(self, view: ClusterView) -> None:
        peers = tuple(m.raft_address for m in view.members)
        if set(self.cfg.with_peers(peers).raft_peers) != set(self.cfg.raft_peers):
            self.cfg = self.cfg.with_peers(peers)
            node_config.save(self.data_dir, self.cfg)
        hosts = tuple(m.db_host for m in view.data_members if m.db_host)
        if self.pg.write_hba(hosts) and self.pg.is_running():
            self.pg.reload()
        assert self.pg.member is not None
        self.pg.member = self.pg.member.with_peers(hosts)
        now = time.monotonic()
        for addr, up in self.state.status().connected.items():
            if up:
                self.last_contact[addr] = now
        self._last_transfer = steer_leadership(self.state, view, self._last_transfer)

    def facts(self, view: ClusterView) -> LocalFacts:
        # Read before the database position: a request counted here has committed by
        # the time a later cycle reads the position (see ha.hand_over).
        handing_over = bool(view.switchover_to) and view.primary == self.cfg.name
        in_flight = self.requests_in_flight() if handing_over else 0
        target = view.member(self.mem.handover_to)
        down = LocalFacts(
            name=self.cfg.name,
            now=time.monotonic(),
            raft_has_quorum=self.state.status().has_quorum,
            pg_running=False,
            pg_in_recovery=False,
            vip_held=self.vip.held(),
            requests_in_flight=in_flight,
            target_writable=target is not None and self.accepts_writes(target),
            lease_applied_at=self.state.lease_applied_at(),
        )
        try:
            if not self.pg.is_running():
                return down
            row = self.pg.query(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() "
                "THEN COALESCE(pg_last_wal_replay_lsn() - '0/0', 0) "
                "ELSE pg_current_wal_lsn() - '0/0' END, "
                "COALESCE((SELECT sender_host FROM pg_stat_wal_receiver "
                "WHERE status = 'streaming' LIMIT 1), ''), "
                "current_setting('synchronous_standby_names')"
            )[0]
            links: tuple[StandbyLink, ...] = ()
            if row[0] == "f":
                links = tuple(
                    StandbyLink(
                        r["name"],
                        r["state"],
                        r["sync_state"],
                        int(float(r["replay_lsn"])),
                        int(float(r["flush_lsn"])),
                    )
                    for r in self.pg.replication()
                )
        except PostgresError:
            return down
        names = tuple(v.strip().strip('"') for v in row[3].split(",") if v.strip())
        member = self.pg.member
        return replace(
            down,
            pg_running=True,
            pg_in_recovery=row[0] == "t",
            # whom it is configured to follow (streaming starts a moment after a restart)
            pg_upstream=member.upstream if member is not None and row[0] == "t" else None,
            pg_lsn=int(float(row[1])),
            pg_sync_names=names,
            standbys=links,
        )

    def accepts_writes(self, member: Member) -> bool:
        """Whether ``member``'s web answers that it is a writable primary (its /health,
        over HTTPS pinned to the cluster CA)."""
        if not member.api_url:
            return False
        try:
            if self._ca_context is None:
                ca = (node_config.cluster_dir(self.data_dir) / "ca.crt").read_bytes()
                self._ca_context = pinned_context(ca)
            req = urllib.request.Request(f"{member.api_url}/health")  # noqa: S310 - member
            with urllib.request.urlopen(req, context=self._ca_context, timeout=0.5) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return isinstance(body, dict) and body.get("writable") is True

    def _set_role(self, role: str, writable: bool, primary: Member | None) -> None:
        changed = role != self.role
        self.role = role
        address = primary.api_url if primary is not None else None
        for listener in self.listeners:
            listener(role, writable, address)
        if changed:
            run_hooks(self.cfg.hooks_dir, role, address or "")

    # status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        view = self.state.view()
        raft = self.state.status()
        now = time.monotonic()
        lags: dict[str, int] = {}
        try:
            if self.pg.is_running() and not self.pg.in_recovery():
                current = self.pg.wal_position()
                for r in self.pg.replication():
                    lags[r["name"]] = max(0, current - int(float(r["replay_lsn"])))
        except PostgresError:
            pass
        members = []
        for m in view.members:
            if m.raft_address == raft.self_address:
                contact: float | None = 0.0
            else:
                seen = self.last_contact.get(m.raft_address)
                contact = None if seen is None else max(0.0, round(now - seen, 1))
            role = "witness" if not m.is_data else "standby"
            if m.name == view.primary:
                role = "primary"
            members.append(
                {
                    "name": m.name,
                    "kind": m.kind,
                    "role": role,
                    "address": m.raft_address.rsplit(":", 1)[0],
                    "raft_connected": m.raft_address == raft.self_address
                    or raft.connected.get(m.raft_address, False),
                    "last_contact_s": contact,
                    "replication_lag_bytes": lags.get(m.name),
                }
            )
        leader = view.member(None)
        for m in view.members:
            if m.raft_address == raft.leader:
                leader = m
        return {
            "cluster_id": view.cluster_id,
            "self": self.cfg.name,
            "role": self.role,
            "raft": {
                "leader": leader.name if leader else raft.leader,
                "term": raft.term,
                "has_quorum": raft.has_quorum,
            },
            "primary": view.primary,
            "epoch": view.epoch,
            "sync_standby": view.sync_standby,
            "switchover_to": view.switchover_to,
            "vip": view.vip or None,
            "vip_holder": view.primary if view.vip else None,
            "vip_held_here": self.vip.held(),
            "members": members,
            "last_decision": self.last_sentence,
        }


class _Actions(HaActions):
    def __init__(self, rt: HaRuntime, view: ClusterView) -> None:
        self.rt = rt
        self.view = view

    def renew_lease(self, epoch: int) -> bool:
        """The lease keeper renews; this reports what it last achieved."""
        rt = self.rt
        if rt.lease_refused_epoch == epoch:
            return False
        ok_at = rt.lease_confirmed_at
        if ok_at is not None and time.monotonic() - ok_at < rt.t.loop * 2:
            return True
        return bool(rt.state.call("renew_lease", rt.cfg.name, epoch, timeout=0.6))

    def promote_in_raft(self, candidate: str, epoch: int, seen_lease: int) -> int:
        return int(self.rt.state.call("promote", candidate, epoch, seen_lease, timeout=2.0))

    def record_sync_standby(self, epoch: int, standby: str | None) -> bool:
        name = self.rt.cfg.name
        if standby is None:
            return bool(self.rt.state.call("clear_sync_standby", name, epoch, timeout=1.0))
        return bool(self.rt.state.call("set_sync_standby", name, epoch, standby, timeout=1.0))

    def set_pg_sync_names(self, names: tuple[str, ...]) -> None:
        if self.rt.pg.is_running():
            self.rt.pg.set_sync_standbys(names)

    def promote_postgres(self, epoch: int) -> None:
        if not self.rt.pg.is_running():
            self.rt.pg.start()
        if self.rt.pg.in_recovery():
            self.rt.pg.promote()
            # In the background: the VIP and the first writes need not wait for it.
            self.rt._spawn(self._checkpoint, "sr-ha-checkpoint")
        if self.rt.epoch_writer is not None:
            self.rt.epoch_writer(epoch, self.rt.cfg.name)

    def _checkpoint(self) -> None:
        try:
            self.rt.pg.checkpoint()
        except PostgresError as exc:
            log.warning("checkpoint after promotion failed: %s", exc)

    def follow(self, primary: Member) -> None:
        how = self.rt.pg.follow(primary.db_host, primary.db_port)
        log.info("following %s after %s", primary.name, how)

    def stop_postgres(self) -> None:
        self.rt.pg.stop()

    def add_vip(self) -> None:
        self.rt.vip.add()

    def release_vip(self) -> None:
        self.rt.vip.release()

    def hand_off_vip(self) -> int:
        return self.rt.vip.hand_off(self.rt.cfg.web_port, self.rt.t.drain)

    def record_vip_released(self) -> bool:
        return bool(self.rt.state.call("vip_released", self.rt.cfg.name, timeout=1.0))

    def set_role(self, role: str, writable: bool, primary: Member | None) -> None:
        self.rt._set_role(role, writable, primary)


def steer_leadership(state: ClusterState, view: ClusterView, last: float) -> float:
    """Keep the Raft leader on the primary's node: then losing the standby or the witness
    never costs an election, and the primary's lease renewals never stall. Called by every
    member; only the current leader acts, at most every five seconds."""
    now = time.monotonic()
    primary = view.member(view.primary)
    if primary is None or now - last < 5.0:
        return last
    raft = state.status()
    if raft.leader != state.self_address or primary.raft_address == state.self_address:
        return last
    if not raft.connected.get(primary.raft_address):
        return last
    try:
        state.transfer_leadership(primary.raft_address, timeout=1.0)
        log.info("handed Raft leadership to the primary %s", primary.name)
    except ClusterStateError as exc:
        log.info("Raft leadership stays here: %s", exc)
    return now


# --- the witness ---------------------------------------------------------------------------


class WitnessRuntime:
    """A Raft voter with no database."""

    def __init__(self, data_dir: Path, cfg: NodeConfig, secret: bytes) -> None:
        self.data_dir = data_dir
        self.cfg = cfg
        self.state = ClusterState(
            cfg.raft_address,
            list(cfg.raft_peers),
            secret,
            node_config.cluster_dir(data_dir) / "raft",
        )

        self._last_transfer = 0.0

    def start(self) -> None:
        self.state.start()

    def tick(self) -> None:
        """Called about once a second by the witness's main loop."""
        view = self.state.view()
        if view.cluster_id:
            self._last_transfer = steer_leadership(self.state, view, self._last_transfer)

    def stop(self) -> None:
        self.state.stop()

    def status(self) -> dict[str, Any]:
        view = self.state.view()
        raft = self.state.status()
        return {
            "cluster_id": view.cluster_id,
            "self": self.cfg.name,
            "role": "witness",
            "raft": {"leader": raft.leader, "term": raft.term, "has_quorum": raft.has_quorum},
            "primary": view.primary,
            "epoch": view.epoch,
            "sync_standby": view.sync_standby,
            "members": [m.to_dict() for m in view.members],
        }


def join_raft(
    cfg: NodeConfig, secret: bytes, ca_pem: bytes, members: list[Member], stop: threading.Event
) -> bool:
    """Ask a data member to add this node to the Raft configuration; retries until done."""
    ctx = pinned_context(ca_pem)
    body = {"name": cfg.name, "proof": raft_join_proof(secret, cfg.name)}
    while not stop.is_set():
        for m in members:
            if not m.api_url or m.name == cfg.name:
                continue
            try:
                post_json(f"{m.api_url}/cluster/raft-join", body, ctx, timeout=5)
                return True
            except StrongroomError as exc:
                log.info("raft join through %s not yet: %s", m.name, exc)
        stop.wait(1.0)
    return False


def utc_now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


__all__ = [
    "HaRuntime",
    "WitnessRuntime",
    "seal",
    "unseal",
    "raft_join_proof",
    "token_hash",
    "pinned_context",
    "post_json",
    "join_raft",
]
