"""Fixtures shared by every test tier: a real PostgreSQL server (started with the product's
own manager in cluster/postgres.py), stores on both dialects, services, and node processes."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("SR_TEST_FAST_KDF", "1")

from cluster.postgres import LocalPostgres  # noqa: E402
from node.keyring import KeyRing  # noqa: E402
from node.services import Services, build_services  # noqa: E402
from node.settings import Settings  # noqa: E402
from node.store.db import Store, open_store  # noqa: E402
from tests.helpers import NodeProcess, free_port  # noqa: E402

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """One real PostgreSQL 15 server for the whole run; each test gets its own database."""
    # Outside /tmp/pytest-of-root: every pytest session that starts (other test runs on
    # the same machine) resets that directory to 0700, which would lock the postgres OS
    # user out of its own socket and data directory mid-run.
    base = Path(tempfile.mkdtemp(prefix="sr-pg-"))
    os.chmod(base, 0o755)
    server = LocalPostgres(base / "server", free_port())
    try:
        server.initdb()
        # No crash test uses this shared server, so durability flushes only cost time
        # (every CREATE DATABASE and the shutdown checkpoint fsync the whole cluster).
        server.start("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: LocalPostgres) -> str:
    name = f"sr_test_{os.getpid()}_{next(_db_counter)}"
    pg_server.create_database(name)
    return pg_server.url(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vault.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = open_store(settings.db_url)
    yield s
    s.dispose()


@pytest.fixture
def keyring(store: Store, settings: Settings) -> KeyRing:
    return KeyRing.open(store, settings.key_path)


@pytest.fixture
def services(settings: Settings, store: Store, keyring: KeyRing) -> Services:
    return build_services(settings, store, keyring)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A running node on SQLite, started as ``strongroom serve`` would be."""
    proc = NodeProcess(tmp_path / "node", free_port()).start()
    try:
        yield proc
    finally:
        proc.stop()
