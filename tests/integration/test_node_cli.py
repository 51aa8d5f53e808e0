"""Starting a node the way an operator does, and every way a bad start must fail cleanly."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import pytest

from node.tls import fingerprint, make_self_signed
from tests.helpers import NodeProcess, free_port, run_cli


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", ".sock"))
    }


def test_version() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("strongroom 0.")


def test_unknown_config_key_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = 7272\nlisten = '0.0.0.0'\n")
    result = run_cli("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"strongroom: unknown setting 'listen' in config file {cfg}"
    ]
    assert not (tmp_path / "d").exists()


def test_port_in_use(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = run_cli(
            "serve", "--data-dir", str(tmp_path / "d"), "--port", str(port), "--bind", "127.0.0.1"
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "already in use" in lines[0]
    assert not (tmp_path / "d" / "keys").exists()
    assert not (tmp_path / "d" / "strongroom.db").exists()


@pytest.fixture
def stopped_node(tmp_path: Path) -> NodeProcess:
    """A node that ran once (so its data exists) and is stopped again."""
    proc = NodeProcess(tmp_path / "node", free_port()).start()
    proc.stop()
    return proc


def _failed_start(data_dir: Path) -> str:
    """Start ``serve`` on ``data_dir``; it must fail with exactly one line, changing no
    file. Returns that line."""
    before = _snapshot(data_dir)
    result = run_cli(
        "serve", "--data-dir", str(data_dir), "--port", str(free_port()), "--bind", "127.0.0.1"
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert _snapshot(data_dir) == before
    return lines[0]


def test_missing_master_key_with_data(stopped_node: NodeProcess) -> None:
    key = stopped_node.data_dir / "keys" / "master.key"
    key.rename(key.with_name("elsewhere.key"))
    line = _failed_start(stopped_node.data_dir)
    assert "master key file" in line and "missing" in line


def test_world_readable_master_key(stopped_node: NodeProcess) -> None:
    key = stopped_node.data_dir / "keys" / "master.key"
    os.chmod(key, 0o644)
    line = _failed_start(stopped_node.data_dir)
    assert "readable by group or others" in line and "chmod 600" in line


def test_wrong_master_key(stopped_node: NodeProcess, tmp_path: Path) -> None:
    other = NodeProcess(tmp_path / "other", free_port()).start()
    other.stop()
    key = stopped_node.data_dir / "keys" / "master.key"
    key.write_bytes((other.data_dir / "keys" / "master.key").read_bytes())
    assert "does not fit this database" in _failed_start(stopped_node.data_dir)


def test_database_file_that_is_not_a_database(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    junk = b"this is a spreadsheet, not a database\n" * 200
    (data / "strongroom.db").write_bytes(junk)
    assert "is not a SQLite database" in _failed_start(data)
    assert (data / "strongroom.db").read_bytes() == junk
    assert not (data / "keys").exists()


def test_tls_install_refuses_mismatched_key(stopped_node: NodeProcess, tmp_path: Path) -> None:
    cert, _key = make_self_signed(["vault.example.org"])
    _cert2, other_key = make_self_signed(["other.example.org"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(other_key)
    tls_dir = stopped_node.data_dir / "tls"
    before = _snapshot(tls_dir)
    result = run_cli(
        "tls",
        "install",
        str(tmp_path / "c.pem"),
        str(tmp_path / "k.pem"),
        "--data-dir",
        str(stopped_node.data_dir),
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "strongroom: the private key does not match the certificate"
    assert _snapshot(tls_dir) == before


def test_key_rotation_and_tls_install_without_a_node_are_audited(
    stopped_node: NodeProcess, tmp_path: Path
) -> None:
    """Run on a stopped node, the verbs open the vault themselves: each change of the key
    ring or the certificate gets its user-audit row (operation ``settings``) all the same,
    and the chain stays intact."""
    data = str(stopped_node.data_dir)
    cert, key = make_self_signed(["vault.example.org"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    for verb in (
        ["keys", "rotate"],
        ["keys", "rekey"],
        ["tls", "install", str(tmp_path / "c.pem"), str(tmp_path / "k.pem")],
    ):
        result = run_cli(*verb, "--data-dir", data)
        assert result.returncode == 0, (verb, result.stderr)
    with sqlite3.connect(stopped_node.data_dir / "strongroom.db") as conn:
        rows = conn.execute(
            "SELECT username, source_ip, target, detail FROM audit_log "
            "WHERE operation = 'settings' ORDER BY id"
        ).fetchall()
    assert [r[:3] for r in rows] == [
        ("local admin", "local", "key ring"),
        ("local admin", "local", "key ring"),
        ("local admin", "local", "TLS certificate"),
    ]
    assert fingerprint(cert) in rows[2][3]
    assert run_cli("audit", "verify", "--data-dir", data).returncode == 0


def test_sqlite_file_is_a_real_database(stopped_node: NodeProcess) -> None:
    with sqlite3.connect(stopped_node.data_dir / "strongroom.db") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)


def test_offline_verbs_never_create_a_vault(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for verb in (
        ["keys", "rotate"],
        ["admin", "reset-password", "admin"],
        ["apiuser", "list"],
        ["licence", "show"],
    ):
        result = run_cli(*verb, "--data-dir", str(missing))
        assert result.returncode == 1, verb
        assert f"no vault in {missing}" in result.stderr
    assert not (missing / "strongroom.db").exists()
    assert not (missing / "keys").exists()


def test_admin_reset_password_names_the_user_as_stored(stopped_node: NodeProcess) -> None:
    data = str(stopped_node.data_dir)
    reset = run_cli("admin", "reset-password", "  ADMIN ", "--data-dir", data)
    assert reset.returncode == 0, reset.stderr
    assert "One-time password for admin (must be changed" in reset.stdout
    assert (
        run_cli(
            "apiuser", "add", "robot-cli", "--role", "password_user", "--data-dir", data
        ).returncode
        == 0
    )
    api = run_cli("admin", "reset-password", "robot-cli", "--data-dir", data)
    assert api.returncode == 1 and "'robot-cli' is an API user" in api.stderr
    missing = run_cli("admin", "reset-password", "nobody", "--data-dir", data)
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr
