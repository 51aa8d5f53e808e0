"""The key ring: a master key in a file, data keys in the database wrapped by it, and
AES-256-GCM encryption of secrets bound to their table, column and row.

Ciphertext format (version 1)::

    0x01 | data key id (4 bytes, big-endian) | nonce (12 bytes) | ciphertext + GCM tag

The associated data is ``sr1|<table>|<column>|<row id>``, so a ciphertext copied to another
row, column or table does not decrypt. Every way a ciphertext can be bad raises the same
opaque :class:`DecryptionError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.errors import DecryptionError, KeyFileError
from node.store.db import Store
from node.store.models import DataKey, KeyringMeta, utcnow

log = logging.getLogger("strongroom.keyring")
# Writes the audit row of a rotation or rekey in its transaction: (session, what was done).
Record = Callable[[Session, str], None]

FORMAT_V1 = 0x01
_HEADER = struct.Struct(">BI")
NONCE_LEN = 12
KEY_LEN = 32
_CHECK_LABEL = b"strongroom master key check v1"
_KEY_FILE_PREFIX = "strongroom-master-key-v1:"


# --- the master key file -------------------------------------------------------------------


def _encode_key(key: bytes) -> str:
    return _KEY_FILE_PREFIX + base64.b64encode(key).decode() + "\n"


def write_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` with mode 0600, atomically, never over an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, _encode_key(key).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    """Read a master key file, refusing one that group or others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"master key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"master key file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"master key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"master key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"master key file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        text = ""
    if not text.startswith(_KEY_FILE_PREFIX):
        raise KeyFileError(f"master key file {path} is not a Strongroom master key")
    try:
        key = base64.b64decode(text[len(_KEY_FILE_PREFIX) :], validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_LEN:
        raise KeyFileError(f"master key file {path} is damaged (not a 256-bit key)")
    return key


def master_check(key: bytes) -> bytes:
    return hmac.new(key, _CHECK_LABEL, hashlib.sha256).digest()


def _wrap(master: bytes, key: bytes, purpose: str) -> bytes:
    nonce = os.urandom(NONCE_LEN)
    return nonce + AESGCM(master).encrypt(nonce, key, b"sr-data-key|" + purpose.encode())


def _unwrap(master: bytes, wrapped: bytes, purpose: str) -> bytes:
    try:
        return AESGCM(master).decrypt(
            wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], b"sr-data-key|" + purpose.encode()
        )
    except InvalidTag:
        raise KeyFileError("a data key does not unwrap with this master key") from None


def aad_for(table: str, column: str, row_id: int | str) -> bytes:
    return f"sr1|{table}|{column}|{row_id}".encode()


# --- the key ring --------------------------------------------------------------------------


