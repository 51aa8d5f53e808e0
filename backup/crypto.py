"""The cryptography of an archive: the archive key, its wraps, the manifest MAC and the
chunked AES-256-GCM segment stream every encrypted member is made of.

Segment stream of one member (see docs/backup-format.md)::

    repeated: length (4 bytes, big-endian, of ciphertext+tag) | nonce (12) | ciphertext+tag

The associated data of segment ``i`` is
``b"sr-backup-seg-v1|" + archive_id + b"|" + member name + b"|" + i (8 bytes) + final (1)``,
so a segment moved to another archive, member or position, a dropped tail (no segment
with ``final = 1``) or data after the final segment is detected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backup.errors import ArchiveError, WrongKeyError

KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
MAX_SEGMENT = 64 * 1024 * 1024  # a reader refuses larger segments (bounded memory)
_LEN = struct.Struct(">I")
_INDEX = struct.Struct(">QB")
_SEG_LABEL = b"sr-backup-seg-v1|"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise ArchiveError(f"the manifest is damaged ({what} is not base64)") from None


def _hkdf(key: bytes, label: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=label.encode()).derive(
        key
    )


# --- wrapping the archive key ----------------------------------------------------------------


def master_fingerprint(master: bytes) -> str:
    """A public name of a master key (16 hex digits), so a wrong key file is named as such."""
    return _hkdf(master, "strongroom backup master fingerprint v1")[:8].hex()


def _wrap_aad(kind: str, archive_id: str) -> bytes:
    return f"sr-backup-wrap-v1|{kind}|{archive_id}".encode()


def wrap_with_master(master: bytes, archive_key: bytes, archive_id: str) -> dict[str, Any]:
    kek = _hkdf(master, "strongroom backup archive key wrap v1")
    nonce = os.urandom(NONCE_LEN)
    wrapped = AESGCM(kek).encrypt(nonce, archive_key, _wrap_aad("master", archive_id))
    return {
        "kind": "master",
        "key_fingerprint": master_fingerprint(master),
        "nonce": b64(nonce),
        "wrapped": b64(wrapped),
    }


def unwrap_with_master(master: bytes, wrap: dict[str, Any], archive_id: str) -> bytes:
    if wrap.get("key_fingerprint") != master_fingerprint(master):
        raise WrongKeyError(
            "wrong master key: this archive was made with the master key whose fingerprint is "
            f"{wrap.get('key_fingerprint')}, the key file given is {master_fingerprint(master)}"
        )
    kek = _hkdf(master, "strongroom backup archive key wrap v1")
    try:
        return AESGCM(kek).decrypt(
            unb64(wrap.get("nonce"), "a nonce"),
            unb64(wrap.get("wrapped"), "a wrapped key"),
            _wrap_aad("master", archive_id),
        )
    except InvalidTag:
        raise ArchiveError(
            "the archive key does not unwrap with this master key although its fingerprint "
            "matches: the manifest was altered"
        ) from None


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost of a recovery passphrase; stored in the manifest beside the salt."""

    memory_kib: int = 65536
    iterations: int = 3
    lanes: int = 4

    def as_dict(self) -> dict[str, int]:
        return {"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}


def passphrase_kek(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    """The key-encryption key of a recovery passphrase (Argon2id)."""
    return Argon2id(
        salt=salt,
        length=KEY_LEN,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    ).derive(passphrase.encode())


def wrap_with_passphrase_kek(
    kek: bytes, salt: bytes, params: KdfParams, archive_key: bytes, archive_id: str
) -> dict[str, Any]:
    nonce = os.urandom(NONCE_LEN)
    wrapped = AESGCM(kek).encrypt(nonce, archive_key, _wrap_aad("passphrase", archive_id))
    return {
        "kind": "passphrase",
        "kdf": "argon2id",
        "salt": b64(salt),
        **params.as_dict(),
        "nonce": b64(nonce),
        "wrapped": b64(wrapped),
    }


_KDF_LIMITS = {"memory_kib": (8, 4 * 1024 * 1024), "iterations": (1, 64), "lanes": (1, 64)}


def unwrap_with_passphrase(passphrase: str, wrap: dict[str, Any], archive_id: str) -> bytes:
    values: dict[str, int] = {}
    for name, (low, high) in _KDF_LIMITS.items():
        value = wrap.get(name)
        if not isinstance(value, int) or not low <= value <= high:
            raise ArchiveError(f"the manifest is damaged (passphrase {name} out of range)")
        values[name] = value
    if wrap.get("kdf") != "argon2id":
        raise ArchiveError(f"unknown passphrase KDF {wrap.get('kdf')!r} in the manifest")
    kek = passphrase_kek(passphrase, unb64(wrap.get("salt"), "the salt"), KdfParams(**values))
    try:
        return AESGCM(kek).decrypt(
            unb64(wrap.get("nonce"), "a nonce"),
            unb64(wrap.get("wrapped"), "a wrapped key"),
            _wrap_aad("passphrase", archive_id),
        )
    except InvalidTag:
        raise WrongKeyError("wrong recovery passphrase for this archive") from None


# --- the manifest MAC ------------------------------------------------------------------------


def canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_mac(archive_key: bytes, body: dict[str, Any]) -> str:
    """HMAC-SHA256 over the canonical JSON of the manifest without its ``hmac`` field."""
    key = _hkdf(archive_key, "strongroom backup manifest hmac v1")
    unsigned = {k: v for k, v in body.items() if k != "hmac"}
    return hmac.new(key, canonical(unsigned), hashlib.sha256).hexdigest()


# --- segment streams -------------------------------------------------------------------------


def _aad(archive_id: bytes, member: str, index: int, final: bool) -> bytes:
    return _SEG_LABEL + archive_id + b"|" + member.encode() + b"|" + _INDEX.pack(index, final)


class SegmentWriter:
    """Writes one member as authenticated segments; counts bytes and hashes what it writes."""

    def __init__(self, out: IO[bytes], archive_key: bytes, archive_id: bytes, member: str):
        self._out = out
        self._aead = AESGCM(archive_key)
        self._id = archive_id
        self._member = member
        self._index = 0
        self._closed = False
        self.sha256 = hashlib.sha256()
        self.size = 0

    @property
    def segments(self) -> int:
        return self._index

    def write(self, plaintext: bytes, final: bool = False) -> None:
        if self._closed:
            raise ValueError("segment stream already closed")
        nonce = os.urandom(NONCE_LEN)
        sealed = self._aead.encrypt(
            nonce, plaintext, _aad(self._id, self._member, self._index, final)
        )
        frame = _LEN.pack(len(sealed)) + nonce + sealed
        self._out.write(frame)
        self.sha256.update(frame)
        self.size += len(frame)
        self._index += 1
        self._closed = final


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def read_segments(
    stream: Readable, archive_key: bytes, archive_id: bytes, member: str
) -> Iterator[bytes]:
    """Yield the plaintext of each segment of ``member`` in order, authenticating each one.
    Raises :class:`ArchiveError` naming the member on any damage, truncation or reordering."""
    aead = AESGCM(archive_key)
    index = 0
    while True:
        head = stream.read(_LEN.size + NONCE_LEN)
        if not head:
            raise ArchiveError(
                f"archive member {member} is truncated (it ends after {index} segments "
                "without its final segment)"
            )
        if len(head) < _LEN.size + NONCE_LEN:
            raise ArchiveError(f"archive member {member} is truncated inside segment {index}")
        (length,) = _LEN.unpack_from(head)
        if not TAG_LEN <= length <= MAX_SEGMENT:
            raise ArchiveError(f"archive member {member} is damaged at segment {index}")
        sealed = stream.read(length)
        if len(sealed) < length:
            raise ArchiveError(f"archive member {member} is truncated inside segment {index}")
        nonce = head[_LEN.size :]
        plain: bytes | None = None
        final = False
        for final in (False, True):
            try:
                plain = aead.decrypt(nonce, sealed, _aad(archive_id, member, index, final))
                break
            except InvalidTag:
                continue
        if plain is None:
            raise ArchiveError(
                f"archive member {member}: segment {index} fails authentication "
                "(altered, reordered or from another archive)"
            )
        yield plain
        index += 1
        if final:
            if stream.read(1):
                raise ArchiveError(f"archive member {member} has data after its final segment")
            return
