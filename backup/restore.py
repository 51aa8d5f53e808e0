"""Verifying an archive and restoring it into a new data directory.

Order of a restore, so that a bad archive or a wrong key leaves the target untouched:

1. open the zip: member names safe, manifest of a known format version;
2. unwrap the archive key (master key file or recovery passphrase), check the manifest MAC;
3. read every member once: SHA-256 and every segment's authentication tag;
4. check the target: empty (or ``force``), schema revision known to this version;
5. load all or nothing: SQLite into a staged file swapped in at the end, PostgreSQL in one
   transaction (schema created at the archive's revision, rows loaded, migrated to head);
6. write the master key file (mode 0600) where the node will look for it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, Table, and_, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from backup.archive import ArchiveReader, ProgressFn, TableStream, decode_value, no_progress
from backup.dialect import copy_rows, drop_everything, insert_rows, reset_sequences
from backup.errors import ArchiveError, BackupError, TargetNotEmptyError
from node.errors import KeyFileError
from node.keyring import master_check, read_key_file, write_key_file
from node.store.db import alembic_config, describe_url, head_revision, make_engine
from node.store.models import Base, KeyringMeta

INSERT_BATCH = 1000
RESTORED_MARKER = "backups-paused-after-restore"


@dataclass(frozen=True)
class KeySource:
    """What the DR operator holds: the master key, or the recovery passphrase."""

    master: bytes | None = None
    passphrase: str | None = None

    @classmethod
    def from_key_file(cls, path: Path) -> KeySource:
        return cls(master=read_key_file(path))

    @classmethod
    def from_passphrase_file(cls, path: Path) -> KeySource:
        try:
            text = path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise BackupError(f"cannot read passphrase file {path}: {exc.strerror}") from None
        if not text:
            raise BackupError(f"passphrase file {path} is empty")
        return cls(passphrase=text)


@dataclass
class Verified:
    """An archive whose every byte was checked, with its keys."""

    reader: ArchiveReader
    archive_key: bytes
    master: bytes


def open_verified(path: Path, source: KeySource, progress: ProgressFn = no_progress) -> Verified:
    """Open ``path`` and check all of it (structure, key, manifest MAC, every member and
    segment, a schema revision this version knows). Raises :class:`ArchiveError` naming
    the first problem."""
    reader = ArchiveReader(path)
    try:
        if source.master is not None:
            key = reader.unlock_with_master(source.master)
        elif source.passphrase is not None:
            key = reader.unlock_with_passphrase(source.passphrase)
        else:
            raise BackupError("give the master key file or the recovery passphrase file")
        reader.verify(key, progress)
        _known_revision(reader.manifest.schema_revision)
        master = reader.master_key(key)
        if source.master is not None and not hmac.compare_digest(master, source.master):
            raise ArchiveError("the archive's key member does not match its master key wrap")
    except BaseException:
        reader.close()
        raise
    return Verified(reader, key, master)


@dataclass
class RestoreSummary:
    tables: int
    rows: int
    database: str
    key_path: Path
    schema_revision: str
    migrated_to: str
    seconds: float
    per_table: dict[str, int] = field(default_factory=dict)


def _known_revision(revision: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(make_engine("sqlite://")))
    try:
        found = script.get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise ArchiveError(
            f"the archive's schema revision {revision} is unknown to this Strongroom "
            "(made by a newer version?); restore it with that version or newer"
        )


def _holds_data(engine: Engine) -> bool:
    try:
        return bool(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        raise BackupError(
            f"cannot open the target database {describe_url(str(engine.url))}: {type(exc).__name__}"
        ) from None


class _ConnectionAsEngine:
    """Lets Alembic's env.py (``with engine.begin() as connection``) run on a connection
    that is already inside our one restore transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        yield self._conn


def _migrate(conn: Connection, revision: str) -> None:
    cfg = alembic_config(conn.engine)
    cfg.attributes["engine"] = _ConnectionAsEngine(conn)
    command.upgrade(cfg, revision)


