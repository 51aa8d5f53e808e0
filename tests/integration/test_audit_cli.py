"""``strongroom audit verify`` on SQLite and PostgreSQL: intact, then a reordered, a
deleted and an edited row, each named as the first broken row, with exit status 1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update

from appliance.cli import main
from node.audit import AuditEvent
from node.keyring import KeyRing
from node.services import Services, build_services
from node.settings import Settings
from node.store.db import open_store
from node.store.models import AuditRow
from tests.helpers import run_cli


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The CLI sets up logging to its own stderr; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _config(tmp_path: Path, settings: Settings) -> Path:
    path = tmp_path / "strongroom.toml"
    path.write_text(f'data_dir = "{settings.data_dir}"\ndatabase_url = "{settings.db_url}"\n')
    return path


def _verify(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", "--config", str(config)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_verify_names_first_broken_row(
    services: Services, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with services.store.transaction() as s:
        for i in range(10):
            services.audit.append(
                s,
                AuditEvent(
                    operation="view password",
                    username=f"user{i}",
                    source_ip=f"10.0.0.{i}",
                    target=f"web-{i}/root",
                ),
            )
    config = _config(tmp_path, settings)
    code, out = _verify(config, capsys)
    assert code == 0 and "audit chain intact: 10 rows verified" in out

    with services.store.transaction() as s:  # swap rows 8 and 9
        s.execute(update(AuditRow).where(AuditRow.id == 8).values(id=1000))
        s.execute(update(AuditRow).where(AuditRow.id == 9).values(id=8))
        s.execute(update(AuditRow).where(AuditRow.id == 1000).values(id=9))
    code, out = _verify(config, capsys)
    assert code == 1 and "BROKEN at row 8" in out and "reordered" in out
    assert "first broken row: #8" in out and "user8" in out  # row 9's content now at #8

    with services.store.transaction() as s:
        s.execute(delete(AuditRow).where(AuditRow.id == 5))
    code, out = _verify(config, capsys)
    assert code == 1 and "BROKEN at row 5" in out and "missing" in out
    assert "#5 (no longer in the database)" in out

    with services.store.transaction() as s:
        s.execute(update(AuditRow).where(AuditRow.id == 2).values(target="web-1/admin"))
    code, out = _verify(config, capsys)
    assert code == 1 and "BROKEN at row 2" in out and "altered" in out
    assert "first broken row: #2" in out and "web-1/admin" in out and "10.0.0.1" in out


def test_installed_command_exit_codes(tmp_path: Path) -> None:
    """The installed command: 2 when there is nothing to check (and no file is made), 1 with
    the first broken row named when a row was edited."""
    empty = tmp_path / "empty"
    result = run_cli("audit", "verify", "--data-dir", str(empty))
    assert result.returncode == 2 and "no vault" in result.stderr
    assert not (empty / "strongroom.db").exists()

    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings.db_url)
    try:
        services = build_services(settings, store, KeyRing.open(store, settings.key_path))
        with store.transaction() as s:
            services.audit.append(s, AuditEvent(operation="login", username="a", source_ip="::1"))
            s.execute(update(AuditRow).where(AuditRow.id == 1).values(result="failure"))
    finally:
        store.dispose()
    broken = run_cli("audit", "verify", "--data-dir", str(settings.data_dir))
    assert broken.returncode == 1, broken.stderr
    assert "BROKEN at row 1" in broken.stdout and "first broken row: #1" in broken.stdout


def test_verify_catches_rows_outside_the_chain_and_damaged_values(
    services: Services, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row put in with an id below the chain's first, a stored value that is no value of
    its column (SQLite keeps what it is given), an altered head: each is named, exit 1; a
    missing table is "cannot verify", exit 2. None of it is a traceback."""
    with services.store.transaction() as s:
        for i in range(3):
            services.audit.append(
                s, AuditEvent(operation="view password", username=f"u{i}", source_ip="10.0.0.1")
            )
    config = _config(tmp_path, settings)
    with services.store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (id, ts, category, username, source_ip, operation, "
                "target, resource_id, account_id, reason, result, detail, prev_hmac, hmac) "
                "SELECT 0, ts, category, 'forger', source_ip, operation, target, resource_id, "
                "account_id, reason, result, detail, 'x', 'y' FROM audit_log WHERE id = 1"
            )
        )
    code, out = _verify(config, capsys)
    assert code == 1 and "BROKEN at row 0: a row was inserted before" in out
    assert "first broken row: #0" in out and "forger" in out
    with services.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = 0"))
    assert _verify(config, capsys)[0] == 0

    if settings.uses_sqlite:  # PostgreSQL's column types refuse such values
        for column, value in (("ts", "'garbage'"), ("ts", "12345"), ("hmac", "X'00'")):
            with services.store.engine.begin() as conn:
                old = conn.execute(text(f"SELECT {column} FROM audit_log WHERE id = 2")).scalar()
                conn.execute(text(f"UPDATE audit_log SET {column} = {value} WHERE id = 2"))
            code, out = _verify(config, capsys)
            assert code == 1 and "BROKEN at row 2: its content was altered" in out, out
            assert "Traceback" not in out
            with services.store.engine.begin() as conn:
                conn.execute(text(f"UPDATE audit_log SET {column} = :v WHERE id = 2"), {"v": old})
            assert _verify(config, capsys)[0] == 0
        with services.store.engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET ts = 'garbage' WHERE id = 2"))
        code, out = _verify(config, capsys)
        assert "first broken row: #2 (its stored values cannot be read)" in out
        with services.store.engine.begin() as conn:
            conn.execute(text("UPDATE audit_head SET last_id = 'x'"))
        code, out = _verify(config, capsys)
        assert code == 1 and "BROKEN at row 2" in out  # the first problem is named first

    with services.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id >= 2"))
        conn.execute(text("UPDATE audit_head SET last_hmac = 'forged'"))
    code, out = _verify(config, capsys)
    assert code == 1 and "audit chain BROKEN: the chain head record was altered" in out

    with services.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_head"))
    code, out = _verify(config, capsys)
    assert code == 2 and "cannot verify the audit trail: cannot read it" in out
    assert "Traceback" not in out
