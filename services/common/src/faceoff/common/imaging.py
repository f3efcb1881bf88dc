"""Decoding and re-encoding users' photos with Pillow, safely.

Every service takes photos as encoded bytes. :func:`decode` checks them in the order a hostile
input would be caught cheapest: empty bytes, unknown or unsupported format (read from the header
only), zero size, the pixel limit (before any pixel is decoded), then the full decode (truncated
or corrupt data). Metadata never refuses a photo: an EXIF block Pillow cannot re-write, a PNG
text or ICC chunk that inflates past Pillow's limit (or not at all) and an ICC profile over
:data:`MAX_ICC_BYTES` are dropped, and :attr:`Photo.notes` says so. It applies EXIF orientation so that every coordinate this project reports is
in display coordinates, and converts CMYK, palette, grayscale, alpha and 16-bit images to 8-bit
RGB (alpha is kept apart so that PNGs with transparency keep it).

:func:`encode` writes protected pixels back in the input's format with the input's EXIF (minus
orientation, since pixels are stored upright) and, for JPEG, the input's quantisation tables and
chroma subsampling, so the output's quality is comparable to the input's.

Nothing here writes to disk or logs pixel data.
"""

from __future__ import annotations

import io
import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from faceoff.common.errors import InvalidImage

#: Formats accepted on input; everything else (EPS, PSD, ICO, ...) is refused before decoding.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: Default pixel limit (width x height of the stored image).
DEFAULT_MAX_PIXELS = 50_000_000

