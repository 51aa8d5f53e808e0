"""What a cluster member keeps on its own disk: ``DATA_DIR/cluster/node.json`` (who it is,
its generated database passwords, the Raft peers it last knew) and ``DATA_DIR/cluster/secret``
(the cluster secret). Both are 0600 in a 0700 directory. The master key stays where the
node's settings put it.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from node.errors import ConfigError
from node.tls import write_private

WEB_PORT = 7272
RAFT_PORT = 7273
DB_PORT = 2345


@dataclass(frozen=True)
class NodeConfig:
    name: str
    kind: str  # data | witness
    advertise: str
    cluster_id: str
    web_port: int = WEB_PORT
    raft_port: int = RAFT_PORT
    db_port: int = DB_PORT
    vip: str = ""  # address/prefix
    vip_interface: str = ""
    superuser_password: str = ""
    replication_password: str = ""
    app_password: str = ""
    raft_peers: tuple[str, ...] = ()
    raft_joined: bool = False
    hooks_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def raft_address(self) -> str:
        return f"{self.advertise}:{self.raft_port}"

    @property
    def api_url(self) -> str:
        return f"https://{self.advertise}:{self.web_port}"

    def database_url(self) -> str:
        return (
            f"postgresql+psycopg2://strongroom:{self.app_password}@127.0.0.1:{self.db_port}"
            "/strongroom"
        )

    def with_peers(self, peers: tuple[str, ...]) -> NodeConfig:
        return replace(self, raft_peers=tuple(sorted(set(peers) - {self.raft_address})))


def cluster_dir(data_dir: Path) -> Path:
    return data_dir / "cluster"


def config_path(data_dir: Path) -> Path:
    return cluster_dir(data_dir) / "node.json"


def secret_path(data_dir: Path) -> Path:
    return cluster_dir(data_dir) / "secret"


def is_member(data_dir: Path) -> bool:
    return config_path(data_dir).is_file()


def save(data_dir: Path, cfg: NodeConfig) -> None:
    d = cluster_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    body = asdict(cfg)
    body["raft_peers"] = list(cfg.raft_peers)
    write_private(config_path(data_dir), json.dumps(body, indent=2).encode())


def load(data_dir: Path) -> NodeConfig:
    path = config_path(data_dir)
    try:
        raw = json.loads(path.read_text())
        raw["raft_peers"] = tuple(raw.get("raft_peers", ()))
        return NodeConfig(**raw)
    except FileNotFoundError:
        raise ConfigError(f"{data_dir} is not a cluster member (no {path})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cluster configuration {path} is damaged: {exc}") from None


def save_secret(data_dir: Path, secret: bytes) -> None:
    cluster_dir(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(secret_path(data_dir), base64.b64encode(secret) + b"\n")


def load_secret(data_dir: Path) -> bytes:
    path = secret_path(data_dir)
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"cluster secret {path} is readable by others; chmod 600 it")
        return base64.b64decode(path.read_bytes().strip(), validate=True)
    except FileNotFoundError:
        raise ConfigError(f"cluster secret {path} is missing") from None
    except ValueError:
        raise ConfigError(f"cluster secret {path} is damaged") from None


__all__ = ["NodeConfig", "save", "load", "save_secret", "load_secret", "is_member"]
