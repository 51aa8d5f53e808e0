"""The console in a real browser: tests/browser/console_scenario.py (admin's first login,
a user, a resource and account, a share; the user views the password; the audit page
shows it with the user's address), run in a network namespace of its own with only
loopback, so that Chromium does not abort page loads (ERR_NETWORK_CHANGED) when other
tests on the machine add or remove network interfaces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.browser


def test_admin_shares_a_password_and_the_user_views_it(tmp_path: Path) -> None:
    ns = f"sr-browser-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "tests.browser.console_scenario",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    assert result.returncode == 0, result.stderr[-8000:]
    assert "console scenario passed" in result.stdout
