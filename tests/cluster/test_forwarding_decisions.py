"""Where a web request goes during a planned switchover (cluster/forwarding.py): served,
held, forwarded to the new primary, or refused; and whose X-Forwarded-For is believed."""

from __future__ import annotations

from dataclasses import replace

from cluster.forwarding import (
    FORWARD,
    HOLD,
    REFUSE,
    SERVE,
    Traffic,
    forwarded_client,
    member_addresses,
    member_hosts,
    route_request,
)
from cluster.ha import FENCED, HANDING_OVER, PRIMARY, STANDBY, TAKING_OVER
from cluster.state import DATA, WITNESS, Member

N1, N2 = "https://10.0.0.1:7272", "https://10.0.0.2:7272"
MEMBERS = (
    Member("n1", DATA, "10.0.0.1:7273", N1, "10.0.0.1", 2345, 0),
    Member("n2", DATA, "10.0.0.2:7273", N2, "10.0.0.2", 2345, 0),
    Member("w", WITNESS, "10.0.0.3:7273", "", "", 0, 0),
)
OLD = Traffic(HANDING_OVER, False, N1, N1, member_addresses(MEMBERS))
HOLD_S = 5.0


def test_a_writable_node_serves() -> None:
    route = route_request(replace(OLD, role=PRIMARY, writable=True), False, 0.0, HOLD_S)
    assert route.kind == SERVE


def test_the_old_primary_holds_until_raft_names_the_new_one_then_forwards() -> None:
    assert route_request(OLD, False, 0.3, HOLD_S).kind == HOLD
    handed = replace(OLD, primary_address=N2)
    route = route_request(handed, False, 0.8, HOLD_S)
    assert (route.kind, route.target) == (FORWARD, N2)
    assert route.sentence == f"forwarded to the new primary {N2}"


def test_nothing_is_forwarded_to_an_address_that_is_not_a_data_member() -> None:
    for stranger in ("https://10.9.9.9:7272", "https://10.0.0.3:7272", "http://10.0.0.2:7272"):
        route = route_request(replace(OLD, primary_address=stranger), False, 0.0, HOLD_S)
        assert route.kind == REFUSE
        assert route.sentence == f"refused: {stranger} is not a data member; nothing is forwarded"


def test_a_held_request_is_refused_after_the_hold_timeout() -> None:
    route = route_request(OLD, False, HOLD_S, HOLD_S)
    assert route.kind == REFUSE
    assert route.sentence == "refused after holding it 5.0 s: no primary took it"


def test_the_target_holds_while_it_is_promoted() -> None:
    taking = replace(OLD, role=TAKING_OVER, primary_address=N1, own_address=N2)
    assert route_request(taking, False, 1.0, HOLD_S).kind == HOLD
    assert route_request(replace(taking, writable=True), False, 1.2, HOLD_S).kind == SERVE


def test_a_forwarded_request_is_held_not_forwarded_again() -> None:
    # n2 still thinks it is a standby (its Raft view lags n1's): it holds n1's request.
    standby = Traffic(STANDBY, False, N1, N2, OLD.member_addresses)
    assert route_request(standby, True, 0.1, HOLD_S).kind == HOLD
    # A node handing over never bounces a member's request back.
    handing = replace(OLD, primary_address=N2)
    assert route_request(handing, True, 0.1, HOLD_S).kind == HOLD


def test_standbys_and_fenced_primaries_refuse_at_once_as_before() -> None:
    for role in (STANDBY, FENCED, "starting"):
        route = route_request(replace(OLD, role=role), False, 0.0, HOLD_S)
        assert (route.kind, route.sentence) == (REFUSE, f"refused: this node is {role}")


def test_only_a_data_member_is_believed_about_the_client_address() -> None:
    hosts = member_hosts(MEMBERS)
    assert hosts == frozenset({"10.0.0.1", "10.0.0.2"})
    assert forwarded_client("10.0.0.1", "n1", "192.0.2.8", hosts) == "192.0.2.8"
    # A client (or the witness's address) claiming to be a forwarding member is not.
    assert forwarded_client("192.0.2.50", "n1", "203.0.113.7", hosts) is None
    assert forwarded_client("10.0.0.3", "n1", "203.0.113.7", hosts) is None
    # A member's request that does not say it forwards, or names garbage, neither.
    assert forwarded_client("10.0.0.1", None, "192.0.2.8", hosts) is None
    assert forwarded_client("10.0.0.1", "n1", "192.0.2.8, 10.0.0.9", hosts) is None
    assert forwarded_client("10.0.0.1", "n1", "<script>", hosts) is None
