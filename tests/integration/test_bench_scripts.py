"""The benchmarks in bench/ still run end to end (briefly): the figures they print are not
checked, only that they complete and what they verify along the way."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import ROOT


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_the_retrieval_benchmark_finds_one_audit_row_per_fetch() -> None:
    # A real node (`strongroom serve`) fetched from by concurrent HTTPS clients: with the
    # Python clients, which finish every request they send, the script fails unless every
    # successful fetch left exactly one "view password" audit row.
    out = _run(
        "bench/retrieval.py", "--client", "python",
        "--clients", "6", "--procs", "2", "--seconds", "1", "--warmup", "0.5",
        "--rounds", "2", "--resources", "2", "--accounts", "2",
    )  # fmt: skip
    counts = re.findall(r"written during its runs: (\d+) for (\d+) successful fetches", out)
    assert len(counts) == 1 and counts[0][0] == counts[0][1] and int(counts[0][0]) > 0
    assert len(re.findall(r"^[12] +(node|bare) ", out, re.MULTILINE)) == 4  # two rounds


def test_the_retrieval_benchmark_with_wrk() -> None:
    # wrk (make test installs it) drops the requests in flight when its time is up: at
    # least one audit row per successful fetch, at most one more per connection and run.
    out = _run(
        "bench/retrieval.py", "--client", "wrk",
        "--clients", "6", "--seconds", "1", "--warmup", "1",
        "--rounds", "1", "--resources", "2", "--accounts", "2",
    )  # fmt: skip
    assert "connections from wrk" in out
    [(rows, fetched, allowed)] = re.findall(
        r"written during its runs: (\d+) for (\d+) successful fetches .*up to (\d+) more", out
    )
    assert int(fetched) > 0 and int(fetched) <= int(rows) <= int(fetched) + int(allowed)
    assert int(allowed) == 12  # 6 connections, a warm-up and a measured run
    rows_of_round = re.findall(r"^1 +(node|bare) +(\d+) ", out, re.MULTILINE)
    assert [name for name, _ in rows_of_round] == ["node", "bare"]
    assert all(int(rps) > 0 for _, rps in rows_of_round)


def test_the_gil_benchmark_prints_every_case() -> None:
    out = _run("bench/gil_handoff.py", "--reads", "500", "--rounds", "1")
    for case in (
        "reads alone (reference)",
        "writer thread, a step per row",
        "writer thread, multi-row INSERT",
        "writer process, a step per row",
    ):
        assert re.search(rf"^{re.escape(case)} +\d", out, re.MULTILINE), out


def test_the_handler_cost_benchmark_finds_one_audit_row_per_fetch() -> None:
    # The real application in-process, fetches handed to its router: the script fails
    # unless the writer process wrote exactly one audit row per fetch.
    for writer in ("process", "thread"):
        out = _run(
            "bench/handler_cost.py", "--requests", "320", "--rounds", "1", "--writer", writer
        )
        assert "audit rows written during the rounds: 320 for 320 fetches" in out
        assert len(re.findall(r"^1 +(api|bare) ", out, re.MULTILINE)) == 2
