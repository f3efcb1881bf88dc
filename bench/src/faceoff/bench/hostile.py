"""Hostile inputs for every entry point, generated in code (no binary blob is committed).

:func:`hostile_inputs` returns named :class:`HostileCase` objects: truncated and corrupt
JPEG/PNG/WebP/TIFF/BMP files, decompression bombs (headers claiming billions of pixels, a
49-megapixel PNG of 140 KB, a zTXt text bomb), extreme shapes (100000x1, 1x1), colour modes
(CMYK, 16-bit, palette with transparency), an animated GIF, EXIF with absurd orientations,
empty bytes, a text file, a photo without faces, a photo of 40 faces, protobuf fields out of
range (negative epsilon, alpha = 0, 10^9 iterations, unknown enum values, out-of-range face
indices ...) and a message over the servers' 20 MiB limit.

Each case says, per RPC (``Detect``, ``Protect``, ``ProtectStream``, ``Evaluate``), what the
right answer is: ``OK`` (and then what a correct result looks like: display size, faces,
output format) or an error status with a word the message must contain. :func:`request`
builds the RPC's request message for a case. ``tests/reliability`` sends every case to real
servers and through the CLI; ``faceoff bench fuzz`` mutates the same corpus.

The photos are synthetic or made in memory from the shared celebrity set; nothing is written
to disk here.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from PIL import Image, ImageCms

from faceoff.cli.paths import CELEBS

#: The RPCs a case can go through.
RPCS: tuple[str, ...] = ("Detect", "Protect", "ProtectStream", "Evaluate")
#: The servers' default message limit (``FACEOFF_MAX_MESSAGE_BYTES``).
MESSAGE_LIMIT = 20 * 1024 * 1024
#: Protection options every OK case runs with: cheap, deterministic.
BASE_PROTECT_OPTIONS: dict[str, Any] = {"profile": "low", "iterations": 2, "seed": 1}
#: The recogniser Evaluate asks (the cheapest local one to load).
EVALUATE_RECOGNIZERS: tuple[str, ...] = ("sface",)

DEFAULT_DATA = CELEBS
_FACE_PHOTO = "photos/taylor/taylor_02.jpg"
_REFERENCE_PHOTO = "photos/taylor/taylor_03.jpg"
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Expect:
    """The right answer of one RPC: ``status`` is ``"OK"`` or a ``grpc.StatusCode`` name;
    ``needle`` is a word (lower case) the error message must contain."""

    status: str
    needle: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"


OK = Expect("OK")


def invalid(needle: str) -> Expect:
    """INVALID_ARGUMENT whose message contains ``needle``."""
    return Expect("INVALID_ARGUMENT", needle.lower())


@dataclass(frozen=True)
class HostileCase:
    """One hostile input and the right answer of each RPC it applies to.

    Attributes:
        name: Short identifier (used in test ids and the README table).
        what: One line saying what the input is.
        image: The photo sent as the request's image (a valid face photo for field cases).
        expect: Per RPC name, the right answer; an RPC missing here has no such field.
        protect_options: Fields set on ``ProtectOptions`` over :data:`BASE_PROTECT_OPTIONS`
            (raw values: enums as integers, out-of-range numbers as they are).
        detect_options: Fields set on ``DetectOptions`` (Detect, and Protect's ``detect``).
        evaluate_fields: Fields set on ``EvaluateRequest`` (``top_k``, ``recognizers`` ...).
        references: Reference photos for Protect and Evaluate (None: the default reference).
        size: Display size ``(width, height)`` an OK answer must report.
        faces: Faces an OK Detect must find: ``(least, most)``; None when not known.
        output_format: Format name of Protect's output (OK cases).
        note: A word Protect's receipt notes must contain (metadata it dropped), or "".
        cli: Flags for ``faceoff protect`` to express the case, or None when the CLI cannot
            (an unknown enum value, a message limit the in-process CLI does not have).
        skip: Why the case cannot run here (missing shared data), or "".
    """

    name: str
    what: str
    image: bytes
    expect: dict[str, Expect]
    protect_options: dict[str, Any] = field(default_factory=dict)
    detect_options: dict[str, Any] = field(default_factory=dict)
    evaluate_fields: dict[str, Any] = field(default_factory=dict)
    references: tuple[bytes, ...] | None = None
    size: tuple[int, int] | None = None
    faces: tuple[int, int] | None = None
    output_format: str | None = None
    note: str = ""
    cli: tuple[str, ...] | None = ()
    skip: str = ""


class _PhotoFace(TypedDict):
    """The :class:`HostileCase` fields of a case showing the face photo."""

    size: tuple[int, int]
    faces: tuple[int, int] | None


# -- encoders (in memory) --------------------------------------------------------------------


def encode(img: Image.Image | np.ndarray, fmt: str, **params: Any) -> bytes:
    """``img`` encoded with Pillow, in memory."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def raw_png(
    width: int,
    height: int,
    rows: bytes,
    *,
    depth: int = 8,
    colour: int = 2,
    level: int = 9,
    extra: bytes = b"",
) -> bytes:
    """A PNG written chunk by chunk (any header, 16-bit samples, extra chunks before IDAT)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra
        + _png_chunk(b"IDAT", zlib.compress(rows, level))
        + _png_chunk(b"IEND", b"")
    )


def _zero_rows_png(width: int, height: int) -> bytes:
    """An all-black RGB PNG of any size, compressed without holding the raw pixels (streamed)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def exif_block(entries: Sequence[tuple[int, int, int, bytes]]) -> bytes:
    """A raw big-endian EXIF block with one IFD of ``(tag, type, count, value bytes)`` entries.

    Lets a case write what Pillow would refuse to write: an orientation of the wrong type, a
    count of 2^30, an offset past the end.
    """
    n = len(entries)
    ifd = struct.pack(">H", n)
    extra = b""
    extra_at = 8 + 2 + 12 * n + 4
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack(">HHII", tag, kind, count, extra_at + len(extra))
            extra += value
    return b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + ifd + b"\0\0\0\0" + extra


