"""Failover benchmark: ten crashes of the primary's host under write load.

Builds the test cluster on network-namespace hosts (n1, n2, witness, client; see
tests/cluster/netns.py), then ten times: a writer in the client namespace writes through
the VIP without pause, the primary's host crashes (every process killed, then its link
down), and the script measures the time from the crash to the first write acknowledged by
the new primary through the VIP, and counts acknowledged writes missing on the new
primary. The crashed host then comes back as a standby before the next run.

    sudo .venv/bin/python bench/failover.py [--runs 10]

Run as root on Linux (it makes network namespaces); results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster.netns import Lab, reachable_dir, sweep, wait_for  # noqa: E402
from tests.cluster.test_failover import Cluster, form, writing  # noqa: E402


def one_run(c: Cluster, n: int) -> tuple[float, int, str, str]:
    old = c.primary()
    new = c.other(old)
    with writing(c, f"bench{n}") as w:
        out = c.lab.base / f"{w.prefix}.jsonl"
        wait_for(
            "writes before the crash", lambda: out.exists() and '"acked": true' in out.read_text()
        )
        crashed = time.monotonic()
        c.lab.kill_host(old)
        c.lab.link(old, False)

        def resumed() -> bool:
            for line in out.read_text().splitlines():
                r = json.loads(line)
                if r["acked"] and r["node"] == new and r["start"] > crashed:
                    return True
            return False

        wait_for("the first write on the new primary", resumed, 120)
    first = min(r["end"] for r in w.acked if r["node"] == new and r["start"] > crashed)
    rows = c.lab.psql(new, f"SELECT name FROM resources WHERE name LIKE '{w.prefix}-%'")
    present = set(rows.split())
    lost = sum(1 for r in w.acked if r["name"] not in present)
    c.lab.link(old, True)
    c.lab.serve(old)
    wait_for("the old primary back as standby", c.healthy, 180)
    return first - crashed, lost, old, new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark makes network namespaces", file=sys.stderr)
        return 2
    sweep()
    lab = Lab(reachable_dir("failover")).up()
    results: list[tuple[float, int, str, str]] = []
    try:
        cluster = form(lab)
        for n in range(1, args.runs + 1):
            secs, lost, old, new = one_run(cluster, n)
            results.append((secs, lost, old, new))
            print(f"run {n:2d}: {old} crashed -> {new} acknowledged a write after "
                  f"{secs:5.2f} s; acknowledged writes lost: {lost}", flush=True)  # fmt: skip
    finally:
        lab.down()
    times = [r[0] for r in results]
    print()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    median = statistics.median(times)
    print(f"crash -> first acknowledged write through the VIP: median {median:.2f} s, "
          f"max {max(times):.2f} s over {len(times)} runs")  # fmt: skip
    print(f"acknowledged writes lost: {sum(r[1] for r in results)}")
    print("reference (published, not measured here): Patroni defaults ~30 s "
          "(ttl 30, loop_wait 10); keepalived VIP move ~3.6 s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
