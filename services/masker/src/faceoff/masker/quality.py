"""How visible a protection is, measured on the face against the original.

- PSNR and SSIM of the face region at the photo's own resolution (SSIM is scikit-image's
  ``structural_similarity``: Gaussian window, sigma 1.5, Wang et al.'s constants).
- Butteraugli (Google's perceptual distance; 1.0 is "just noticeable") on the face box plus a
  25% margin, with both photos first scaled as a platform displays them (longer side at most
  1080 px) and, as a second figure, at native resolution. It runs Debian's ``butteraugli``
  tool when it is installed (``./dev setup`` installs it); without it the distances are None
  and :data:`BUTTERAUGLI_MISSING` says why. The two crops reach the tool through anonymous
  in-memory files (``memfd``): no pixel of the user's face is written to disk.
- The blotch (:func:`blotch`): the largest low-frequency change of brightness over the same
  window as displayed, in 0..255 levels. Butteraugli's distance is blind to part of what people
  see: soft patches of darker or paler skin a tenth of a face across, at a few levels of
  contrast (docs/results.md, "The visibility map"). The blotch measures exactly that: the
  change's luma (BT.601), blurred by a Gaussian of :data:`BLOTCH_SIGMA` of the window's shorter
  side, at its :data:`BLOTCH_QUANTILE` quantile of absolute value (a robust maximum).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

#: Longer side of a photo as platforms display it.
DISPLAY_LONGEST_SIDE = 1080
#: The Butteraugli window: the face box grown by this fraction of its size on every side.
BUTTERAUGLI_MARGIN = 0.25
#: What a receipt says when the tool is not installed.
BUTTERAUGLI_MISSING = "butteraugli is not installed (Debian package butteraugli; ./dev setup)"
#: Longest a Butteraugli run may take, in seconds.
BUTTERAUGLI_TIMEOUT = 60.0

#: The blotch's blur: a Gaussian of this fraction of the window's shorter side (the window is
#: the face plus 25% each side, so about a twentieth of the face; patches a tenth of a face
#: across and larger keep their contrast, the texture of the perturbation is averaged away).
BLOTCH_SIGMA = 0.03
#: The blotch is this quantile of the blurred change's absolute value (a robust maximum).
BLOTCH_QUANTILE = 0.99
#: BT.601 luma weights of R, G, B.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

Box = tuple[float, float, float, float]


def psnr(original: np.ndarray, protected: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays of the same shape (inf if identical)."""
    if original.shape != protected.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {protected.shape}")
    mse = float(np.mean((original.astype(np.float64) - protected.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(original: np.ndarray, protected: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of two uint8 RGB (or grey) arrays.

    scikit-image's ``structural_similarity`` with an 11-px Gaussian window of sigma 1.5,
    K1 = 0.01, K2 = 0.03, averaged over channels; a region smaller than the window is compared
    with the largest odd window that fits.
    """
    if original.shape != protected.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {protected.shape}")
    side = min(original.shape[:2])
    if side < 3:
        return 1.0 if np.array_equal(original, protected) else 0.0
    return float(
        structural_similarity(
            original,
            protected,
            data_range=255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            win_size=min(11, side - (1 - side % 2)),
            channel_axis=2 if original.ndim == 3 else None,
        )
    )


def lowpass_luma(change: np.ndarray) -> np.ndarray:
    """The low-frequency part ``(H, W)`` float32 of the brightness of a change ``(H, W, 3)``
    (0..255 units, signed): its BT.601 luma blurred as :func:`blotch` blurs it."""
    luma = np.ascontiguousarray(change.astype(np.float32) @ LUMA)
    sigma = max(0.5, BLOTCH_SIGMA * min(change.shape[:2]))
    blurred: np.ndarray = cv2.GaussianBlur(luma, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return blurred


def blotch(original: np.ndarray, protected: np.ndarray) -> float:
    """The largest low-frequency brightness change between two uint8 RGB windows, in 0..255
    levels (see the module docstring); 0 for identical windows."""
    if original.shape != protected.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {protected.shape}")
    low = lowpass_luma(protected.astype(np.float32) - original.astype(np.float32))
    return float(np.quantile(np.abs(low), BLOTCH_QUANTILE))


def _window(box: Box, width: int, height: int, scale: float) -> tuple[int, int, int, int]:
    """The face box plus the Butteraugli margin, scaled by ``scale`` and clipped to the photo."""
    x, y, w, h = box
    mx, my = w * BUTTERAUGLI_MARGIN, h * BUTTERAUGLI_MARGIN
    left = max(0, math.floor((x - mx) * scale))
    top = max(0, math.floor((y - my) * scale))
    right = min(width, math.ceil((x + w + mx) * scale))
    bottom = min(height, math.ceil((y + h + my) * scale))
    return left, top, right, bottom


def butteraugli_distance(original: np.ndarray, protected: np.ndarray) -> float | None:
    """Butteraugli distance of two uint8 RGB arrays (None when the tool is not installed).

    Raises:
        RuntimeError: the tool ran and failed (its message is included; no pixels are).
    """
    result = _run_butteraugli(original, protected, with_map=False)
    return None if result is None else result[0]


def butteraugli_map(original: np.ndarray, protected: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Butteraugli distance of two uint8 RGB arrays and its difference map (None: no tool).

    The distance is the map's maximum. The tool writes the map only as a heat-map picture;
    :func:`heatmap_values` reads the values back from its colours (exactly, to the colour
    steps: about 0.02 Butteraugli units below 5.5, 0.05 up to 11; saturated above). The map
    travels through an anonymous in-memory file like the crops.

    Returns:
        ``(distance, map)``, the map ``(H, W)`` float32 in Butteraugli units.

    Raises:
        RuntimeError: the tool ran and failed, or wrote no readable map.
    """
    return _run_butteraugli(original, protected, with_map=True)


def _run_butteraugli(
    original: np.ndarray, protected: np.ndarray, with_map: bool
) -> tuple[float, np.ndarray] | None:
    tool = shutil.which("butteraugli")
    if tool is None:
        return None
    fds = []
    try:
        for pixels in (original, protected):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(pixels)).save(buf, "PNG", compress_level=1)
            fd = os.memfd_create("faceoff-butteraugli", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, buf.getvalue())
            os.lseek(fd, 0, os.SEEK_SET)
        if with_map:
            fds.append(os.memfd_create("faceoff-butteraugli-map", os.MFD_CLOEXEC))
        run = subprocess.run(
            [tool, *(f"/dev/fd/{fd}" for fd in fds)],
            pass_fds=fds,
            capture_output=True,
            text=True,
            timeout=BUTTERAUGLI_TIMEOUT,
            check=False,
        )
        heat = b""
        if with_map and run.returncode == 0:
            size = os.fstat(fds[2]).st_size
            heat = os.pread(fds[2], size, 0)
    finally:
        for fd in fds:
            os.close(fd)
    if run.returncode != 0:
        raise RuntimeError(f"butteraugli failed ({run.returncode}): {run.stderr.strip()[:200]}")
    distance = float(run.stdout.split()[0])
    if not with_map:
        return distance, np.zeros((0, 0), np.float32)
    try:
        picture = np.asarray(Image.open(io.BytesIO(heat)).convert("RGB"))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"butteraugli wrote no readable heat map ({len(heat)} bytes)") from exc
    if picture.shape[:2] != original.shape[:2]:
        raise RuntimeError(
            f"butteraugli's heat map is {picture.shape[:2]}, not {original.shape[:2]}"
        )
    return distance, heatmap_values(picture)


def _fuzzy_inverse(seek: float) -> float:
    """The score at which butteraugli's fuzzy class (its 2017 version, Debian's) equals ``seek``."""

    def fuzzy(score: float) -> float:
        width = 6.97490803335 if score < 1.0 else 10.287189655
        return 2.0 / (1.0 + math.exp((score - 1.0) * width))

    pos, step = 0.0, 1.0
    while step >= 1e-10:  # the tool's own bisection
        pos = pos - step if fuzzy(pos) < seek else pos + step
        step *= 0.5
    return pos


#: The heat map's colour thresholds: butteraugli's ``ButteraugliFuzzyInverse(1.5)`` and ``(0.5)``.
_GOOD, _BAD = _fuzzy_inverse(1.5), _fuzzy_inverse(0.5)


def heatmap_values(picture: np.ndarray) -> np.ndarray:
    """The difference map behind butteraugli's heat-map picture ``(H, W, 3)`` uint8.

    Inverts ``CreateHeatMapImage`` of the tool's main (Debian's 0~20170116): green rising to
    half the good threshold, then red rising, green falling to the bad threshold, blue rising
    to 5x bad, green rising again to 10x bad, white beyond (read as 10x bad).
    """
    r, g, b = (picture[..., i].astype(np.float32) / 255.0 for i in range(3))
    values = np.full(r.shape, 10.0 * _BAD, np.float32)
    dark = r == 0
    values[dark] = (g[dark] - 0.6) / 0.4 * 0.5 * _GOOD
    rising = (r > 0) & (r < 1) & (b == 0)
    values[rising] = 0.5 * _GOOD + r[rising] * 0.5 * _GOOD
    falling = (r == 1) & (b == 0) & (g > 0)
    values[falling] = _GOOD + (1.0 - g[falling]) * (_BAD - _GOOD)
    blue = (r == 1) & (g == 0)
    values[blue] = _BAD + b[blue] * 4.0 * _BAD
    pastel = (r == 1) & (b == 1) & (g > 0) & (g < 1)
    values[pastel] = 5.0 * _BAD + g[pastel] * 5.0 * _BAD
    return np.maximum(values, 0.0)


@dataclass(frozen=True)
class Butteraugli:
    """A face's Butteraugli distance as displayed and at native resolution (None: not measured)."""

    display: float | None
    native: float | None


def display_size(width: int, height: int) -> tuple[float, tuple[int, int]]:
    """The scale and ``(width, height)`` at which a platform displays a photo (longer side <= 1080 px)."""
    scale = min(1.0, DISPLAY_LONGEST_SIDE / max(width, height))
    return scale, (max(1, round(width * scale)), max(1, round(height * scale)))


def display_faces(
    original: np.ndarray, protected: np.ndarray, boxes: list[Box]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each face box (+25%) of two full photos as a platform displays them (longer side <= 1080 px).

    The photos are scaled (Lanczos) once for all the faces; returns ``(original, protected)``
    uint8 crop pairs, the windows :func:`face_butteraugli` compares.
    """
    height, width = original.shape[:2]
    scale, size = display_size(width, height)
    shown = (
        [
            np.asarray(Image.fromarray(p).resize(size, Image.Resampling.LANCZOS))
            for p in (original, protected)
        ]
        if scale < 1.0 and boxes
        else [original, protected]
    )
    out = []
    for box in boxes:
        left, top, right, bottom = _window(box, size[0], size[1], scale)
        out.append((shown[0][top:bottom, left:right], shown[1][top:bottom, left:right]))
    return out


def face_butteraugli(
    original: np.ndarray,
    protected: np.ndarray,
    boxes: list[Box],
    shown: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[Butteraugli]:
    """Butteraugli of each face box (+25%) between two full photos, as displayed and native.

    ``shown``: the faces' :func:`display_faces` pairs when the caller has them already (the
    scaling of both photos is then not done again)."""
    if shutil.which("butteraugli") is None:
        return [Butteraugli(None, None) for _ in boxes]
    height, width = original.shape[:2]
    scale, _ = display_size(width, height)
    out = []
    pairs = shown if shown is not None else display_faces(original, protected, boxes)
    for box, (a, b) in zip(boxes, pairs):
        display = butteraugli_distance(a, b)
        if scale == 1.0:
            out.append(Butteraugli(display, display))
            continue
        left, top, right, bottom = _window(box, width, height, 1.0)
        native = butteraugli_distance(
            original[top:bottom, left:right], protected[top:bottom, left:right]
        )
        out.append(Butteraugli(display, native))
    return out
