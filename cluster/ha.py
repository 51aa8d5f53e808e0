"""The HA loop's decisions: small functions that look at an immutable picture of the
cluster (:class:`ClusterView` from Raft, :class:`LocalFacts` gathered this cycle), act
through :class:`HaActions`, and return the sentence of what they did. The runner
(cluster/loop.py) logs that sentence once per cycle, so the log is the history of
decisions.

The rules (DESIGN.md, "The cluster"):

* only the synchronous standby recorded in Raft is promoted automatically, and only when
  the primary has not renewed its lease (a Raft counter) for ``failover_after`` seconds;
  the promotion names the lease counter it saw, so a primary that renewed meanwhile wins;
* a primary that cannot renew its lease through a Raft majority for ``lease`` seconds
  refuses writes and releases the VIP; ``failover_after`` is longer than ``lease`` plus
  the fencing watchdog's period, so that happens strictly before anyone may promote;
* a primary whose standby is gone records that in Raft first, then stops waiting for it;
* a newly promoted primary writes its epoch into the database before it takes writes;
* nothing is promoted without a Raft majority (the promotion is itself a Raft change).

A planned switchover fails no request: the primary holds new requests (the web layer
waits instead of answering 503), lets those in flight finish, waits until the target has
replayed everything, makes it primary in Raft, then forwards what it holds (and whatever
still reaches it) to the new primary. It keeps the VIP until the new primary accepts
writes, then stops taking new connections on the VIP, lets the open ones finish, releases
it and records that in Raft; only then does the new primary take the VIP.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from cluster.state import ClusterStateError, ClusterView, Member

PRIMARY = "primary"
STANDBY = "standby"
FENCED = "fenced"
HANDING_OVER = "handing over"  # old primary of a switchover: holds, then forwards requests
TAKING_OVER = "taking over"  # target of a switchover: holds requests until it is primary


@dataclass(frozen=True)
class HaTimings:
    """Loop period, lease and failover delay, in seconds (see docs/ha.md)."""

    loop: float = 0.4
    lease: float = 1.0
    failover_after: float = 1.5
    standby_grace: float = 2.0
    watchdog: float = 0.1
    # Switchover: how long the old primary waits for requests in flight and for the new
    # primary to accept writes, and the new primary for the VIP (twice this), before
    # going on without; and how long open connections on the VIP may take to finish.
    handover_wait: float = 5.0
    drain: float = 0.6

    def __post_init__(self) -> None:
        if self.failover_after <= self.lease + 2 * self.watchdog:
            raise ValueError("failover_after must exceed the lease plus the watchdog period")


@dataclass(frozen=True)
class StandbyLink:
    """One row of the primary's pg_stat_replication."""

    name: str
    state: str  # streaming, catchup, ...
    sync_state: str  # sync, async, potential, quorum
    replay_lsn: int
    flush_lsn: int


@dataclass(frozen=True)
class LocalFacts:
    """What this data node sees of itself this cycle."""

    name: str
    now: float  # monotonic seconds
    raft_has_quorum: bool
    pg_running: bool
    pg_in_recovery: bool
    pg_upstream: str | None = None  # host this standby streams from
    pg_lsn: int = 0  # current WAL position (primary) or last replayed (standby)
    pg_sync_names: tuple[str, ...] = ()
    standbys: tuple[StandbyLink, ...] = ()
    vip_held: bool = False
    requests_in_flight: int = 0  # web requests past the writable check, not yet answered
    target_writable: bool = False  # during a handover: the new primary accepts writes
    # when this node applied the latest lease renewal it knows of (monotonic; 0.0 = never):
    # read after the view, so never older than the renewal the view shows
    lease_applied_at: float = 0.0

    def link(self, name: str | None) -> StandbyLink | None:
        for s in self.standbys:
            if s.name == name:
                return s
        return None


