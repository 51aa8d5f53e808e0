"""The HA loop's decisions, one cycle at a time, on value-object cluster views and a small
recording fake of the actions (no patching): what each node does, in which order."""

from __future__ import annotations

from dataclasses import replace

from cluster.ha import (
    FENCED,
    HANDING_OVER,
    PRIMARY,
    STANDBY,
    TAKING_OVER,
    HaActions,
    HaTimings,
    LocalFacts,
    Memory,
    StandbyLink,
    next_cycle_in,
)
from cluster.ha import run_cycle as cycle
from cluster.state import DATA, WITNESS, ClusterStateError, ClusterView, Member

T = HaTimings()


def m(name: str, kind: str = DATA) -> Member:
    return Member(name, kind, f"{name}:7273", f"https://{name}:7272", f"10.0.0.{name[-1]}", 2345, 0)


VIEW = ClusterView(
    cluster_id="c",
    members=(m("n1"), m("n2"), m("w", WITNESS)),
    primary="n1",
    epoch=3,
    sync_standby="n2",
    lease_counter=10,
)


class Recorder(HaActions):
    """Records every action in order; Raft calls answer from settable values."""

    def __init__(self, raft_ok: bool = True, lease: bool = True, promote_epoch: int = 4):
        self.log: list[str] = []
        self.raft_ok = raft_ok
        self.lease = lease
        self.promote_epoch = promote_epoch

    def _raft(self) -> None:
        if not self.raft_ok:
            raise ClusterStateError("no Raft majority")

    def renew_lease(self, epoch: int) -> bool:
        self._raft()
        self.log.append(f"renew {epoch}")
        return self.lease

    def promote_in_raft(self, candidate: str, epoch: int, seen_lease: int) -> int:
        self._raft()
        self.log.append(f"raft promote {candidate} {epoch} {seen_lease}")
        return self.promote_epoch

    def record_sync_standby(self, epoch: int, standby: str | None) -> bool:
        self._raft()
        self.log.append(f"raft sync {standby}")
        return True

    def set_pg_sync_names(self, names: tuple[str, ...]) -> None:
        self.log.append(f"pg sync {','.join(names) or '-'}")

    def promote_postgres(self, epoch: int) -> None:
        self.log.append(f"pg promote {epoch}")

    def follow(self, primary: Member) -> None:
        self.log.append(f"follow {primary.name}")

    def stop_postgres(self) -> None:
        self.log.append("pg stop")

    def add_vip(self) -> None:
        self.log.append("vip add")

    def release_vip(self) -> None:
        self.log.append("vip release")

    def hand_off_vip(self) -> int:
        self.log.append("vip hand off")
        return 0

    def record_vip_released(self) -> bool:
        self._raft()
        self.log.append("raft vip released")
        return True

    def set_role(self, role: str, writable: bool, primary: Member | None) -> None:
        self.log.append(f"role {role} {'rw' if writable else 'ro'}")

    def without_renewals(self) -> list[str]:
        return [e for e in self.log if not e.startswith("renew")]


