"""What one protection costs, checked at admission: the pixels it decodes and the attack work.

- **Pixels**: every photo of the request at the size the masker decodes it to: the photo
  whole (it is pasted back at full resolution), each reference photo at most
  :data:`REFERENCE_MAX_SIDE` on its longer side (only a face crop of it is used). A JPEG is
  decoded at a reduced DCT scale, so a 49-megapixel JPEG reference costs about 0.8; any other
  format is decoded whole before it is reduced, and counts whole. Read from the headers
  alone, before any detection or decoding, against ``max_request_pixels``.
- **Work**: faces x optimiser iterations (x search steps for CW) x surrogates, in
  "face-steps": one surrogate's forward and backward pass over one face. Checked after
  detection (when the faces are known) and before any attack, against ``max_request_work``.
  The attack queue is bounded in the same unit (:class:`faceoff.masker.batching.AttackBatcher`).

A request over either budget can never succeed on this server as it is, so it is refused with
INVALID_ARGUMENT naming its figure, the limit and what to change; a full queue is
RESOURCE_EXHAUSTED with a retry hint instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from faceoff.common.errors import InvalidImage, InvalidOption
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, decoded_pixels, probe
from faceoff.masker.options import ProtectionOptions

#: Longer side a reference photo is decoded to (JPEGs at a reduced DCT scale): its face crop is
#: all that is used, and a face of a sixth of the photo's longer side still fills the 160 px crop.
REFERENCE_MAX_SIDE = 1024
#: Decoded pixels one request may cost (a 50 MP photo and 16 reference photos at 1024 px fit).
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000
#: Face-steps one request may cost: 64 faces of the ``high`` profile (80 iterations x 3
#: surrogates = 15 360), or one face at the contract's 10 000 iterations on two surrogates.
DEFAULT_MAX_REQUEST_WORK = 20_000


def request_pixels(
    photo: bytes, references: Sequence[bytes], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """Decoded pixels of ``photo`` and of all ``references`` together, from their headers.

    Raises:
        InvalidImage: a header is bad or over ``max_pixels`` (a reference's names its index).
    """
    width, height, _ = probe(photo, max_pixels=max_pixels)
    refs = 0
    for i, data in enumerate(references):
        try:
            w, h, fmt = probe(data, max_pixels=max_pixels)
        except InvalidImage as exc:
            raise exc.again(
                f"reference photo {i}: {exc.message}", field=f"reference_images[{i}]"
            ) from None
        refs += decoded_pixels(w, h, fmt, REFERENCE_MAX_SIDE)
    return width * height, refs


def check_pixels(
    photo: bytes,
    references: Sequence[bytes],
    limit: int = DEFAULT_MAX_REQUEST_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> int:
    """The request's decoded pixels, or :class:`InvalidOption` (``TOO_MANY_PIXELS``) over ``limit``."""
    own, refs = request_pixels(photo, references, max_pixels)
    total = own + refs
    if total > limit:
        raise InvalidOption(
            f"the request's photos decode to {total / 1e6:.1f} megapixels (the photo "
            f"{own / 1e6:.1f}, {len(references)} reference photo(s) {refs / 1e6:.1f}); at most "
            f"{limit / 1e6:g} are accepted per request (FACEOFF_MAX_REQUEST_PIXELS): send fewer "
            f"or smaller reference photos (JPEG references are decoded at {REFERENCE_MAX_SIDE} px, "
            "other formats whole)",
            field="reference_images" if references and refs >= own else "image",
            reason="TOO_MANY_PIXELS",
        )
    return total


def work(faces: int, options: ProtectionOptions) -> int:
    """Face-steps of attacking ``faces`` faces with ``options`` (no surrogates named: one; a
    variance-tuning neighbour is a step more per iteration)."""
    return (
        faces
        * options.total_iterations
        * options.gradients_per_iteration
        * max(1, len(options.surrogates))
    )


def check_work(
    faces: int, options: ProtectionOptions, limit: int = DEFAULT_MAX_REQUEST_WORK
) -> int:
    """The attack's face-steps, or :class:`InvalidOption` (``TOO_MUCH_WORK``) over ``limit``."""
    steps = work(faces, options)
    if steps > limit:
        surrogates = max(1, len(options.surrogates))
        gradients = options.gradients_per_iteration
        per_iteration = f" x {gradients} gradients (variance)" if gradients > 1 else ""
        raise InvalidOption(
            f"the attack would take {steps} face-steps ({faces} face(s) x "
            f"{options.total_iterations} iterations{per_iteration} x {surrogates} surrogate(s)); "
            f"at most {limit} are accepted per request (FACEOFF_MAX_REQUEST_WORK): protect fewer "
            "faces (face_indices) or lower iterations",
            field="options.iterations",
            reason="TOO_MUCH_WORK",
        )
    return steps