@dataclass
class Memory:
    """What the loop remembers between cycles (owned by the runner, one per node)."""

    started_at: float = 0.0
    lease_ok_at: float | None = None  # primary: when its last committed renewal was sent
    seen_lease: int = -1  # standby: the last lease counter it saw ...
    seen_lease_at: float = 0.0  # ... and when it first saw it
    standby_missing_since: float | None = None
    writable: bool = False
    role: str = ""  # the role last told to the web layer
    handover_since: float = 0.0  # old primary: when it started holding requests
    handover_to: str | None = None  # old primary, once Raft names the target: whom to ...
    handover_at: float = 0.0  # ... forward to, and since when
    primary_since: float = 0.0  # when this node last became primary


class HaActions(abc.ABC):
    """What a decision may do. Raft methods raise :class:`ClusterStateError` when no
    majority commits them in time; the others raise StrongroomError on failure."""

    @abc.abstractmethod
    def renew_lease(self, epoch: int) -> bool:
        """Commit a lease renewal for this node at ``epoch``; False if refused."""

    @abc.abstractmethod
    def promote_in_raft(self, candidate: str, epoch: int, seen_lease: int) -> int:
        """Commit ``candidate`` as primary; the new epoch, or 0 if refused."""

    @abc.abstractmethod
    def record_sync_standby(self, epoch: int, standby: str | None) -> bool:
        """Record (or, with None, clear) the synchronous standby in Raft."""

    @abc.abstractmethod
    def set_pg_sync_names(self, names: tuple[str, ...]) -> None:
        """Make the local PostgreSQL wait for exactly these standbys (reloads it)."""

    @abc.abstractmethod
    def promote_postgres(self, epoch: int) -> None:
        """Promote the local PostgreSQL and write ``epoch`` into the database."""

    @abc.abstractmethod
    def follow(self, primary: Member) -> None:
        """(Re)start the local PostgreSQL as a standby of ``primary``: rewind a former
        primary, or take a fresh base backup when rewinding fails. Slow."""

    @abc.abstractmethod
    def stop_postgres(self) -> None:
        """Stop the local PostgreSQL (fast shutdown)."""

    @abc.abstractmethod
    def add_vip(self) -> None:
        """Hold the VIP and announce it (gratuitous ARP). No-op without a VIP."""

    @abc.abstractmethod
    def release_vip(self) -> None:
        """Make sure this node does not hold the VIP."""

    @abc.abstractmethod
    def hand_off_vip(self) -> int:
        """Stop taking new connections on the VIP, let the open ones finish (at most the
        drain time), then release it; the number of connections still open when it went."""

    @abc.abstractmethod
    def record_vip_released(self) -> bool:
        """Record in Raft that this former primary no longer holds the VIP."""

    @abc.abstractmethod
    def set_role(self, role: str, writable: bool, primary: Member | None) -> None:
        """Tell the web layer the node's role and whether it accepts writes."""


# --- the cycle -----------------------------------------------------------------------------


def run_cycle(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, t: HaTimings
) -> str:
    """One HA cycle of a data node; returns the sentence of what it did."""
    if view.primary == facts.name:
        return primary_cycle(view, facts, mem, act, t)
    return replica_cycle(view, facts, mem, act, t)


def primary_cycle(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, t: HaTimings
) -> str:
    held = renew_or_fence(view, facts, mem, act, t.lease)
    if held is not None:
        return held
    if facts.pg_in_recovery or not facts.pg_running:
        return become_primary(view, facts, mem, act)
    if view.switchover_to:
        return hand_over(view, facts, mem, act, t)
    changed = manage_sync_standby(view, facts, mem, act, t.standby_grace)
    vip = claim_vip(view, facts, mem, act, t)
    if not mem.writable:
        mem.writable = True
        tell(mem, act, PRIMARY, True, view.member(facts.name))
    if vip or changed:
        return "; ".join(s for s in (vip, changed) if s)
    sync = view.sync_standby or "none"
    return f"no action: I am the primary at epoch {view.epoch}, synchronous standby {sync}"


def tell(mem: Memory, act: HaActions, role: str, writable: bool, primary: Member | None) -> None:
    """Tell the web layer the node's role (and remember what it was told)."""
    mem.role = role
    act.set_role(role, writable, primary)


def fence(mem: Memory, act: HaActions, why: str) -> str:
    """Refuse writes, then release the VIP."""
    mem.writable = False
    tell(mem, act, FENCED, False, None)
    act.release_vip()
    return f"fenced: {why}; refusing writes and released the VIP"


