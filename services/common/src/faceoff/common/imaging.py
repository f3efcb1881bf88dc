"""Decoding and re-encoding users' photos with Pillow, safely.

Every service takes photos as encoded bytes. :func:`decode` checks them in the order a hostile
input would be caught cheapest: empty bytes, unknown or unsupported format (read from the header
only), zero size, the pixel limit (before any pixel is decoded), then the full decode (truncated
or corrupt data). It applies EXIF orientation so that every coordinate this project reports is
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from faceoff.common.errors import InvalidImage

#: Formats accepted on input; everything else (EPS, PSD, ICO, ...) is refused before decoding.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: Default pixel limit (width x height of the stored image).
DEFAULT_MAX_PIXELS = 50_000_000

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


def _rgb_icc(img: Image.Image) -> bytes | None:
    """The ICC profile when it describes RGB data; a CMYK or grayscale profile would be wrong on
    the RGB pixels :func:`encode` writes, so it is dropped."""
    icc = img.info.get("icc_profile")
    return icc if isinstance(icc, bytes) and len(icc) >= 128 and icc[16:20] == b"RGB " else None


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
            icc = _rgb_icc(img)
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
