"""Backup and restore end to end: round trips across dialects, and every way an archive can
be bad refused with its own message, leaving the target untouched."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from backup.archive import MANIFEST, ArchiveReader, write_archive
from backup.errors import ArchiveError, TargetNotEmptyError, WrongKeyError
from backup.restore import KeySource, open_verified, restore
from backup.service import BackupService, snapshot_archive
from node.audit import verify_chain
from node.keyring import KeyRing, read_key_file, write_key_file
from node.services import NodeState, Services, build_services
from node.settings import Settings
from node.store.db import current_revision, head_revision, make_engine, open_store
from node.store.models import User
from tests.integration.backup_helpers import (
    account_passwords,
    member_data_offsets,
    populate,
    table_contents,
    tree,
)

PASSPHRASE = "correct horse battery staple"


def _backup_service(services: Services) -> BackupService:
    return BackupService(
        services.settings, services.store, services.keyring, services.audit, NodeState()
    )


def _archive(services: Services, dest: Path, passphrase: bool = False) -> Path:
    svc = _backup_service(services)
    if passphrase:
        svc.set_passphrase(PASSPHRASE, "tester", "127.0.0.1")
    snapshot_archive(
        services.store,
        services.settings.key_path,
        dest,
        installation_id=svc.installation_id(),
        passphrase=svc._passphrase_wrap() if passphrase else None,  # noqa: SLF001
    )
    return dest


def _restore_into(
    archive: Path, source: KeySource, data_dir: Path, url: str | None, force: bool = False
) -> None:
    verified = open_verified(archive, source)
    try:
        restore(
            verified,
            data_dir=data_dir,
            key_path=data_dir / "keys" / "master.key",
            database_url=url,
            force=force,
        )
    finally:
        verified.reader.close()


def _open_restored(data_dir: Path, url: str | None) -> Services:
    settings = Settings(data_dir=data_dir, database_url=url)
    store = open_store(settings.db_url)
    keyring = KeyRing.open(store, settings.key_path)
    return build_services(settings, store, keyring)


def _other_dialect(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str | None:
    """Restore into the other dialect: SQLite -> PostgreSQL, PostgreSQL -> SQLite."""
    if db_url.startswith("sqlite"):
        return str(request.getfixturevalue("pg_url"))
    return None  # SQLite in the restored data dir


def test_round_trip_across_dialects(
    services: Services, db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    passwords = populate(services)
    before = table_contents(services.store)
    archive = _archive(services, tmp_path / "a.zip")
    target_url = _other_dialect(db_url, tmp_path, request)
    _restore_into(
        archive,
        KeySource.from_key_file(services.settings.key_path),
        tmp_path / "restored",
        target_url,
    )

    restored = _open_restored(tmp_path / "restored", target_url)
    try:
        assert restored.store.dialect != services.store.dialect
        after = table_contents(restored.store)
        for name, rows in before.items():
            assert after[name] == rows, f"table {name} differs after restore"
        assert account_passwords(restored) == passwords
        with restored.store.sessions() as s:
            report = verify_chain(s, restored.keyring.audit_hmac_key)
        assert report.ok and report.rows_checked == len(before["audit_log"])
        assert current_revision(restored.store.engine) == head_revision()
        # new rows get fresh ids (PostgreSQL sequences were moved past the restored rows)
        with restored.store.transaction() as s:
            s.add(User(username="carol", role="password_user"))
        with restored.store.sessions() as s:
            ids = s.scalars(select(User.id)).all()
        assert len(set(ids)) == len(ids) == len(before["users"]) + 1
        assert (tmp_path / "restored" / "keys" / "master.key").stat().st_mode & 0o777 == 0o600
    finally:
        restored.store.dispose()


@pytest.fixture(scope="module")
def sqlite_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One populated SQLite vault for the tests below, which only read it."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("src"))
    store = open_store(settings.db_url)
    keyring = KeyRing.open(store, settings.key_path)
    services = build_services(settings, store, keyring)
    populate(services)
    yield services
    store.dispose()


@pytest.fixture(scope="module")
def archive(sqlite_services: Services, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good archive (with a recovery passphrase); tests damage copies of it, never it."""
    return _archive(sqlite_services, tmp_path_factory.mktemp("a") / "good.zip", passphrase=True)


@pytest.fixture(scope="module")
def key(sqlite_services: Services) -> KeySource:
    return KeySource.from_key_file(sqlite_services.settings.key_path)