def _patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF header claiming ``width`` x ``height`` (the scan data unchanged)."""
    out = bytearray(jpeg)
    at = out.index(b"\xff\xc0")
    out[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(out)


def _patch_tiff_tag(tiff: bytes, tag: int, value: int) -> bytes:
    """A little-endian TIFF with the SHORT value of ``tag`` in its first IFD set to ``value``."""
    out = bytearray(tiff)
    ifd = struct.unpack("<I", out[4:8])[0]
    for i in range(struct.unpack("<H", out[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", out[entry : entry + 2])[0] == tag:
            out[entry + 8 : entry + 10] = struct.pack("<H", value)
            return bytes(out)
    raise ValueError(f"the TIFF has no tag {tag}")


def _corrupt(data: bytes, start: int, step: int, mask: int) -> bytes:
    out = bytearray(data)
    for i in range(start, len(out) - 2, step):
        out[i] ^= mask
    return bytes(out)


def _with_png_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk right after its header."""
    ihdr_end = 8 + 12 + int.from_bytes(png[8:12], "big")
    return png[:ihdr_end] + _png_chunk(kind, body) + png[ihdr_end:]


def _huge_rgb_icc(size: int) -> bytes:
    """An sRGB ICC profile padded with zeros to ``size`` bytes (its header still says RGB)."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile + b"\0" * (size - len(profile))


def _icc_with_colour_space(space: bytes) -> bytes:
    """An sRGB ICC profile whose header claims another data colour space (CMYK, GRAY)."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[16:20] = space
    return bytes(profile)


# -- source photos ---------------------------------------------------------------------------


