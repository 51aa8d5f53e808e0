"""The VIP hand-off of a planned switchover (cluster/vip.py ``IpVip.hand_off``), on a
network-namespace host with a real address, a real listening socket and real nftables:
new connections are dropped (so clients retry and reach the next holder), open ones may
finish, then the address goes; a stale drop rule never outlives a hand-off."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.netns import Lab, reachable_dir, sweep

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SCRIPT = r"""
import json, socket, subprocess, sys, threading, time
from cluster.vip import NFT_TABLE, IpVip, open_connections

def nft(script):
    return subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)

vip_addr, port = sys.argv[1], 7272
vip = IpVip(vip_addr + "/24", "eth0")
server = socket.create_server(("0.0.0.0", port))
held = []
def serve():
    while True:
        conn, _ = server.accept()
        held.append(conn)  # an open connection, its request still being served
threading.Thread(target=serve, daemon=True).start()
out = {}

# A drop rule left behind by a hand-off cut short does not survive taking the VIP.
stale = (
    f"table inet {NFT_TABLE} {{\n chain input {{\n"
    f" type filter hook input priority -10;\n tcp dport {port} drop\n }}\n}}\n"
)
assert nft(stale).returncode == 0
vip.add()
socket.create_connection((vip_addr, port), timeout=1).close()
out["stale_rule_cleared"] = True

# One open connection; the hand-off waits for it, and a new one meanwhile is dropped.
client = socket.create_connection((vip_addr, port), timeout=1)
time.sleep(0.1)
out["open_before"] = open_connections(vip_addr, port)
result = {}
worker = threading.Thread(target=lambda: result.update(cut=vip.hand_off(port, 5.0)))
worker.start()
time.sleep(0.3)
try:
    socket.create_connection((vip_addr, port), timeout=0.5)
    out["new_connection"] = "accepted"
except TimeoutError:
    out["new_connection"] = "dropped"
except OSError as exc:
    out["new_connection"] = type(exc).__name__
out["held_during_drain"] = vip.held()
client.close()
for conn in held:
    conn.close()
worker.join(10)
out["cut"] = result.get("cut")
out["held_after"] = vip.held()
listed = subprocess.run(["nft", "list", "table", "inet", NFT_TABLE], capture_output=True)
out["rule_left"] = listed.returncode == 0

# Nothing finishes: the hand-off gives up after the drain time and says what it cut.
vip.add()
idle = socket.create_connection((vip_addr, port), timeout=1)
time.sleep(0.1)
out["cut_idle"] = vip.hand_off(port, 0.3)
out["held_at_end"] = vip.held()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    assert os.geteuid() == 0, "this test makes network namespaces: run it as root"
    if shutil.which("nft") is None:
        pytest.fail("nft is missing: appliance/provision/system-deps.sh test installs nftables")
    sweep()
    lab = Lab(reachable_dir("vip")).up()
    try:
        yield lab
    finally:
        lab.down()


def test_hand_off_drops_new_connections_lets_open_ones_finish_then_releases(lab: Lab) -> None:
    python = str(Path(sys.executable))
    proc = lab.run_in("n1", python, "-c", SCRIPT, lab.vip, timeout=60)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stale_rule_cleared"] is True
    assert out["open_before"] == 1
    # During the drain the address is still here, but a new connection gets no answer
    # at all (not a refusal): its client sends the SYN again and reaches the next holder.
    assert out["new_connection"] == "dropped"
    assert out["held_during_drain"] is True
    # The open connection finished, so nothing was cut; the address and the rule are gone.
    assert out["cut"] == 0
    assert out["held_after"] is False
    assert out["rule_left"] is False
    # A connection that never finishes is cut after the drain time, and counted.
    assert out["cut_idle"] == 1
    assert out["held_at_end"] is False