def _target_tables(conn: Connection, revision: str) -> dict[str, Table]:
    if revision == head_revision():
        return dict(Base.metadata.tables)
    reflected = MetaData()
    reflected.reflect(conn)
    return dict(reflected.tables)


def _load_table(
    conn: Connection,
    table: Table,
    stream: TableStream,
    deferred: set[str],
    count_rows: Any,
) -> int:
    """Insert one table's rows. Columns in ``deferred`` (foreign keys to this same table or
    to one not loaded yet) are inserted as NULL and set afterwards."""
    missing = [c for c in stream.columns if c not in table.c]
    if missing:
        raise ArchiveError(
            f"table {table.name} in the archive has column {missing[0]} that the schema at "
            "its revision lacks (the archive does not match its revision)"
        )
    names = stream.columns
    pk_idx = [names.index(c.name) for c in table.primary_key.columns]
    defer_idx = [i for i, n in enumerate(names) if n in deferred]
    later: list[tuple[list[Any], dict[str, Any]]] = []
    rows = 0
    insert = table.insert()
    fast = conn.dialect.name == "postgresql"  # the stream holds raw JSON values: COPY them
    for batch in stream.batches:
        if defer_idx:
            for values in batch:
                saved = {names[i]: values[i] for i in defer_idx if values[i] is not None}
                if saved:
                    if fast:
                        saved = {
                            n: decode_value(stream.kinds[names.index(n)], v)
                            for n, v in saved.items()
                        }
                    key = [values[i] for i in pk_idx]
                    if fast:
                        key = [decode_value(stream.kinds[i], values[i]) for i in pk_idx]
                    later.append((key, saved))
                    for i in defer_idx:
                        values[i] = None
        if batch and fast:
            copy_rows(conn, table, names, stream.kinds, batch)
        elif batch and conn.dialect.name == "sqlite":
            insert_rows(conn, table, names, batch)
        elif batch:
            conn.execute(insert, [dict(zip(names, values, strict=True)) for values in batch])
        rows += len(batch)
        count_rows(len(batch))
    pk_cols = list(table.primary_key.columns)
    for key, saved in later:
        cond = and_(*(col == value for col, value in zip(pk_cols, key, strict=True)))
        conn.execute(table.update().where(cond).values(**saved))
    return rows


def _load_all(
    conn: Connection, verified: Verified, revision: str, progress: ProgressFn
) -> dict[str, int]:
    tables = _target_tables(conn, revision)
    manifest = verified.reader.manifest
    loaded: set[str] = set()
    per_table: dict[str, int] = {}
    total = [0]
    for entry in manifest.tables:
        table = tables.get(entry.name)
        if table is None:
            raise ArchiveError(
                f"the archive holds table {entry.name}, which the schema at revision "
                f"{revision} does not have"
            )
        deferred = {
            fk.parent.name
            for fk in table.foreign_keys
            if fk.column.table.name == table.name or fk.column.table.name not in loaded
        }
        stream = verified.reader.table(
            verified.archive_key, entry, decode=conn.dialect.name != "postgresql"
        )

        def count(n: int, name: str = entry.name) -> None:
            total[0] += n
            progress(name, total[0], 0)

        per_table[entry.name] = _load_table(conn, table, stream, deferred, count)
        loaded.add(entry.name)
    reset_sequences(conn, [tables[name] for name in loaded])
    meta = conn.execute(select(KeyringMeta.master_check).where(KeyringMeta.id == 1)).scalar()
    if meta is not None and not hmac.compare_digest(bytes(meta), master_check(verified.master)):
        raise ArchiveError("the archive's master key does not fit the key ring inside it")
    return per_table


def _load_into(engine: Engine, verified: Verified, force: bool, progress: ProgressFn) -> None:
    """Everything in one transaction: drop what is there (force), create the schema at the
    archive's revision, load, migrate to head. Any error rolls all of it back."""
    revision = verified.reader.manifest.schema_revision
    with engine.connect() as conn:
        with conn.begin():
            if force:
                drop_everything(conn)
            _migrate(conn, revision)
            _load_all(conn, verified, revision, progress)
            _migrate(conn, "head")


