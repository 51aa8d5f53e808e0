"""The cluster on network-namespace hosts (n1, n2, a witness w and a client), formed with
the operator's commands, with real node processes, real PostgreSQL replication and a real
VIP. During every scenario a writer in the client namespace writes through the VIP; after
each one every acknowledged write is on the final primary, no two nodes acknowledged
writes at overlapping times, and the audit chain verifies.

The scenarios run in order on one cluster (forming it takes most of a minute); each leaves
the cluster healthy again: a primary, a synchronous standby and the witness.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.tls import CERT_FILE, KEY_FILE, make_self_signed
from tests.cluster.netns import STRONGROOM, Lab, reachable_dir, sweep, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
WRITER = str(Path(__file__).with_name("writer.py"))
PYTHON = str(Path(STRONGROOM).with_name("python"))


@dataclass
class Cluster:
    lab: Lab
    token: str = ""
    ca_file: Path = Path()
    counter: int = 0
    notes: list[str] = field(default_factory=list)

    def primary(self) -> str:
        """The node whose own status says it is the writable primary."""
        for host in ("n1", "n2"):
            st = self.lab.status(host)
            if st.get("role") == "primary" and st.get("primary") == host:
                return host
        raise AssertionError("no primary")

    def other(self, host: str) -> str:
        return "n2" if host == "n1" else "n1"

    def healthy(self) -> bool:
        """A primary holding the VIP, the other data node its synchronous standby, and the
        witness connected."""
        p = self.primary()
        st = self.lab.status(p)
        members = {m["name"]: m for m in st["members"]}
        return (
            st["sync_standby"] == self.other(p)
            and self.lab.vip_holders() == [p]
            and all(m["raft_connected"] for m in members.values())
        )


def form(lab: Lab) -> Cluster:
    a1 = lab.addr("n1")
    lab.cli(
        "n1", "init", "--ha", "--advertise", a1, "--name", "n1",
        "--vip", f"{lab.vip}/24", "--vip-interface", "eth0",
    )  # fmt: skip
    lab.serve("n1")
    wait_for("n1 to serve as primary", lambda: lab.status("n1").get("role") == "primary", 120)
    out = lab.cli("n1", "join-token").stdout.split()
    token, ca_hash = out[out.index("token:") + 1], out[out.index("ca-hash:") + 1]
    lab.spawn(
        "w", "witness", STRONGROOM, "witness", "--data-dir", str(lab.data_dir("w")),
        "--join", f"https://{a1}:7272", "--token", token, "--ca-hash", ca_hash,
        "--advertise", lab.addr("w"), "--name", "w",
    )  # fmt: skip
    out = lab.cli("n1", "join-token").stdout.split()
    token, ca_hash = out[out.index("token:") + 1], out[out.index("ca-hash:") + 1]
    lab.cli(
        "n2", "join", f"https://{a1}:7272", "--token", token, "--ca-hash", ca_hash,
        "--advertise", lab.addr("n2"), "--name", "n2",
    )  # fmt: skip
    lab.serve("n2")
    cluster = Cluster(lab)
    wait_for("a healthy cluster", cluster.healthy, 120)
    added = lab.cli("n1", "apiuser", "add", "writer", "--role", "password_administrator")
    cluster.token = added.stdout.strip().splitlines()[-1].strip()
    cluster.ca_file = lab.data_dir("n1") / "cluster" / "ca.crt"
    return cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert os.geteuid() == 0, "the cluster tests make network namespaces: run them as root"
    sweep()
    lab = Lab(reachable_dir("ha")).up()
    try:
        yield form(lab)
    except BaseException:
        for host in ("n1", "n2", "w"):
            print(f"===== {host}\n{lab.log(host)[-4000:]}\n{lab.log(host, 'witness')[-2000:]}")
        raise
    finally:
        lab.down()


@dataclass
class Writes:
    records: list[dict[str, Any]]
    prefix: str

    @property
    def acked(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["acked"]]

    def acked_after(self, t: float, node: str | None = None) -> int:
        return sum(1 for r in self.acked if r["start"] > t and (node is None or r["node"] == node))


@contextmanager
def writing(
    c: Cluster, name: str, host: str | None = None, headers: dict[str, str] | None = None
) -> Iterator[Writes]:
    """Write through the VIP (or straight to ``host``'s own address) until the block ends."""
    address = c.lab.addr(host) if host else c.lab.vip

    def command(out: Path, stop: Path, prefix: str) -> list[str]:
        return [PYTHON, WRITER, f"https://{address}:7272", str(c.ca_file), c.token, str(out),
                str(stop), prefix, json.dumps(headers or {})]  # fmt: skip

    with client_writes(c, name, "writer", command, timeout=30) as writes:
        yield writes


@contextmanager
def client_writes(
    c: Cluster,
    name: str,
    kind: str,
    command: Callable[[Path, Path, str], list[str]],
    timeout: float,
) -> Iterator[Writes]:
    """Run ``command(out, stop, prefix)`` in the client namespace until the block ends (the
    stop file appears), then read the writes it recorded, one JSON line each, from ``out``."""
    c.counter += 1
    prefix = f"{name}-{c.counter}"
    out = c.lab.base / f"{prefix}.jsonl"
    stop = c.lab.base / f"{prefix}.stop"
    proc = c.lab.spawn("client", f"{kind}-{prefix}", *command(out, stop, prefix))
    writes = Writes([], prefix)
    try:
        yield writes
    finally:
        stop.write_text("stop")
        proc.wait(timeout=timeout)
        if out.exists():
            writes.records.extend(json.loads(line) for line in out.read_text().splitlines())


def now() -> float:
    return time.monotonic()


SESSION_CLIENT = str(Path(__file__).with_name("session_client.py"))


def session(c: Cluster, *args: str) -> str:
    url = f"https://{c.lab.vip}:7272"
    return c.lab.run_in("client", PYTHON, SESSION_CLIENT, args[0], url, *args[1:]).stdout.strip()


def admin_session(c: Cluster) -> Path:
    """The cookie file of the administrator's browser session (logged in once, through the
    VIP, with the one-time password)."""
    cookies = c.lab.base / "admin.cookies"
    if not cookies.exists():
        otp = (c.lab.data_dir("n1") / "initial-admin-password.txt").read_text().strip()
        assert session(c, "login", otp, "Failover-Admin-Pw-1", str(cookies)) == "200"
    return cookies


@contextmanager
def browsing(c: Cluster, name: str) -> Iterator[Writes]:
    """The administrator adds resources through the console's form until the block ends."""
    cookies = admin_session(c)

    def command(out: Path, stop: Path, prefix: str) -> list[str]:
        return [PYTHON, SESSION_CLIENT, "write", f"https://{c.lab.vip}:7272", str(cookies),
                str(out), str(stop), prefix]  # fmt: skip

    with client_writes(c, name, "browser", command, timeout=60) as writes:
        yield writes


def writes_acked_by(w_out: Path, node: str, since: float) -> bool:
    if not w_out.exists():
        return False
    for line in w_out.read_text().splitlines():
        r = json.loads(line)
        if r["acked"] and r["node"] == node and r["start"] > since:
            return True
    return False


def acked_by_soon(c: Cluster, w: Writes, node: str, since: float, timeout: float = 60) -> None:
    out = c.lab.base / f"{w.prefix}.jsonl"
    wait_for(f"a write acknowledged by {node}", lambda: writes_acked_by(out, node, since), timeout)


def check_outcome(c: Cluster, w: Writes) -> None:
    """Nothing acknowledged is lost, no split brain, the audit chain verifies."""
    assert w.acked, "the writer got no write acknowledged at all"
    primary = c.primary()
    rows = c.lab.psql(primary, f"SELECT name FROM resources WHERE name LIKE '{w.prefix}-%'")
    present = set(rows.split())
    lost = [r["name"] for r in w.acked if r["name"] not in present]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    # Two writer threads: an acknowledgement by one node while another node's
    # acknowledged write was in flight would be a split brain. A write that node A held
    # and relayed to node B during a switchover was ordered by A itself (A forwards only
    # once its own writes are done and Raft names B), so it may overlap A's writes.
    open_writes: list[dict[str, Any]] = []
    for r in sorted(w.acked, key=lambda r: r["start"]):
        open_writes = [o for o in open_writes if o["end"] > r["start"]]
        for o in open_writes:
            relayed = r.get("via") == o["node"] or o.get("via") == r["node"]
            assert o["node"] == r["node"] or relayed, (
                f"{o['node']} and {r['node']} acknowledged at the same time: {o} {r}"
            )
        open_writes.append(r)
    verified = c.lab.cli(primary, "audit", "verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# --- the scenarios -------------------------------------------------------------------------


def test_1_a_write_through_the_vip_is_on_the_standby(cluster: Cluster) -> None:
    c = cluster
    primary, standby = c.primary(), c.other(c.primary())
    start = now()
    with writing(c, "s1") as w:
        acked_by_soon(c, w, primary, start)
    first = w.acked[0]["name"]
    wait_for(
        "the write on the standby",
        lambda: first in c.lab.psql(standby, f"SELECT name FROM resources WHERE name='{first}'"),
        30,
    )
    assert c.lab.vip_holders() == [primary]
    status = c.lab.status(primary)
    assert status["sync_standby"] == standby and status["raft"]["has_quorum"]
    # The standby answers /health, and names the primary when asked for anything else.
    base = f"https://{c.lab.addr(standby)}:7272"
    health = c.lab.https("client", "GET", f"{base}/health", c.ca_file)
    assert health["status"] == 200 and '"role": "standby"' in health["body"]
    refused = c.lab.https("client", "POST", f"{base}/restapi/json/v1/resources", c.ca_file)
    assert refused["status"] == 503
    assert refused["headers"]["X-Strongroom-Primary"] == f"https://{c.lab.addr(primary)}:7272"
    assert refused["headers"]["Retry-After"] == "1"
    # The witness answers `cluster status` too (it has no database and no web).
    witness = c.lab.status("w")
    assert witness["role"] == "witness" and witness["primary"] == primary
    check_outcome(c, w)


def test_1b_a_certificate_installs_on_the_standby_without_an_audit_row(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A standby's vault is a read-only replica, so `strongroom tls install` there has no
    trail to write to: the install goes ahead (the certificate is the node's own) and is
    logged, and the primary's trail gets no row of it. The original goes back after."""
    c = cluster
    primary, standby = c.primary(), c.other(c.primary())
    tls = c.lab.data_dir(standby) / "tls"
    cert, key = (tls / CERT_FILE).read_bytes(), (tls / KEY_FILE).read_bytes()
    saved = tmp_path
    (saved / "orig.crt").write_bytes(cert)
    (saved / "orig.key").write_bytes(key)
    new_cert, new_key = make_self_signed(["standby.example.org"])
    (saved / "new.crt").write_bytes(new_cert)
    (saved / "new.key").write_bytes(new_key)
    rows = "SELECT count(*) FROM audit_log WHERE target = 'TLS certificate'"
    before = c.lab.psql(primary, rows)
    c.lab.cli(standby, "tls", "install", str(saved / "new.crt"), str(saved / "new.key"))
    assert (tls / CERT_FILE).read_bytes() == new_cert
    c.lab.cli(standby, "tls", "install", str(saved / "orig.crt"), str(saved / "orig.key"))
    assert (tls / CERT_FILE).read_bytes() == cert
    assert c.lab.psql(primary, rows) == before
    log = (c.lab.base / standby / "node.log").read_text()
    assert "not the primary: not in the audit trail" in log
    base = f"https://{c.lab.addr(standby)}:7272"
    assert c.lab.https("client", "GET", f"{base}/health", c.ca_file)["status"] == 200


def test_4_a_killed_standby_is_dropped_then_returns_as_synchronous_standby(
    cluster: Cluster,
) -> None:
    c = cluster
    primary, standby = c.primary(), c.other(c.primary())
    with writing(c, "s4") as w:
        acked_by_soon(c, w, primary, now())
        c.lab.kill_host(standby)
        killed = now()
        wait_for("the standby dropped", lambda: c.lab.status(primary)["sync_standby"] is None)
        acked_by_soon(c, w, primary, now())
        c.lab.serve(standby)
        wait_for("the standby synchronous again", c.healthy, 120)
        acked_by_soon(c, w, primary, now())
    assert w.acked_after(killed, primary) > 0
    check_outcome(c, w)


def test_5_a_killed_witness_changes_nothing_for_users(cluster: Cluster) -> None:
    c = cluster
    primary = c.primary()
    with writing(c, "s5") as w:
        c.lab.kill_host("w")
        killed = now()
        acked_by_soon(c, w, primary, killed + 3.0)
        assert c.primary() == primary
        assert c.lab.status(primary)["sync_standby"] == c.other(primary)
        c.lab.spawn("w", "witness", STRONGROOM, "witness", "--data-dir", str(c.lab.data_dir("w")))
        wait_for("the witness back", c.healthy, 60)
    failed_after = [r for r in w.records if r["start"] > killed and not r["acked"]]
    assert not failed_after, f"writes failed while only the witness was down: {failed_after[:3]}"
    check_outcome(c, w)


def audit_ips(c: Cluster, names: list[str]) -> set[str]:
    """The source addresses of the audit rows that added these resources."""
    quoted = ",".join(f"'{n}'" for n in names)
    sql = "SELECT source_ip FROM audit_log WHERE operation = 'add resource' AND target IN "
    rows = c.lab.psql(c.primary(), f"{sql}({quoted})")
    return set(rows.split())


def test_6_planned_switchover_and_back_fails_no_write_and_loses_nothing(cluster: Cluster) -> None:
    c = cluster
    first = c.primary()
    second = c.other(first)
    with writing(c, "s6") as w, browsing(c, "s6web") as web:
        acked_by_soon(c, w, first, now())
        # A second client writes straight to the old primary's own address.
        with writing(c, "s6direct", host=first) as direct:
            acked_by_soon(c, direct, first, now())
            out = c.lab.cli(first, "cluster", "switchover", "--to", second)
            assert f"{second} is the primary now" in out.stdout
            acked_by_soon(c, w, second, now())
            wait_for("the old primary synchronous standby", c.healthy, 120)
        c.lab.cli(second, "cluster", "switchover")
        acked_by_soon(c, w, first, now())
        wait_for("healthy again", c.healthy, 120)
    # Through the VIP, every attempt was acknowledged: held while the nodes changed roles,
    # relayed by the old primary, or answered by the new one after the VIP moved.
    failed = [r for r in w.records if not r["acked"]]
    assert not failed, f"{len(failed)} of {len(w.records)} writes failed, e.g. {failed[:3]}"
    assert any(r["via"] == first and r["node"] == second for r in w.acked), "none was relayed"
    check_outcome(c, w)
    # A browser session (cookie and XSRF form posts) fared the same.
    failed = [r for r in web.records if not r["acked"]]
    assert web.acked and not failed, f"{len(failed)} form posts failed, e.g. {failed[:3]}"
    check_outcome(c, web)
    # Straight to the old primary: served by it, then held and relayed to the new primary,
    # then (once it is a standby) refused with a clear 503; never a timeout or an error.
    relayed = [r for r in direct.acked if r["node"] == second]
    assert relayed and all(r["via"] == first for r in relayed)
    refused = [r for r in direct.records if not r["acked"]]
    assert all(r.get("status") == 503 for r in refused), [r for r in refused if "error" in r][:3]
    assert all(r["start"] > max(a["start"] for a in relayed) for r in refused)
    # The new primary audited the client's own address, not the relaying node's.
    assert audit_ips(c, [r["name"] for r in relayed]) == {c.lab.addr("client")}
    check_outcome(c, direct)


def test_6b_a_forwarding_header_from_a_non_member_is_not_believed(cluster: Cluster) -> None:
    c = cluster
    primary = c.primary()
    forged = {"X-Forwarded-For": "203.0.113.7", "X-Strongroom-Forwarded-By": c.other(primary)}
    with writing(c, "s6b", headers=forged) as w:
        acked_by_soon(c, w, primary, now())
    assert all(r["node"] == primary and not r["via"] for r in w.acked)
    assert audit_ips(c, [r["name"] for r in w.acked]) == {c.lab.addr("client")}
    check_outcome(c, w)


def test_2_the_primary_host_crashes_the_standby_takes_over(cluster: Cluster) -> None:
    c = cluster
    old, new = c.primary(), c.other(c.primary())
    # A user logged in before the crash ...
    cookies = admin_session(c)
    with writing(c, "s2") as w:
        acked_by_soon(c, w, old, now())
        c.lab.kill_host(old)
        c.lab.link(old, False)
        crashed = now()
        acked_by_soon(c, w, new, crashed)
        assert c.lab.holds_vip(new)  # the crashed host's namespace keeps its old address
        # ... is still logged in on the new primary.
        assert session(c, "check", str(cookies)).split()[0] == "200"
        c.lab.link(old, True)
        c.lab.serve(old)
        wait_for("the old primary back as standby", c.healthy, 120)
    assert c.primary() == new
    check_outcome(c, w)


def test_2b_only_the_node_process_dies_and_returns_as_standby(cluster: Cluster) -> None:
    c = cluster
    old, new = c.primary(), c.other(c.primary())
    with writing(c, "s2b") as w:
        acked_by_soon(c, w, old, now())
        c.lab.kill_node_process(old)
        # What the systemd unit does: ExecStopPost releases the VIP; Restart restarts.
        c.lab.cli(old, "vip", "release")
        acked_by_soon(c, w, new, now())
        c.lab.serve(old)
        wait_for("the old primary back as standby", c.healthy, 120)
    assert c.primary() == new
    check_outcome(c, w)


def test_3_a_cut_off_primary_stops_writes_and_rejoins_after_the_heal(cluster: Cluster) -> None:
    c = cluster
    old, new = c.primary(), c.other(c.primary())
    with writing(c, "s3") as w:
        acked_by_soon(c, w, old, now())
        c.lab.link(old, False)
        wait_for("the cut-off primary fenced", lambda: c.lab.status(old)["role"] == "fenced", 30)
        assert not c.lab.holds_vip(old)
        acked_by_soon(c, w, new, now())
        c.lab.link(old, True)
        wait_for("the old primary rewound and synchronous", c.healthy, 120)
    assert c.primary() == new
    check_outcome(c, w)


def test_7_a_survivor_of_two_losses_accepts_no_writes(cluster: Cluster) -> None:
    c = cluster
    survivor, standby = c.primary(), c.other(c.primary())
    with writing(c, "s7") as w:
        acked_by_soon(c, w, survivor, now())
        c.lab.kill_host(standby)
        c.lab.kill_host("w")
        wait_for("the survivor fenced", lambda: c.lab.status(survivor)["role"] == "fenced", 30)
        fenced = now()
        assert c.lab.vip_holders() == []
        time.sleep(2.0)
        restored = now()
        c.lab.spawn("w", "witness", STRONGROOM, "witness", "--data-dir", str(c.lab.data_dir("w")))
        c.lab.serve(standby)
        wait_for("the cluster back", c.healthy, 120)
        acked_by_soon(c, w, c.primary(), now())
    late = [r for r in w.acked if fenced < r["start"] and r["end"] < restored]
    assert not late, f"writes acknowledged while only one member was up: {late[:3]}"
    check_outcome(c, w)
