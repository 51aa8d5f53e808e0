"""Helpers for licence tests: a test vendor (its own Ed25519 key pair, trusted through a
fixture), an injectable clock, and node processes / CLI runs that trust the test vendor."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node import licence
from node.licence import Edition, Licence, LicenceType, public_raw, sign_licence
from tests.helpers import ROOT, NodeProcess

LAUNCHER = str(ROOT / "tests" / "licence_launcher.py")


@dataclass
class Vendor:
    """A licence vendor for tests: a fresh key pair; ``issue`` signs licence files."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_hex(self) -> str:
        return public_raw(self.key.public_key()).hex()

    def licence(
        self,
        edition: Edition = Edition.STANDARD,
        kind: LicenceType = LicenceType.SUBSCRIPTION,
        admins: int = 3,
        resources: int | None = None,
        expires: dt.date | None = dt.date(2099, 12, 31),
        issued: dt.date = dt.date(2026, 1, 1),
        licence_id: str = "SR-TEST-1",
        licensee: str = "ACME Ltd",
        support_until: dt.date | None = None,
    ) -> Licence:
        return Licence(
            id=licence_id,
            licensee=licensee,
            edition=edition,
            type=kind,
            admins=admins,
            resources=resources,
            issued=issued,
            expires=None if kind is LicenceType.PERPETUAL else expires,
            support_until=support_until,
        )

    def issue(self, **kwargs: object) -> str:
        return sign_licence(self.licence(**kwargs), self.key)  # type: ignore[arg-type]


def trust(monkeypatch: pytest.MonkeyPatch, vendor: Vendor) -> None:
    """Trust ``vendor`` in this test process only (the built-in keys are not trusted)."""
    monkeypatch.setattr(licence, "VENDOR_PUBLIC_KEYS", (vendor.public_hex,))


@dataclass
class Clock:
    """A clock a test moves by hand (naive UTC, as the store keeps times)."""

    now: dt.datetime = dt.datetime(2026, 11, 1, 9, 0, 0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += dt.timedelta(days=days)


def launcher_command(vendor: Vendor) -> list[str]:
    return [sys.executable, LAUNCHER, vendor.public_hex]


def trusting_node(vendor: Vendor, data_dir: Path, port: int, env: dict[str, str]) -> NodeProcess:
    return NodeProcess(data_dir, port, env=env, command=launcher_command(vendor))


def run_launcher(public_hex: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process that trusts ``public_hex`` as its only vendor key."""
    return subprocess.run(
        [sys.executable, LAUNCHER, public_hex, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SR_TEST_FAST_KDF": "1"},
        check=False,
    )


def run_trusting_cli(vendor: Vendor, *args: str) -> subprocess.CompletedProcess[str]:
    return run_launcher(vendor.public_hex, *args)