#: Largest ICC profile kept: real ones are a few kB (a few hundred for large device tables); a
#: bigger one is junk, or a way to make every output carry megabytes, and is dropped.
MAX_ICC_BYTES = 1 << 20

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG chunks whose content is zlib-compressed metadata, and what each is, for the notes.
_PNG_COMPRESSED_METADATA = {b"iCCP": "ICC profile", b"zTXt": "text", b"iTXt": "text"}
_ORIENTATION_TAG = 0x0112
_GPS_IFD_TAG = 0x8825
#: How to bring a stored image upright for each EXIF orientation (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _header_says_zero_size(data: bytes) -> bool:
    """True when a PNG or GIF header declares a zero width or height (Pillow refuses to open them)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big") == 0 or int.from_bytes(data[20:24], "big") == 0
    if data[:4] == b"GIF8" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little") == 0 or int.from_bytes(data[8:10], "little") == 0
    return False


@dataclass(frozen=True)
class Photo:
    """A decoded photo in display orientation.

    Attributes:
        pixels: ``(H, W, 3)`` uint8 RGB. When decoded with ``max_side`` this is a reduced copy
            and ``full_width``/``full_height`` give the full-resolution display size.
        format: Pillow's name of the input format (one of :data:`SUPPORTED_FORMATS`).
        full_width: Width of the full-resolution photo as displayed.
        full_height: Height of the full-resolution photo as displayed.
        alpha: ``(H, W)`` uint8 alpha channel when the input had transparency, else None.
        exif: The input's EXIF block with the orientation tag removed, or None.
        icc_profile: The input's ICC colour profile when it describes RGB data, or None.
        notes: What was dropped from the input's metadata and why, in words (empty: nothing).
        save_params: Format-specific parameters that make :func:`encode` match the input
            (JPEG quantisation tables and subsampling, WebP losslessness).
    """

    pixels: np.ndarray
    format: str
    full_width: int
    full_height: int
    alpha: np.ndarray | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None
    save_params: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """Width of :attr:`pixels`."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Height of :attr:`pixels`."""
        return int(self.pixels.shape[0])

    @property
    def scale(self) -> float:
        """Size of :attr:`pixels` relative to the full-resolution photo (1.0 when not reduced)."""
        return self.width / self.full_width


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` lazily and run every check that needs only the header."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"image must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InvalidImage(
            "image is empty (0 bytes); send the bytes of a JPEG, PNG, WebP, BMP, TIFF or GIF file"
        )
    accepted = ", ".join(SUPPORTED_FORMATS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)))
    except Image.DecompressionBombError as exc:
        raise InvalidImage(
            f"image is too large to decode safely ({exc}); limit is {max_pixels / 1e6:g} megapixels"
        ) from None
    except UnidentifiedImageError:
        if _header_says_zero_size(bytes(data[:24])):
            raise InvalidImage(
                "image has zero size (its header declares a width or height of 0 px)"
            ) from None
        raise InvalidImage(
            f"bytes are not an image of a known format ({len(data)} bytes); accepted formats: {accepted}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on bad headers
        raise InvalidImage(
            f"image header is corrupt or truncated ({exc}); accepted formats: {accepted}"
        ) from None
    if img.format not in SUPPORTED_FORMATS:
        raise InvalidImage(
            f"image format {img.format} is not supported; accepted formats: {accepted}"
        )
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has zero size ({width}x{height} px)")
    if width * height > max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} px ({width * height / 1e6:.1f} megapixels); "
            f"limit is {max_pixels / 1e6:g} megapixels"
        )
    return img


def _to_rgb_and_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert any Pillow mode to uint8 RGB plus an optional uint8 alpha channel."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        if mode == "F" and peak <= 1.0:
            arr = arr * 255.0
        elif peak > 255.0:
            arr = arr / 257.0  # 16-bit range to 8-bit
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), None
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[:, :, 3])
        # Fully opaque: nothing to keep.
        return np.ascontiguousarray(rgba[:, :, :3]), None if alpha.min() == 255 else alpha
    return np.asarray(img.convert("RGB")), None


def _save_params(img: Image.Image, data: bytes) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if img.format == "JPEG":
        qtables = getattr(img, "quantization", None)
        if qtables:
            params["qtables"] = qtables
            sampling = JpegImagePlugin.get_sampling(img)
            if sampling >= 0:
                params["subsampling"] = sampling
        if img.info.get("progressive") or img.info.get("progression"):
            params["progressive"] = True
    elif img.format == "WEBP":
        # A simple lossless WebP stores a VP8L chunk right after the RIFF header.
        params["lossless"] = bytes(data[12:16]) == b"VP8L"
    return params


def _clean_exif(img: Image.Image) -> bytes | None:
    """The EXIF block without its orientation; None when there is none or it cannot be re-written.

    EXIF is metadata: a block that Pillow cannot parse or re-serialise (a tag of the wrong type,
    an offset past the end) is dropped, never a reason to refuse the photo.
    """
    try:
        if not img.getexif():
            return None
        exif = Image.Exif()  # a copy: the image's own Exif object stays as it was
        raw = img.info.get("exif")
        exif.load(raw if isinstance(raw, bytes) and raw else img.getexif().tobytes())
        exif.pop(_ORIENTATION_TAG, None)
        return exif.tobytes()
    except Exception:  # noqa: BLE001 - Pillow's EXIF code raises many types on junk
        return None


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation, 1 when absent or not one of the eight valid values (as browsers do)."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block has no usable orientation
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _rgb_icc(img: Image.Image, notes: list[str]) -> bytes | None:
    """The ICC profile when it describes RGB data; a CMYK or grayscale profile would be wrong on
    the RGB pixels :func:`encode` writes, so it is dropped, as is one over :data:`MAX_ICC_BYTES`."""
    icc = img.info.get("icc_profile")
    if not (isinstance(icc, bytes) and len(icc) >= 128 and icc[16:20] == b"RGB "):
        return None
    if len(icc) > MAX_ICC_BYTES:
        notes.append(
            f"dropped the ICC colour profile: {len(icc) / 2**20:.1f} MiB, over the "
            f"{MAX_ICC_BYTES / 2**20:g} MiB a profile may take"
        )
        return None
    return icc


def _inflated_size(body: bytes, limit: int) -> int | None:
    """The size zlib data ``body`` inflates to, if it inflates to at most ``limit`` bytes (never
    more than ``limit + 1`` is inflated); None when it is larger or not zlib data."""
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return None
    return len(out) if len(out) <= limit and not inflater.unconsumed_tail else None


def _compressed_part(kind: bytes, body: bytes) -> bytes | None:
    """The zlib stream of an iCCP, zTXt or compressed iTXt chunk's ``body``; None if it has none."""
    name_end = body.find(b"\0")
    if name_end < 0:
        return b""  # malformed: treated as data that does not inflate
    if kind == b"iTXt":
        if body[name_end + 1 : name_end + 2] != b"\1":
            return None  # uncompressed international text
        rest = body[name_end + 3 :]
        for _ in range(2):  # language tag and translated keyword
            cut = rest.find(b"\0")
            if cut < 0:
                return b""
            rest = rest[cut + 1 :]
        return rest
    return body[name_end + 2 :]


def _png_without_bad_metadata(data: bytes, notes: list[str]) -> bytes:
    """``data`` without the metadata chunks (ICC profile, text) that would make Pillow refuse
    the photo: a compressed one that inflates past Pillow's limit for a chunk, or not at all,
    and text past half of Pillow's limit for all text chunks together.

    Only the chunk headers are walked (and the metadata chunks inflated, each at most to the
    limit), so this costs little even for a large PNG; ``data`` is returned as it is when no
    chunk is dropped.
    """
    limit, text_budget = PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY // 2
    kept: list[bytes] = []
    pos, start, text = 8, 8, 0
    dropped: dict[tuple[str, str], int] = {}
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            break  # truncated: the decoder says so
        reason = None
        if kind in _PNG_COMPRESSED_METADATA or kind == b"tEXt":
            body = data[pos + 8 : pos + 8 + length]
            stream = None if kind == b"tEXt" else _compressed_part(kind, body)
            size = length if stream is None else _inflated_size(stream, limit)
            if size is None:
                reason = f"does not inflate, or inflates past {limit / 2**20:g} MiB"
            elif kind != b"iCCP":
                text += size
                if text > text_budget:
                    reason = f"text chunks together past {text_budget / 2**20:g} MiB"
        if reason is not None:
            kept.append(data[start:pos])
            start = end
            entry = (_PNG_COMPRESSED_METADATA.get(kind, "text"), reason)
            dropped[entry] = dropped.get(entry, 0) + 1
        pos = end
        if kind == b"IEND":
            break
    if not dropped:
        return data
    kept.append(data[start:])
    for (what, reason), count in dropped.items():
        many = f"{count} PNG {what} chunks" if count > 1 else f"a PNG {what} chunk"
        notes.append(f"dropped {many} ({reason})")
    return data[:8] + b"".join(kept)


def probe(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, str]:
    """``(width, height, format)`` of a photo as stored, from its header only (no pixel decoded).

    Runs :func:`decode`'s header checks, so what it refuses :func:`decode` refuses too.

    Raises:
        InvalidImage: as :func:`decode` would for a bad header or a photo over ``max_pixels``.
    """
    if isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:8]) == _PNG_SIGNATURE:
        data = _png_without_bad_metadata(bytes(data), [])
    img = _open(data, max_pixels)
    width, height = img.size
    return width, height, str(img.format)


def decoded_pixels(width: int, height: int, fmt: str, max_side: int | None = None) -> int:
    """Pixels :func:`decode` holds for a stored ``width`` x ``height`` photo of format ``fmt``.

    With ``max_side`` a JPEG is decoded at Pillow's reduced DCT scale (1/2, 1/4 or 1/8: the
    smallest copy at least the size asked for); any other format is decoded whole first.
    """
    if max_side is None or max(width, height) <= max_side or fmt != "JPEG":
        return width * height
    scale = max_side / max(width, height)
    want_w, want_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    ratio = min(width // want_w, height // want_h)  # as JpegImageFile.draft picks it
    reduce = next(k for k in (8, 4, 2, 1) if ratio >= k)
    return -(-width // reduce) * -(-height // reduce)


def decode(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Photo:
    """Decode a photo to upright 8-bit RGB.

    Args:
        data: The encoded file bytes.
        max_pixels: Refuse images whose stored width x height exceeds this, before decoding.
        max_side: When set, return a copy whose longer side is at most this many pixels (JPEGs
            are decoded directly at a reduced DCT scale, which is much faster than a full
            decode); ``full_width``/``full_height`` still give the full size.

    Raises:
        InvalidImage: naming what was wrong and what is accepted.
    """
    notes: list[str] = []
    if isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:8]) == _PNG_SIGNATURE:
        data = _png_without_bad_metadata(bytes(data), notes)
    img = _open(data, max_pixels)
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    stored_w, stored_h = img.size
    fmt = str(img.format)
    scale = 1.0
    if max_side is not None and max(stored_w, stored_h) > max_side:
        scale = max_side / max(stored_w, stored_h)
        if fmt == "JPEG":  # decode at a reduced DCT scale: far cheaper than a full decode
            img.draft(
                img.mode if img.mode in ("RGB", "L") else None,
                (max(1, math.floor(stored_w * scale)), max(1, math.floor(stored_h * scale))),
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.seek(0)  # the first frame of an animation
            img.load()
            save_params = _save_params(img, data)
            exif = _clean_exif(img)
            icc = _rgb_icc(img, notes)
            orientation = _orientation(img)
            if orientation in _TRANSPOSE:
                img = img.transpose(_TRANSPOSE[orientation])
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on bad data
        raise InvalidImage(f"{fmt} image is truncated or corrupt ({exc})") from None
    full_w, full_h = (stored_h, stored_w) if orientation in (5, 6, 7, 8) else (stored_w, stored_h)
    if scale < 1.0:
        target = (max(1, round(full_w * scale)), max(1, round(full_h * scale)))
        if img.size != target:
            if img.mode.startswith("I;16"):
                img = img.convert(
                    "I"
                )  # Pillow cannot resample 16-bit modes; 32-bit integers keep the values
            img = img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    try:
        rgb, alpha = _to_rgb_and_alpha(img)
    except (OSError, ValueError) as exc:
        raise InvalidImage(
            f"{fmt} image in mode {img.mode} cannot be converted to RGB ({exc})"
        ) from None
    return Photo(
        pixels=rgb,
        format=fmt,
        full_width=full_w,
        full_height=full_h,
        alpha=alpha,
        exif=exif,
        icc_profile=icc,
        save_params=save_params,
        notes=tuple(notes),
    )


def strip_gps(exif: bytes | None) -> bytes | None:
    """Return the EXIF block without its GPS IFD (location tags)."""
    if not exif:
        return exif
    parsed = Image.Exif()
    parsed.load(exif)
    parsed.pop(_GPS_IFD_TAG, None)
    return parsed.tobytes()


def encode(photo: Photo, pixels: np.ndarray, *, remove_gps: bool = False) -> bytes:
    """Encode ``pixels`` (``(H, W, 3)`` uint8, full resolution) like ``photo`` was encoded.

    The format stays the input's (GIF, whose 256-colour palette would quantise the protection
    away, is written as PNG). EXIF and ICC profile are kept, orientation removed because pixels
    are stored upright; ``remove_gps`` also drops the GPS tags. JPEGs reuse the input's
    quantisation tables and chroma subsampling.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels must be (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    img = Image.fromarray(pixels, "RGB")
    fmt = photo.format
    if (
        photo.alpha is not None
        and photo.alpha.shape == pixels.shape[:2]
        and fmt in ("PNG", "WEBP", "TIFF", "GIF")
    ):
        img.putalpha(Image.fromarray(photo.alpha, "L"))
    exif = strip_gps(photo.exif) if remove_gps else photo.exif
    kwargs: dict[str, Any] = {}
    if exif:
        kwargs["exif"] = exif
    if photo.icc_profile:
        kwargs["icc_profile"] = photo.icc_profile
    out_format = "PNG" if fmt == "GIF" else fmt
    if out_format == "JPEG":
        if "qtables" in photo.save_params:
            kwargs["qtables"] = photo.save_params["qtables"]
            if "subsampling" in photo.save_params:
                kwargs["subsampling"] = photo.save_params["subsampling"]
        else:
            kwargs["quality"] = 95
        if photo.save_params.get("progressive"):
            kwargs["progressive"] = True
    elif out_format == "WEBP":
        if photo.save_params.get("lossless"):
            kwargs["lossless"] = True
        else:
            kwargs["quality"] = 95
    elif out_format == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    buf = io.BytesIO()
    try:
        img.save(buf, out_format, **kwargs)
    except Exception:
        if "exif" not in kwargs and "icc_profile" not in kwargs:
            raise
        # The protected pixels matter, not junk metadata: write them without it (as decode drops
        # EXIF it cannot parse).
        kwargs.pop("exif", None)
        kwargs.pop("icc_profile", None)
        buf = io.BytesIO()
        img.save(buf, out_format, **kwargs)
    return buf.getvalue()


def output_format(input_format: str) -> str:
    """The format :func:`encode` writes for an input format."""
    return "PNG" if input_format == "GIF" else input_format
