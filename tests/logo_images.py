"""Small image files made byte by byte for the rebranding tests (no imaging library)."""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(
    width: int, height: int, *, pad_to: int = 0, rgb: tuple[int, int, int] = (31, 95, 168)
) -> bytes:
    """A real, decodable RGB PNG; ``pad_to`` grows it to exactly that many bytes with a
    text chunk."""
    row = b"\x00" + bytes(rgb) * width
    head = PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(row * height))
    end = png_chunk(b"IEND", b"")
    if pad_to:
        fill = pad_to - len(head) - len(data) - len(end) - 12 - len(b"Comment\x00")
        assert fill >= 0
        head += png_chunk(b"tEXt", b"Comment\x00" + b"x" * fill)
    return head + data + end


def jpeg(width: int, height: int, *, sof: int = 0xC0) -> bytes:
    """A JPEG's marker structure (SOI, APP0 JFIF, DQT, SOFn with the size, SOS, EOI)."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = segment(0xDB, b"\x00" + bytes(range(1, 65)))
    frame = segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    scan = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x12\x34\x56\xff\x00\x78"
    return b"\xff\xd8" + app0 + dqt + frame + scan + b"\xff\xd9"
