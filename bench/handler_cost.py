"""What the REST API's audited password fetch costs the event loop, without sockets, TLS or
HTTP parsing, beside a bare handler in the same run.

bench/retrieval.py measures the whole path through real HTTPS connections, where TLS, the
kernel and the clients (on the same CPUs) blur what the application itself costs. This runs
the real application in-process, as ``strongroom serve`` assembles it (SQLite vault in a
temporary data directory, access log to a file, the start-up heap frozen, the audit writer
process), and hands its router ``GET /restapi/json/v1/resources/{rid}/accounts/{aid}/password``
requests directly, ``--concurrency`` at a time on one event loop, each awaited until its
answer is finished (that is: until its audit row is committed). The reference is a bare
Tornado handler answering a fixed JSON body through the same harness. Per round it prints
requests per second and the event loop thread's CPU time per request (``time.thread_time``:
the cost that limits a node), then the medians; at the end it checks that the vault wrote
exactly one audit row per fetch.

    .venv/bin/python bench/handler_cost.py                          # 3 rounds of 6,400
    .venv/bin/python bench/handler_cost.py --writer thread          # the in-process committer
    .venv/bin/python bench/handler_cost.py --no-access-log          # what the access line costs

Timings are printed, never asserted. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import tornado.web
from sqlalchemy import func, select
from tornado import httputil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.logs import setup_logging  # noqa: E402
from appliance.server import assemble, settle_heap, start_reveal_writer  # noqa: E402
from node.roles import Role  # noqa: E402
from node.settings import load_settings  # noqa: E402
from node.store.models import AuditRow  # noqa: E402
from node.vault import NewAccount, NewResource  # noqa: E402
from web.app import make_app  # noqa: E402

BODY = (
    '{"operation": {"name": "GET PASSWORD", "result": {"status": "Success", "message": '
    '"Password fetched successfully"}, "Details": {"PASSWORD": "Secret-pass-0!"}}}'
)


class Bare(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(BODY)


class _Context:
    remote_ip = "127.0.0.1"
    protocol = "https"
    trusted_downstream = None


class Connection(httputil.HTTPConnection):
    """Takes the answer in place of a socket: the status is kept, the bytes dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.context = _Context()
        self.status = 0
        self.finished: asyncio.Future[None] = loop.create_future()

    def _done(self) -> asyncio.Future[None]:
        future = self.loop.create_future()
        future.set_result(None)
        return future

    def set_close_callback(self, callback: Any) -> None:
        pass

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.status = start_line.code
        return self._done()

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        return self._done()

    def finish(self) -> None:
        self.finished.set_result(None)


async def fetch(app: tornado.web.Application, path: str, headers: dict[str, str]) -> None:
    conn = Connection(asyncio.get_running_loop())
    request = httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", path, "HTTP/1.1"),
        headers=httputil.HTTPHeaders(headers),
        connection=conn,
    )
    delegate = app.find_handler(request)
    result = delegate.execute()
    if isinstance(result, Awaitable):
        await result
    await conn.finished
    if conn.status != 200:
        raise SystemExit(f"GET {path}: {conn.status}")


async def run(fetch_one: Callable[[int], Awaitable[None]], requests: int, concurrency: int) -> None:
    async def client(k: int) -> None:
        for i in range(k, requests, concurrency):
            await fetch_one(i)

    await asyncio.gather(*(client(k) for k in range(concurrency)))


async def measure(
    fetch_one: Callable[[int], Awaitable[None]], requests: int, concurrency: int
) -> tuple[float, float]:
    """Requests per second and the event loop thread's CPU microseconds per request."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    await run(fetch_one, requests, concurrency)
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    return requests / wall, 1e6 * cpu / requests


async def bench(args: argparse.Namespace, tmp: Path) -> int:
    setup_logging("INFO", tmp / "node.log")
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp / "data")})
    node = assemble(settings)
    services = node.services
    issued = services.api_tokens.add_api_user("bench", Role.PASSWORD_ADMINISTRATOR, "admin", "::1")
    user = services.api_tokens.authenticate(issued.token)
    assert user is not None
    paths = []
    for r in range(args.resources):
        made = services.vault.create_resource(
            user, "::1", NewResource(name=f"host-{r}"), NewAccount("root", f"Secret-pass-{r}!")
        )
        paths.append(
            f"/restapi/json/v1/resources/{made.resource_id}/accounts/{made.account_id}/password"
        )
    loop = asyncio.get_running_loop()
    writer = None  # "thread": the vault keeps the store's committer thread
    if args.writer == "process":
        writer = start_reveal_writer(settings, node.keyring, services, loop)
    app = make_app(services, node.executor)
    if args.no_access_log:
        app.settings["log_function"] = lambda _handler: None
    bare = tornado.web.Application([(r"/bare", Bare)], log_function=lambda _handler: None)
    settle_heap()
    api_headers = {"Host": "localhost", "AUTHTOKEN": issued.token}

    async def api_fetch(i: int) -> None:
        await fetch(app, paths[i % len(paths)], api_headers)

    async def bare_fetch(_i: int) -> None:
        await fetch(bare, "/bare", {"Host": "localhost"})

    await run(api_fetch, args.requests // 10, args.concurrency)  # warm-up
    await run(bare_fetch, args.requests // 10, args.concurrency)
    with services.store.sessions() as s:
        before = s.scalar(select(func.count()).select_from(AuditRow))
    rows: dict[str, list[tuple[float, float]]] = {"api": [], "bare": []}
    for n in range(args.rounds):  # the two take turns, first one then the other
        order = [("api", api_fetch), ("bare", bare_fetch)]
        for name, one in order if n % 2 == 0 else order[::-1]:
            rows[name].append(await measure(one, args.requests, args.concurrency))
    with services.store.sessions() as s:
        after = s.scalar(select(func.count()).select_from(AuditRow))
    if writer is not None:
        writer.close()
    node.executor.shutdown(wait=True)
    node.store.dispose()

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(
        f"{args.requests} requests per endpoint and round, {args.concurrency} at a time, "
        f"{args.rounds} rounds; audit writer: {args.writer}; access log: "
        f"{'off' if args.no_access_log else 'on (to a file)'}"
    )
    print(f"{'round':<6} {'endpoint':<8} {'req/s':>8} {'loop CPU us/request':>20}")
    for n in range(args.rounds):
        for name in ("api", "bare"):
            rps, cpu = rows[name][n]
            print(f"{n + 1:<6} {name:<8} {rps:>8.0f} {cpu:>20.0f}")
    api_cpu = statistics.median(c for _, c in rows["api"])
    bare_cpu = statistics.median(c for _, c in rows["bare"])
    api_rps = statistics.median(r for r, _ in rows["api"])
    bare_rps = statistics.median(r for r, _ in rows["bare"])
    print(
        f"medians: api {api_rps:.0f} req/s, {api_cpu:.0f} us of loop CPU per request; "
        f"bare {bare_rps:.0f} req/s, {bare_cpu:.0f} us; "
        f"loop CPU bare / api {bare_cpu / api_cpu:.2f}"
    )
    fetched = args.requests * args.rounds
    print(f"audit rows written during the rounds: {after - before} for {fetched} fetches")
    if after - before != fetched:
        print("ERROR: audit rows do not match the fetches", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6400, help="per endpoint and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resources", type=int, default=5)
    parser.add_argument(
        "--writer",
        choices=("process", "thread"),
        default="process",
        help="audit rows by the writer process (as strongroom serve) or the committer thread",
    )
    parser.add_argument("--no-access-log", action="store_true", help="no access log lines")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sr-handler-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
