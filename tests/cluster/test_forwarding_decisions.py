"""Where a web request goes during a planned switchover (cluster/forwarding.py): served,
held, forwarded to the new primary, or refused; and whose X-Forwarded-For is believed."""

from __future__ import annotations

from dataclasses import replace

from cluster.forwarding import (
    FORWARD,
    HOLD,
    PROOF_MAX_AGE,
    REFUSE,
    SERVE,
    Traffic,
    forwarded_client,
    forwarding_proof,
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
SECRET = b"s" * 32
URI = "/restapi/json/v1/resources"
NOW = 1_800_000_000.0


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


def _client(
    remote: str,
    member: str | None,
    client: str | None,
    *,
    proof: str | None = None,
    secret: bytes = SECRET,
    uri: str = URI,
    now: float = NOW,
) -> str | None:
    if proof is None and member is not None and client is not None:
        proof = forwarding_proof(SECRET, member, client.strip(), "POST", URI, NOW - 1.0)
    return forwarded_client(
        remote,
        member,
        client,
        member_hosts(MEMBERS),
        proof=proof,
        secret=secret,
        method="POST",
        uri=uri,
        now=now,
    )


def test_only_a_data_member_is_believed_about_the_client_address() -> None:
    assert member_hosts(MEMBERS) == frozenset({"10.0.0.1", "10.0.0.2"})
    assert _client("10.0.0.1", "n1", "192.0.2.8") == "192.0.2.8"
    # A client (or the witness's address) claiming to be a forwarding member is not.
    assert _client("192.0.2.50", "n1", "203.0.113.7") is None
    assert _client("10.0.0.3", "n1", "203.0.113.7") is None
    # A member's request that does not say it forwards, or names garbage, neither.
    assert _client("10.0.0.1", None, "192.0.2.8") is None
    assert _client("10.0.0.1", "n1", "192.0.2.8, 10.0.0.9") is None
    assert _client("10.0.0.1", "n1", "<script>") is None


def test_a_forwarded_client_address_needs_the_members_proof() -> None:
    """From a member's address, the header still needs an HMAC made with the cluster
    secret over this very request, recent: a local user on a member host cannot choose
    the address the audit records."""
    good = forwarding_proof(SECRET, "n1", "192.0.2.8", "POST", URI, NOW)
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof=good) == "192.0.2.8"
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof="") is None
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof="not-a-proof") is None
    other_key = forwarding_proof(b"k" * 32, "n1", "192.0.2.8", "POST", URI, NOW)
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof=other_key) is None
    # the proof names the client, the member and the request it was made for
    assert _client("10.0.0.1", "n1", "192.0.2.9", proof=good) is None
    assert _client("10.0.0.1", "n2", "192.0.2.8", proof=good) is None
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof=good, uri="/other") is None
    # and is good for PROOF_MAX_AGE seconds either way
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof=good, now=NOW + PROOF_MAX_AGE) == (
        "192.0.2.8"
    )
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof=good, now=NOW + PROOF_MAX_AGE + 1) is None
    assert _client("10.0.0.1", "n1", "192.0.2.8", proof=good, now=NOW - PROOF_MAX_AGE - 1) is None
