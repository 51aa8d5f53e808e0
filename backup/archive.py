"""Writing and reading backup archives (format described in docs/backup-format.md).

An archive is a zip of stored (uncompressed) members: ``keys.bin`` and one
``tables/NNN-<table>.bin`` per table, each an authenticated segment stream
(:mod:`backup.crypto`) of zlib-compressed JSON, and ``manifest.json`` last. Rows are
streamed a batch at a time in both directions, so memory stays bounded whatever the size.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Float,
    LargeBinary,
    Numeric,
    Table,
    Time,
    Uuid,
    select,
)
from sqlalchemy.engine import Connection

from backup import crypto
from backup.dialect import stream_rows
from backup.errors import ArchiveError
from node import __version__

FORMAT_NAME = "strongroom-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KEYS_MEMBER = "keys.bin"
ROWS_PER_SEGMENT = 1000
ZLIB_LEVEL = 1
MAX_MANIFEST = 16 * 1024 * 1024
_MEMBER_RE = re.compile(r"^(keys\.bin|tables/[0-9]{3}-[a-z0-9_]{1,63}\.bin)$")

ProgressFn = Callable[[str, int, int], None]
"""Called as ``progress(table, rows_so_far, bytes_so_far)`` while an archive is written or
read; the counts are totals over the whole archive."""


def no_progress(_table: str, _rows: int, _bytes: int) -> None:
    return None


# --- column values <-> JSON ------------------------------------------------------------------


def column_kind(column: Column[Any]) -> str:
    """How values of ``column`` travel in JSON."""
    kind = column.type
    if isinstance(kind, LargeBinary):
        return "bytes"
    if isinstance(kind, DateTime):
        return "datetime"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, Time):
        return "time"
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, Uuid):
        return "uuid"
    if isinstance(kind, Numeric) and not isinstance(kind, Float):
        return "decimal"
    return "plain"


_TO_JSON: dict[str, Callable[[Any], Any]] = {
    "bytes": lambda v: base64.b64encode(v).decode(),
    "datetime": dt.datetime.isoformat,
    "date": lambda v: v.isoformat(),
    "time": lambda v: v.isoformat(),
    "uuid": str,
    "decimal": str,
}
_FROM_JSON: dict[str, Callable[[Any], Any]] = {
    "bytes": base64.b64decode,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
}


def decode_value(kind: str, value: Any) -> Any:
    """One value as it travels in JSON back to Python."""
    fn = _FROM_JSON.get(kind)
    return value if fn is None or value is None else fn(value)


def _converters(
    kinds: list[str], table: dict[str, Callable[[Any], Any]]
) -> list[tuple[int, Callable[[Any], Any]]]:
    return [(i, table[k]) for i, k in enumerate(kinds) if k in table]


# --- the manifest ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TableEntry:
    name: str
    member: str
    rows: int


@dataclass(frozen=True)
class Manifest:
    """The parsed, structurally checked manifest. Its MAC is checked once the key is known."""

    raw: dict[str, Any]
    archive_id: str
    created_at: str
    schema_revision: str
    installation_id: str
    tables: list[TableEntry]
    members: dict[str, dict[str, Any]]
    key_wraps: list[dict[str, Any]]

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def wrap(self, kind: str) -> dict[str, Any] | None:
        for wrap in self.key_wraps:
            if wrap.get("kind") == kind:
                return wrap
        return None


def _parse_manifest(data: bytes) -> Manifest:
    try:
        raw = json.loads(data)
    except ValueError:
        raise ArchiveError("the manifest is not valid JSON (the archive is damaged)") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise ArchiveError("this is not a Strongroom backup archive (no Strongroom manifest)")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"unknown archive format version {version!r}: this Strongroom {__version__} "
            f"reads format version {FORMAT_VERSION} only"
        )
    try:
        tables = [
            TableEntry(str(t["name"]), str(t["member"]), int(t["rows"])) for t in raw["tables"]
        ]
        members = {str(k): dict(v) for k, v in raw["members"].items()}
        manifest = Manifest(
            raw=raw,
            archive_id=str(raw["archive_id"]),
            created_at=str(raw["created_at"]),
            schema_revision=str(raw["schema_revision"]),
            installation_id=str(raw.get("installation_id", "")),
            tables=tables,
            members=members,
            key_wraps=[dict(w) for w in raw["key_wraps"]],
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ArchiveError("the manifest is damaged (a required field is missing)") from None
    if not re.fullmatch(r"[0-9a-f]{32}", manifest.archive_id):
        raise ArchiveError("the manifest is damaged (bad archive id)")
    return manifest


# --- writing ---------------------------------------------------------------------------------


@dataclass
class PassphraseWrap:
    """A recovery passphrase already turned into its key-encryption key (the passphrase
    itself is never kept)."""

    kek: bytes
    salt: bytes
    params: crypto.KdfParams


@dataclass
class ArchiveInfo:
    path: Path
    archive_id: str
    created_at: dt.datetime
    schema_revision: str
    rows: dict[str, int] = field(default_factory=dict)
    size: int = 0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def archive_name(created: dt.datetime) -> str:
    """``strongroom-backup-YYYYMMDDTHHMMSSZ-xxxxxx.zip``: sorts by time."""
    return f"strongroom-backup-{created.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}.zip"


ARCHIVE_NAME_RE = re.compile(r"^strongroom-backup-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}\.zip$")


def _fetch(
    conn: Connection, table: Table, columns: list[Column[Any]], kinds: list[str], order: Any
) -> Iterator[list[list[Any]]]:
    """The rows of ``table`` in batches, as JSON-ready lists. Reads the DBAPI cursor
    directly (a server-side cursor on PostgreSQL) and applies only the type processors
    the dialect needs, which is several times faster than SQLAlchemy rows."""
    dialect = conn.dialect
    steps: list[tuple[int, Callable[[Any], Any]]] = []
    for i, (column, kind) in enumerate(zip(columns, kinds, strict=True)):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        to_json = _TO_JSON.get(kind)
        if process is not None and kind != "bytes":
            steps.append((i, process if to_json is None else _chain(process, to_json)))
        elif to_json is not None:
            steps.append((i, to_json))
    for part in stream_rows(conn, select(*columns).order_by(*order), ROWS_PER_SEGMENT):
        batch = [list(row) for row in part]
        for i, fn in steps:
            for values in batch:
                if values[i] is not None:
                    values[i] = fn(values[i])
        yield batch


def _chain(first: Callable[[Any], Any], second: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if (x := first(v)) is None else second(x)


def _seal_json(writer: crypto.SegmentWriter, data: Any, final: bool = False) -> int:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, check_circular=False)
    payload = zlib.compress(text.encode(), ZLIB_LEVEL)
    writer.write(payload, final=final)
    return len(payload)


def write_archive(
    conn: Connection,
    tables: list[Table],
    dest: Path,
    *,
    master: bytes,
    schema_revision: str,
    installation_id: str,
    source_dialect: str,
    passphrase: PassphraseWrap | None = None,
    created: dt.datetime | None = None,
    progress: ProgressFn = no_progress,
) -> ArchiveInfo:
    """Write every row of ``tables`` (in that order, which must respect foreign keys), as
    read through ``conn`` (one snapshot transaction), to a new archive at ``dest``.
    ``dest`` is written with mode 0600 and must not exist."""
    when = (created or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    archive_key = secrets.token_bytes(crypto.KEY_LEN)
    archive_id = secrets.token_hex(16)
    id_bytes = archive_id.encode()
    info = ArchiveInfo(dest, archive_id, when, schema_revision)
    members: dict[str, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    total_rows = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    stamp = when.timetuple()[:6]
    with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:

        def open_member(name: str) -> IO[bytes]:
            zinfo = zipfile.ZipInfo(name, date_time=stamp)
            zinfo.external_attr = (stat.S_IFREG | 0o600) << 16
            return zf.open(zinfo, "w", force_zip64=True)

        with open_member(KEYS_MEMBER) as out:
            writer = crypto.SegmentWriter(out, archive_key, id_bytes, KEYS_MEMBER)
            _seal_json(writer, {"master_key": crypto.b64(master)}, final=True)
        members[KEYS_MEMBER] = {"sha256": writer.sha256.hexdigest(), "size": writer.size}
        written = writer.size
        for number, table in enumerate(tables, start=1):
            member = f"tables/{number:03d}-{table.name}.bin"
            columns = list(table.columns)
            kinds = [column_kind(c) for c in columns]
            order = list(table.primary_key.columns) or columns
            count = 0
            with open_member(member) as out:
                writer = crypto.SegmentWriter(out, archive_key, id_bytes, member)
                header = {
                    "table": table.name,
                    "columns": [[c.name, k] for c, k in zip(columns, kinds, strict=True)],
                }
                _seal_json(writer, header)
                for batch in _fetch(conn, table, columns, kinds, order):
                    _seal_json(writer, batch)
                    count += len(batch)
                    progress(table.name, total_rows + count, written + writer.size)
                _seal_json(writer, {"rows": count}, final=True)
            total_rows += count
            written += writer.size
            members[member] = {"sha256": writer.sha256.hexdigest(), "size": writer.size}
            entries.append({"name": table.name, "member": member, "rows": count})
            info.rows[table.name] = count
        wraps = [crypto.wrap_with_master(master, archive_key, archive_id)]
        if passphrase is not None:
            wraps.append(
                crypto.wrap_with_passphrase_kek(
                    passphrase.kek, passphrase.salt, passphrase.params, archive_key, archive_id
                )
            )
        body: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "archive_id": archive_id,
            "created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "strongroom_version": __version__,
            "schema_revision": schema_revision,
            "source_dialect": source_dialect,
            "installation_id": installation_id,
            "tables": entries,
            "members": members,
            "key_wraps": wraps,
        }
        body["hmac"] = crypto.manifest_mac(archive_key, body)
        manifest_bytes = json.dumps(body, indent=1, sort_keys=True).encode()
        with open_member(MANIFEST) as out:
            out.write(manifest_bytes)
        raw.flush()
        os.fsync(raw.fileno())
    info.size = dest.stat().st_size
    return info


# --- reading ---------------------------------------------------------------------------------


def _unsafe_name(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if "\\" in name or ".." in name.split("/"):
        return "'..' or a backslash"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    if info.is_dir():
        return "a directory"
    return None


class _HashingReader:
    """Reads a zip member, hashing what passes through and naming the member on damage."""

    def __init__(self, stream: IO[bytes], member: str) -> None:
        self._stream = stream
        self._member = member
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._stream.read(n)
        except zipfile.BadZipFile:
            raise ArchiveError(
                f"archive member {self._member} is damaged (its zip CRC does not match)"
            ) from None
        except (OSError, EOFError, zlib.error):
            raise ArchiveError(f"archive member {self._member} is truncated or damaged") from None
        self.sha256.update(data)
        self.size += len(data)
        return data


@dataclass(frozen=True)
class TableStream:
    """The columns of one archived table and its rows, in batches, decoded to Python."""

    name: str
    columns: list[str]
    kinds: list[str]
    batches: Iterator[list[list[Any]]]


class ArchiveReader:
    """An archive opened for verification and restore. Opening checks only the structure
    (zip, member names, manifest format); :meth:`unlock` and :meth:`verify` check the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path, "r")
        except FileNotFoundError:
            raise ArchiveError(f"archive {path} does not exist") from None
        except IsADirectoryError:
            raise ArchiveError(f"archive {path} is a directory, not a backup archive") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise ArchiveError(
                f"{path.name} is not a complete zip archive (truncated or damaged)"
            ) from None
        try:
            self._check_names()
            self.manifest = self._load_manifest()
        except BaseException:
            self._zip.close()
            raise

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check_names(self) -> None:
        seen: set[str] = set()
        for info in self._zip.infolist():
            problem = _unsafe_name(info)
            if problem is not None:
                raise ArchiveError(
                    f"archive member name {info.filename!r} is unsafe ({problem}); "
                    "refusing the whole archive"
                )
            if info.filename in seen:
                raise ArchiveError(f"archive member {info.filename!r} appears twice")
            seen.add(info.filename)
        if MANIFEST not in seen:
            raise ArchiveError("this is not a Strongroom backup archive (no manifest.json)")

    def _load_manifest(self) -> Manifest:
        if self._zip.getinfo(MANIFEST).file_size > MAX_MANIFEST:
            raise ArchiveError("the manifest is implausibly large (the archive is damaged)")
        with self._zip.open(MANIFEST) as fh:
            data = _HashingReader(fh, MANIFEST).read()
        manifest = _parse_manifest(data)
        for name in list(manifest.members) + [t.member for t in manifest.tables]:
            if not _MEMBER_RE.match(name):
                raise ArchiveError(f"the manifest names an unsafe member {name!r}")
        return manifest

    # keys --------------------------------------------------------------------------------

    def unlock_with_master(self, master: bytes) -> bytes:
        wrap = self.manifest.wrap("master")
        if wrap is None:
            raise ArchiveError("the manifest is damaged (no master key wrap)")
        key = crypto.unwrap_with_master(master, wrap, self.manifest.archive_id)
        self._check_mac(key)
        return key

    def unlock_with_passphrase(self, passphrase: str) -> bytes:
        wrap = self.manifest.wrap("passphrase")
        if wrap is None:
            raise ArchiveError(
                "this archive has no recovery passphrase (none was configured when it was "
                "made); use the master key file"
            )
        key = crypto.unwrap_with_passphrase(passphrase, wrap, self.manifest.archive_id)
        self._check_mac(key)
        return key

    def _check_mac(self, key: bytes) -> None:
        expected = crypto.manifest_mac(key, self.manifest.raw)
        if not hmac.compare_digest(expected, str(self.manifest.raw.get("hmac", ""))):
            raise ArchiveError("the manifest was altered (its HMAC does not verify)")

    # members -----------------------------------------------------------------------------

    def _member_segments(self, key: bytes, member: str) -> Iterator[bytes]:
        expected = self.manifest.members.get(member)
        if expected is None:
            raise ArchiveError(f"the manifest does not list member {member}")
        try:
            stream = self._zip.open(member)
        except KeyError:
            raise ArchiveError(f"archive member {member} is missing") from None
        with stream:
            reader = _HashingReader(stream, member)
            yield from crypto.read_segments(
                reader,
                key,
                self.manifest.archive_id.encode(),
                member,
            )
            if reader.size != expected.get("size") or reader.sha256.hexdigest() != expected.get(
                "sha256"
            ):
                raise ArchiveError(f"archive member {member} is damaged (SHA-256 mismatch)")

    def verify(self, key: bytes, progress: ProgressFn = no_progress) -> None:
        """Check every member against the manifest: the member set, each SHA-256 and every
        segment's authentication tag. Reads the whole archive; writes nothing."""
        names = {i.filename for i in self._zip.infolist()} - {MANIFEST}
        listed = set(self.manifest.members)
        if names - listed:
            raise ArchiveError(f"unexpected archive member {sorted(names - listed)[0]}")
        if listed - names:
            raise ArchiveError(f"archive member {sorted(listed - names)[0]} is missing")
        if {t.member for t in self.manifest.tables} | {KEYS_MEMBER} != listed:
            raise ArchiveError("the manifest's table list does not match its members")
        done = 0
        for member in sorted(listed):
            for _plain in self._member_segments(key, member):
                pass
            done += int(self.manifest.members[member].get("size", 0))
            progress(member, 0, done)

    def master_key(self, key: bytes) -> bytes:
        segments = list(self._member_segments(key, KEYS_MEMBER))
        try:
            data = json.loads(zlib.decompress(segments[0]))
            master = base64.b64decode(data["master_key"], validate=True)
        except (ValueError, KeyError, TypeError, IndexError, zlib.error):
            raise ArchiveError(f"archive member {KEYS_MEMBER} is damaged") from None
        if len(master) != crypto.KEY_LEN:
            raise ArchiveError(f"archive member {KEYS_MEMBER} is damaged")
        return master

    def table(self, key: bytes, entry: TableEntry, decode: bool = True) -> TableStream:
        """Open one table's member: its header now, its rows as they are read, decoded to
        Python values (or, with ``decode=False``, as they travel in JSON)."""
        segments = self._member_segments(key, entry.member)
        try:
            header = _decode(next(segments), entry.member)
            columns = [str(c[0]) for c in header["columns"]]
            kinds = [str(c[1]) for c in header["columns"]]
            if header["table"] != entry.name:
                raise ValueError
        except (StopIteration, KeyError, TypeError, ValueError, IndexError):
            raise ArchiveError(f"archive member {entry.member} has a damaged header") from None
        batches = self._batches(segments, entry, kinds if decode else [])
        return TableStream(entry.name, columns, kinds, batches)

    def _batches(
        self, segments: Iterator[bytes], entry: TableEntry, kinds: list[str]
    ) -> Iterator[list[list[Any]]]:
        convert = _converters(kinds, _FROM_JSON)
        count = 0
        for plain in segments:
            data = _decode(plain, entry.member)
            if isinstance(data, dict):
                if data.get("rows") != count or count != entry.rows:
                    raise ArchiveError(
                        f"table {entry.name}: {count} rows read, the archive says {entry.rows}"
                    )
                continue
            if not isinstance(data, list):
                raise ArchiveError(f"archive member {entry.member} is damaged")
            try:
                for values in data:
                    for i, fn in convert:
                        if values[i] is not None:
                            values[i] = fn(values[i])
            except (ValueError, TypeError, IndexError, decimal.InvalidOperation):
                raise ArchiveError(f"archive member {entry.member} holds a bad value") from None
            count += len(data)
            yield data


def _decode(plain: bytes, member: str) -> Any:
    try:
        return json.loads(zlib.decompress(plain))
    except (ValueError, zlib.error):
        raise ArchiveError(f"archive member {member} is damaged (bad segment content)") from None
