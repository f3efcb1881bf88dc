"""How visible a protection is: PSNR and SSIM of a face region against the original."""

from __future__ import annotations

import math

import cv2
import numpy as np

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def psnr(original: np.ndarray, protected: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays of the same shape (inf if identical)."""
    if original.shape != protected.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {protected.shape}")
    mse = float(np.mean((original.astype(np.float64) - protected.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(original: np.ndarray, protected: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of two uint8 RGB arrays, averaged over channels.

    Gaussian window of 11 px with sigma 1.5 and the usual constants K1 = 0.01, K2 = 0.03.
    """
    if original.shape != protected.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {protected.shape}")
    a = original.astype(np.float64)
    b = protected.astype(np.float64)
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if min(a.shape[:2]) < 11:  # too small for the window: fall back to global statistics
        blur = lambda t: np.broadcast_to(t.mean(axis=(0, 1), keepdims=True), t.shape)  # noqa: E731
    else:
        blur = lambda t: cv2.GaussianBlur(t, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    values = []
    for c in range(a.shape[2]):
        x, y = a[:, :, c], b[:, :, c]
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        ssim_map = ((2 * mx * my + _C1) * (2 * sxy + _C2)) / (
            (mx * mx + my * my + _C1) * (sxx + syy + _C2)
        )
        values.append(float(ssim_map.mean()))
    return float(np.mean(values))