class KeyRing:
    """Encrypts and decrypts secrets. Thread-safe; data keys are cached after unwrapping and
    reloaded from the database when a ciphertext names one not seen yet (rotation made by
    another process or node)."""

    def __init__(self, store: Store, master: bytes, key_path: Path) -> None:
        self._store = store
        self._master = master
        self._key_path = key_path
        self._lock = threading.Lock()
        self._keys: dict[int, AESGCM] = {}
        self._active_id = 0
        self._audit_key = b""
        self._load()

    # opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, key_path: Path) -> KeyRing:
        """Open the key ring of ``store``. On a new database, create the master key file
        (if absent), the first data key and the audit key. On an existing one, the key file
        must exist and fit, or this raises :class:`KeyFileError` and changes nothing."""
        with store.transaction() as session:
            meta = session.get(KeyringMeta, 1)
            initialised = meta is not None
        if not initialised:
            if key_path.exists():
                master = read_key_file(key_path)
            else:
                master = secrets.token_bytes(KEY_LEN)
                write_key_file(key_path, master)
                log.info("created master key file", extra={"path": str(key_path)})
            with store.transaction() as session:
                session.add(KeyringMeta(id=1, master_check=master_check(master)))
                for purpose in ("data", "audit"):
                    session.add(
                        DataKey(
                            purpose=purpose,
                            wrapped=_wrap(master, secrets.token_bytes(KEY_LEN), purpose),
                            active=True,
                        )
                    )
            return cls(store, master, key_path)
        cls.check_fits(store, key_path)
        master = _settle_rekey(store, key_path)
        return cls(store, master, key_path)

    @staticmethod
    def check_fits(store: Store, key_path: Path) -> None:
        """Raise :class:`KeyFileError` unless the key file (or an interrupted rekey's new
        file) exists, is private, and fits this database. Changes nothing."""
        pending = _pending_rekey(key_path)
        if not key_path.exists() and not pending.exists():
            raise KeyFileError(
                f"master key file {key_path} is missing, but the database already holds "
                "data; restore the key file (or set master_key_path) before starting"
            )
        with store.sessions() as session:
            meta = session.get(KeyringMeta, 1)
            check = meta.master_check if meta is not None else None
        if check is None:
            return
        for candidate in (key_path, pending):
            if candidate.exists() and hmac.compare_digest(
                master_check(read_key_file(candidate)), check
            ):
                return
        raise KeyFileError(
            f"master key file {key_path} does not fit this database (wrong key, or the data "
            "belongs to another installation)"
        )

    def _load(self) -> None:
        with self._store.transaction() as session:
            rows = session.scalars(select(DataKey)).all()
        keys: dict[int, AESGCM] = {}
        active = 0
        audit = b""
        for row in rows:
            raw = _unwrap(self._master, row.wrapped, row.purpose)
            if row.purpose == "audit":
                audit = raw
            else:
                keys[row.id] = AESGCM(raw)
                if row.active:
                    active = row.id
        if not active or not audit:
            raise KeyFileError("the key ring in the database is incomplete")
        with self._lock:
            self._keys = keys
            self._active_id = active
            self._audit_key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"strongroom audit hmac v1"
            ).derive(audit)

    # use --------------------------------------------------------------------------------

    @property
    def active_key_id(self) -> int:
        return self._active_id

    @property
    def audit_hmac_key(self) -> bytes:
        return self._audit_key

    def derive(self, label: str) -> bytes:
        """A 256-bit key for a purpose named by ``label``, derived from the audit root; stable
        across rotation and rekey (used for session signing and manifest MACs)."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"strongroom|" + label.encode()
        ).derive(self._audit_key)

    def encrypt(self, plaintext: str | bytes, table: str, column: str, row_id: int | str) -> bytes:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        with self._lock:
            key_id = self._active_id
            aead = self._keys[key_id]
        nonce = os.urandom(NONCE_LEN)
        return (
            _HEADER.pack(FORMAT_V1, key_id)
            + nonce
            + aead.encrypt(nonce, data, aad_for(table, column, row_id))
        )

    def decrypt(self, blob: bytes, table: str, column: str, row_id: int | str) -> bytes:
        if len(blob) < _HEADER.size + NONCE_LEN + 16:
            raise DecryptionError()
        version, key_id = _HEADER.unpack_from(blob)
        if version != FORMAT_V1:
            raise DecryptionError()
        aead = self._keys.get(key_id)
        if aead is None:
            self._load()
            aead = self._keys.get(key_id)
            if aead is None:
                raise DecryptionError()
        nonce = blob[_HEADER.size : _HEADER.size + NONCE_LEN]
        try:
            return aead.decrypt(
                nonce, blob[_HEADER.size + NONCE_LEN :], aad_for(table, column, row_id)
            )
        except InvalidTag:
            raise DecryptionError() from None

    def decrypt_text(self, blob: bytes, table: str, column: str, row_id: int | str) -> str:
        return self.decrypt(blob, table, column, row_id).decode()

    @staticmethod
    def key_id_of(blob: bytes) -> int:
        return int(_HEADER.unpack_from(blob)[1])

    # rotation and rekey -----------------------------------------------------------------

    def rotate(self, record: Record | None = None) -> int:
        """Add a new active data key. Old keys stay and still decrypt. Returns its id.
        ``record(session, what)`` writes its audit row in the same transaction."""
        with self._store.transaction() as session:
            session.execute(update(DataKey).where(DataKey.purpose == "data").values(active=False))
            row = DataKey(
                purpose="data",
                wrapped=_wrap(self._master, secrets.token_bytes(KEY_LEN), "data"),
                active=True,
            )
            session.add(row)
            session.flush()
            new_id = row.id
            if record is not None:
                record(
                    session, f"data key {new_id} added and made active (older keys still decrypt)"
                )
        self._load()
        log.info("rotated data key", extra={"key_id": new_id})
        return new_id

    def rekey(self, now: dt.datetime | None = None, record: Record | None = None) -> Path:
        """Replace the master key: re-wrap every data key (not the secrets) and swap the key
        file, keeping the old one as a dated backup whose path is returned. ``record(session,
        what)`` writes its audit row in the transaction that re-wraps the keys."""
        when = now or dt.datetime.now(dt.UTC)
        new_master = secrets.token_bytes(KEY_LEN)
        pending = _pending_rekey(self._key_path)
        pending.unlink(missing_ok=True)
        write_key_file(pending, new_master)
        with self._store.transaction() as session:
            self._rewrap_all(session, new_master)
            if record is not None:
                record(session, "master key replaced (data keys re-wrapped)")
        backup = self._key_path.with_name(
            f"{self._key_path.name}.{when.strftime('%Y%m%dT%H%M%SZ')}.bak"
        )
        _finish_rekey(self._key_path, backup)
        self._master = new_master
        self._load()
        log.info("rekeyed master key", extra={"backup": str(backup)})
        return backup

    def _rewrap_all(self, session: Session, new_master: bytes) -> None:
        for row in session.scalars(select(DataKey)).all():
            raw = _unwrap(self._master, row.wrapped, row.purpose)
            row.wrapped = _wrap(new_master, raw, row.purpose)
        meta = session.get(KeyringMeta, 1)
        assert meta is not None
        meta.master_check = master_check(new_master)
        meta.rekeyed_at = utcnow()


def _pending_rekey(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".new")


def _finish_rekey(key_path: Path, backup: Path) -> None:
    if key_path.exists():
        os.replace(key_path, backup)
    os.replace(_pending_rekey(key_path), key_path)
    _fsync_dir(key_path.parent)


def _settle_rekey(store: Store, key_path: Path) -> bytes:
    """Return the master key that fits the database, finishing a rekey that was interrupted
    after its database commit, or dropping one interrupted before it."""
    with store.transaction() as session:
        meta = session.get(KeyringMeta, 1)
        assert meta is not None
        check = meta.master_check
    pending = _pending_rekey(key_path)
    if key_path.exists():
        current = read_key_file(key_path)
        if hmac.compare_digest(master_check(current), check):
            pending.unlink(missing_ok=True)
            return current
    if pending.exists():
        new = read_key_file(pending)
        if hmac.compare_digest(master_check(new), check):
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            _finish_rekey(key_path, key_path.with_name(f"{key_path.name}.{stamp}.bak"))
            log.warning("finished an interrupted rekey", extra={"path": str(key_path)})
            return new
    raise KeyFileError(
        f"master key file {key_path} does not fit this database (wrong key, or the data "
        "belongs to another installation)"
    )