def _refused(archive: Path, source: KeySource, target: Path, message: str) -> None:
    before = tree(target)
    with pytest.raises(ArchiveError, match=message):
        _restore_into(archive, source, target, None)
    assert tree(target) == before, "a refused restore changed the target"


def test_passphrase_alone_restores_everything(
    archive: Path, sqlite_services: Services, tmp_path: Path
) -> None:
    passwords = account_passwords(sqlite_services)
    pfile = tmp_path / "pp.txt"
    pfile.write_text(PASSPHRASE + "\n")
    _restore_into(archive, KeySource.from_passphrase_file(pfile), tmp_path / "dr", None)
    restored = _open_restored(tmp_path / "dr", None)
    try:
        assert account_passwords(restored) == passwords
        master = read_key_file(tmp_path / "dr" / "keys" / "master.key")
        assert master == read_key_file(sqlite_services.settings.key_path)
    finally:
        restored.store.dispose()


def test_wrong_master_key_and_wrong_passphrase(archive: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    write_key_file(other, bytes(range(32)))
    _refused(archive, KeySource.from_key_file(other), tmp_path / "t", "wrong master key")
    _refused(
        archive,
        KeySource(passphrase="not the passphrase"),
        tmp_path / "t",
        "wrong recovery passphrase",
    )
    assert issubclass(WrongKeyError, ArchiveError)


def test_a_flipped_byte_in_any_member_is_refused(
    archive: Path, key: KeySource, tmp_path: Path
) -> None:
    offsets = member_data_offsets(archive)
    assert MANIFEST in offsets and len(offsets) > 10
    for name, (offset, size) in offsets.items():
        for where in {0, size // 2, size - 1}:
            bad = tmp_path / "bad.zip"
            shutil.copyfile(archive, bad)
            with bad.open("r+b") as fh:
                fh.seek(offset + where)
                byte = fh.read(1)
                fh.seek(offset + where)
                fh.write(bytes([byte[0] ^ 0x01]))
            _refused(bad, key, tmp_path / "target", f"archive member {name}")


def test_truncated_archive(archive: Path, key: KeySource, tmp_path: Path) -> None:
    data = archive.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 100):
        bad = tmp_path / "cut.zip"
        bad.write_bytes(data[:cut])
        _refused(bad, key, tmp_path / "target", "not a complete zip archive")


def _rewrite(
    src: Path,
    dest: Path,
    extra: dict[str, bytes] | None = None,
    manifest: dict[str, object] | None = None,
    symlink: str | None = None,
) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == MANIFEST and manifest is not None:
                body = json.loads(data)
                body.update(manifest)
                data = json.dumps(body).encode()
            zout.writestr(info, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
        if symlink is not None:
            link = zipfile.ZipInfo(symlink)
            link.external_attr = 0o120777 << 16
            zout.writestr(link, "/etc/passwd")
    return dest


@pytest.mark.parametrize(
    ("name", "problem"),
    [("../escape.txt", "'..'"), ("/etc/cron.d/evil", "absolute path"), ("tables/../../x", "'..'")],
)
def test_unsafe_member_names(
    archive: Path, key: KeySource, tmp_path: Path, name: str, problem: str
) -> None:
    bad = _rewrite(archive, tmp_path / "evil.zip", extra={name: b"pwned"})
    _refused(bad, key, tmp_path / "target", f"unsafe .*{problem}")
    assert not (tmp_path / "escape.txt").exists()


def test_symlink_member(archive: Path, key: KeySource, tmp_path: Path) -> None:
    bad = _rewrite(archive, tmp_path / "link.zip", symlink="tables/999-link.bin")
    _refused(bad, key, tmp_path / "target", "symbolic link")


def test_unknown_format_version(archive: Path, key: KeySource, tmp_path: Path) -> None:
    bad = _rewrite(archive, tmp_path / "v9.zip", manifest={"format_version": 9})
    _refused(bad, key, tmp_path / "target", "unknown archive format version 9")


def test_altered_manifest_counts(archive: Path, key: KeySource, tmp_path: Path) -> None:
    bad = _rewrite(archive, tmp_path / "m.zip", manifest={"created_at": "2020-01-01T00:00:00Z"})
    _refused(bad, key, tmp_path / "target", "manifest was altered")


def test_extra_member_listed_nowhere(archive: Path, key: KeySource, tmp_path: Path) -> None:
    bad = _rewrite(archive, tmp_path / "x.zip", extra={"tables/999-sneaky.bin": b"x"})
    _refused(bad, key, tmp_path / "target", "unexpected archive member tables/999-sneaky.bin")


def test_manifest_holds_no_secret_or_personal_data(archive: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        blob = b"".join(zf.read(n) for n in zf.namelist())
    for needle in [b"alice", b"S3cret", b"db1.example", b"view password", b"DBAs"]:
        assert needle not in blob
    with ArchiveReader(archive) as reader:
        assert reader.manifest.total_rows > 40


def test_non_empty_target_needs_force(
    archive: Path, key: KeySource, sqlite_services: Services, tmp_path: Path
) -> None:
    target = tmp_path / "busy"
    _restore_into(archive, key, target, None)
    before = tree(target)
    with pytest.raises(TargetNotEmptyError, match="already holds data; use --force"):
        _restore_into(archive, key, target, None)
    assert tree(target) == before
    _restore_into(archive, key, target, None, force=True)
    restored = _open_restored(target, None)
    try:
        assert account_passwords(restored) == account_passwords(sqlite_services)
    finally:
        restored.store.dispose()


def test_force_into_a_postgres_database_that_holds_a_vault(
    archive: Path, key: KeySource, pg_url: str, sqlite_services: Services, tmp_path: Path
) -> None:
    other = open_store(pg_url)
    with other.transaction() as s:
        s.add(User(username="stranger", role="password_user"))
    other.dispose()
    with pytest.raises(TargetNotEmptyError):
        _restore_into(archive, key, tmp_path / "pgdir", pg_url)
    _restore_into(archive, key, tmp_path / "pgdir", pg_url, force=True)
    restored = _open_restored(tmp_path / "pgdir", pg_url)
    try:
        assert table_contents(restored.store) == table_contents(sqlite_services.store)
    finally:
        restored.store.dispose()


def test_older_schema_revision_restores_through_migrations(
    sqlite_services: Services, tmp_path: Path
) -> None:
    """An archive written at the first revision is created at that revision, loaded, then
    migrated to head."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import MetaData

    from node.store.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config(make_engine("sqlite://")))
    base = script.get_base()
    assert base is not None
    old_db = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{old_db}")
    command.upgrade(alembic_config(engine), base)
    src = sqlite_services.store.engine
    md = MetaData()
    md.reflect(engine)
    tables = [t for t in md.sorted_tables if t.name != "alembic_version"]
    with src.connect() as sconn, engine.begin() as dconn:
        dconn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        for table in tables:
            rows = [dict(r._mapping) for r in sconn.execute(select(table))]  # noqa: SLF001
            if rows:
                dconn.execute(table.insert(), rows)
    master = read_key_file(sqlite_services.settings.key_path)
    with engine.connect() as conn, conn.begin():
        write_archive(
            conn,
            tables,
            tmp_path / "old.zip",
            master=master,
            schema_revision=base,
            installation_id="test",
            source_dialect="sqlite",
        )
    engine.dispose()
    _restore_into(tmp_path / "old.zip", KeySource(master=master), tmp_path / "new", None)
    restored = _open_restored(tmp_path / "new", None)
    try:
        assert current_revision(restored.store.engine) == head_revision()
        assert account_passwords(restored) == account_passwords(sqlite_services)
        with restored.store.engine.connect() as conn:
            users = conn.execute(text("SELECT count(*) FROM users")).scalar()
        assert users == len(table_contents(sqlite_services.store)["users"])
    finally:
        restored.store.dispose()


def test_unknown_schema_revision_is_refused(sqlite_services: Services, tmp_path: Path) -> None:
    master = read_key_file(sqlite_services.settings.key_path)
    engine = sqlite_services.store.engine
    with engine.connect() as conn, conn.begin():
        write_archive(
            conn,
            [],
            tmp_path / "future.zip",
            master=master,
            schema_revision="9999_future",
            installation_id="t",
            source_dialect="sqlite",
        )
    before = tree(tmp_path / "t")
    with pytest.raises(ArchiveError, match="schema revision 9999_future is unknown"):
        _restore_into(tmp_path / "future.zip", KeySource(master=master), tmp_path / "t", None)
    assert tree(tmp_path / "t") == before
