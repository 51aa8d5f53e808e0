"""Small image files made byte by byte for the rebranding tests (no imaging library)."""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(
    width: int,
    height: int,
    *,
    pad_to: int = 0,
    rgb: tuple[int, int, int] = (31, 95, 168),
    depth_and_colour: tuple[int, int] = (8, 2),
    idat: bool = True,
) -> bytes:
    """A real, decodable RGB PNG; ``pad_to`` grows it to exactly that many bytes with a
    text chunk. ``depth_and_colour`` other than (8, 2) only changes the header (the image
    data stays RGB), and ``idat=False`` leaves the image data out."""
    row = b"\x00" + bytes(rgb) * width
    depth, colour = depth_and_colour
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    head = PNG_SIGNATURE + png_chunk(b"IHDR", header)
    data = png_chunk(b"IDAT", zlib.compress(row * height)) if idat else b""
    end = png_chunk(b"IEND", b"")
    if pad_to:
        fill = pad_to - len(head) - len(data) - len(end) - 12 - len(b"Comment\x00")
        assert fill >= 0
        head += png_chunk(b"tEXt", b"Comment\x00" + b"x" * fill)
    return head + data + end


def jpeg(
    width: int, height: int, *, sof: int = 0xC0, scan: bool = True, second_frame: bytes = b""
) -> bytes:
    """A JPEG's marker structure (SOI, APP0 JFIF, DQT, SOFn with the size, SOS, EOI);
    ``scan=False`` leaves the scan out, ``second_frame`` is put after the first frame
    header (see :func:`jpeg_frame`)."""
    app0 = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = _segment(0xDB, b"\x00" + bytes(range(1, 65)))
    frame = jpeg_frame(width, height, sof)
    body = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x12\x34\x56\xff\x00\x78"
    return b"\xff\xd8" + app0 + dqt + frame + second_frame + (body if scan else b"") + b"\xff\xd9"


def jpeg_frame(width: int, height: int, sof: int = 0xC0) -> bytes:
    """A JPEG frame header (SOFn) of one component."""
    return _segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
