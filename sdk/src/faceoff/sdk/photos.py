"""Turning whatever the app holds into the encoded bytes the services take.

A photo may be a path (``str`` or :class:`os.PathLike`), the file's bytes, a binary file object,
a Pillow image or a NumPy array of shape ``(H, W, 3)`` (or ``(H, W)``, ``(H, W, 4)``) of
``uint8``. Files and bytes are sent exactly as they are, so the protected photo keeps their
format, EXIF and quality; Pillow images and arrays have no file behind them and are encoded as
PNG (lossless). Neither Pillow nor NumPy is imported unless the app already did.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["PhotoInput", "read_photo", "read_photos"]

#: Anything :func:`read_photo` accepts.
PhotoInput = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], "Image.Image", "np.ndarray"
]


#: Pillow modes PNG stores as they are; any other (CMYK, YCbCr, float ...) is converted to RGB.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


def _encode_png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _pil_image(photo: Any) -> bool:
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(photo, module.Image)


def _ndarray(photo: Any) -> bool:
    module = sys.modules.get("numpy")
    return module is not None and isinstance(photo, module.ndarray)


def _array_to_png(array: Any) -> bytes:
    import numpy as np

    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "a photo given as an array is encoded to PNG with Pillow: install faceoff-sdk[numpy]"
        ) from None

    if array.dtype != np.uint8:
        raise TypeError(f"a photo array must be uint8 (values 0..255), got {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        if 0 in array.shape:
            raise ValueError(f"a photo array must not be empty, got shape {array.shape}")
        return _encode_png(Image.fromarray(np.ascontiguousarray(array)))
    raise ValueError(
        f"a photo array must be (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey, got shape {array.shape}"
    )


def read_photo(photo: PhotoInput) -> bytes:
    """The encoded bytes of ``photo`` (see the module docstring for what it may be).

    Example::

        >>> read_photo(b"\\x89PNG...")[:4]
        b'\\x89PNG'

    Raises:
        TypeError: ``photo`` is none of the accepted kinds, or an array of another dtype.
        ValueError: an array of another shape.
        OSError: a path that cannot be read.
    """
    if isinstance(photo, bytes):
        return photo
    if isinstance(photo, (bytearray, memoryview)):
        return bytes(photo)
    if isinstance(photo, (str, os.PathLike)):
        return Path(photo).read_bytes()
    if _pil_image(photo):
        image = photo if photo.mode in _PNG_MODES else photo.convert("RGB")  # type: ignore[union-attr]
        return _encode_png(image)
    if _ndarray(photo):
        return _array_to_png(photo)
    read = getattr(photo, "read", None)
    if callable(read):
        data = read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("a photo file object must be opened in binary mode ('rb')")
        return bytes(data)
    raise TypeError(
        f"cannot read a photo from {type(photo).__name__}; pass a path, bytes, a binary file object, "
        "a PIL image or a uint8 NumPy array"
    )


def read_photos(photos: PhotoInput | Iterable[PhotoInput]) -> list[bytes]:
    """:func:`read_photo` of each photo; a single path, bytes or image counts as one photo."""
    if photos is None:
        return []
    if (
        isinstance(photos, (str, bytes, bytearray, memoryview, os.PathLike))
        or _pil_image(photos)
        or _ndarray(photos)
    ):
        return [read_photo(photos)]  # type: ignore[arg-type]
    if callable(getattr(photos, "read", None)):
        return [read_photo(photos)]  # type: ignore[arg-type]
    return [read_photo(p) for p in photos]  # type: ignore[union-attr]
