"""Rebranding: the logo on the login page and in the header (shown at 210x50).

A logo is a PNG or a JPEG of at most :data:`MAX_LOGO_BYTES`. The type is decided by the
file's own bytes (its signature and structure), never by its name or the browser's claimed
content type; its dimensions are read from the header (PNG IHDR, JPEG SOF segment) without
decoding the image. A file that no browser would draw is refused too: a PNG with an
invalid colour type and bit depth or no image data, a JPEG without a scan or with a second
frame header. Uploading and removing a logo are audited (user audit, operation
``settings``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from node.audit import AuditLog, user_event
from node.auth import SessionUser
from node.errors import ValidationError
from node.permissions import Action, require
from node.store.db import Store
from node.store.models import BrandingLogo, utcnow

MAX_LOGO_BYTES = 200 * 1024
MAX_DIMENSION = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# frame headers: C0-CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_IN_SCAN = frozenset({0x00, 0xFF, *range(0xD0, 0xD8)})  # after 0xFF in scan data: no marker


@dataclass(frozen=True)
class LogoInfo:
    content_type: str  # image/png | image/jpeg
    width: int
    height: int
    size: int
    problem: str = ""  # a stored logo that a later version's checks refuse: why

    @property
    def kind(self) -> str:
        return "PNG" if self.content_type == "image/png" else "JPEG"

    def describe(self) -> str:
        if self.problem:
            return f"{self.size} bytes, which the current checks refuse ({self.problem})"
        return f"{self.kind}, {self.width}x{self.height} pixels, {self.size} bytes"


def _bad(what: str) -> ValidationError:
    return ValidationError(f"the logo must be a PNG or JPEG image: {what}")


# The bit depths each PNG colour type allows (PNG specification, 11.2.2 IHDR): any
# other pair is an image no browser draws.
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _png_header(body: bytes) -> tuple[int, int, int]:
    """Width, height and colour type from IHDR, whose other fields must be ones a decoder
    knows."""
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", body
    )
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise _bad(f"the PNG header's colour type {colour} with bit depth {depth} is not valid")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise _bad(
            "the PNG header names a compression, filter or interlace method that is not PNG's"
        )
    return width, height, colour


def _png_size(data: bytes) -> tuple[int, int]:
    """Walk the PNG's chunks (checking each CRC) up to IEND; return IHDR's width and
    height. A header that decoders refuse, or no image data, is refused too: the logo
    would be a blank the upload's answer called a PNG."""
    pos = len(PNG_SIGNATURE)
    size: tuple[int, int] | None = None
    colour = 0
    seen: set[bytes] = set()
    first = True
    while True:
        if pos + 8 > len(data):
            raise _bad("the PNG file is truncated")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if length > len(data) or end > len(data):
            raise _bad("the PNG file is truncated")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : end])
        if zlib.crc32(kind + body) != crc:
            raise _bad("the PNG file is damaged (a checksum does not match)")
        if first:
            if kind != b"IHDR" or length != 13:
                raise _bad("the PNG file has no header chunk")
            width, height, colour = _png_header(body)
            size = (width, height)
            first = False
        if kind == b"IDAT" and colour == 3 and b"PLTE" not in seen:
            raise _bad("the PNG file is a palette image without a palette (PLTE chunk)")
        seen.add(kind)
        if kind == b"IEND":
            if b"IDAT" not in seen:
                raise _bad("the PNG file has no image data (no IDAT chunk)")
            if end != len(data):  # a file that is a PNG and something else as well
                raise _bad(f"{len(data) - end} bytes follow the PNG's end")
            break
        pos = end
    assert size is not None
    return size


