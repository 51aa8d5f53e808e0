"""The logo check: PNG or JPEG by the file's own bytes, size from the header, at most
200 KB, each refusal naming its rule."""

from __future__ import annotations

import pytest

from node.branding import MAX_LOGO_BYTES, inspect_logo
from node.errors import ValidationError
from tests.logo_images import PNG_SIGNATURE, jpeg, png, png_chunk


def test_png_and_jpeg_sizes_come_from_the_header() -> None:
    info = inspect_logo(png(420, 100))
    assert (info.content_type, info.width, info.height) == ("image/png", 420, 100)
    info = inspect_logo(jpeg(300, 80))
    assert (info.content_type, info.width, info.height) == ("image/jpeg", 300, 80)
    assert inspect_logo(jpeg(640, 160, sof=0xC2)).width == 640  # progressive
    assert "PNG, 420x100 pixels" in inspect_logo(png(420, 100)).describe()


def test_size_limit_is_200_kb() -> None:
    exactly = png(10, 10, pad_to=MAX_LOGO_BYTES)
    assert len(exactly) == MAX_LOGO_BYTES and inspect_logo(exactly).width == 10
    with pytest.raises(
        ValidationError, match=r"is 204,801 bytes; at most 204,800 bytes \(200 KB\)"
    ):
        inspect_logo(png(10, 10, pad_to=MAX_LOGO_BYTES + 1))


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"", "choose an image"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "neither"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "neither"),
        (b"<html><script>alert(1)</script></html>", "neither"),
        (PNG_SIGNATURE + b"not really a png at all", "PNG file"),
        (png(40, 10)[:-20], "truncated"),
        (png(40, 10)[:30] + b"\x00" + png(40, 10)[31:], "damaged"),
        (PNG_SIGNATURE + png_chunk(b"tEXt", b"a\x00b") + png_chunk(b"IEND", b""), "header"),
        (png(0, 10), "between 1 and 4096"),
        (png(5000, 1), "between 1 and 4096"),
        (b"\xff\xd8\xff\xd9", "no frame header"),
        (jpeg(10, 10)[:24], "truncated"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 4 + b"XX", "truncated"),
        (png(40, 10) + b"<html><script>alert(1)</script>", "31 bytes follow the PNG's end"),
        (jpeg(40, 10) + b"<html><script>", "14 bytes follow the JPEG's end"),
        (jpeg(40, 10) + b"<html><script>\xff\xd9", "16 bytes follow the JPEG's end"),
        (jpeg(40, 10)[:-2], "no end-of-image marker"),
    ],
    ids=[
        "empty",
        "gif",
        "svg",
        "html",
        "png-garbage",
        "png-truncated",
        "png-bad-crc",
        "png-no-ihdr",
        "png-zero-width",
        "png-too-wide",
        "jpeg-no-frame",
        "jpeg-truncated",
        "jpeg-short-segment",
        "png-with-html-after",
        "jpeg-with-html-after",
        "jpeg-with-html-and-a-second-end-after",
        "jpeg-without-its-end",
    ],
)
def test_refusals_name_the_rule(data: bytes, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        inspect_logo(data)
