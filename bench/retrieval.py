"""Password retrieval throughput through the REST API, beside a bare Tornado TLS endpoint.

What it does, in one run on one machine:

1. starts a real node (``strongroom serve``) in a temporary data directory, adds an API user
   with ``strongroom apiuser add`` and, through the API, resources with accounts;
2. starts a bare Tornado HTTPS server (same certificate, one process, a handler that
   answers a fixed JSON body of the same size) as the reference;
3. runs ``--clients`` concurrent keep-alive HTTPS connections against each for
   ``--seconds``: API clients fetch the password of a random account (GET .../password,
   every fetch audited), bare clients GET the endpoint; in ``--rounds`` rounds, the
   endpoints taking turns in an order that alternates, so a slow spell of the (shared)
   machine does not fall on one of them only;
4. checks that the vault wrote an audit row for every successful fetch (exactly one each,
   see below), and prints requests/s, p50 and p99 for both in each round, the ratio, and
   the medians.

The clients (``--client``): ``wrk`` (Debian's package, C, two threads: the default when
it is installed) or ``python`` (threads with ``http.client`` spread over ``--procs``
processes). The clients share the machine's CPUs with the servers; Python clients spend
several times wrk's CPU per request, which a loaded machine takes from the node (docs/
benchmarks.md). The Python clients finish every request they send, so the audit rows must
equal the successful fetches; wrk drops the requests in flight when its time is up, which
the node may still have answered, so there up to one row per connection and wrk run more
is allowed (never fewer).

``--source DIR`` runs the node from another source tree (``git archive COMMIT | tar -x -C
DIR``); ``--compare DIR`` runs a second node from DIR in the same rounds, to compare two
versions under the same conditions.

    .venv/bin/python bench/retrieval.py                      # 32 clients, 3 rounds of 10 s
    .venv/bin/python bench/retrieval.py --clients 8 --seconds 5 --rounds 1
    .venv/bin/python bench/retrieval.py --compare /tmp/before --seconds 6 --rounds 4

Timings are printed, never asserted. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STRONGROOM = str(Path(sys.executable).with_name("strongroom"))
API = "/restapi/json/v1"
WRK = shutil.which("wrk")
WRK_SCRIPT = Path(__file__).with_name("retrieval_wrk.lua")
WRK_THREADS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the node's self-signed certificate, on loopback
    return ctx


# --- the bare reference endpoint ---------------------------------------------------------


def run_bare_server(port: int, cert: str, key: str, body_size: int) -> None:
    """A minimal Tornado HTTPS server: one handler, a fixed JSON body (``--bare-server``)."""
    import asyncio

    import tornado.httpserver
    import tornado.web

    body = json.dumps(
        {
            "operation": {
                "name": "GET PASSWORD",
                "result": {"status": "Success", "message": "Password fetched successfully"},
                "Details": {"PASSWORD": "x" * max(1, body_size - 130)},
            }
        }
    )

    class Bare(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(body)

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        server = tornado.httpserver.HTTPServer(
            tornado.web.Application([(r"/bare", Bare)]), ssl_options=ctx
        )
        server.listen(port, "127.0.0.1")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    asyncio.run(main())


# --- load generation -----------------------------------------------------------------------


@dataclass
class Target:
    port: int
    paths: list[str]
    headers: dict[str, str]


def _client_thread(
    target: Target,
    warmup_until: float,
    stop_at: float,
    out: list[float],
    errors: list[int],
    total_ok: list[int],
) -> None:
    rnd = random.Random()  # noqa: S311 - picking accounts, not secrets
    conn = http.client.HTTPSConnection(
        "127.0.0.1", target.port, context=client_context(), timeout=30
    )
    while True:
        path = rnd.choice(target.paths)
        start = time.perf_counter()
        if start >= stop_at:
            break
        try:
            conn.request("GET", path, headers=target.headers)
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPSConnection(
                "127.0.0.1", target.port, context=client_context(), timeout=30
            )
            ok = False
        end = time.perf_counter()
        if ok:
            total_ok.append(1)
        if start >= warmup_until:
            if ok:
                out.append(end - start)
            else:
                errors.append(1)
    conn.close()


def _client_process(
    target: Target, threads: int, warmup_until: float, stop_at: float, queue: Any
) -> None:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[int] = []
    total_ok: list[int] = []
    workers = [
        threading.Thread(
            target=_client_thread,
            args=(target, warmup_until, stop_at, latencies[i], errors, total_ok),
        )
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(([x for lat in latencies for x in lat], len(errors), len(total_ok)))


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    total_ok: int  # successful requests, warm-up included
    server_cpu_s: float = 0.0  # CPU time the server used over the whole run
    left_in_flight: int = 0  # at most this many requests were dropped unanswered (wrk)
    changes: list[float] = field(default_factory=list)  # --changers: their latencies, ms
    change_errors: int = 0
    change_seconds: float = 0.0  # how long they ran (warm-up included)

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / max(1, self.total_ok)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and of its living children (Linux /proc: the
    node's audit writer process), to compare the server's cost per request in a way that a
    busy machine distorts less than requests per second."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat(int(entry.name))
        except OSError:
            continue  # exited meanwhile
        if int(entry.name) == pid or int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(
    name: str, target: Target, clients: int, procs: int, seconds: float, warmup: float
) -> Result:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    now = time.perf_counter()
    warmup_until = now + warmup + 0.5
    stop_at = warmup_until + seconds
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    children = [
        ctx.Process(target=_client_process, args=(target, n, warmup_until, stop_at, queue))
        for n in shares
    ]
    for c in children:
        c.start()
    latencies: list[float] = []
    errors = 0
    total_ok = 0
    for _ in children:
        lat, err, ok = queue.get()
        latencies.extend(lat)
        errors += err
        total_ok += ok
    for c in children:
        c.join()
    latencies.sort()
    if not latencies:
        raise SystemExit(f"{name}: no successful request")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return Result(name, len(latencies), errors, seconds, 1000 * q[49], 1000 * q[98], total_ok)


_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkRun:
    ok: int  # responses with a 2xx status
    errors: int  # other statuses and socket errors
    seconds: float
    p50_ms: float
    p99_ms: float


def _wrk_ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise SystemExit(f"wrk printed a latency this script cannot read: {text}")
    return float(found.group(1)) * _TO_MS[found.group(2)]


def run_wrk(target: Target, connections: int, seconds: float) -> WrkRun:
    """One wrk run of whole ``seconds`` (at least one) against ``target``."""
    assert WRK is not None
    with tempfile.NamedTemporaryFile("w", suffix=".paths") as paths:
        paths.write("\n".join(target.paths) + "\n")
        paths.flush()
        env = {
            **os.environ,
            "SR_PATHS": paths.name,
            "SR_TOKEN": target.headers.get("AUTHTOKEN", ""),
        }
        done = subprocess.run(
            [WRK, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s"]
            + ["--latency", "-s", str(WRK_SCRIPT), f"https://127.0.0.1:{target.port}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    out = done.stdout
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", out, re.MULTILINE)
    if done.returncode != 0 or total is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    other = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    bad = int(other.group(1)) if other else 0
    requests = int(total.group(1))
    return WrkRun(
        ok=requests - bad,
        errors=bad + (sum(int(n) for n in sockets.groups()) if sockets else 0),
        seconds=_wrk_ms(total.group(2) + total.group(3)) / 1000,
        p50_ms=_wrk_ms(latency["50"]),
        p99_ms=_wrk_ms(latency["99"]),
    )


def measure_wrk(
    name: str, target: Target, connections: int, seconds: float, warmup: float
) -> Result:
    warm = run_wrk(target, connections, warmup) if warmup > 0 else None
    run = run_wrk(target, connections, seconds)
    runs = 2 if warm is not None else 1
    return Result(
        name,
        run.ok,
        run.errors,
        run.seconds,
        run.p50_ms,
        run.p99_ms,
        run.ok + (warm.ok if warm is not None else 0),
        left_in_flight=connections * runs,
    )


# --- the node under test ---------------------------------------------------------------------


def strongroom(source: Path | None) -> tuple[list[str], dict[str, str]]:
    """How to run the CLI: the installed one, or the code of another source tree (to compare
    versions: ``git archive COMMIT | tar -x -C DIR``, then ``--source DIR``)."""
    if source is None:
        return [STRONGROOM], dict(os.environ)
    code = (
        "import sys; from appliance.cli import main; sys.argv[0] = 'strongroom'; sys.exit(main())"
    )
    # -P: do not put the current directory first on sys.path, so PYTHONPATH's tree wins
    return [sys.executable, "-P", "-c", code], {**os.environ, "PYTHONPATH": str(source)}


def start_node(data: Path, port: int, source: Path | None = None) -> subprocess.Popen[bytes]:
    command, env = strongroom(source)
    proc = subprocess.Popen(
        [*command, "serve", "--data-dir", str(data), "--port", str(port), "--bind", "127.0.0.1"],
        stdout=(data.parent / "node.stdout").open("wb"),
        stderr=(data.parent / "node.stderr").open("wb"),
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"node exited: {(data.parent / 'node.stderr').read_text()[-2000:]}")
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context())
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.2)
    raise SystemExit("node did not become healthy")


def api_call(port: int, token: str, method: str, path: str, details: dict[str, Any]) -> Any:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context())
    data = json.dumps({"operation": {"Details": details}})
    headers = {"AUTHTOKEN": token}
    body = None
    if method == "GET":
        path += "?" + urllib.parse.urlencode({"INPUT_DATA": data})
    else:
        body = urllib.parse.urlencode({"INPUT_DATA": data})
        headers["Content-Type"] = "text/json"
    conn.request(method, API + path, body=body, headers=headers)
    resp = conn.getresponse()
    reply = json.loads(resp.read())
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"{method} {path}: {resp.status} {reply}")
    return reply["operation"]


def seed(port: int, token: str, resources: int, accounts: int) -> list[str]:
    paths = []
    for r in range(resources):
        name = f"bench-host-{r:03d}"
        api_call(
            port,
            token,
            "POST",
            "/resources",
            {"RESOURCENAME": name, "ACCOUNTNAME": "root", "PASSWORD": f"Root-{r}-pass!"},
        )
        rid = api_call(port, token, "GET", "/resources/resourcename/" + name, {})["Details"][
            "RESOURCEID"
        ]
        more = [
            {"ACCOUNTNAME": f"svc{a}", "PASSWORD": f"Svc-{r}-{a}-pass!"} for a in range(1, accounts)
        ]
        if more:
            api_call(port, token, "POST", f"/resources/{rid}/accounts", {"ACCOUNTLIST": more})
        detail = api_call(port, token, "GET", f"/resources/{rid}/accounts", {})["Details"]
        for account in detail["ACCOUNT LIST"]:
            paths.append(f"{API}/resources/{rid}/accounts/{account['ACCOUNT ID']}/password")
    return paths


def audited_views(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(
            "SELECT count(*) FROM audit_log WHERE operation = 'view password'"
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


@dataclass
class NodeUnderTest:
    """A node started for the run: its process, data, what the clients fetch."""

    label: str
    proc: subprocess.Popen[bytes]
    data: Path
    target: Target
    body_size: int
    results: list[Result]
    views_before: int = 0
    audited: int = 0  # 'view password' rows written during its runs


def start_seeded_node(label: str, data: Path, source: Path | None, args: Any) -> NodeUnderTest:
    data.mkdir()
    port = free_port()
    proc = start_node(data, port, source)
    command, env = strongroom(source)
    added = subprocess.run(
        [*command, "apiuser", "add", "bench", "--role", "password_administrator"]
        + ["--data-dir", str(data)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    token = added.stdout.strip().splitlines()[-1].strip()
    paths = seed(port, token, args.resources, args.accounts)
    sample = api_call(port, token, "GET", paths[0][len(API) :], {})
    node = NodeUnderTest(
        label,
        proc,
        data,
        Target(port, paths, {"AUTHTOKEN": token}),
        len(json.dumps({"operation": sample})),
        [],
    )
    node.views_before = audited_views(data / "strongroom.db")
    return node


class Changers:
    """``count`` clients changing passwords (PUT .../password, RESETTYPE LOCAL) one after
    another on keep-alive connections, beside the fetches (``--changers``): what else a node
    writes while it serves them. Their latencies are kept; none is retried."""

    def __init__(self, target: Target, count: int) -> None:
        self.target = target
        self.latencies_ms: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(count)
        ]

        self.seconds = 0.0

    def __enter__(self) -> Changers:
        self._started = time.perf_counter()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self.seconds = time.perf_counter() - self._started

    def _run(self, k: int) -> None:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.target.port, context=client_context(), timeout=60
        )
        headers = {**self.target.headers, "Content-Type": "application/x-www-form-urlencoded"}
        paths = self.target.paths
        n = 0
        while not self._stop.is_set():
            n += 1
            details = {
                "NEWPASSWORD": f"Changed-{k}-{n}-{random.random():.6f}!",
                "RESETTYPE": "LOCAL",
            }
            body = urllib.parse.urlencode(
                {"INPUT_DATA": json.dumps({"operation": {"Details": details}})}
            )
            started = time.perf_counter()
            try:
                conn.request("PUT", random.choice(paths), body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
            except OSError:
                self.errors += 1
                conn.close()
                continue
            if answer.status != 200:
                self.errors += 1
                continue
            self.latencies_ms.append(1000 * (time.perf_counter() - started))
        conn.close()


def measure_on(pid: int, name: str, target: Target, args: Any, changers: int = 0) -> Result:
    cpu0 = cpu_seconds(pid)
    with Changers(target, changers) as changing:
        if args.client == "wrk":
            result = measure_wrk(name, target, args.clients, args.seconds, args.warmup)
        else:
            result = measure(name, target, args.clients, args.procs, args.seconds, args.warmup)
    result.server_cpu_s = cpu_seconds(pid) - cpu0
    result.changes = sorted(changing.latencies_ms)
    result.change_errors = changing.errors
    result.change_seconds = changing.seconds
    return result


def percentile(ordered: list[float], p: float) -> float:
    """The ``p``-th percentile of the sorted, non-empty ``ordered`` (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if WRK is not None else "python",
        help="the load generator (default: wrk when it is installed)",
    )
    parser.add_argument("--procs", type=int, default=4, help="client processes (python)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint and round")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; the endpoints take turns in each"
    )
    parser.add_argument(
        "--changers",
        type=int,
        default=0,
        help="clients changing passwords through the API during the node's runs (default 0)",
    )
    parser.add_argument("--resources", type=int, default=20)
    parser.add_argument("--accounts", type=int, default=5, help="accounts per resource")
    parser.add_argument(
        "--source", type=Path, default=None, help="run the node from this source tree instead"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run a node from the source tree DIR, measured in the same rounds",
    )
    parser.add_argument("--bare-server", nargs=4, metavar=("PORT", "CERT", "KEY", "SIZE"))
    args = parser.parse_args()
    if args.client == "wrk" and WRK is None:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    if args.bare_server:
        port, cert, key, size = args.bare_server
        run_bare_server(int(port), cert, key, int(size))
        return 0

    nodes: list[NodeUnderTest] = []
    bare_results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        bare: subprocess.Popen[bytes] | None = None
        try:
            nodes.append(start_seeded_node("node", Path(tmp) / "node", args.source, args))
            if args.compare is not None:
                nodes.append(start_seeded_node("compared", Path(tmp) / "other", args.compare, args))
            bare_port = free_port()
            tls = nodes[0].data / "tls"
            bare = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--bare-server",
                    str(bare_port),
                    str(tls / "server.crt"),
                    str(tls / "server.key"),
                    str(nodes[0].body_size),
                ],
            )
            time.sleep(1.0)
            bare_target = Target(bare_port, ["/bare"], {})
            for round_no in range(args.rounds):
                # the endpoints take turns, in an order that alternates from round to round,
                # so a slow spell of the machine does not fall on one of them only
                turn: list[NodeUnderTest | None] = [*nodes, None]
                if round_no % 2:
                    turn.reverse()
                for node in turn:
                    if node is None:
                        bare_results.append(
                            measure_on(bare.pid, "bare Tornado TLS", bare_target, args)
                        )
                    else:
                        node.results.append(
                            measure_on(node.proc.pid, node.label, node.target, args, args.changers)
                        )
            for node in nodes:
                node.audited = audited_views(node.data / "strongroom.db") - node.views_before
        finally:
            for p in (bare, *(n.proc for n in nodes)):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)
    print(f"machine: {machine()}")
    print(
        f"python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    clients = (
        f"{args.clients} keep-alive HTTPS connections from wrk ({WRK_THREADS} threads)"
        if args.client == "wrk"
        else f"{args.clients} keep-alive HTTPS clients in {args.procs} Python processes"
    )
    print(
        f"{clients}, "
        f"{args.seconds:g} s per endpoint and round after {args.warmup:g} s warm-up, "
        f"{args.rounds} rounds, {len(nodes[0].target.paths)} accounts on {args.resources} "
        "resources, SQLite store"
    )
    names = {"node": f"REST API ({args.source or ROOT})"}
    if args.compare is not None:
        names["compared"] = f"REST API ({args.compare})"
    for node in nodes:
        print(f"{node.label}: {names[node.label]}, GET password, every fetch audited")
    print(
        f"{'round':<6} {'endpoint':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'server CPU ms/req':>18} {'ratio to bare':>14}"
    )
    for i, ref in enumerate(bare_results):
        for r in [n.results[i] for n in nodes] + [ref]:
            label = r.name if r is not ref else "bare"
            print(
                f"{i + 1:<6} {label:<10} {r.rps:>8.0f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} "
                f"{r.errors:>7} {r.cpu_ms_per_request:>18.2f} {r.rps / ref.rps:>14.2f}"
            )
    if args.changers:
        print(
            f"password changes by {args.changers} more clients during the node's runs "
            "(warm-up included):"
        )
        for i in range(len(bare_results)):
            for node in nodes:
                r = node.results[i]
                if r.changes:
                    rate = len(r.changes) / r.change_seconds
                    print(
                        f"{i + 1:<6} {r.name:<10} {rate:>8.1f} changes/s, "
                        f"p50 {percentile(r.changes, 50):.1f} ms, "
                        f"p99 {percentile(r.changes, 99):.1f} ms, errors {r.change_errors}"
                    )
                else:
                    print(f"{i + 1:<6} {r.name:<10} no change succeeded ({r.change_errors} errors)")
    print("medians over the rounds:")
    for node in nodes:
        ratios = [r.rps / ref.rps for r, ref in zip(node.results, bare_results, strict=True)]
        cpu = [
            ref.cpu_ms_per_request / r.cpu_ms_per_request
            for r, ref in zip(node.results, bare_results, strict=True)
        ]
        print(
            f"  {node.label}: {median([r.rps for r in node.results]):.0f} req/s, "
            f"p99 {median([r.p99_ms for r in node.results]):.1f} ms, "
            f"ratio API / bare {median(ratios):.2f} (per round: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f"); server CPU per request, bare / API: {median(cpu):.2f}"
        )
    print(
        f"  bare: {median([r.rps for r in bare_results]):.0f} req/s, "
        f"p99 {median([r.p99_ms for r in bare_results]):.1f} ms"
    )
    failed = False
    for node in nodes:
        fetched = sum(r.total_ok for r in node.results)
        dropped = sum(r.left_in_flight for r in node.results)
        also = f"; up to {dropped} more allowed: requests wrk dropped in flight" if dropped else ""
        print(
            f"{node.label}: audit rows 'view password' written during its runs: "
            f"{node.audited} for {fetched} successful fetches (warm-up included{also})"
        )
        if not fetched <= node.audited <= fetched + dropped:
            print(f"ERROR: {node.label}: audit rows do not match the fetches", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
