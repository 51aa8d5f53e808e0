"""Small helpers shared by the tests: free ports, an HTTPS client with cookies and XSRF,
and a node process started the way an operator starts one."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STRONGROOM = str(Path(sys.executable).with_name("strongroom"))
# The token `strongroom apiuser add` prints, alone on an indented line (shown once).
API_TOKEN = re.compile(r"^\s+([0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """A browser-like HTTPS client: keeps cookies, fills in the XSRF token on forms."""

    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    ctx: ssl.SSLContext = field(default_factory=insecure_context)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            for key, value in resp.getheaders():
                if key.lower() == "set-cookie":
                    name, _, rest = value.partition("=")
                    val = rest.split(";", 1)[0]
                    if (
                        val in ("", '""')
                        or "Max-Age=0" in value
                        or "expires=Thu, 01 Jan 1970" in value.lower()
                    ):
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = val
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def xsrf(self) -> str:
        if "_xsrf" not in self.cookies:
            self.get("/login")
        return self.cookies["_xsrf"]

    def post_form(self, path: str, fields: dict[str, str], with_xsrf: bool = True) -> Response:
        data = dict(fields)
        if with_xsrf:
            data["_xsrf"] = self.xsrf()
        body = urllib.parse.urlencode(data).encode()
        return self.request(
            "POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )

    def login(self, username: str, password: str) -> Response:
        return self.post_form("/login", {"username": username, "password": password})


def one_time_password(stdout_text: str) -> str:
    match = re.search(r"one-time password.*:\n\s+(\S+)", stdout_text)
    assert match, stdout_text
    return match.group(1)


@dataclass
class NodeProcess:
    """``strongroom serve`` in a subprocess, on a free port, in its own data dir."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[str] | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=lambda: [STRONGROOM])  # the CLI to run

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "run" / "control.sock"

    def start(self, wait: bool = True) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.data_dir.parent / f"{self.data_dir.name}.stdout"
        self.stderr_path = self.data_dir.parent / f"{self.data_dir.name}.stderr"
        env = {**os.environ, "SR_TEST_FAST_KDF": "1", **self.env}
        self.proc = subprocess.Popen(
            [
                *self.command,
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *self.extra_args,
            ],
            stdout=self.stdout_path.open("w"),
            stderr=self.stderr_path.open("w"),
            text=True,
            env=env,
        )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}: {self.stderr()[-2000:]}")
            try:
                if self.client().get("/health").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("node did not become healthy")

    def client(self) -> Client:
        return Client("127.0.0.1", self.port)

    def stdout(self) -> str:
        return self.stdout_path.read_text() if self.stdout_path else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""

    def initial_password(self) -> str:
        return one_time_password(self.stdout())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STRONGROOM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SR_TEST_FAST_KDF": "1", **(env or {})},
        check=False,
    )
