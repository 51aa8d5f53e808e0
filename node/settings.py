"""Node settings, layered: defaults, then a TOML file, then ``STRONGROOM_*`` environment
variables, then command-line flags. Only known keys are accepted; an unknown or ill-typed
key is a :class:`ConfigError` whose one-line message names the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/strongroom/strongroom.toml")
DEFAULT_DATA_DIR = Path("/var/lib/strongroom")
ENV_PREFIX = "STRONGROOM_"


@dataclass(frozen=True)
class Settings:
    """Everything a node reads at start. Paths are absolute once resolved."""

    data_dir: Path = DEFAULT_DATA_DIR
    port: int = 7272
    bind: str = "0.0.0.0"
    master_key_path: Path | None = None
    database_url: str | None = None
    session_idle_timeout: int = 900
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    trusted_proxies: tuple[str, ...] = ()
    cluster_hold_timeout: int = 5  # seconds a request waits out a planned switchover
    tls_addresses: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_file: Path | None = None

    @property
    def key_path(self) -> Path:
        return self.master_key_path or self.data_dir / "keys" / "master.key"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'strongroom.db'}"

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "run" / "control.sock"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def uses_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}
_INT_LIMITS: dict[str, tuple[int, int]] = {
    "port": (1, 65535),
    "session_idle_timeout": (60, 86400),
    "lockout_threshold": (1, 100),
    "lockout_minutes": (1, 10080),
    "cluster_hold_timeout": (1, 60),
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _proxy_network(where: str, text: str) -> str:
    """A trusted proxy's address or network, as web/base.py will read it (stripped), or a
    ConfigError naming it."""
    text = text.strip()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {text[:60]!r} is not an IP address or network") from None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        # addresses are compared as IPv4 (web/base.py reads ::ffff:a.b.c.d as a.b.c.d)
        raise ConfigError(f"{where}: write {text[:60]!r} as the IPv4 address or network it is")
    return text


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = str(_FIELDS[name].type)
    where = f"setting '{name}' from {source}"
    if kind == "int":
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ConfigError(f"{where} must be a whole number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, not {type(value).__name__}")
        low, high = _INT_LIMITS.get(name, (0, 2**31))
        if not low <= value <= high:
            raise ConfigError(f"{where} must be between {low} and {high}, not {value}")
        return value
    if kind in ("Path", "Path | None"):
        if not isinstance(value, str | Path) or not str(value):
            raise ConfigError(f"{where} must be a path")
        return Path(value).expanduser().absolute()
    if kind == "tuple[str, ...]":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        if name == "trusted_proxies":
            value = [_proxy_network(where, text) for text in value]
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {type(value).__name__}")
    if name == "log_level":
        value = value.upper()
        if value not in _LOG_LEVELS:
            raise ConfigError(f"{where} must be one of {', '.join(_LOG_LEVELS)}")
    if name == "database_url" and not value.startswith(("sqlite", "postgresql")):
        raise ConfigError(f"{where} must be a sqlite:/// or postgresql:// URL")
    return value


def _apply(values: dict[str, Any], layer: Mapping[str, Any], source: str) -> None:
    for key, raw in layer.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting '{key}' in {source}")
        values[key] = _coerce(key, raw, source)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(f"unknown setting '{key}' in {path} (sections are not used)")
    return data


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from the layers. ``config_path`` None means the default file if
    present; ``overrides`` holds command-line flags that were given (None values ignored)."""
    values: dict[str, Any] = {}
    path = config_path
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        _apply(values, read_config_file(path), f"config file {path}")
    env = os.environ if environ is None else environ
    from_env = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in env.items()
        if k.startswith(ENV_PREFIX) and k not in _ENV_IGNORED
    }
    _apply(values, from_env, "the environment (STRONGROOM_*)")
    _apply(
        values, {k: v for k, v in (overrides or {}).items() if v is not None}, "the command line"
    )
    return Settings(**values)


# Variables that share the prefix but are not settings (the CLI's own switches).
_ENV_IGNORED = frozenset({"STRONGROOM_CONFIG"})


__all__ = ["Settings", "load_settings"]
