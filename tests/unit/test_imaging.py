"""Decoding hostile and ordinary photos, and re-encoding them like the input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from faceoff.common.errors import InvalidImage
from faceoff.common.imaging import decode, encode, strip_gps
from tests.conftest import encode as encode_image

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no real pixel data needed to test the check)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n", "not an image"),
        (encode_image(PIXELS, "JPEG")[:400], "truncated"),
        (encode_image(PIXELS, "PNG")[:200], "truncated"),
        (_png_with_size(0, 10), "size"),
        (_png_with_size(20000, 20000), "limit is 50 megapixels"),
        (encode_image(PIXELS, "ICO"), "not supported"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "zero-size", "over-limit", "ico"],
)
def test_bad_input_is_refused_with_a_clear_message(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidImage) as info:
        decode(data)
    assert needle in info.value.message
    assert info.value.status == "INVALID_ARGUMENT"


def test_pixel_limit_is_configurable_and_checked_before_decoding() -> None:
    with pytest.raises(InvalidImage, match=r"80x60 px .*limit is 0.001 megapixels"):
        decode(encode_image(PIXELS), max_pixels=1000)
    assert decode(encode_image(PIXELS), max_pixels=4800).pixels.shape == (60, 80, 3)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1"])
def test_every_mode_becomes_8bit_rgb(mode: str) -> None:
    img = Image.fromarray(PIXELS)
    if mode == "I;16":
        gray = np.asarray(img.convert("L")).astype(np.uint16) * 257
        img = Image.fromarray(gray)
        fmt = "PNG"
    else:
        img = img.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
    buf = io.BytesIO()
    img.save(buf, fmt)
    photo = decode(buf.getvalue())
    assert photo.pixels.dtype == np.uint8 and photo.pixels.shape == (60, 80, 3)
    if mode == "I;16":  # 16-bit values are scaled to 8 bits, not clipped
        expected = np.asarray(Image.fromarray(PIXELS).convert("L"))
        assert np.abs(photo.pixels[:, :, 0].astype(int) - expected).max() <= 1


def test_palette_transparency_keeps_alpha() -> None:
    rgba = np.dstack(
        [PIXELS, np.where(np.arange(80) < 40, 0, 255).astype(np.uint8)[None, :].repeat(60, 0)]
    )
    img = Image.fromarray(rgba, "RGBA").convert("P", palette=Image.Palette.ADAPTIVE)
    img.info["transparency"] = 0
    photo = decode(encode_image(rgba, "PNG"))
    assert (
        photo.alpha is not None
        and photo.alpha[:, :40].max() == 0
        and photo.alpha[:, 40:].min() == 255
    )
    out = Image.open(io.BytesIO(encode(photo, photo.pixels)))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[:, :, 3], photo.alpha)


def _with_orientation(pixels: np.ndarray, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "FaceOffTestCam"  # Make
    return encode_image(
        pixels, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {})
    )


def test_exif_orientation_is_applied() -> None:
    upright = PIXELS
    stored = np.rot90(upright, k=1)  # stored rotated 90 degrees counter-clockwise ...
    photo = decode(_with_orientation(stored, 6, "PNG"))  # ... and tagged "rotate 90 CW to display"
    assert photo.pixels.shape == upright.shape
    assert np.array_equal(photo.pixels, upright)
    assert (photo.full_width, photo.full_height) == (80, 60)


def test_reduced_decode_keeps_full_size_and_orientation() -> None:
    big = np.asarray(Image.fromarray(PIXELS).resize((1600, 1200)))
    photo = decode(_with_orientation(np.rot90(big, k=1), 6), max_side=400)
    assert (photo.full_width, photo.full_height) == (1600, 1200)
    assert max(photo.pixels.shape[:2]) == 400 and photo.pixels.shape[1] > photo.pixels.shape[0]
    assert photo.scale == pytest.approx(0.25)


def test_encode_keeps_format_size_and_exif_but_not_orientation() -> None:
    data = _with_orientation(np.rot90(PIXELS, k=1), 6)
    photo = decode(data)
    out = encode(photo, photo.pixels)
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG" and img.size == (80, 60)
    exif = img.getexif()
    assert exif.get(0x010F) == "FaceOffTestCam" and 0x0112 not in exif
    # Same quantisation tables as the input: comparable quality.
    assert img.quantization == Image.open(io.BytesIO(data)).quantization


def test_strip_gps() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}
    stripped = Image.Exif()
    stripped.load(strip_gps(exif.tobytes()))
    assert 0x8825 not in stripped and stripped.get(0x010F) == "Cam"


def test_png_round_trip_is_lossless() -> None:
    photo = decode(encode_image(PIXELS, "PNG"))
    out = decode(encode(photo, photo.pixels))
    assert out.format == "PNG" and np.array_equal(out.pixels, PIXELS)


# ---- metadata never refuses a photo -------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rgb_icc(size: int) -> bytes:
    """An ICC profile header that says RGB, padded to ``size`` bytes."""
    header = bytearray(128)
    header[16:20] = b"RGB "
    header[36:40] = b"acsp"
    return bytes(header) + b"\0" * (size - 128)


def _png_with_chunks(*chunks: bytes) -> bytes:
    png = encode_image(PIXELS, "PNG")
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + b"".join(chunks) + png[ihdr_end:]


def test_png_icc_profile_that_inflates_past_the_limit_is_dropped_not_refused() -> None:
    bomb = _chunk(b"iCCP", b"profile\0\0" + zlib.compress(_rgb_icc(3 << 20), 9))
    with pytest.raises(Exception, match="too large"):  # what Pillow alone does with it
        Image.open(io.BytesIO(_png_with_chunks(bomb))).load()
    photo = decode(_png_with_chunks(bomb))
    assert np.array_equal(photo.pixels, PIXELS) and photo.icc_profile is None
    assert photo.notes == (
        "dropped a PNG ICC profile chunk (does not inflate, or inflates past 1 MiB)",
    )


def test_png_metadata_that_does_not_inflate_is_dropped_and_text_floods_are_capped() -> None:
    junk = _chunk(b"iCCP", b"profile\0\0" + b"not zlib at all")
    text = zlib.compress(b"a" * (1 << 20))
    flood = [_chunk(b"zTXt", b"Comment\0\0" + text) for _ in range(40)]
    photo = decode(_png_with_chunks(junk, *flood))
    assert np.array_equal(photo.pixels, PIXELS)
    assert photo.notes[0].startswith("dropped a PNG ICC profile chunk")
    assert photo.notes[1].startswith("dropped 8 PNG text chunks (text chunks together past 32 MiB)")


def test_ordinary_icc_profile_is_kept_with_no_note() -> None:
    icc = _rgb_icc(4000)
    photo = decode(_png_with_chunks(_chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(icc))))
    assert photo.icc_profile == icc and photo.notes == ()
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG", icc_profile=icc)
    photo = decode(buf.getvalue())
    assert photo.icc_profile == icc and photo.notes == ()
    with Image.open(io.BytesIO(encode(photo, photo.pixels))) as out:
        assert out.info.get("icc_profile") == icc


def test_an_icc_profile_over_1_mib_is_not_copied_into_the_output() -> None:
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG", icc_profile=_rgb_icc(3 << 20))
    photo = decode(buf.getvalue())
    assert photo.icc_profile is None
    assert photo.notes == (
        "dropped the ICC colour profile: 3.0 MiB, over the 1 MiB a profile may take",
    )
    with Image.open(io.BytesIO(encode(photo, photo.pixels))) as out:
        assert "icc_profile" not in out.info
