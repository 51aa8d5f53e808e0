"""Settings layers and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import ConfigError
from node.settings import load_settings


def test_layers_in_order(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('port = 8000\nlockout_threshold = 7\ndata_dir = "/srv/sr"\n')
    s = load_settings(cfg, environ={"STRONGROOM_PORT": "9000"}, overrides={"port": None})
    assert s.port == 9000  # environment beats file
    assert s.lockout_threshold == 7  # file beats default
    assert s.data_dir == Path("/srv/sr")
    assert s.key_path == Path("/srv/sr/keys/master.key")
    assert s.db_url == "sqlite:////srv/sr/strongroom.db"
    s = load_settings(cfg, environ={"STRONGROOM_PORT": "9000"}, overrides={"port": 9100})
    assert s.port == 9100  # flag beats environment


def test_unknown_key_named(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text("prot = 7272\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings(None, environ={"STRONGROOM_COLOUR": "red"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "high"', "setting 'port' .* whole number"),
        ("port = 70000", "between 1 and 65535"),
        ("session_idle_timeout = true", "whole number"),
        ("trusted_proxies = 5", "list of strings"),
        ('trusted_proxies = ["not-an-ip"]', "'not-an-ip' is not an IP address or network"),
        ('trusted_proxies = ["10.0.0.0/33"]', "'10.0.0.0/33' is not an IP address"),
        ('trusted_proxies = ["::ffff:10.0.0.0/104"]', "as the IPv4 address or network it is"),
        ('database_url = "mysql://x"', "sqlite:/// or postgresql://"),
        ("port = [", "not valid TOML"),
    ],
)
def test_ill_typed_values_named(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ={})


def test_proxies_are_kept_as_they_will_be_read(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('trusted_proxies = [" 10.0.0.1 ", "fd00::/8"]\n')
    assert load_settings(cfg, environ={}).trusted_proxies == ("10.0.0.1", "fd00::/8")


def test_a_bad_proxy_in_the_environment_is_named() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies.*'::g' is not an IP address"):
        load_settings(None, environ={"STRONGROOM_TRUSTED_PROXIES": "10.0.0.1, ::g"})


def test_env_lists_and_ints() -> None:
    s = load_settings(
        None,
        environ={
            "STRONGROOM_TRUSTED_PROXIES": "10.0.0.1, 10.0.1.0/24",
            "STRONGROOM_LOCKOUT_MINUTES": "30",
        },
    )
    assert s.trusted_proxies == ("10.0.0.1", "10.0.1.0/24")
    assert s.lockout_minutes == 30
