"""What every CLI verb shares: the common options, settings from them, and opening a
node's data directory when no node is running there (under the node's own lock)."""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from node.errors import StrongroomError
from node.settings import Settings, load_settings

if TYPE_CHECKING:
    from node.keyring import KeyRing
    from node.store.db import Store


class NodeBusyError(StrongroomError):
    """Another process (a running node) holds the data directory."""


def common_parser() -> argparse.ArgumentParser:
    """Options every verb that acts on a node accepts, exactly as ``serve`` does."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default /etc/strongroom/strongroom.toml if present)",
    )
    parent.add_argument("--data-dir", type=Path, default=None, help="the node's data directory")
    return parent


def settings_from_args(args: argparse.Namespace, **flags: object) -> Settings:
    config = args.config
    if config is None and os.environ.get("STRONGROOM_CONFIG"):
        config = Path(os.environ["STRONGROOM_CONFIG"])
    overrides: dict[str, object] = {"data_dir": args.data_dir, **flags}
    settings = load_settings(config_path=config, overrides=overrides)
    return _cluster_database(settings)


def _cluster_database(settings: Settings) -> Settings:
    """A cluster member's vault is in its managed PostgreSQL, not in the SQLite default."""
    from cluster import config as cluster_config

    if settings.database_url is None and cluster_config.is_member(settings.data_dir):
        cfg = cluster_config.load(settings.data_dir)
        if cfg.kind == "data":
            return dataclasses.replace(settings, database_url=cfg.database_url())
    return settings


def lock_path(settings: Settings) -> Path:
    return settings.data_dir / "run" / "node.lock"


@contextmanager
def data_dir_lock(settings: Settings, purpose: str) -> Iterator[IO[str]]:
    """Hold the data directory's exclusive lock; a running node holds it for its lifetime."""
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fh = path.open("a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeBusyError(
                f"another Strongroom process holds {settings.data_dir} ({purpose} needs it)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield fh
    finally:
        fh.close()


Offline = Callable[["Store", "KeyRing"], dict[str, Any]]


def on_node(
    settings: Settings, verb: str, args: dict[str, Any], offline: Offline, timeout: float = 120.0
) -> dict[str, Any]:
    """Run ``verb`` on the node running in ``settings.data_dir`` (over its control socket),
    or, when none runs there, ``offline(store, keyring)`` under the data directory's lock.
    Offline work needs an existing vault: it never creates one in a mistyped directory."""
    from appliance.control import NodeNotRunningError, call

    try:
        return call(settings.control_socket, verb, args, timeout=timeout)
    except NodeNotRunningError:
        pass
    from appliance.server import open_node

    if settings.uses_sqlite and not (settings.data_dir / "strongroom.db").is_file():
        raise StrongroomError(f"no vault in {settings.data_dir} (and no node running there)")
    with data_dir_lock(settings, verb):
        store, keyring = open_node(settings)
        try:
            return offline(store, keyring)
        finally:
            store.dispose()
