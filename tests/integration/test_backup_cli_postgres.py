"""The DR operator's CLI restore of a SQLite node's archive into PostgreSQL
(`strongroom restore ARCHIVE --key-file K --data-dir D --database-url URL`), then a node
started on that database serves the same vault."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import NodeProcess, free_port, run_cli

NEW_PASSWORD = "Admin-Password-PG-DR-1!"


def test_cli_restore_into_postgres_serves_the_vault(tmp_path: Path, pg_url: str) -> None:
    prod = NodeProcess(tmp_path / "prod", free_port()).start()
    try:
        c = prod.client()
        otp = prod.initial_password()
        assert c.login("admin", otp).status == 302
        changed = c.post_form(
            "/change-password", {"current": otp, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD}
        )
        assert changed.status == 302
        run = run_cli("backup", "run", "--data-dir", str(prod.data_dir))
        assert run.returncode == 0, run.stderr
    finally:
        prod.stop()
    archive = next((prod.data_dir / "backUp").iterdir())
    key = prod.data_dir / "keys" / "master.key"

    dr_dir = tmp_path / "dr"
    restored = run_cli(
        "restore",
        str(archive),
        "--key-file",
        str(key),
        "--data-dir",
        str(dr_dir),
        "--database-url",
        pg_url,
    )
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restored ")
    # A second restore into the now non-empty database is refused without --force.
    again = run_cli(
        "restore",
        str(archive),
        "--key-file",
        str(key),
        "--data-dir",
        str(dr_dir),
        "--database-url",
        pg_url,
    )
    assert again.returncode == 1 and "--force" in again.stderr

    dr = NodeProcess(dr_dir, free_port(), env={"STRONGROOM_DATABASE_URL": pg_url}).start()
    try:
        c = dr.client()
        assert c.login("admin", NEW_PASSWORD).headers["location"] == "/"
        verify = run_cli(
            "audit", "verify", "--data-dir", str(dr_dir), env={"STRONGROOM_DATABASE_URL": pg_url}
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        dr.stop()
