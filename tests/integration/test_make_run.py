"""The README's first command, `make run`, starts a working node."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import ROOT, Client, free_port


def test_make_run_serves_https(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "var"
    out = tmp_path / "make-run.out"
    proc = subprocess.Popen(
        [
            "make",
            "-s",
            "-C",
            str(ROOT),
            "run",
            f"DATA={data}",
            f"SERVE_ARGS=--port {port} --bind 127.0.0.1",
        ],
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "SR_TEST_FAST_KDF": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline and "one-time password" not in text:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.2)
            text = out.read_text()
        assert f"https://localhost:{port}/" in text
        assert re.search(r"SHA-256 fingerprint: ([0-9A-F]{2}:){31}[0-9A-F]{2}", text)
        otp = re.search(r"one-time password.*:\n\s+(\S+)", text)
        assert otp is not None
        assert (data / "keys" / "master.key").stat().st_mode & 0o777 == 0o600
        client = Client("127.0.0.1", port)
        assert client.get("/health").status == 200
        assert client.login("admin", otp.group(1)).headers["location"] == "/change-password"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