def renew_or_fence(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, lease: float
) -> str | None:
    """Renew the lease through Raft; None when this primary may go on, else the sentence
    of how it fenced itself."""
    try:
        renewed = act.renew_lease(view.epoch)
    except ClusterStateError:
        renewed = None
    if renewed is True:
        mem.lease_ok_at = facts.now
        return None
    if renewed is False:
        return fence(mem, act, f"Raft refused my lease at epoch {view.epoch} (demoted)")
    if mem.lease_ok_at is None:
        mem.lease_ok_at = facts.now
    silent = facts.now - mem.lease_ok_at
    if silent > lease:
        if mem.writable or facts.vip_held:
            return fence(mem, act, f"no Raft majority for {silent:.1f} s")
        return f"no action: fenced primary, still no Raft majority ({silent:.1f} s)"
    return f"no action: lease renewal failed, lease still valid for {lease - silent:.1f} s"


def become_primary(view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions) -> str:
    """Raft names me primary but my PostgreSQL is a standby: promote it, write the epoch,
    then take the VIP and writes. After a planned handover the web holds requests while
    PostgreSQL is promoted, and the VIP waits until the former primary released it."""
    me = view.member(facts.name)
    former = view.vip_release_from if view.vip_release_from != facts.name else None
    if former is not None:
        tell(mem, act, TAKING_OVER, False, me)
    act.set_pg_sync_names(())
    act.promote_postgres(view.epoch)
    mem.primary_since = facts.now
    mem.standby_missing_since = None
    mem.writable = True
    if former is not None:
        tell(mem, act, PRIMARY, True, me)
        return (
            f"switchover: promoted, I am the primary at epoch {view.epoch}; wrote the epoch; "
            f"taking writes; the VIP follows once {former} releases it"
        )
    act.add_vip()
    tell(mem, act, PRIMARY, True, me)
    return f"promoted: I am the primary at epoch {view.epoch}; wrote the epoch, took the VIP"


def claim_vip(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, t: HaTimings
) -> str | None:
    """The primary holds the VIP; after a planned handover, only once the former primary
    recorded that it released it (or, if it never does, after twice the handover wait).
    None when there is nothing to tell."""
    if facts.vip_held:
        return None
    former = view.vip_release_from
    if former is None or former == facts.name:
        act.add_vip()
        return None
    waited = facts.now - mem.primary_since
    if waited < 2 * t.handover_wait:
        return f"switchover: waiting for {former} to release the VIP"
    act.add_vip()
    return f"took the VIP: {former} did not record its release within {waited:.1f} s"


def hand_over(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, t: HaTimings
) -> str:
    """Planned switchover, old primary's side: hold new requests (the web waits instead
    of refusing), let those in flight finish, wait until the target replayed everything,
    make it primary in Raft, stop PostgreSQL, then forward requests to the target."""
    target = str(view.switchover_to)
    if mem.role != HANDING_OVER:
        mem.writable = False
        mem.handover_since = facts.now
        tell(mem, act, HANDING_OVER, False, view.member(facts.name))
        return f"switchover to {target}: holding new requests, waiting for those in flight"
    waited = facts.now - mem.handover_since
    busy = facts.requests_in_flight
    if busy and waited < t.handover_wait:
        return f"switchover to {target}: holding new requests, {busy} still in flight"
    link = facts.link(target)
    if link is None or link.replay_lsn < facts.pg_lsn:
        return f"switchover to {target}: holding requests until {target} replayed everything"
    epoch = act.promote_in_raft(target, view.epoch, -1)
    if epoch == 0:
        return f"switchover: Raft refused to hand over to {target}; will retry"
    act.stop_postgres()
    mem.handover_to = target
    mem.handover_at = facts.now
    mem.lease_ok_at = None
    tell(mem, act, HANDING_OVER, False, view.member(target))
    cut = f" ({busy} requests still in flight after {waited:.1f} s were cut)" if busy else ""
    return f"switchover: handed over to {target} at epoch {epoch}; forwarding requests to it{cut}"


