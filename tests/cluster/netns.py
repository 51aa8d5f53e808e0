"""Hosts made of network namespaces on a private bridge (TESTING.md), for the cluster tests
and bench/failover.py: n1, n2, w and a client, a VIP, real node processes, faults.

Names carry a per-run id; a marker file names the owning process, and :func:`sweep`
removes the namespaces and bridges of runs whose owner is gone. Traffic only ever goes to
the run's own addresses or to loopback.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRONGROOM = str(Path(sys.executable).with_name("strongroom"))
MARKERS = Path("/run/strongroom-tests")
HOSTS = {"n1": 11, "n2": 12, "w": 13, "client": 50}


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> None:
    """Remove namespaces and bridges left by earlier runs whose owner process is gone."""
    MARKERS.mkdir(parents=True, exist_ok=True)
    owners: dict[str, int] = {}
    for marker in MARKERS.glob("*.pid"):
        try:
            owners[marker.stem] = int(marker.read_text().strip())
        except ValueError:
            owners[marker.stem] = 0
    for line in sh("ip", "netns", "list").stdout.splitlines():
        ns = line.split()[0]
        m = re.fullmatch(r"sr([0-9a-f]{4})-\w+", ns)
        if m and not _alive(owners.get(m.group(1), 0)):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                _kill(int(pid))
            sh("ip", "netns", "del", ns, check=False)
    for line in sh("ip", "-o", "link", "show", "type", "bridge").stdout.splitlines():
        m = re.search(r"br-sr([0-9a-f]{4})", line)
        if m and not _alive(owners.get(m.group(1), 0)):
            sh("ip", "link", "del", f"br-sr{m.group(1)}", check=False)
            (MARKERS / f"{m.group(1)}.pid").unlink(missing_ok=True)


LAB_DIRS = Path(f"/var/tmp/strongroom-tests-{os.getuid()}")


def reachable_dir(prefix: str) -> Path:
    """A new directory that PostgreSQL, running as the postgres user, can reach: outside
    pytest's temporary tree, whose top another pytest session resets to mode 0700 (which
    cut a running cluster off its data). Named after the owning process; directories of
    earlier runs whose owner is gone are removed here, so the last run's logs stay until
    the next run starts."""
    LAB_DIRS.mkdir(parents=True, exist_ok=True)
    os.chmod(LAB_DIRS, 0o755)
    for old in LAB_DIRS.iterdir():
        m = re.fullmatch(r"\w+-(\d+)-\w+", old.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    made = Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=LAB_DIRS))
    os.chmod(made, 0o755)
    return made


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class Lab:
    """One run's hosts. ``base`` holds each host's data dir and logs."""

    base: Path
    run: str = field(default_factory=lambda: f"{random.randrange(0x1000, 0xFFFF):04x}")
    net: int = field(default_factory=lambda: random.randrange(20, 250))
    procs: dict[str, list[subprocess.Popen[str]]] = field(default_factory=dict)

    # naming -----------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"sr{self.run}-{host}"

    def veth(self, host: str) -> str:
        return f"v{self.run}-{host}"[:15]

    @property
    def bridge(self) -> str:
        return f"br-sr{self.run}"

    def addr(self, host: str) -> str:
        return f"10.213.{self.net}.{HOSTS[host]}"

    @property
    def vip(self) -> str:
        return f"10.213.{self.net}.100"

    def data_dir(self, host: str) -> Path:
        return self.base / host / "data"

    # set-up and tear-down ---------------------------------------------------------------

    def up(self) -> Lab:
        MARKERS.mkdir(parents=True, exist_ok=True)
        (MARKERS / f"{self.run}.pid").write_text(f"{os.getpid()}\n")
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "link", "set", self.bridge, "up")
        for host in HOSTS:
            ns = self.ns(host)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", self.veth(host), "type", "veth", "peer", "name", "eth0",
               "netns", ns)  # fmt: skip
            sh("ip", "link", "set", self.veth(host), "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            (self.base / host).mkdir(parents=True, exist_ok=True)
        # PostgreSQL runs as the postgres user: it must reach its directories (make the
        # base with reachable_dir).
        os.chmod(self.base, 0o755)
        for host in HOSTS:
            os.chmod(self.base / host, 0o755)
        return self

    def down(self) -> None:
        for host in HOSTS:
            self.kill_host(host)
        for host in HOSTS:
            sh("ip", "netns", "del", self.ns(host), check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        (MARKERS / f"{self.run}.pid").unlink(missing_ok=True)

    # processes --------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, "SR_TEST_FAST_KDF": "1", "PYTHONUNBUFFERED": "1"}

    def run_in(
        self, host: str, *args: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def cli(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run_in(
            host, STRONGROOM, *args, "--data-dir", str(self.data_dir(host)), check=check
        )

    def spawn(self, host: str, name: str, *args: str) -> subprocess.Popen[str]:
        log = (self.base / host / f"{name}.log").open("a")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env(),
            start_new_session=True,
        )
        self.procs.setdefault(host, []).append(proc)
        return proc

    def serve(self, host: str) -> subprocess.Popen[str]:
        return self.spawn(host, "node", STRONGROOM, "serve", "--data-dir", str(self.data_dir(host)))

    def log(self, host: str, name: str = "node") -> str:
        path = self.base / host / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # faults -----------------------------------------------------------------------------

    def kill_host(self, host: str) -> None:
        """A host crash: SIGKILL every process in the namespace (PostgreSQL included)."""
        for _ in range(3):
            pids = sh("ip", "netns", "pids", self.ns(host), check=False).stdout.split()
            if not pids:
                break
            for pid in pids:
                _kill(int(pid))
            time.sleep(0.1)
        for proc in self.procs.pop(host, []):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def kill_node_process(self, host: str) -> None:
        """Only the node process dies (its PostgreSQL keeps running)."""
        for proc in self.procs.get(host, []):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def link(self, host: str, up: bool) -> None:
        sh("ip", "link", "set", self.veth(host), "up" if up else "down")

    def holds_vip(self, host: str) -> bool:
        out = sh("ip", "-n", self.ns(host), "-o", "addr", "show", "dev", "eth0").stdout
        return f" {self.vip}/" in out

    def vip_holders(self) -> list[str]:
        return [h for h in ("n1", "n2", "w") if self.holds_vip(h)]

    def https(self, host: str, method: str, url: str, ca_file: Path) -> dict[str, Any]:
        """One HTTPS request made from inside ``host``: status, headers and body."""
        script = (
            "import http.client, json, ssl, sys, urllib.parse\n"
            "m, url, ca = sys.argv[1:4]\n"
            "u = urllib.parse.urlsplit(url)\n"
            "c = http.client.HTTPSConnection(u.hostname, u.port,"
            " context=ssl.create_default_context(cafile=ca), timeout=10)\n"
            "c.request(m, u.path, body=b'' if m == 'POST' else None)\n"
            "r = c.getresponse()\n"
            "print(json.dumps({'status': r.status, 'headers': dict(r.getheaders()),"
            " 'body': r.read().decode(errors='replace')}))\n"
        )
        python = str(Path(STRONGROOM).with_name("python"))
        out = self.run_in(host, python, "-c", script, method, url, str(ca_file))
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    # cluster status ---------------------------------------------------------------------

    def status(self, host: str) -> dict[str, Any]:
        proc = self.cli(host, "cluster", "status", "--json", check=False)
        if proc.returncode != 0:
            return {}
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def psql(self, host: str, sql: str) -> str:
        pg = self.data_dir(host) / "postgres"
        password = (pg / "superuser.password").read_text().strip()
        port = json.loads((self.data_dir(host) / "cluster" / "node.json").read_text())["db_port"]
        proc = subprocess.run(
            ["runuser", "-u", "postgres", "--", "env", f"PGPASSWORD={password}",
             shutil.which("psql") or "psql", "-X", "-At", "-h", str(pg / "socket"),
             "-p", str(port), "-U", "postgres", "-d", "strongroom", "-c", sql],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"psql on {host}: {proc.stderr}")
        return proc.stdout


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> float:
    """Wait until ``check()``; returns the seconds it took (never used as pass/fail)."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic() - start
        except (AssertionError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