def primary_facts(**kw: object) -> LocalFacts:
    base = LocalFacts(
        name="n1",
        now=100.0,
        raft_has_quorum=True,
        pg_running=True,
        pg_in_recovery=False,
        pg_lsn=500,
        pg_sync_names=("n2",),
        standbys=(StandbyLink("n2", "streaming", "sync", 500, 500),),
        vip_held=True,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def standby_facts(**kw: object) -> LocalFacts:
    base = LocalFacts(
        name="n2",
        now=100.0,
        raft_has_quorum=True,
        pg_running=True,
        pg_in_recovery=True,
        pg_upstream="10.0.0.1",
        pg_lsn=500,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_healthy_primary_renews_and_takes_writes() -> None:
    act, mem = Recorder(), Memory()
    said = cycle(VIEW, primary_facts(), mem, act, T)
    assert said == "no action: I am the primary at epoch 3, synchronous standby n2"
    assert act.log == ["renew 3", f"role {PRIMARY} rw"]
    assert mem.lease_ok_at == 100.0


def test_a_primary_without_majority_fences_only_after_its_lease() -> None:
    act, mem = Recorder(), Memory(writable=True, lease_ok_at=100.0)
    act.raft_ok = False
    said = cycle(VIEW, primary_facts(now=101.0), mem, act, T)
    assert said.startswith("no action: lease renewal failed")
    assert act.log == []
    said = cycle(VIEW, primary_facts(now=100.0 + T.lease + 0.01), mem, act, T)
    assert said.startswith("fenced: no Raft majority")
    # Writes stop first, then the VIP goes.
    assert act.log == [f"role {FENCED} ro", "vip release"]
    assert mem.writable is False


def test_a_primary_whose_lease_raft_refuses_fences_at_once() -> None:
    act, mem = Recorder(lease=False), Memory(writable=True, lease_ok_at=100.0)
    said = cycle(VIEW, primary_facts(), mem, act, T)
    assert "demoted" in said
    assert act.without_renewals() == [f"role {FENCED} ro", "vip release"]


def test_the_standby_is_promoted_only_after_the_primary_is_silent_long_enough() -> None:
    act, mem = Recorder(), Memory(started_at=0.0, role=STANDBY)
    assert cycle(VIEW, standby_facts(now=100.0), mem, act, T).startswith("no action: synchronous")
    assert cycle(VIEW, standby_facts(now=99.9 + T.failover_after), mem, act, T).startswith(
        "no action"
    )
    assert act.log == []
    said = cycle(VIEW, standby_facts(now=100.0 + T.failover_after + 0.1), mem, act, T)
    assert said.startswith("promoted: primary n1 silent")
    # The promotion names the lease counter it saw; PostgreSQL is promoted (and the epoch
    # written) before the VIP is taken and writes are accepted.
    assert act.log == [
        "raft promote n2 3 10",
        "pg sync -",
        "pg promote 4",
        "vip add",
        f"role {PRIMARY} rw",
    ]


def test_a_renewed_lease_resets_the_standbys_clock() -> None:
    act, mem = Recorder(), Memory()
    cycle(VIEW, standby_facts(now=100.0), mem, act, T)
    renewed = replace(VIEW, lease_counter=11)
    cycle(renewed, standby_facts(now=102.0), mem, act, T)
    said = cycle(renewed, standby_facts(now=100.0 + T.failover_after + 0.5), mem, act, T)
    assert said.startswith("no action")
    assert not any(e.startswith("raft promote") for e in act.log)


def test_the_failover_clock_starts_when_raft_applied_the_last_renewal_here() -> None:
    """The standby learns of a renewal when Raft applies it, up to a loop period before its
    next cycle: the clock starts then (never later than the cycle, never in the future)."""
    act, mem = Recorder(), Memory(started_at=0.0, role=STANDBY)
    cycle(VIEW, standby_facts(now=100.0, lease_applied_at=99.7), mem, act, T)
    assert mem.seen_lease_at == 99.7
    said = cycle(VIEW, standby_facts(now=99.7 + T.failover_after + 0.01), mem, act, T)
    assert said.startswith("promoted: primary n1 silent")
    # An applied time "after" the cycle (clock confusion) is not believed: now is used.
    mem2 = Memory(started_at=0.0, role=STANDBY)
    cycle(VIEW, standby_facts(now=100.0, lease_applied_at=100.5), mem2, Recorder(), T)
    assert mem2.seen_lease_at == 100.0


def test_the_synchronous_standby_wakes_just_after_the_failover_delay() -> None:
    mem = Memory(started_at=0.0, seen_lease=10, seen_lease_at=100.0)
    lapse = 100.0 + T.failover_after
    # far from it: the regular period; close to it: just past it; past it: soon again
    assert next_cycle_in(T.loop, VIEW, "n2", mem, 100.2, T.failover_after) == T.loop
    assert abs(next_cycle_in(T.loop, VIEW, "n2", mem, lapse - 0.1, T.failover_after) - 0.12) < 1e-9
    assert next_cycle_in(T.loop, VIEW, "n2", mem, lapse + 1.0, T.failover_after) == 0.02
    # the primary, another standby, or a node that saw no lease yet: the regular period
    assert next_cycle_in(T.loop, VIEW, "n1", mem, lapse - 0.1, T.failover_after) == T.loop
    other = replace(VIEW, sync_standby="n3")
    assert next_cycle_in(T.loop, other, "n2", mem, lapse - 0.1, T.failover_after) == T.loop
    fresh = Memory(started_at=0.0)
    assert next_cycle_in(T.loop, VIEW, "n2", fresh, lapse - 0.1, T.failover_after) == T.loop


def test_a_standby_that_is_not_the_recorded_one_never_promotes() -> None:
    act, mem = Recorder(), Memory(role=STANDBY)
    view = replace(VIEW, sync_standby=None)
    cycle(view, standby_facts(now=100.0), mem, act, T)
    said = cycle(view, standby_facts(now=200.0), mem, act, T)
    assert said == "no action: standby of n1 at epoch 3"
    assert act.log == []


def test_no_promotion_without_a_raft_majority() -> None:
    act, mem = Recorder(), Memory()
    cycle(VIEW, standby_facts(now=100.0), mem, act, T)
    said = cycle(VIEW, standby_facts(now=200.0, raft_has_quorum=False), mem, act, T)
    assert "no Raft majority" in said
    act.raft_ok = False
    said = cycle(VIEW, standby_facts(now=201.0), mem, act, T)
    assert "promotion not committed" in said
    assert not any("promote" in e for e in act.log)


def test_a_refused_promotion_changes_nothing() -> None:
    act, mem = Recorder(promote_epoch=0), Memory(role=STANDBY)
    cycle(VIEW, standby_facts(now=100.0), mem, act, T)
    said = cycle(VIEW, standby_facts(now=200.0), mem, act, T)
    assert "refused" in said
    assert act.log == ["raft promote n2 3 10"]


def test_a_gone_standby_is_recorded_in_raft_before_sync_replication_is_dropped() -> None:
    act, mem = Recorder(), Memory(writable=True)
    gone = primary_facts(standbys=())
    assert "waiting" in cycle(VIEW, gone, mem, act, T)
    later = replace(gone, now=100.0 + T.standby_grace + 0.1)
    said = cycle(VIEW, later, mem, act, T)
    assert "recorded in Raft, then dropped synchronous replication" in said
    assert act.without_renewals() == ["raft sync None", "pg sync -"]


def test_without_raft_the_primary_keeps_waiting_for_its_gone_standby() -> None:
    act, mem = Recorder(), Memory(writable=True, lease_ok_at=100.0)
    gone = primary_facts(standbys=())
    cycle(VIEW, gone, mem, act, T)
    act.raft_ok = False
    cycle(VIEW, replace(gone, now=100.0 + T.standby_grace + 0.1), mem, act, T)
    assert "pg sync -" not in act.log


def test_a_returning_standby_is_made_synchronous_in_postgres_before_raft() -> None:
    view = replace(VIEW, sync_standby=None)
    act, mem = Recorder(), Memory(writable=True)
    back = primary_facts(
        pg_sync_names=(), standbys=(StandbyLink("n2", "streaming", "async", 400, 400),)
    )
    assert "made PostgreSQL wait for n2" in cycle(view, back, mem, act, T)
    synced = replace(back, pg_sync_names=("n2",))
    assert "waiting for n2" in cycle(view, synced, mem, act, T)
    in_sync = replace(synced, standbys=(StandbyLink("n2", "streaming", "sync", 500, 500),))
    assert "n2 is now the synchronous standby" in cycle(view, in_sync, mem, act, T)
    assert act.without_renewals() == ["pg sync n2", "raft sync n2"]


def test_a_former_primary_fences_then_rejoins_as_standby() -> None:
    view = replace(VIEW, primary="n2", epoch=4, sync_standby=None)
    act, mem = Recorder(), Memory(writable=True)
    said = cycle(view, primary_facts(), mem, act, T)
    assert said == "demoted: n2 is primary at epoch 4; rejoined as its standby"
    assert act.log[:2] == [f"role {FENCED} ro", "vip release"]
    assert "follow n2" in act.log


def test_a_node_raft_names_primary_promotes_its_postgres_and_writes_the_epoch() -> None:
    view = replace(VIEW, primary="n2", epoch=4, sync_standby=None)
    act, mem = Recorder(), Memory()
    said = cycle(view, standby_facts(), mem, act, T)
    assert said.startswith("promoted: I am the primary at epoch 4")
    assert act.without_renewals() == ["pg sync -", "pg promote 4", "vip add", f"role {PRIMARY} rw"]


def test_switchover_holds_requests_lets_those_in_flight_finish_then_hands_over() -> None:
    view = replace(VIEW, switchover_to="n2")
    act, mem = Recorder(), Memory(writable=True, role=PRIMARY)
    said = cycle(view, primary_facts(requests_in_flight=2), mem, act, T)
    # The count read this cycle predates the pause: it always waits one more cycle.
    assert said == "switchover to n2: holding new requests, waiting for those in flight"
    assert act.without_renewals() == [f"role {HANDING_OVER} ro"]
    said = cycle(view, primary_facts(now=100.1, requests_in_flight=1), mem, act, T)
    assert said == "switchover to n2: holding new requests, 1 still in flight"
    behind = primary_facts(now=100.2, standbys=(StandbyLink("n2", "streaming", "sync", 450, 500),))
    assert "until n2 replayed everything" in cycle(view, behind, mem, act, T)
    assert act.without_renewals() == [f"role {HANDING_OVER} ro"]
    said = cycle(view, primary_facts(now=100.3), mem, act, T)
    assert said == "switchover: handed over to n2 at epoch 4; forwarding requests to it"
    # The VIP stays: requests through it are forwarded until n2 takes writes.
    assert act.without_renewals()[1:] == [
        "raft promote n2 3 -1",
        "pg stop",
        f"role {HANDING_OVER} ro",
    ]
    assert mem.handover_to == "n2" and not mem.writable


def test_a_request_that_never_finishes_delays_the_handover_at_most_the_handover_wait() -> None:
    view = replace(VIEW, switchover_to="n2")
    act, mem = Recorder(), Memory(writable=True, role=PRIMARY)
    cycle(view, primary_facts(), mem, act, T)
    stuck = primary_facts(now=100.0 + T.handover_wait + 0.1, requests_in_flight=1)
    said = cycle(view, stuck, mem, act, T)
    assert said.startswith("switchover: handed over to n2 at epoch 4; forwarding requests to it")
    assert "1 requests still in flight" in said


def test_a_cancelled_switchover_takes_writes_again() -> None:
    act, mem = Recorder(), Memory(writable=True, role=PRIMARY)
    cycle(replace(VIEW, switchover_to="n2"), primary_facts(), mem, act, T)
    said = cycle(VIEW, primary_facts(now=100.1), mem, act, T)
    assert said.startswith("no action: I am the primary")
    assert act.without_renewals() == [f"role {HANDING_OVER} ro", f"role {PRIMARY} rw"]


HANDED = replace(VIEW, primary="n2", epoch=4, sync_standby=None, vip_release_from="n1")


def test_the_old_primary_keeps_the_vip_until_the_new_one_takes_writes() -> None:
    act = Recorder()
    mem = Memory(role=HANDING_OVER, handover_to="n2", handover_at=100.0)
    waiting = primary_facts(now=100.5, pg_running=False, target_writable=False)
    said = cycle(HANDED, waiting, mem, act, T)
    assert said == "switchover: forwarding requests to n2; keeping the VIP until it takes writes"
    assert act.log == []
    said = cycle(HANDED, replace(waiting, now=100.6, target_writable=True), mem, act, T)
    assert said == "switchover: n2 takes writes; drained and released the VIP; now following n2"
    # Drained and released, recorded in Raft (so n2 may take it), then follows n2; the
    # web forwards until it is a standby.
    assert act.log == ["vip hand off", "raft vip released", "follow n2", f"role {STANDBY} ro"]
    assert mem.handover_to is None


def test_the_old_primary_lets_the_vip_go_if_the_new_one_never_takes_writes() -> None:
    act = Recorder(raft_ok=False)
    mem = Memory(role=HANDING_OVER, handover_to="n2", handover_at=100.0)
    late = primary_facts(now=100.0 + T.handover_wait, pg_running=False, target_writable=False)
    said = cycle(HANDED, late, mem, act, T)
    assert said.startswith(f"switchover: n2 still takes no writes after {T.handover_wait:.1f} s")
    assert "(the release is not recorded in Raft yet)" in said
    assert act.log == ["vip hand off", "follow n2", f"role {STANDBY} ro"]


def test_the_target_of_a_switchover_tells_the_web_to_hold_requests() -> None:
    act, mem = Recorder(), Memory(role=STANDBY)
    said = cycle(replace(VIEW, switchover_to="n2"), standby_facts(), mem, act, T)
    assert said == "switchover: n1 hands over to me; holding requests until I am primary"
    assert act.log == [f"role {TAKING_OVER} ro"]


def test_after_a_switchover_the_new_primary_takes_writes_then_the_vip_once_released() -> None:
    act, mem = Recorder(), Memory(role=TAKING_OVER)
    said = cycle(HANDED, standby_facts(), mem, act, T)
    assert said.startswith("switchover: promoted, I am the primary at epoch 4")
    assert act.without_renewals() == [
        f"role {TAKING_OVER} ro",
        "pg sync -",
        "pg promote 4",
        f"role {PRIMARY} rw",
    ]
    as_primary = standby_facts(now=100.5, pg_in_recovery=False, vip_held=False)
    said = cycle(HANDED, as_primary, mem, act, T)
    assert said == "switchover: waiting for n1 to release the VIP"
    assert "vip add" not in act.log
    released = replace(HANDED, vip_release_from=None)
    cycle(released, replace(as_primary, now=100.6), mem, act, T)
    assert act.without_renewals()[-1] == "vip add"


def test_a_vip_never_released_is_taken_after_twice_the_handover_wait() -> None:
    act, mem = Recorder(), Memory(role=PRIMARY, writable=True, primary_since=100.0)
    late = standby_facts(now=100.0 + 2 * T.handover_wait, pg_in_recovery=False)
    said = cycle(HANDED, late, mem, act, T)
    assert said.startswith("took the VIP: n1 did not record its release")
    assert act.without_renewals() == ["vip add"]


def test_a_former_primary_that_restarted_mid_handover_records_the_vip_released() -> None:
    act, mem = Recorder(), Memory()
    view = replace(VIEW, primary="n2", epoch=4, sync_standby="n1", vip_release_from="n1")
    facts = replace(standby_facts(), name="n1", pg_upstream="10.0.0.2")
    cycle(view, facts, mem, act, T)
    assert act.log[0] == "raft vip released"


def test_a_standby_holding_the_vip_releases_it_and_follows_the_primary() -> None:
    act, mem = Recorder(), Memory()
    said = cycle(VIEW, standby_facts(vip_held=True, pg_running=False), mem, act, T)
    assert said == "now following the primary n1"
    assert act.log[0] == "vip release"
    assert "follow n1" in act.log


def test_timings_refuse_a_failover_delay_that_could_overlap_the_lease() -> None:
    try:
        HaTimings(lease=2.0, failover_after=2.1)
    except ValueError:
        return
    raise AssertionError("accepted unsafe timings")


def test_a_freshly_started_standby_tells_the_web_its_role_once() -> None:
    act, mem = Recorder(), Memory()
    cycle(VIEW, standby_facts(now=100.0), mem, act, T)
    cycle(VIEW, standby_facts(now=100.4), mem, act, T)
    assert act.log == ["role standby ro"]
