"""What a writer thread beside the event loop costs its SQLite point reads (the GIL hand-over).

A node's event-loop thread runs the REST API's point reads (``Store.reading``) while the
store's committer thread writes the audit rows of the group commit. Both call into SQLite,
and Python's sqlite3 module gives the GIL up around every call into the library and takes
it back after. This measures, in one run on one SQLite file in WAL mode with
``synchronous=FULL`` (as the node's):

1. the reference: point reads by primary key on a read-only connection, nothing else running;
2. the same reads while a *thread* of the same process commits small batches (a BEGIN
   IMMEDIATE, a multi-row INSERT, a COMMIT, in a loop);
3. the same reads while a separate *process* does exactly the same writes.

and prints the wall time and the reading thread's CPU time per read (medians of rounds in
which the cases take turns). The thread writes its rows either one statement step per row
(``executemany``) or as one multi-row INSERT; the process writes a step per row. If the
thread costs the reads more than the process doing the same writes, the cost is the GIL
changing hands, not SQLite's locking.

    .venv/bin/python bench/gil_handoff.py            # 7 rounds of 20,000 reads per case
    .venv/bin/python bench/gil_handoff.py --rounds 15

Timings are printed, never asserted. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROWS = 1000
BATCH = 5  # audit rows per group commit, about what bench/retrieval.py sees


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT, secret BLOB)")
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT, what TEXT)")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?, ?)",
        [(i, f"account-{i}", bytes(64)) for i in range(ROWS)],
    )
    conn.close()


def write_batches(path: str, stop: Any, batches: Any, per_row: bool) -> None:
    """Commit BATCH-row inserts in a loop until ``stop`` is set (a thread or a process):
    one multi-row INSERT per commit, or (``per_row``) one statement step per row."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=FULL")
    rows = [("2026-11-30 09:00:00.000000", f"view {i}") for i in range(BATCH)]
    values = ", ".join(["(?, ?)"] * BATCH)
    flat = [x for row in rows for x in row]
    done = 0
    while not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        if per_row:
            conn.executemany("INSERT INTO audit (at, what) VALUES (?, ?)", rows)
        else:
            conn.execute(f"INSERT INTO audit (at, what) VALUES {values}", flat)  # noqa: S608
        conn.execute("COMMIT")
        done += 1
    conn.close()
    batches.value = done


def read(path: str, reads: int) -> tuple[float, float]:
    """Microseconds of wall time and of this thread's CPU time per point read."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    cur = conn.cursor()
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for i in range(reads):
        cur.execute("SELECT name, secret FROM accounts WHERE id = ?", (i % ROWS,))
        cur.fetchall()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    conn.close()
    return 1e6 * wall / reads, 1e6 * cpu / reads


def with_writer(path: str, reads: int, kind: str, per_row: bool) -> tuple[float, float, float]:
    """Reads while a writer thread or process runs; also the writer's commits per second."""
    ctx = mp.get_context("fork")
    stop = ctx.Event() if kind == "process" else threading.Event()
    batches = ctx.Value("q", 0)
    writer: threading.Thread | mp.process.BaseProcess
    if kind == "process":
        writer = ctx.Process(target=write_batches, args=(path, stop, batches, per_row))
    else:
        writer = threading.Thread(target=write_batches, args=(path, stop, batches, per_row))
    writer.start()
    time.sleep(0.2)  # the writer is committing
    start = time.perf_counter()
    wall, cpu = read(path, reads)
    elapsed = time.perf_counter() - start
    stop.set()
    writer.join()
    return wall, cpu, batches.value / (elapsed + 0.2)


def machine() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    return f"{platform.machine()}, {os.cpu_count()} CPUs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    names = [
        "reads alone (reference)",
        "writer thread, a step per row",
        "writer thread, multi-row INSERT",
        "writer process, a step per row",
    ]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="sr-gil-") as tmp:
        path = str(Path(tmp) / "bench.db")
        make_db(Path(path))
        read(path, 2000)  # warm the page cache
        for _ in range(args.rounds):  # the cases interleaved, so a slow spell hits them all
            results[names[0]].append((*read(path, args.reads), 0.0))
            results[names[1]].append(with_writer(path, args.reads, "thread", True))
            results[names[2]].append(with_writer(path, args.reads, "thread", False))
            results[names[3]].append(with_writer(path, args.reads, "process", True))
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {machine()}")
    print(
        f"{args.reads} point reads per case and round, {args.rounds} rounds; "
        f"writer: {BATCH} rows + COMMIT in a loop; medians (min-max of the wall time)"
    )
    print(f"{'case':<34} {'wall us/read':>20} {'CPU us/read':>12} {'vs reference':>13}")
    reference = statistics.median(r[0] for r in results[names[0]])
    for name in names:
        walls = [r[0] for r in results[name]]
        wall = statistics.median(walls)
        cpu = statistics.median(r[1] for r in results[name])
        spread = f"{wall:.1f} ({min(walls):.1f}-{max(walls):.1f})"
        print(f"{name:<34} {spread:>20} {cpu:>12.1f} {wall / reference:>12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