def _write_key(key_path: Path, master: bytes, force: bool) -> Path | None:
    """Put the master key at ``key_path`` (0600). Returns the path of a staged key file to
    move into place after the database commit, or None if the right key is already there."""
    if key_path.exists():
        try:
            current: bytes | None = read_key_file(key_path)
        except KeyFileError:
            current = None
        if current is not None and hmac.compare_digest(current, master):
            return None
        if not force:
            raise TargetNotEmptyError(
                f"a different master key file already exists at {key_path}; "
                "use --force to replace it (the old one is kept as .bak)"
            )
    staged = key_path.with_name(key_path.name + ".restoring")
    staged.unlink(missing_ok=True)
    write_key_file(staged, master)
    return staged


def _install_key(key_path: Path, staged: Path | None) -> None:
    if staged is None:
        return
    if key_path.exists():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        os.replace(key_path, key_path.with_name(f"{key_path.name}.{stamp}.bak"))
    os.replace(staged, key_path)


def restore(
    verified: Verified,
    *,
    data_dir: Path,
    key_path: Path,
    database_url: str | None,
    force: bool = False,
    progress: ProgressFn = no_progress,
) -> RestoreSummary:
    """Restore a verified archive into ``data_dir`` (SQLite ``strongroom.db`` there, or the
    database at ``database_url``) and write its master key to ``key_path``. Refuses a
    target that holds a vault unless ``force``. All or nothing."""
    started = time.monotonic()
    manifest = verified.reader.manifest
    sqlite_file = data_dir / "strongroom.db"
    url = database_url or f"sqlite:///{sqlite_file}"
    where = describe_url(url)
    target = make_engine(url) if database_url else None
    try:
        if target is not None:
            not_empty = _holds_data(target)
        else:
            not_empty = sqlite_file.exists() and sqlite_file.stat().st_size > 0
        if not_empty and not force:
            raise TargetNotEmptyError(
                f"the target database {where} already holds data; use --force to replace it"
            )
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged_key = _write_key(key_path, verified.master, force)
        try:
            if target is not None:
                _load_into(target, verified, force, progress)
            else:
                _restore_sqlite(sqlite_file, verified, progress)
        except BaseException:
            if staged_key is not None:
                staged_key.unlink(missing_ok=True)
            raise
        _install_key(key_path, staged_key)
        _mark_restored(data_dir, manifest.archive_id, manifest.created_at)
    except SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()
        raise BackupError(
            f"restore into {where} failed and was rolled back: {text[0] if text else exc}"
        ) from None
    finally:
        if target is not None:
            target.dispose()
    rows = sum(t.rows for t in manifest.tables)
    return RestoreSummary(
        tables=len(manifest.tables),
        rows=rows,
        database=where,
        key_path=key_path,
        schema_revision=manifest.schema_revision,
        migrated_to=head_revision(),
        seconds=time.monotonic() - started,
        per_table={t.name: t.rows for t in manifest.tables},
    )


def _mark_restored(data_dir: Path, archive_id: str, created_at: str) -> None:
    """Pause scheduled backups of the restored node until an administrator resumes them:
    its settings point at the same targets as the node the archive came from."""
    (data_dir / RESTORED_MARKER).write_text(
        f"restored from archive {archive_id} made {created_at}; scheduled backups stay "
        "paused until an administrator resumes them (Admin > Backup, or strongroom backup "
        "configure --resume)\n"
    )


def _restore_sqlite(db_file: Path, verified: Verified, progress: ProgressFn) -> None:
    """Load into ``strongroom.db.restoring`` beside the target, then swap it in."""
    staged = db_file.with_name(db_file.name + ".restoring")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(staged) + suffix).unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{staged}")
    try:
        _load_into(engine, verified, False, progress)
    except BaseException:
        engine.dispose()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(staged) + suffix).unlink(missing_ok=True)
        raise
    engine.dispose()
    os.chmod(staged, 0o600)
    for suffix in ("-wal", "-shm", "-journal"):
        Path(str(db_file) + suffix).unlink(missing_ok=True)
    os.replace(staged, db_file)
