"""The segment stream on its own: reordered, dropped, appended or foreign segments are each
refused, naming the member; key wraps refuse the wrong key or passphrase."""

from __future__ import annotations

import io
import os
import struct

import pytest

from backup import crypto
from backup.errors import ArchiveError, WrongKeyError

KEY = bytes(range(32))
ARCHIVE_ID = b"0123456789abcdef0123456789abcdef"


def _stream(parts: list[bytes], member: str = "tables/001-users.bin") -> bytes:
    out = io.BytesIO()
    writer = crypto.SegmentWriter(out, KEY, ARCHIVE_ID, member)
    for i, part in enumerate(parts):
        writer.write(part, final=i == len(parts) - 1)
    assert writer.size == len(out.getvalue())
    return out.getvalue()


def _frames(data: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 4 + crypto.NONCE_LEN + length
        frames.append(data[pos:end])
        pos = end
    return frames


def _read(data: bytes, member: str = "tables/001-users.bin") -> list[bytes]:
    return list(crypto.read_segments(io.BytesIO(data), KEY, ARCHIVE_ID, member))


def test_round_trip() -> None:
    parts = [b"header", b"rows 1", b"rows 2", b"trailer"]
    assert _read(_stream(parts)) == parts


def test_reordered_segments() -> None:
    frames = _frames(_stream([b"a", b"b", b"c"]))
    with pytest.raises(ArchiveError, match="segment 0 fails authentication"):
        _read(frames[1] + frames[0] + frames[2])


def test_dropped_tail_is_truncation() -> None:
    frames = _frames(_stream([b"a", b"b", b"c"]))
    with pytest.raises(ArchiveError, match="truncated .* after 2 segments"):
        _read(frames[0] + frames[1])
    with pytest.raises(ArchiveError, match="truncated inside segment 2"):
        _read(frames[0] + frames[1] + frames[2][:-5])


def test_data_after_the_final_segment() -> None:
    data = _stream([b"a", b"b"])
    with pytest.raises(ArchiveError, match="data after its final segment"):
        _read(data + b"\x00")


def test_segment_from_another_member_or_archive() -> None:
    other = _frames(_stream([b"x", b"y"], member="tables/002-accounts.bin"))
    mine = _frames(_stream([b"a", b"b"]))
    with pytest.raises(ArchiveError, match="tables/001-users.bin: segment 0 fails"):
        _read(other[0] + mine[1])
    with pytest.raises(ArchiveError, match="segment 0 fails authentication"):
        list(
            crypto.read_segments(io.BytesIO(b"".join(mine)), KEY, b"f" * 32, "tables/001-users.bin")
        )


def test_wraps_refuse_the_wrong_key_and_passphrase() -> None:
    archive_key = os.urandom(32)
    wrap = crypto.wrap_with_master(KEY, archive_key, "id")
    assert crypto.unwrap_with_master(KEY, wrap, "id") == archive_key
    with pytest.raises(WrongKeyError, match="wrong master key"):
        crypto.unwrap_with_master(bytes(32), wrap, "id")
    params = crypto.KdfParams(memory_kib=1024, iterations=1, lanes=1)
    kek = crypto.passphrase_kek("right one", b"s" * 16, params)
    pwrap = crypto.wrap_with_passphrase_kek(kek, b"s" * 16, params, archive_key, "id")
    assert crypto.unwrap_with_passphrase("right one", pwrap, "id") == archive_key
    with pytest.raises(WrongKeyError, match="wrong recovery passphrase"):
        crypto.unwrap_with_passphrase("wrong one", pwrap, "id")
    with pytest.raises(ArchiveError, match="out of range"):
        crypto.unwrap_with_passphrase("right one", {**pwrap, "memory_kib": 10**9}, "id")
