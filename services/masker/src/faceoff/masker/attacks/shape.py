"""Perceptual shaping: where in the face, and in which colour direction, a perturbation may go.

PGD optimises a variable ``z`` in a perceptual space instead of the RGB change itself; the
change the photo gets is the fixed linear map

    delta_rgb = mask * jnd * YCbCr^-1( z_Y, chroma * z_Cb, chroma * z_Cr )

so the attack's norm bound on ``z`` becomes a per-pixel, per-colour-direction budget:

* **mask** (``feather`` > 0): a soft ellipse inscribed in the crop, 1 inside and falling to 0
  at its rim along a raised cosine over ``feather`` of the radius. The perturbation has no
  edge: nothing changes outside the ellipse and nothing jumps at its border.
* **chroma**: the budget of the two colour-difference directions (Cb, Cr; ITU-R BT.601) as a
  fraction of the luminance budget. Shifts of skin tone are what people notice first.
* **texture** (``texture`` > 0): just-noticeable-difference masking. The budget follows the
  local contrast of the face's luminance (standard deviation in a window of 1/32 of the crop,
  against the mean over the mask), so hair, beard, brows and edges take more change than flat
  skin: ``jnd = (1 - texture) + texture * clip(local / mean, 0.25, 3)``, normalised to mean 1
  over the mask so that epsilon keeps its meaning.

Everything is computed in the compiled step from the clean crop, so it costs a few
convolutions per attack and no input beyond the three numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from faceoff.masker.attacks._checks import check_fraction

#: Largest feather: the fade may take up to this fraction of the ellipse's radius.
MAX_FEATHER = 0.5
#: Texture masking's window, as a fraction of the crop side.
TEXTURE_WINDOW = 1 / 32
#: Texture masking's local/mean contrast ratio is clipped to this range.
TEXTURE_RANGE = (0.25, 3.0)
#: Largest weight of the SSIM penalty.
MAX_SSIM_WEIGHT = 1000.0
#: The SSIM penalty's Gaussian window (Wang et al. 2004: 11 px, sigma 1.5), at the work size.
SSIM_WINDOW = 11

# ITU-R BT.601 (full range): rows of YCbCr -> RGB, for a change of (Y, Cb, Cr).
_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class ShapeInputs(NamedTuple):
    """The shaping settings as tensors for the compiled steps."""

    feather: tf.Tensor  # () float32
    chroma: tf.Tensor  # () float32
    texture: tf.Tensor  # () float32
    ssim: tf.Tensor  # () float32


@dataclass(frozen=True)
class Shape:
    """How a PGD perturbation is shaped (see the module docstring).

    Args:
        feather: Soft elliptical mask's fade, as a fraction of its radius, in [0, 0.5]; 0 keeps
            the whole rectangular crop.
        chroma: Colour-difference budget relative to luminance, in [0, 1]; 1 with no mask and
            no texture masking is the unshaped RGB perturbation.
        texture: Strength of texture (JND) masking in [0, 1]; 0 is a uniform budget.
    """

    feather: float = 0.0
    chroma: float = 1.0
    texture: float = 0.0
    ssim: float = 0.0

    def __post_init__(self) -> None:
        check_fraction("chroma", self.chroma)
        check_fraction("texture", self.texture)
        check_fraction("feather", self.feather)
        if self.feather > MAX_FEATHER:
            raise ValueError(f"feather must be in [0, {MAX_FEATHER}], got {self.feather!r}")
        if not (isinstance(self.ssim, (int, float)) and 0 <= self.ssim <= MAX_SSIM_WEIGHT):
            raise ValueError(f"ssim must be in [0, {MAX_SSIM_WEIGHT:g}], got {self.ssim!r}")

    @property
    def active(self) -> bool:
        """Whether the perturbation is shaped at all (else PGD runs on RGB directly)."""
        return self.feather > 0 or self.chroma < 1 or self.texture > 0 or self.ssim > 0

    def inputs(self) -> ShapeInputs:
        return ShapeInputs(
            feather=tf.constant(self.feather, tf.float32),
            chroma=tf.constant(self.chroma, tf.float32),
            texture=tf.constant(self.texture, tf.float32),
            ssim=tf.constant(self.ssim, tf.float32),
        )


def soft_mask(height: int, width: int, feather: float) -> np.ndarray:
    """``(height, width)`` float32 soft ellipse inscribed in the rectangle (1 inside, 0 outside).

    The fade is a raised cosine from ``1 - feather`` of the radius to the rim; ``feather`` 0 is
    the whole rectangle (all ones).
    """
    if feather <= 0:
        return np.ones((height, width), np.float32)
    y = (np.arange(height, dtype=np.float64) + 0.5) / height * 2 - 1
    x = (np.arange(width, dtype=np.float64) + 0.5) / width * 2 - 1
    r = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    t = np.clip((1.0 - r) / feather, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def _mask_graph(size: int, feather: tf.Tensor) -> tf.Tensor:
    coords = (tf.range(size, dtype=tf.float32) + 0.5) / size * 2 - 1
    r = tf.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    t = tf.clip_by_value((1.0 - r) / tf.maximum(feather, 1e-6), 0.0, 1.0)
    soft = 0.5 - 0.5 * tf.cos(np.pi * t)
    return tf.where(feather > 0, soft, tf.ones_like(soft))


def budget(x: tf.Tensor, s: ShapeInputs) -> tf.Tensor:
    """``(N, S, S, 1)`` spatial budget (mask x texture masking) of clean crops ``x`` (N, S, S, 3)."""
    size = x.shape[1]
    mask = _mask_graph(size, s.feather)[None, :, :, None]
    luma = tf.reduce_sum(x * _LUMA, axis=-1, keepdims=True)
    window = max(3, int(round(size * TEXTURE_WINDOW)) | 1)
    mean = tf.nn.avg_pool2d(luma, window, 1, "SAME")
    var = tf.nn.avg_pool2d(tf.square(luma), window, 1, "SAME") - tf.square(mean)
    local = tf.sqrt(tf.maximum(var, 0.0) + 1e-8)
    weight = mask + 1e-6
    typical = tf.reduce_sum(local * weight, axis=[1, 2, 3], keepdims=True) / tf.reduce_sum(
        weight, axis=[1, 2, 3], keepdims=True
    )
    ratio = tf.clip_by_value(local / (typical + 1e-6), *TEXTURE_RANGE)
    jnd = (1.0 - s.texture) + s.texture * ratio
    jnd = jnd / (
        tf.reduce_sum(jnd * weight, axis=[1, 2, 3], keepdims=True)
        / tf.reduce_sum(weight, axis=[1, 2, 3], keepdims=True)
    )
    return tf.stop_gradient(mask * jnd)


def to_rgb(z: tf.Tensor, room: tf.Tensor, s: ShapeInputs) -> tf.Tensor:
    """The RGB change of perceptual variables ``z`` (N, S, S, 3: Y, Cb, Cr) within ``room``."""
    scale = tf.stack([tf.constant(1.0), s.chroma, s.chroma])
    return tf.tensordot(z * scale * room, tf.constant(_TO_RGB.T), axes=1)


def penalty(x: tf.Tensor, adv: tf.Tensor, s: ShapeInputs) -> tf.Tensor:
    """``(N,)`` perceptual penalty: ``ssim`` x (1 - SSIM) of the luminance of ``adv`` against ``x``.

    SSIM (Wang et al. 2004, TensorFlow's differentiable ``tf.image.ssim``) is taken at the size
    the attack works at, so at native resolution when the work size is the face's own. Added to
    the attack's loss, it steers each step away from changes that alter local structure and
    contrast, and lets pixels whose change buys little of the loss stay closer to the photo.
    """

    def weighted() -> tf.Tensor:
        luma_x = tf.reduce_sum(x * _LUMA, axis=-1, keepdims=True)
        luma_adv = tf.reduce_sum(adv * _LUMA, axis=-1, keepdims=True)
        similarity = tf.image.ssim(luma_adv, luma_x, max_val=1.0, filter_size=SSIM_WINDOW)
        return s.ssim * (1.0 - similarity)

    # off (the profiles' 0): neither it nor its gradient is computed (it was, times 0, at the
    # work size in every step)
    return tf.cond(s.ssim > 0.0, weighted, lambda: tf.zeros(tf.shape(x)[:1], adv.dtype))
