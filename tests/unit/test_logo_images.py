"""The logo check: PNG or JPEG by the file's own bytes, size from the header, at most
200 KB, each refusal naming its rule."""

from __future__ import annotations

import pytest

from node.branding import MAX_LOGO_BYTES, inspect_logo
from node.errors import ValidationError
from tests.logo_images import PNG_SIGNATURE, jpeg, jpeg_frame, png, png_chunk


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


def test_valid_png_bit_depths_and_colour_types_pass_the_header_check() -> None:
    """The header is checked, not the data: each valid pair passes (the test image's data
    stays RGB)."""
    valid = {0: (1, 2, 4, 8, 16), 2: (8, 16), 4: (8, 16), 6: (8, 16)}
    for colour, depths in valid.items():
        for depth in depths:
            assert inspect_logo(png(4, 4, depth_and_colour=(depth, colour))).width == 4
    palette = png(4, 4, depth_and_colour=(8, 3))
    ihdr_end = len(PNG_SIGNATURE) + 25
    with_palette = palette[:ihdr_end] + png_chunk(b"PLTE", b"\x00\x00\x00") + palette[ihdr_end:]
    assert inspect_logo(with_palette).width == 4


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (png(40, 10, idat=False), "the PNG file has no image data \\(no IDAT chunk\\)"),
        (png(40, 10, depth_and_colour=(16, 3)), "colour type 3 with bit depth 16 is not valid"),
        (png(40, 10, depth_and_colour=(4, 2)), "colour type 2 with bit depth 4 is not valid"),
        (png(40, 10, depth_and_colour=(1, 6)), "colour type 6 with bit depth 1 is not valid"),
        (png(40, 10, depth_and_colour=(8, 5)), "colour type 5 with bit depth 8 is not valid"),
        (png(40, 10, depth_and_colour=(8, 3)), "a palette image without a palette"),
        (jpeg(40, 10, scan=False), "no image data \\(a frame header but no scan\\)"),
        (jpeg(40, 10, second_frame=jpeg_frame(60000, 60000)), "more than one frame header"),
        (
            jpeg(40, 10, second_frame=jpeg_frame(60000, 60000, sof=0xC2)),
            "more than one frame header",
        ),
    ],
    ids=[
        "png-without-idat",
        "png-palette-16-bit",
        "png-rgb-4-bit",
        "png-rgba-1-bit",
        "png-colour-type-5",
        "png-palette-without-plte",
        "jpeg-frame-without-scan",
        "jpeg-second-frame-60000",
        "jpeg-second-progressive-frame",
    ],
)
def test_images_no_browser_draws_are_refused(data: bytes, rule: str) -> None:
    with pytest.raises(ValidationError, match=f"the logo must be a PNG or JPEG image: .*{rule}"):
        inspect_logo(data)