def no_face_texture(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A smooth synthetic texture (stripes, gradients, blotches) with no face in it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    low = rng.normal(size=(height // 40 + 2, width // 40 + 2, 3)).astype(np.float32)
    blotches = np.asarray(
        Image.fromarray(((low - low.min()) / np.ptp(low) * 255).astype(np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        ),
        np.float32,
    )
    stripes = 60 * np.sin(x / 23.0 + y / 71.0)[..., None] + 0.15 * x[..., None]
    texture: np.ndarray = np.clip(0.6 * blotches + stripes + 20, 0, 255).astype(np.uint8)
    return texture


def _face_pixels(data_dir: Path) -> np.ndarray | None:
    path = data_dir / _FACE_PHOTO
    if not path.is_file():
        return None
    with Image.open(path) as src:
        img = src.convert("RGB")
        img.thumbnail((320, 320), Image.Resampling.LANCZOS)
        return np.asarray(img)


def reference_photo(data_dir: Path = DEFAULT_DATA) -> bytes:
    """The default reference photo (another photo of the same person; a texture without the data)."""
    path = data_dir / _REFERENCE_PHOTO
    if not path.is_file():
        return encode(no_face_texture(200, 200, seed=3), "JPEG", quality=90)
    with Image.open(path) as src:
        img = src.convert("RGB")
        img.thumbnail((320, 320), Image.Resampling.LANCZOS)
        return encode(img, "JPEG", quality=90)


def forty_faces(data_dir: Path, count: int = 40, columns: int = 8) -> bytes | None:
    """``count`` face crops of the shared ``aligned160`` set tiled in a grid, as JPEG (None without the data)."""
    crops = sorted((data_dir / "aligned160").glob("*/*.png"))[::2][:count]
    if len(crops) < count:
        return None
    rows = math.ceil(count / columns)
    sheet = Image.new("RGB", (columns * 160, rows * 160), (128, 128, 128))
    for i, path in enumerate(crops):
        with Image.open(path) as crop:
            sheet.paste(crop.convert("RGB"), ((i % columns) * 160, (i // columns) * 160))
    return encode(sheet, "JPEG", quality=90)


# -- the cases -------------------------------------------------------------------------------


def _photo_expect(outcome: Expect) -> dict[str, Expect]:
    """The same answer from every RPC (the case is the photo itself)."""
    return {rpc: outcome for rpc in RPCS}


def _field_expect(needle: str, *rpcs: str) -> dict[str, Expect]:
    return {rpc: invalid(needle) for rpc in rpcs}


@dataclass(frozen=True)
class _Sources:
    """The source material the cases are cut from, built once by :func:`_sources`."""

    data_dir: Path
    face: np.ndarray  # the face photo's pixels (a texture without the shared data)
    w: int
    h: int
    some: tuple[int, int] | None  # faces an OK Detect of the face photo finds
    photo_face: _PhotoFace
    jpeg: bytes
    png: bytes
    webp: bytes
    tiff: bytes
    bmp: bytes
    texture: np.ndarray
    gray16: np.ndarray
    gray16_large: np.ndarray
    rgb16: np.ndarray
    palette: Image.Image
    gif: bytes
    sheet: bytes | None
    bomb_png: bytes


def _sources(data_dir: Path) -> _Sources:
    """The face photo, its encodings and the other source material of the cases."""
    face = _face_pixels(data_dir)
    have_face = face is not None
    if face is None:
        face = no_face_texture(300, 300, seed=1)
    h, w = face.shape[:2]
    some = (1, 3) if have_face else None  # the face photo shows one person
    gray16_large = (
        np.asarray(Image.fromarray(no_face_texture(1600, 1200, seed=2)).convert("L"), np.uint16)
        * 257
    ).astype(">u2")
    frames = [
        Image.fromarray(np.roll(face, 8 * i, axis=1)).convert("P", palette=Image.Palette.ADAPTIVE)
        for i in range(4)
    ]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return _Sources(
        data_dir=data_dir,
        face=face,
        w=w,
        h=h,
        some=some,
        photo_face={"size": (w, h), "faces": some},
        jpeg=encode(face, "JPEG", quality=90),
        png=encode(face, "PNG"),
        webp=encode(face, "WEBP", quality=90),
        tiff=encode(face, "TIFF"),
        bmp=encode(face, "BMP"),
        texture=no_face_texture(),
        gray16=(np.asarray(Image.fromarray(face).convert("L"), np.uint16) * 257).astype(">u2"),
        gray16_large=gray16_large,
        rgb16=(face.astype(np.uint16) * 257).astype(">u2"),
        palette=Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE, colors=255),
        gif=gif.getvalue(),
        sheet=forty_faces(data_dir),
        bomb_png=_zero_rows_png(7000, 7000),
    )


def _not_an_image(s: _Sources) -> list[HostileCase]:
    """Not an image at all."""
    return [
        HostileCase("empty", "0 bytes", b"", _photo_expect(invalid("empty"))),
        HostileCase(
            "text_file",
            "a UTF-8 text file",
            b"Face-Off: not a photo.\n" * 20,
            _photo_expect(invalid("not an image")),
        ),
        HostileCase(
            "svg",
            "an SVG document (XML, not a raster format)",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000"/>',
            _photo_expect(invalid("not an image")),
        ),
        HostileCase(
            "ico",
            "an ICO file (a real image of an unsupported format)",
            encode(s.face[:64, :64], "ICO"),
            _photo_expect(invalid("not supported")),
        ),
    ]


def _truncated_and_corrupt_jpeg_png(s: _Sources) -> list[HostileCase]:
    """Truncated and corrupt JPEG and PNG files."""
    jpeg, png = s.jpeg, s.png
    return [
        HostileCase(
            "jpeg_truncated",
            "the first half of a JPEG",
            jpeg[: len(jpeg) // 2],
            _photo_expect(invalid("truncated")),
        ),
        HostileCase(
            "jpeg_corrupt_scan",
            "a JPEG with every 7th byte of its second half flipped",
            _corrupt(jpeg, len(jpeg) // 2, 7, 0x55),
            _photo_expect(invalid("corrupt")),
        ),
        HostileCase(
            "jpeg_corrupt_header",
            "a JPEG whose frame header claims 7 colour components",
            (lambda b: b[: b.index(b"\xff\xc0") + 9] + b"\x07" + b[b.index(b"\xff\xc0") + 10 :])(
                jpeg
            ),
            _photo_expect(invalid("not an image")),
        ),
        HostileCase(
            "png_truncated",
            "the first half of a PNG",
            png[: len(png) // 2],
            _photo_expect(invalid("truncated")),
        ),
        HostileCase(
            "png_bad_crc",
            "a PNG with one byte of its image data flipped (CRC mismatch)",
            _corrupt(png, len(png) // 2, len(png), 0xFF),
            _photo_expect(invalid("corrupt")),
        ),
    ]


def _truncated_and_corrupt_other(s: _Sources) -> list[HostileCase]:
    """Truncated and corrupt WebP, TIFF, BMP and zero-size PNG files."""
    webp, tiff, bmp = s.webp, s.tiff, s.bmp
    return [
        HostileCase(
            "webp_truncated",
            "the first half of a WebP",
            webp[: len(webp) // 2],
            _photo_expect(invalid("truncated")),
        ),
        HostileCase(
            "webp_corrupt",
            "a lossy WebP with every 5th byte after its header flipped "
            "(VP8 has no checksum: libwebp decodes noise)",
            _corrupt(webp, 40, 5, 0x33),
            _photo_expect(OK),
            size=(s.w, s.h),
        ),
        HostileCase(
            "tiff_truncated",
            "the first half of a TIFF",
            tiff[: len(tiff) // 2],
            _photo_expect(invalid("truncated")),
        ),
        HostileCase(
            "tiff_bad_planar_config",
            "a TIFF whose PlanarConfiguration tag is 10825 (decodes; the TIFF "
            "writer refuses the tag when it is carried over as metadata)",
            _patch_tiff_tag(tiff, 284, 10825),
            _photo_expect(OK),
            size=(s.w, s.h),
            output_format="TIFF",
            faces=s.some,
        ),
        HostileCase(
            "bmp_bad_depth",
            "a BMP whose header says 7 bits per pixel",
            bmp[:28] + struct.pack("<H", 7) + bmp[30:],
            _photo_expect(invalid("corrupt")),
        ),
        HostileCase(
            "zero_size_png",
            "a PNG whose header says 0x10 px",
            raw_png(0, 10, b""),
            _photo_expect(invalid("zero size")),
        ),
    ]


def _decompression_bombs(s: _Sources) -> list[HostileCase]:
    """Decompression bombs: headers claiming gigapixels, a 49 MP PNG, a zTXt text bomb."""
    w, h = s.w, s.h
    return [
        HostileCase(
            "png_bomb_60000x60000",
            "a 100-byte PNG whose header claims 60000x60000 px (3.6 gigapixels)",
            raw_png(60000, 60000, b"\0" * 100),
            _photo_expect(invalid("megapixels")),
        ),
        HostileCase(
            "jpeg_bomb_10000x10000",
            "a 3 KB JPEG whose header claims 10000x10000 px (100 megapixels)",
            _patch_jpeg_size(encode(s.face[:48, :48], "JPEG"), 10000, 10000),
            _photo_expect(invalid("megapixels")),
        ),
        HostileCase(
            "gif_bomb_65535x65535",
            "a 30-byte GIF claiming a 65535x65535 screen and frame",
            b"GIF89a"
            + struct.pack("<HH", 65535, 65535)
            + b"\x00\x00\x00,"
            + struct.pack("<HHHH", 0, 0, 65535, 65535)
            + b"\x00\x02\x02\x44\x01\x00;",
            _photo_expect(invalid("megapixels")),
        ),
        HostileCase(
            "webp_bomb_16383x16383",
            "a 30-byte extended WebP claiming a 16383x16383 canvas",
            b"RIFF"
            + struct.pack("<I", 22)
            + b"WEBPVP8X"
            + struct.pack("<I", 10)
            + b"\0\0\0\0"
            + (16382).to_bytes(3, "little") * 2,
            _photo_expect(invalid("megapixels")),
        ),
        HostileCase(
            "png_bomb_49mp",
            f"a {len(s.bomb_png) // 1024} KB PNG of 7000x7000 black pixels "
            "(49 MP, just under the 50 MP limit: decoded in full)",
            s.bomb_png,
            _photo_expect(OK),
            size=(7000, 7000),
            faces=(0, 0),
            output_format="PNG",
            cli=None,
        ),
        HostileCase(
            "png_ztxt_bomb",
            "a PNG with a zTXt chunk inflating to 64 MiB of text (the chunk is dropped)",
            raw_png(
                w,
                h,
                b"".join(b"\0" + s.face[y].tobytes() for y in range(h)),
                extra=_png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (64 << 20), 9)),
            ),
            _photo_expect(OK),
            output_format="PNG",
            note="text chunk",
            **s.photo_face,
        ),
    ]


def _shapes(s: _Sources) -> list[HostileCase]:
    """Extreme shapes: 100000x1 and 1x1."""
    return [
        HostileCase(
            "wide_100000x1",
            "a 100000x1 px PNG",
            encode(np.tile(s.texture[:1, :1], (1, 100000, 1)), "PNG"),
            _photo_expect(OK),
            size=(100000, 1),
            faces=(0, 0),
            output_format="PNG",
        ),
        HostileCase(
            "tiny_1x1",
            "a 1x1 px PNG",
            encode(s.face[:1, :1], "PNG"),
            _photo_expect(OK),
            size=(1, 1),
            faces=(0, 0),
            output_format="PNG",
        ),
    ]


def _colour_profiles(s: _Sources) -> list[HostileCase]:
    """Colour modes and containers: ICC profiles (huge, or of the wrong colour space)."""
    face = s.face
    return [
        HostileCase(
            "png_icc_bomb",
            "a PNG whose ICC profile inflates from 3 kB to 3 MiB (past Pillow's 1 MiB limit)",
            _with_png_chunk(
                encode(face, "PNG"), b"iCCP", b"sRGB\0\0" + zlib.compress(_huge_rgb_icc(3 << 20), 9)
            ),
            _photo_expect(OK),
            output_format="PNG",
            note="icc profile",
            **s.photo_face,
        ),
        HostileCase(
            "jpeg_icc_3mib",
            "a JPEG carrying a 3 MiB RGB ICC profile (not copied into the output)",
            encode(face, "JPEG", quality=90, icc_profile=_huge_rgb_icc(3 << 20)),
            _photo_expect(OK),
            output_format="JPEG",
            note="icc colour profile",
            **s.photo_face,
        ),
        HostileCase(
            "cmyk_jpeg",
            "a CMYK JPEG with a CMYK ICC profile (the output is RGB: the profile must go)",
            encode(
                Image.fromarray(face).convert("CMYK"),
                "JPEG",
                quality=92,
                icc_profile=_icc_with_colour_space(b"CMYK"),
            ),
            _photo_expect(OK),
            output_format="JPEG",
            **s.photo_face,
        ),
    ]


def _colour_modes(s: _Sources) -> list[HostileCase]:
    """Colour modes and containers: 16-bit samples, a palette with transparency, a GIF."""
    w, h = s.w, s.h
    return [
        HostileCase(
            "png_16bit_gray",
            "a 16-bit grayscale PNG",
            raw_png(
                w, h, b"".join(b"\0" + s.gray16[y].tobytes() for y in range(h)), depth=16, colour=0
            ),
            _photo_expect(OK),
            output_format="PNG",
            **s.photo_face,
        ),
        HostileCase(
            "png_16bit_gray_large",
            "a 1600x1200 16-bit grayscale PNG (decoded to a reduced copy "
            "for detection: Pillow cannot resample 16-bit images)",
            raw_png(
                1600,
                1200,
                b"".join(b"\0" + s.gray16_large[y].tobytes() for y in range(1200)),
                depth=16,
                colour=0,
            ),
            _photo_expect(OK),
            size=(1600, 1200),
            faces=(0, 0),
            output_format="PNG",
        ),
        HostileCase(
            "png_16bit_rgb",
            "a 48-bit RGB PNG",
            raw_png(
                w, h, b"".join(b"\0" + s.rgb16[y].tobytes() for y in range(h)), depth=16, colour=2
            ),
            _photo_expect(OK),
            output_format="PNG",
            **s.photo_face,
        ),
        HostileCase(
            "palette_transparency",
            "a 255-colour palette PNG with a transparent colour (alpha must survive)",
            encode(s.palette, "PNG", transparency=0),
            _photo_expect(OK),
            output_format="PNG",
            **s.photo_face,
        ),
        HostileCase(
            "animated_gif",
            "a 4-frame animated GIF (the first frame is protected, written as PNG)",
            s.gif,
            _photo_expect(OK),
            output_format="PNG",
            **s.photo_face,
        ),
    ]


def _exif(s: _Sources) -> list[HostileCase]:
    """EXIF with absurd orientations and a broken IFD."""
    face = s.face
    return [
        HostileCase(
            "exif_orientation_6",
            "a JPEG stored sideways with EXIF orientation 6",
            encode(
                np.rot90(face, 1),
                "JPEG",
                quality=90,
                exif=exif_block([(_ORIENTATION, 3, 1, struct.pack(">H", 6))]),
            ),
            _photo_expect(OK),
            output_format="JPEG",
            **s.photo_face,
        ),
        HostileCase(
            "exif_orientation_9999",
            "a JPEG with EXIF orientation 9999 (ignored)",
            encode(
                face,
                "JPEG",
                quality=90,
                exif=exif_block([(_ORIENTATION, 3, 1, struct.pack(">H", 9999))]),
            ),
            _photo_expect(OK),
            output_format="JPEG",
            **s.photo_face,
        ),
        HostileCase(
            "exif_orientation_text",
            "a JPEG whose EXIF orientation is the text 'six' (ignored)",
            encode(face, "JPEG", quality=90, exif=exif_block([(_ORIENTATION, 2, 4, b"six\0")])),
            _photo_expect(OK),
            output_format="JPEG",
            **s.photo_face,
        ),
        HostileCase(
            "exif_orientation_huge",
            "a JPEG whose EXIF orientation is the LONG 4294967295 (ignored)",
            encode(
                face,
                "JPEG",
                quality=90,
                exif=exif_block([(_ORIENTATION, 4, 1, struct.pack(">I", 2**32 - 1))]),
            ),
            _photo_expect(OK),
            output_format="JPEG",
            **s.photo_face,
        ),
        HostileCase(
            "exif_broken_ifd",
            "a JPEG whose EXIF has a 2^30-entry tag and a sub-IFD offset past the end",
            encode(
                face,
                "JPEG",
                quality=90,
                exif=exif_block(
                    [
                        (_ORIENTATION, 3, 2**30, b"\0\0\0\x64"),
                        (0x8769, 4, 1, struct.pack(">I", 10**9)),
                    ]
                ),
            ),
            _photo_expect(OK),
            output_format="JPEG",
            **s.photo_face,
        ),
    ]


def _content(s: _Sources) -> list[HostileCase]:
    """Content: a photo without faces, a photo of 40 faces."""
    no_faces = HostileCase(
        "no_faces",
        "a 640x480 synthetic texture without a face",
        encode(s.texture, "JPEG", quality=90),
        _photo_expect(OK),
        size=(640, 480),
        faces=(0, 0),
        output_format="JPEG",
    )
    if s.sheet is None:
        return [
            no_faces,
            HostileCase(
                "forty_faces",
                "40 face crops tiled 8x5",
                b"",
                {},
                skip=f"no aligned160 crops under {s.data_dir}",
            ),
        ]
    # Protect is left out: ProtectStream runs the same pipeline, and one 40-face protection
    # costs about 15 s of CPU even at 2 iterations (each face gets its own reference set).
    return [
        no_faces,
        HostileCase(
            "forty_faces",
            "40 face crops of the shared set tiled 8x5 (1280x800 JPEG)",
            s.sheet,
            {rpc: OK for rpc in ("Detect", "ProtectStream", "Evaluate")},
            size=(1280, 800),
            faces=(34, 40),
            output_format="JPEG",
            cli=None,
        ),
    ]


# -- protobuf fields out of range (a valid face photo; the field is the problem)
_MASKER = ("Protect", "ProtectStream")


def _numbers_out_of_range(s: _Sources) -> list[HostileCase]:
    """Protection options out of range: epsilon, alpha, iterations, search steps ..."""
    jpeg = s.jpeg
    return [
        HostileCase(
            "epsilon_negative",
            "epsilon = -1",
            jpeg,
            _field_expect("epsilon", *_MASKER),
            protect_options={"epsilon": -1.0},
            cli=("--epsilon", "-1"),
        ),
        HostileCase(
            "epsilon_nan",
            "epsilon = NaN",
            jpeg,
            _field_expect("epsilon", *_MASKER),
            protect_options={"epsilon": float("nan")},
            cli=("--epsilon", "nan"),
        ),
        HostileCase(
            "alpha_zero",
            "alpha = 0",
            jpeg,
            _field_expect("alpha", *_MASKER),
            protect_options={"alpha": 0.0},
            cli=("--alpha", "0"),
        ),
        HostileCase(
            "alpha_infinite",
            "alpha = +inf",
            jpeg,
            _field_expect("alpha", *_MASKER),
            protect_options={"alpha": float("inf")},
            cli=("--alpha", "inf"),
        ),
        HostileCase(
            "iterations_1e9",
            "iterations = 10^9",
            jpeg,
            _field_expect("iterations", *_MASKER),
            protect_options={"iterations": 10**9},
            cli=("--iterations", str(10**9)),
        ),
        HostileCase(
            "cw_search_steps_huge",
            "CW with search_steps = 4294967295",
            jpeg,
            _field_expect("search_steps", *_MASKER),
            protect_options={"attack": 2, "search_steps": 2**32 - 1},
            cli=("--attack", "cw", "--search-steps", str(2**32 - 1)),
        ),
        HostileCase(
            "learning_rate_negative",
            "learning_rate = -0.5",
            jpeg,
            _field_expect("learning_rate", *_MASKER),
            protect_options={"learning_rate": -0.5},
            cli=("--learning-rate", "-0.5"),
        ),
        HostileCase(
            "kappa_negative",
            "hinge loss with kappa = -3",
            jpeg,
            _field_expect("kappa", *_MASKER),
            protect_options={"loss": 2, "kappa": -3.0},
            cli=("--loss", "hinge", "--kappa", "-3"),
        ),
    ]


def _unknown_values(s: _Sources) -> list[HostileCase]:
    """Protection options naming nothing: unknown enums, profile, seed, decoy, face index."""
    jpeg = s.jpeg
    return [
        HostileCase(
            "attack_enum_99",
            "attack = 99 (no such enum value)",
            jpeg,
            _field_expect("attack", *_MASKER),
            protect_options={"attack": 99},
            cli=None,
        ),
        HostileCase(
            "norm_enum_negative",
            "norm = -5 (no such enum value)",
            jpeg,
            _field_expect("norm", *_MASKER),
            protect_options={"norm": -5},
            cli=None,
        ),
        HostileCase(
            "mode_enum_7",
            "mode = 7 (no such enum value)",
            jpeg,
            _field_expect("mode", *_MASKER),
            protect_options={"mode": 7},
            cli=None,
        ),
        HostileCase(
            "profile_unknown",
            "profile = 'ultra'",
            jpeg,
            _field_expect("profile", *_MASKER),
            protect_options={"profile": "ultra"},
            cli=None,
        ),
        HostileCase(
            "seed_2_64",
            "seed = 2^64 - 1",
            jpeg,
            _field_expect("seed", *_MASKER),
            protect_options={"seed": 2**64 - 1},
            cli=("--seed", str(2**64 - 1)),
        ),
        HostileCase(
            "target_untargeted",
            "a target decoy without targeted mode",
            jpeg,
            _field_expect("target", *_MASKER),
            protect_options={"target": "no-such-decoy", "mode": 1},
            cli=None,
        ),
        HostileCase(
            "target_unknown",
            "targeted mode towards a decoy that does not exist",
            jpeg,
            _field_expect("no-such-decoy", *_MASKER),
            protect_options={"target": "no-such-decoy", "mode": 2},
            cli=None,
        ),  # checked against the surrogate's decoys, once a face is to be protected
        HostileCase(
            "face_indices_out_of_range",
            "face_indices = [4294967295] (the photo has one face)",
            jpeg,
            _field_expect("face_indices", *_MASKER),
            protect_options={"face_indices": [2**32 - 1]},
            cli=None,
        ),  # checked against the faces found, so only once the models are loaded
    ]


def _other_fields(s: _Sources) -> list[HostileCase]:
    """Detect and Evaluate fields, reference photos, and a message over the size limit."""
    jpeg = s.jpeg
    return [
        HostileCase(
            "min_confidence_2",
            "detect.min_confidence = 2",
            jpeg,
            _field_expect("min_confidence", "Detect", *_MASKER),
            detect_options={"min_confidence": 2.0},
            cli=None,
        ),
        HostileCase(
            "min_face_size_0",
            "detect.min_face_size = 0",
            jpeg,
            _field_expect("min_face_size", "Detect", *_MASKER),
            detect_options={"min_face_size": 0},
            cli=None,
        ),
        HostileCase(
            "top_k_1e9",
            "Evaluate top_k = 10^9",
            jpeg,
            _field_expect("top_k", "Evaluate"),
            evaluate_fields={"top_k": 10**9},
            cli=None,
        ),
        HostileCase(
            "recognizer_unknown",
            "Evaluate recognizers = ['not-a-model']",
            jpeg,
            _field_expect("not-a-model", "Evaluate"),
            evaluate_fields={"recognizers": ["not-a-model"]},
            cli=None,
        ),
        HostileCase(
            "reference_truncated",
            "a truncated JPEG as the reference photo",
            jpeg,
            {rpc: invalid("reference photo") for rpc in ("Protect", "ProtectStream", "Evaluate")},
            references=(jpeg[: len(jpeg) // 3],),
            cli=None,
        ),
        HostileCase(
            "too_many_references",
            "17 reference photos (Protect takes 16, Evaluate 10)",
            jpeg,
            {rpc: invalid("reference") for rpc in ("Protect", "ProtectStream", "Evaluate")},
            references=(jpeg,) * 17,
            cli=None,
        ),
        HostileCase(
            "message_21mib",
            "a JPEG followed by 21 MiB of padding (over the 20 MiB message limit)",
            jpeg + b"\0" * (MESSAGE_LIMIT + (1 << 20)),
            _photo_expect(Expect("RESOURCE_EXHAUSTED", "larger than max")),
            cli=None,
        ),
    ]


#: The themes, in order: each builds its cases from the shared sources.
_THEMES: tuple[Callable[[_Sources], list[HostileCase]], ...] = (
    _not_an_image,
    _truncated_and_corrupt_jpeg_png,
    _truncated_and_corrupt_other,
    _decompression_bombs,
    _shapes,
    _colour_profiles,
    _colour_modes,
    _exif,
    _content,
    _numbers_out_of_range,
    _unknown_values,
    _other_fields,
)


def hostile_inputs(data_dir: Path | None = None) -> list[HostileCase]:
    """Every hostile case, generated now (about 2 MB of photos plus one 21 MiB message)."""
    sources = _sources(DEFAULT_DATA if data_dir is None else Path(data_dir))
    return [case for theme in _THEMES for case in theme(sources)]


# -- requests --------------------------------------------------------------------------------


def _set_fields(message: Any, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)


def request(case: HostileCase, rpc: str, reference: bytes) -> Any:
    """The ``faceoff.v1`` request of ``rpc`` for ``case`` (``reference``: the default reference photo)."""
    from faceoff.v1 import common_pb2, detector_pb2, evaluator_pb2, masker_pb2

    image = common_pb2.Image(data=case.image)
    references = [
        common_pb2.Image(data=r)
        for r in (case.references if case.references is not None else (reference,))
    ]
    if rpc == "Detect":
        detect = detector_pb2.DetectRequest(image=image)
        _set_fields(detect.options, case.detect_options)
        return detect
    if rpc in ("Protect", "ProtectStream"):
        protect = masker_pb2.ProtectRequest(image=image)
        if case.references is not None:
            protect.reference_images.extend(references)
        _set_fields(protect.options, {**BASE_PROTECT_OPTIONS, **case.protect_options})
        _set_fields(protect.options.detect, case.detect_options)
        return protect
    if rpc == "Evaluate":
        evaluate = evaluator_pb2.EvaluateRequest(image=image, reference_images=references)
        _set_fields(evaluate, {"recognizers": list(EVALUATE_RECOGNIZERS), **case.evaluate_fields})
        return evaluate
    raise ValueError(f"unknown RPC {rpc!r}; known: {', '.join(RPCS)}")