def finish_handover(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, t: HaTimings
) -> str:
    """Planned switchover, old primary's side once Raft names the target: keep the VIP
    (and forward what arrives) until the target accepts writes, then drain and release
    the VIP, record that in Raft, and follow the new primary."""
    target = mem.handover_to
    primary = view.member(view.primary)
    if primary is None or primary.name != target:
        mem.handover_to = None
        return f"switchover: Raft names {view.primary or 'no primary'}, not {target}; stopped"
    waited = facts.now - mem.handover_at
    if facts.vip_held and not facts.target_writable and waited < t.handover_wait:
        return f"switchover: forwarding requests to {target}; keeping the VIP until it takes writes"
    how = f"{target} takes writes"
    if not facts.target_writable:
        how = f"{target} still takes no writes after {waited:.1f} s"
    if facts.vip_held:
        cut = act.hand_off_vip()
        how += "; drained and released the VIP" + (f" ({cut} connections cut)" if cut else "")
    try:
        recorded = act.record_vip_released()
    except ClusterStateError:
        recorded = False
    if not recorded:
        how += " (the release is not recorded in Raft yet)"
    mem.handover_to = None
    act.follow(primary)
    tell(mem, act, STANDBY, False, primary)
    return f"switchover: {how}; now following {target}"


def manage_sync_standby(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, grace: float
) -> str | None:
    """Keep PostgreSQL's synchronous_standby_names and the Raft record in step: adding a
    standby touches PostgreSQL first, dropping one touches Raft first."""
    sync = view.sync_standby
    if sync is not None:
        link = facts.link(sync)
        if link is not None and link.state == "streaming":
            mem.standby_missing_since = None
            if facts.pg_sync_names != (sync,):
                act.set_pg_sync_names((sync,))
                return f"made PostgreSQL wait for the recorded standby {sync} again"
            return None
        if mem.standby_missing_since is None:
            mem.standby_missing_since = facts.now
        gone = facts.now - mem.standby_missing_since
        if gone < grace:
            return f"standby {sync} not streaming for {gone:.1f} s; waiting"
        try:
            recorded = act.record_sync_standby(view.epoch, None)
        except ClusterStateError as exc:
            return f"standby {sync} gone, but Raft did not record it ({exc}); writes wait"
        if not recorded:
            return f"standby {sync} gone, but Raft refused to record it; writes wait"
        act.set_pg_sync_names(())
        mem.standby_missing_since = None
        return (
            f"standby {sync} gone for {gone:.1f} s: recorded in Raft, "
            "then dropped synchronous replication"
        )
    candidates = [
        s
        for s in facts.standbys
        if s.state == "streaming" and (m := view.member(s.name)) is not None and m.is_data
    ]
    if not candidates:
        if facts.pg_sync_names:
            act.set_pg_sync_names(())
            return "no standby recorded: stopped waiting for unrecorded standbys"
        return None
    best = max(candidates, key=lambda s: (s.flush_lsn, s.name))
    if facts.pg_sync_names != (best.name,):
        act.set_pg_sync_names((best.name,))
        return f"made PostgreSQL wait for {best.name}; will record it once it is in sync"
    if best.sync_state != "sync":
        return f"waiting for {best.name} to become synchronous"
    try:
        if act.record_sync_standby(view.epoch, best.name):
            return f"{best.name} is now the synchronous standby (recorded in Raft)"
    except ClusterStateError as exc:
        return f"{best.name} is synchronous but Raft did not record it ({exc})"
    return f"Raft refused to record {best.name} as the synchronous standby"


def replica_cycle(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, t: HaTimings
) -> str:
    primary = view.member(view.primary)
    if mem.handover_to is not None:
        return finish_handover(view, facts, mem, act, t)
    if facts.pg_running and not facts.pg_in_recovery:
        return step_down(view, facts, mem, act)
    if facts.vip_held:
        act.release_vip()
    if view.vip_release_from == facts.name:
        try:  # a former primary that restarted during its handover
            act.record_vip_released()
        except ClusterStateError:
            pass
    role = TAKING_OVER if view.switchover_to == facts.name else STANDBY
    if mem.writable or mem.lease_ok_at is not None or mem.role != role:
        mem.writable = False
        mem.lease_ok_at = None
        tell(mem, act, role, False, primary)
    track_lease(view, facts, mem)
    promoted = maybe_promote(view, facts, mem, act, t.failover_after)
    if promoted is not None:
        return promoted
    if primary is None:
        return "no action: Raft names no primary"
    if not facts.pg_running or facts.pg_upstream != primary.db_host:
        act.follow(primary)
        tell(mem, act, role, False, primary)
        return f"now following the primary {primary.name}"
    if role == TAKING_OVER:
        return f"switchover: {primary.name} hands over to me; holding requests until I am primary"
    role = "synchronous standby" if view.sync_standby == facts.name else "standby"
    return f"no action: {role} of {primary.name} at epoch {view.epoch}"


