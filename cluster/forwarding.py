"""Where a web request goes while the cluster changes hands (a planned switchover, see
cluster/ha.py): served here, held until this node or the new primary takes writes,
forwarded to the new primary, or refused with a clear 503 naming the primary.

:func:`route_request` is a pure decision over a :class:`Traffic` picture (the node's role
as the HA loop told it, and the data members Raft knows); it returns the sentence of what
it decided, which the web layer acts on and logs when it refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import urllib.parse
from dataclasses import dataclass

from cluster.ha import HANDING_OVER, TAKING_OVER
from cluster.state import Member

SERVE = "serve"
HOLD = "hold"
FORWARD = "forward"
REFUSE = "refuse"
PROOF_MAX_AGE = 60.0  # seconds a forwarding proof is good for (members' clocks: NTP)


@dataclass(frozen=True)
class Traffic:
    """What a routing decision looks at."""

    role: str
    writable: bool
    primary_address: str | None  # https://host:port of the primary the HA loop named
    own_address: str  # this node's https://host:port
    member_addresses: frozenset[str]  # https://host:port of every data member (Raft)


@dataclass(frozen=True)
class Route:
    kind: str  # SERVE | HOLD | FORWARD | REFUSE
    sentence: str
    target: str = ""  # FORWARD: the new primary's https://host:port; REFUSE: a non-member


def route_request(t: Traffic, forwarded_by_member: bool, waited: float, hold: float) -> Route:
    """Decide what to do with a request that has waited ``waited`` seconds so far.

    * a writable node serves it;
    * the old primary of a switchover, once Raft names the new primary, forwards it there,
      but only to a data member, and never a request another member forwarded to it;
    * the old primary before that, the target while it is promoted, and any node given a
      request by a member that forwarded it, hold it for at most ``hold`` seconds;
    * everything else is refused (503 naming the primary), as before switchovers held.
    """
    if t.writable:
        return Route(SERVE, "served here: this node takes writes")
    target = t.primary_address
    if t.role == HANDING_OVER and target and target != t.own_address and not forwarded_by_member:
        if target not in t.member_addresses:
            sentence = f"refused: {target} is not a data member; nothing is forwarded"
            return Route(REFUSE, sentence, target)
        return Route(FORWARD, f"forwarded to the new primary {target}", target)
    if t.role in (HANDING_OVER, TAKING_OVER) or forwarded_by_member:
        if waited < hold:
            return Route(HOLD, f"held: a planned handover is under way ({waited:.1f} s)")
        return Route(REFUSE, f"refused after holding it {waited:.1f} s: no primary took it")
    return Route(REFUSE, f"refused: this node is {t.role or 'not ready'}")


def member_addresses(members: tuple[Member, ...]) -> frozenset[str]:
    """The web addresses of the data members."""
    return frozenset(m.api_url for m in members if m.is_data and m.api_url)


def member_hosts(members: tuple[Member, ...]) -> frozenset[str]:
    """The IP addresses data members send from (their advertised addresses)."""
    hosts = set()
    for m in members:
        if not m.is_data:
            continue
        for value in (m.db_host, urllib.parse.urlsplit(m.api_url).hostname or ""):
            try:
                hosts.add(str(ipaddress.ip_address(value)))
            except ValueError:
                continue
    return frozenset(hosts)


def forwarding_proof(
    secret: bytes, member: str, client: str, method: str, uri: str, at: float
) -> str:
    """What a forwarding member sends beside X-Forwarded-For: the time and an HMAC, keyed
    with the cluster secret, over who forwards, for which client, which request, when."""
    stamp = f"{at:.3f}"
    message = f"forwarded|{member}|{client}|{method}|{uri}|{stamp}".encode()
    return f"{stamp}:{hmac.new(secret, message, hashlib.sha256).hexdigest()}"


def forwarded_client(
    remote_ip: str,
    forwarded_by: str | None,
    forwarded_for: str | None,
    hosts: frozenset[str],
    *,
    proof: str | None,
    secret: bytes,
    method: str,
    uri: str,
    now: float,
) -> str | None:
    """The client address a member's forwarded request names (its X-Forwarded-For), or
    None. The header counts only on a request that comes from a data member's address,
    says which member forwarded it, and carries that member's proof (an HMAC with the
    cluster secret over the member, client, method, URI and a time at most
    PROOF_MAX_AGE seconds away): anyone else's X-Forwarded-For is ignored, a local user
    on a member host included."""
    if not forwarded_by or forwarded_for is None or not proof or remote_ip not in hosts:
        return None
    stamp = proof.split(":", 1)[0]
    try:
        at = float(stamp)
    except ValueError:
        return None
    if not abs(now - at) <= PROOF_MAX_AGE:
        return None
    client = forwarded_for.strip()
    expected = forwarding_proof(secret, forwarded_by, client, method, uri, at)
    if not hmac.compare_digest(expected.encode(), proof.encode()):
        return None
    try:
        return str(ipaddress.ip_address(client))
    except ValueError:
        return None


__all__ = [
    "SERVE",
    "HOLD",
    "FORWARD",
    "REFUSE",
    "Traffic",
    "Route",
    "route_request",
    "member_addresses",
    "member_hosts",
    "forwarded_client",
    "forwarding_proof",
    "PROOF_MAX_AGE",
]
