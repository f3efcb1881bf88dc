"""A fixed square window cut out of a batch of crops and resized: differentiable alignment.

A surrogate trained on aligned faces (an ArcFace-style 5-point similarity warp to 112x112) sees
the masker's 160x160 crop (MTCNN box plus 10% margin) through a fixed :class:`Window`
fitted to where the aligned square lies in that crop on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

__all__ = ["Window", "WindowCrop"]


@dataclass(frozen=True)
class Window:
    """A square window inside the ``S x S`` input crop, in its pixel units (edges, not centres).

    Attributes:
        center_x: horizontal centre, from the crop's left edge.
        center_y: vertical centre, from the crop's top edge.
        side: side length.
    """

    center_x: float
    center_y: float
    side: float

    def box(self, size: int, out_size: int) -> list[float]:
        """``[y1, x1, y2, x2]`` for :func:`tf.image.crop_and_resize` on an ``size``-px image.

        ``crop_and_resize`` puts the first and last output samples on ``y1 * (size - 1)`` and
        ``y2 * (size - 1)`` (pixel-centre coordinates); the window's ``out_size`` output pixels
        have their centres half an output pixel inside its edges.
        """
        half = self.side / 2 - self.side / (2 * out_size)
        to_norm = 1.0 / (size - 1)
        return [
            (self.center_y - half - 0.5) * to_norm,
            (self.center_x - half - 0.5) * to_norm,
            (self.center_y + half - 0.5) * to_norm,
            (self.center_x + half - 0.5) * to_norm,
        ]


class WindowCrop:
    """Cut ``window`` out of ``(N, size, size, C)`` images and resize it to ``out_size`` (bilinear).

    Args:
        window: the square, in the input's pixel units (edges, not centres).
        size: side of the input images.
        out_size: side of the output.

    Where the window reaches outside the image, the image's edge rows and columns are repeated
    (gathered with clamped indices: differentiable, the gradient of a repeated pixel adds up on
    it), as the real aligned crop would show more of the photo there, not black.
    """

    def __init__(self, window: Window, size: int, out_size: int) -> None:
        if size < 1 or out_size < 1 or not window.side > 0:
            raise ValueError(
                f"window {window} into {out_size} px from {size} px: sizes must be positive"
            )
        self.window = window
        self.size = int(size)
        self.out_size = int(out_size)
        half = window.side / 2
        overhang = max(half - window.center_x, half - window.center_y,
                       window.center_x + half - size, window.center_y + half - size)  # fmt: skip
        self.pad = math.ceil(overhang) + 1 if overhang > 0 else 0
        self._edge_index = tf.constant(
            np.clip(np.arange(-self.pad, size + self.pad), 0, size - 1), tf.int32
        )
        padded = Window(window.center_x + self.pad, window.center_y + self.pad, window.side)
        self._boxes = tf.constant([padded.box(size + 2 * self.pad, out_size)], tf.float32)

    def aligned(self, images: tf.Tensor, align: tf.Tensor) -> tf.Tensor:
        """The window read through each face's alignment ``(N, 6)`` (see
        :mod:`faceoff.faces.alignment`): bilinear, the edge repeated, differentiable."""
        w = self.window
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(images, tf.float32),
            transforms=window_transforms(
                align, w.center_x, w.center_y, w.side, self.size, self.out_size
            ),
            output_shape=tf.constant([self.out_size, self.out_size], tf.int32),
            fill_value=tf.constant(0.0),
            interpolation="BILINEAR",
            fill_mode="NEAREST",
        )

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """``(N, out_size, out_size, C)`` float32 windows of ``(N, size, size, C)`` images."""
        images = tf.cast(images, tf.float32)
        if self.pad:
            images = tf.gather(
                tf.gather(images, self._edge_index, axis=1), self._edge_index, axis=2
            )
        n = tf.shape(images)[0]
        return tf.image.crop_and_resize(
            images,
            tf.tile(self._boxes, [n, 1]),
            tf.range(n),
            [self.out_size, self.out_size],
            "bilinear",
        )


def window_transforms(
    align: tf.Tensor, center_x: float, center_y: float, side: float, size: int, out_size: int
) -> tf.Tensor:
    """``(N, 8)`` rows for ``ImageProjectiveTransformV3``: each output pixel of an ``out_size``
    window (centre and side in the canonical ``size``-px crop's pixels) mapped through the face's
    alignment ``(N, 6)`` to where it is read in that face's crop (pixel-centre coordinates).

    With :data:`IDENTITY` the samples fall exactly where a fixed bilinear crop-and-resize of the
    window puts them.
    """
    align = tf.cast(align, tf.float32)
    a, b, c, d, e, f = (align[:, i] for i in range(6))
    k = side / out_size
    x0 = center_x - side / 2 + 0.5 * k  # canonical pixel of the first output sample's centre
    y0 = center_y - side / 2 + 0.5 * k
    zero = tf.zeros_like(a)
    return tf.stack(
        [
            a * k,
            b * k,
            a * x0 + b * y0 + size * c - 0.5,
            d * k,
            e * k,
            d * x0 + e * y0 + size * f - 0.5,
            zero,
            zero,
        ],
        axis=1,
    )