def _jpeg_walk(data: bytes) -> tuple[int, int, int]:
    """Walk the JPEG's marker segments and, after each start-of-scan, its entropy-coded
    data (where 0xFF is followed by 0x00 or a restart marker) up to the first end-of-image
    marker: return the frame header's width and height, and where that marker ends. A
    second file hidden behind the image, itself ending 0xFF 0xD9, is not taken for the
    image's own end. Exactly one frame header (SOFn) and at least one scan (SOS) after it:
    a frame without a scan draws nothing, and a second frame header could claim another
    size than the one checked (60000x60000, say)."""
    pos, n = 2, len(data)
    size: tuple[int, int] | None = None
    scanned = False
    while pos < n:
        if data[pos] != 0xFF:
            raise _bad("the JPEG file is damaged (no marker where one is due)")
        while pos < n and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            if size is None:
                break
            if not scanned:
                raise _bad("the JPEG file has no image data (a frame header but no scan)")
            return size[0], size[1], pos
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise _bad("the JPEG file is damaged (a segment is too short)")
        if pos + length > n:
            raise _bad("the JPEG file is truncated")
        if marker in _SOF_MARKERS:
            if size is not None:
                raise _bad("the JPEG file has more than one frame header")
            if length < 7:
                raise _bad("the JPEG frame header is too short")
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            size = (width, height)
        elif marker == 0xDA:
            if size is None:  # scan data before any frame header
                break
            scanned = True
        pos += length
        if marker == 0xDA:  # entropy-coded data up to the next marker
            while pos + 1 < n and not (data[pos] == 0xFF and data[pos + 1] not in _IN_SCAN):
                pos += 1
            if pos + 1 >= n:
                break  # the scan runs to the end of the file
    if size is None:
        raise _bad("the JPEG file has no frame header")
    raise _bad("the JPEG file is truncated (no end-of-image marker)")


def inspect_logo(data: bytes) -> LogoInfo:
    """Check that ``data`` is a PNG or JPEG logo of an allowed size; raise
    ValidationError naming the rule that failed."""
    if not data:
        raise ValidationError("choose an image file to upload")
    if len(data) > MAX_LOGO_BYTES:
        raise ValidationError(
            f"the logo is {len(data):,} bytes; at most {MAX_LOGO_BYTES:,} bytes "
            f"({MAX_LOGO_BYTES // 1024} KB) are allowed"
        )
    if data.startswith(PNG_SIGNATURE):
        content_type = "image/png"
        width, height = _png_size(data)
    elif data.startswith(b"\xff\xd8\xff"):
        content_type = "image/jpeg"
        width, height, end = _jpeg_walk(data)
        if end != len(data):  # a second file behind the image (what is inside it is not
            # looked at: metadata segments may hold anything, and are served as the image)
            raise _bad(f"{len(data) - end} bytes follow the JPEG's end")
    else:
        raise _bad("this file is neither")
    if not (1 <= width <= MAX_DIMENSION and 1 <= height <= MAX_DIMENSION):
        raise ValidationError(
            f"the logo is {width}x{height} pixels; each side must be between 1 and "
            f"{MAX_DIMENSION} (it is shown at 210x50)"
        )
    return LogoInfo(content_type, width, height, len(data))


class BrandingService:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self._store = store
        self._audit = audit

    def current(self) -> LogoInfo | None:
        """The uploaded logo, or None when the built-in one is shown."""
        with self._store.sessions() as session:
            row = session.scalars(select(BrandingLogo).order_by(BrandingLogo.id.desc())).first()
            if row is None:
                return None
            try:
                return inspect_logo(row.data)
            except ValidationError as exc:  # uploaded before a check was added
                return LogoInfo(row.content_type, 0, 0, len(row.data), problem=str(exc))

    def upload(self, actor: SessionUser, source_ip: str, data: bytes) -> LogoInfo:
        require(actor.role, Action.REBRAND)
        info = inspect_logo(data)
        with self._store.transaction() as session:
            session.execute(delete(BrandingLogo))
            session.add(
                BrandingLogo(content_type=info.content_type, data=data, uploaded_at=utcnow())
            )
            self._log(session, actor, source_ip, f"uploaded a new logo ({info.describe()})")
        return info

    def reset(self, actor: SessionUser, source_ip: str) -> None:
        """Go back to the built-in logo."""
        require(actor.role, Action.REBRAND)
        with self._store.transaction() as session:
            session.execute(delete(BrandingLogo))
            self._log(session, actor, source_ip, "restored the built-in logo")

    def _log(self, session: Session, actor: SessionUser, ip: str, detail: str) -> None:
        self._audit.append(session, user_event(actor, ip, "settings", "branding logo", detail))