def step_down(view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions) -> str:
    """My PostgreSQL still runs as a primary but Raft names another: fence first, then
    rejoin as a standby (rewind, or a fresh base backup)."""
    mem.writable = False
    mem.lease_ok_at = None
    tell(mem, act, FENCED, False, view.member(view.primary))
    act.release_vip()
    primary = view.member(view.primary)
    if primary is None:
        act.stop_postgres()
        return "demoted: Raft names no primary; stopped PostgreSQL"
    act.follow(primary)
    tell(mem, act, STANDBY, False, primary)
    return f"demoted: {primary.name} is primary at epoch {view.epoch}; rejoined as its standby"


def track_lease(view: ClusterView, facts: LocalFacts, mem: Memory) -> None:
    """Start the failover clock when this node learned of the latest lease renewal: when
    Raft applied it here if known (up to a loop period earlier than this cycle), else now.
    Never earlier than the commit, so never earlier than the primary sent the renewal,
    whose sending time starts the primary's own lease (docs/ha.md, "Lease")."""
    if view.lease_counter != mem.seen_lease:
        mem.seen_lease = view.lease_counter
        applied = facts.lease_applied_at
        mem.seen_lease_at = applied if 0.0 < applied <= facts.now else facts.now


def next_cycle_in(
    period: float, view: ClusterView, name: str, mem: Memory, now: float, failover_after: float
) -> float:
    """How long the loop sleeps: ``period``, but the synchronous standby wakes just after
    the primary's silence would pass ``failover_after``, so promotion does not wait for
    the next regular cycle."""
    if view.sync_standby != name or view.primary in (None, name) or mem.seen_lease_at <= 0.0:
        return period
    lapse_in = max(mem.seen_lease_at, mem.started_at) + failover_after - now
    return max(0.02, min(period, lapse_in + 0.02))


def maybe_promote(
    view: ClusterView, facts: LocalFacts, mem: Memory, act: HaActions, after: float
) -> str | None:
    """Promote myself if I am the recorded synchronous standby and the primary has been
    silent for longer than ``after`` seconds, through a Raft majority."""
    if view.sync_standby != facts.name or view.primary is None:
        return None
    silent = facts.now - max(mem.seen_lease_at, mem.started_at)
    if silent <= after:
        return None
    if not facts.raft_has_quorum:
        return f"no action: primary silent for {silent:.1f} s, but no Raft majority to promote"
    try:
        epoch = act.promote_in_raft(facts.name, view.epoch, mem.seen_lease)
    except ClusterStateError as exc:
        return f"no action: primary silent for {silent:.1f} s; promotion not committed ({exc})"
    if epoch == 0:
        return "no action: Raft refused my promotion (the primary renewed, or I was dropped)"
    act.set_pg_sync_names(())
    act.promote_postgres(epoch)
    act.add_vip()
    mem.writable = True
    mem.primary_since = facts.now
    mem.lease_ok_at = facts.now
    mem.standby_missing_since = None
    tell(mem, act, PRIMARY, True, view.member(facts.name))
    return (
        f"promoted: primary {view.primary} silent for {silent:.1f} s; I was the synchronous "
        f"standby; now primary at epoch {epoch}"
    )


__all__ = [
    "HaActions",
    "HaTimings",
    "LocalFacts",
    "Memory",
    "StandbyLink",
    "run_cycle",
    "next_cycle_in",
    "PRIMARY",
    "STANDBY",
    "FENCED",
    "HANDING_OVER",
    "TAKING_OVER",
]
