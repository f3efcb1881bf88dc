"""Techniques that make a perturbation computed on a surrogate fool other recognisers too.

The attack runs on models we hold; the photo must fool models we never saw, after a platform
has re-encoded it (the paper's challenge C3). Each technique is one knob of :class:`Transfer`,
off at 0, used by :class:`~faceoff.masker.attacks.pgd.PGD` inside its compiled loop:

* **momentum** (MI-FGSM, Dong et al., CVPR 2018): the step follows ``g <- mu * g + grad /
  mean|grad|`` instead of the raw gradient, which steadies the direction across iterations.
* **diversity** (DI, Xie et al., CVPR 2019): with this probability per iteration the crop is
  shrunk to a random 87.5-100% of its side and padded back at a random offset before the
  surrogate sees it, so the perturbation cannot rely on exact pixel positions.
* **ti_kernel** (TI, Dong et al., CVPR 2019): the gradient is smoothed with a Gaussian kernel of
  this side (odd, in crop pixels), which favours perturbations that survive small shifts.
* **eot** (expectation over transformation, Athalye et al., ICML 2018): with this probability
  per iteration the crop goes through what a platform does to an upload: a down-and-up resize
  to a random 50-100% and a JPEG round trip at a random quality in 60-95. JPEG is not
  differentiable; the backward pass treats it as the identity (straight-through / BPDA), while
  the forward pass sees the real JPEG artefacts.
* **warp** (expectation over alignments): with this probability per iteration the crop goes
  through a random similarity transform, a rotation of up to :data:`WARP_ROTATION` degrees, a
  scale change of up to :data:`WARP_SCALE` and a shift of up to :data:`WARP_SHIFT` of the side
  in each direction, resampled bilinearly (the edge reflected where the warp reaches past it).
  Each recogniser finds and aligns a face its own way (a 5-point template warp to 112 px, a
  150 px chip, a box with a margin); a perturbation fitted to one fixed crop window is partly
  undone by another. The warp is differentiable, so the gradient is that of the warped view.
* **dropout** (surrogate augmentation, DFANet / Ghost Networks): each iteration every surrogate
  runs with dropout at this rate on its intermediate feature maps, a fresh draw per iteration
  and per face (:mod:`faceoff.faces.models.augment`), so the perturbation is fitted to a family
  of nearby networks rather than to one network's exact units.
* **subset** (random ensemble members): with an ensemble, each iteration each face attacks a
  random subset of this many of the surrogates, each member on its own objective (a fresh draw
  per iteration and face), so the perturbation is not fitted to one fixed compromise between
  members whose gradients disagree (stochastic ensembles, e.g. Xiong et al., CVPR 2022). The
  loss that picks the best iterate stays the whole ensemble's.
* **skip_gradient** (SGM, Wu et al., ICLR 2020): each residual branch of the residual surrogates
  (FaceNet, MobileFace) passes only this fraction gamma of its gradient backward (its value
  forward unchanged), so the step leans on the skip connections
  (:func:`~faceoff.faces.models.augment.skip_gradient`); 0 is off.
* **feature_level** (an intermediate-feature term, after ILA / FIA): this fraction of each
  surrogate's say in a step goes to pushing its mid-level feature map
  (:data:`~faceoff.faces.models.augment.FEATURE_SITES`) away from the clean face's, seen through
  the same transform, rather than its embedding away from the references: mid-level features are
  shared more across networks than the final embedding. Needs ``balance`` (each term's
  gradient normalised, so the fraction means what it says). A surrogate without a feature
  site keeps its whole say on the embedding.
* **variance** (variance tuning, VMI-FGSM, Wang & He, CVPR 2021): each iteration the gradient
  is also taken at this many random neighbours of the iterate (each value moved uniformly
  within :data:`VARIANCE_RADIUS` times epsilon, each neighbour through its own transform
  draw), and the next step adds the neighbours' mean gradient minus this iterate's to its own
  gradient, which steadies the direction against the surrogates' local wiggles. It costs this
  many more gradients per iteration; 0 is off.

Randomness comes from stateless ops seeded by each face's own seed and the iteration number:
every face of a batch draws its own transforms, so the same seed gives the same perturbation
whichever faces share the batch. When an input transform (diversity, eot) is on, the
loss a step sees is that of a random transform, so the attack returns its last iterate instead
of the "best" one (which would favour iterations that drew a mild transform).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from faceoff.faces.models.augment import feature_dropout, skip_gradient
from faceoff.masker.attacks._checks import check_fraction
from faceoff.masker.attacks._compile import relax_dims
from faceoff.masker.schema import bound

#: Largest TI kernel side accepted: the contract's bound.
MAX_TI_KERNEL = int(bound("ti_kernel"))
#: Diversity: the crop is shrunk to between this fraction of its side and all of it.
DIVERSITY_MIN_SCALE = 0.875
#: EOT: the resize goes down to between this fraction of the side and all of it.
EOT_MIN_SCALE = 0.5
#: EOT: JPEG quality is drawn from this range (inclusive).
EOT_JPEG_QUALITY = (60, 95)
#: Warp: largest rotation (degrees), relative scale change and shift (fraction of the side).
WARP_ROTATION = 8.0
WARP_SCALE = 0.10
WARP_SHIFT = 0.05
#: Largest dropout rate accepted: the contract's bound.
MAX_DROPOUT = bound("dropout")
#: SGM's gamma must stay below this: the contract's (exclusive) bound.
MAX_SKIP_GRADIENT = bound("skip_gradient")
#: Largest subset of surrogates accepted: the contract's bound.
MAX_SUBSET = int(bound("surrogate_subset"))
#: Largest number of variance-tuning neighbours accepted: the contract's bound.
MAX_VARIANCE = int(bound("variance"))
#: Variance tuning: neighbours lie within this many epsilons of the iterate (VMI's beta).
VARIANCE_RADIUS = 1.5


class TransferInputs(NamedTuple):
    """The techniques' settings as tensors, passed into compiled steps (never captured)."""

    momentum: tf.Tensor  # () float32
    diversity: tf.Tensor  # () float32 probability
    eot: tf.Tensor  # () float32 probability
    warp: tf.Tensor  # () float32 probability
    dropout: tf.Tensor  # () float32 rate
    subset: tf.Tensor  # () int32 surrogates per iteration (0: all)
    feature_level: tf.Tensor  # () float32 fraction of each surrogate's say for its features
    skip_gradient: tf.Tensor  # () float32 SGM's gamma on residual branches (0: off)
    kernel: tf.Tensor  # (k, k, 3, 1) float32 depthwise Gaussian; (1, 1, 3, 1) ones when off
    seed: tf.Tensor  # (N,) int64, one per face


relax_dims(TransferInputs, kernel=0)  # the kernel's shape is a setting: traced exact


@dataclass(frozen=True)
class Transfer:
    """Which transfer techniques an attack uses (all off by default); see the module docstring.

    Args:
        momentum: MI-FGSM decay mu in [0, 1]; 0 is off (the paper's plain PGD).
        diversity: Probability in [0, 1] of a random resize-and-pad per iteration.
        ti_kernel: Side of the Gaussian gradient-smoothing kernel: 0 (off) or an odd number in
            3..15.
        eot: Probability in [0, 1] of a platform transform (resize + JPEG) per iteration.
        warp: Probability in [0, 1] of a random similarity warp (rotation, scale, shift) per
            iteration.
        dropout: Rate in [0, :data:`MAX_DROPOUT`] of dropout on the surrogates' intermediate
            feature maps per iteration (0: off).
        subset: Surrogates each face attacks per iteration, a random subset (0: all); below
            the ensemble's size, at most :data:`MAX_SUBSET`.
        feature_level: Fraction in [0, 1] of each surrogate's say in a step given to pushing its
            mid-level features away from the clean face's (0: off; needs the attack's
            ``balance``).
        skip_gradient: SGM's gamma in [0, 1): the fraction of the gradient each residual branch
            of FaceNet and MobileFace passes backward (0: off, the whole gradient).
        variance: Neighbours whose gradients tune each step (VMI), 0 (off) to
            :data:`MAX_VARIANCE`.
    """

    momentum: float = 0.0
    diversity: float = 0.0
    ti_kernel: int = 0
    eot: float = 0.0
    warp: float = 0.0
    dropout: float = 0.0
    subset: int = 0
    feature_level: float = 0.0
    skip_gradient: float = 0.0
    variance: int = 0

    def __post_init__(self) -> None:
        for name in (
            "momentum",
            "diversity",
            "eot",
            "warp",
            "dropout",
            "feature_level",
            "skip_gradient",
        ):
            check_fraction(name, getattr(self, name))
        if self.skip_gradient >= MAX_SKIP_GRADIENT:
            raise ValueError(
                f"skip_gradient must be in [0, {MAX_SKIP_GRADIENT:g}) (0: off), "
                f"got {self.skip_gradient!r}"
            )
        if self.dropout > MAX_DROPOUT:
            raise ValueError(f"dropout must be in [0, {MAX_DROPOUT:g}], got {self.dropout!r}")
        for name, most, zero in (("subset", MAX_SUBSET, "all"), ("variance", MAX_VARIANCE, "off")):
            s = getattr(self, name)
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= most:
                raise ValueError(f"{name} must be an integer in 0..{most} (0: {zero}), got {s!r}")
        k = self.ti_kernel
        if (
            isinstance(k, bool)
            or not isinstance(k, (int, np.integer))
            or not (k == 0 or (3 <= k <= MAX_TI_KERNEL and k % 2 == 1))
        ):
            raise ValueError(
                f"ti_kernel must be 0 (off) or an odd integer in 3..{MAX_TI_KERNEL}, got {k!r}"
            )

    @property
    def transforms_input(self) -> bool:
        """Whether a step sees a randomly transformed crop (diversity, eot or warp)."""
        return self.diversity > 0 or self.eot > 0 or self.warp > 0

    @property
    def active(self) -> bool:
        """Whether any technique is on."""
        return (
            self.transforms_input
            or self.momentum > 0
            or self.ti_kernel > 0
            or self.dropout > 0
            or self.subset > 0
            or self.feature_level > 0
            or self.skip_gradient > 0
            or self.variance > 0
        )

    @property
    def randomises(self) -> bool:
        """Whether a step's loss is that of a random draw (an input transform or dropout), so
        that the last iterate, not the "best" one, is what the attack returns."""
        return self.transforms_input or self.dropout > 0

    def inputs(self, seeds: np.ndarray) -> TransferInputs:
        """The settings as the tensors the compiled steps take; ``seeds``: one per face."""
        return TransferInputs(
            momentum=tf.constant(self.momentum, tf.float32),
            diversity=tf.constant(self.diversity, tf.float32),
            eot=tf.constant(self.eot, tf.float32),
            warp=tf.constant(self.warp, tf.float32),
            dropout=tf.constant(self.dropout, tf.float32),
            subset=tf.constant(self.subset, tf.int32),
            feature_level=tf.constant(self.feature_level, tf.float32),
            skip_gradient=tf.constant(self.skip_gradient, tf.float32),
            kernel=tf.constant(gaussian_kernel(self.ti_kernel)),
            seed=tf.constant(np.asarray(seeds, np.int64).reshape(-1) % (2**62), tf.int64),
        )


def gaussian_kernel(side: int) -> np.ndarray:
    """``(side, side, 3, 1)`` normalised Gaussian (sigma = side / 6) for a depthwise conv; 1x1 at 0."""
    if side <= 1:
        return np.ones((1, 1, 3, 1), np.float32)
    r = np.arange(side, dtype=np.float64) - (side - 1) / 2
    g = np.exp(-0.5 * (r / (side / 6.0)) ** 2)
    k = np.outer(g, g)
    k /= k.sum()
    return np.repeat(k[:, :, None, None], 3, axis=2).astype(np.float32)


# --- graph parts, called inside the attacks' compiled loops -----------------------------------


def _seed(seed: tf.Tensor, step: tf.Tensor, salt: int) -> tf.Tensor:
    return tf.stack([seed, tf.cast(step, tf.int64) * 8 + salt])


def transform_input(images01: tf.Tensor, t: TransferInputs, step: tf.Tensor) -> tf.Tensor:
    """``images01`` through this iteration's random warp, platform transform and/or diversity,
    drawn for each face from its own seed."""
    size = images01.shape[1]

    def one(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, seed = args
        out = image[None]
        draw = tf.random.stateless_uniform([2], _seed(seed, step, 0))
        warp_draw = tf.random.stateless_uniform([], _seed(seed, step, 3))
        out = tf.cond(
            warp_draw < t.warp, lambda: _warp(out, size, _seed(seed, step, 4)), lambda: out
        )
        out = tf.cond(
            draw[0] < t.eot, lambda: _platform(out, size, _seed(seed, step, 1)), lambda: out
        )
        out = tf.cond(
            draw[1] < t.diversity, lambda: _diversity(out, size, _seed(seed, step, 2)), lambda: out
        )
        return tf.reshape(out, tf.shape(image))

    out = tf.map_fn(one, (images01, t.seed), fn_output_signature=tf.float32)
    out.set_shape(images01.shape)
    return out


def _diversity(images: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    low = int(math.floor(DIVERSITY_MIN_SCALE * size))
    r = tf.random.stateless_uniform([3], seed)
    side = low + tf.cast(r[0] * (size - low + 1), tf.int32)
    side = tf.minimum(side, size)
    small = tf.image.resize(images, tf.stack([side, side]), method="bilinear")
    room = size - side
    top = tf.cast(r[1] * tf.cast(room + 1, tf.float32), tf.int32)
    left = tf.cast(r[2] * tf.cast(room + 1, tf.float32), tf.int32)
    top, left = tf.minimum(top, room), tf.minimum(left, room)
    padded = tf.pad(
        small, [[0, 0], [top, room - top], [left, room - left], [0, 0]], constant_values=0.5
    )
    return tf.reshape(padded, tf.shape(images))


def warp_matrix(angle: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor, size: int) -> tf.Tensor:
    """The ``(1, 8)`` projective-transform row that maps each *output* pixel to where it is read
    in the input, for a similarity that rotates by ``angle`` (radians) and scales by ``scale``
    about the image centre, then shifts by ``shift`` (x, y) pixels.

    The forward map is ``out = c + scale * R(angle) (in - c) + shift``; its inverse,
    ``in = c + R(-angle) (out - c - shift) / scale``, is what the transform op takes.
    """
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    ox, oy = c + shift[0], c + shift[1]
    a2 = c - (cos * ox + sin * oy)
    b2 = c - (-sin * ox + cos * oy)
    zero = tf.zeros_like(cos)
    return tf.reshape(tf.stack([cos, sin, a2, -sin, cos, b2, zero, zero]), [1, 8])


def _warp(images: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    r = tf.random.stateless_uniform([4], seed, minval=-1.0, maxval=1.0)
    angle = r[0] * (WARP_ROTATION * math.pi / 180.0)
    scale = 1.0 + r[1] * WARP_SCALE
    shift = r[2:] * (WARP_SHIFT * size)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=warp_matrix(angle, scale, shift, size),
        output_shape=tf.constant([size, size], tf.int32),
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _platform(images: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    r = tf.random.stateless_uniform([2], seed)
    side = tf.cast(tf.round((EOT_MIN_SCALE + (1 - EOT_MIN_SCALE) * r[0]) * size), tf.int32)
    small = tf.image.resize(images, tf.stack([side, side]), method="bilinear", antialias=True)
    resized = tf.clip_by_value(tf.image.resize(small, [size, size], method="bilinear"), 0.0, 1.0)
    low, high = EOT_JPEG_QUALITY
    quality = low + tf.cast(r[1] * (high - low + 1), tf.int32)
    quality = tf.minimum(quality, high)
    jpeg = tf.map_fn(
        lambda im: tf.image.adjust_jpeg_quality(im, quality),
        resized,
        fn_output_signature=tf.float32,
    )
    # Straight-through: forward through the real JPEG, backward as if it were the identity.
    return resized + tf.stop_gradient(jpeg - resized)


@contextlib.contextmanager
def surrogate_draws(
    t: TransferInputs, step: tf.Tensor, dropout: bool, skip: bool
) -> Iterator[None]:
    """The context the surrogates run in at iteration ``step``: their feature dropout when
    ``dropout``, SGM on their residual branches when ``skip`` (trace-time switches: off adds
    nothing to the graph)."""
    with contextlib.ExitStack() as stack:
        if dropout:
            stack.enter_context(feature_dropout(t.dropout, t.seed, step))
        if skip:
            stack.enter_context(skip_gradient(t.skip_gradient))
        yield


def neighbour_step(step: tf.Tensor, k: int) -> tf.Tensor:
    """The draw number of variance-tuning neighbour ``k`` at iteration ``step``: negative, so
    that its transforms, dropout and noise are drawn apart from every iteration's own."""
    return -(step * (MAX_VARIANCE + 1) + k + 1)


def neighbour(
    variable: tf.Tensor, t: TransferInputs, step: tf.Tensor, radius: tf.Tensor
) -> tf.Tensor:
    """``variable`` moved uniformly within ``radius`` in every value, each face from its own
    seed at draw number ``step`` (see :func:`neighbour_step`)."""
    shape = tf.shape(variable)[1:]

    def one(seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, _seed(seed, step, 6), minval=-1.0, maxval=1.0)

    noise = tf.map_fn(one, t.seed, fn_output_signature=tf.float32)
    return variable + radius * tf.reshape(noise, tf.shape(variable))


def member_mask(t: TransferInputs, step: tf.Tensor, members: int) -> tf.Tensor:
    """``(N, members)`` float32: 1 for the surrogates each face attacks at iteration ``step``,
    ``t.subset`` of them drawn from its own seed (all of them when the subset is 0)."""

    def one(seed: tf.Tensor) -> tf.Tensor:
        draw = tf.random.stateless_uniform([members], _seed(seed, step, 5))
        rank = tf.argsort(tf.argsort(draw))  # each member's place in a random order
        return tf.cast(rank < t.subset, tf.float32)

    chosen = tf.map_fn(one, t.seed, fn_output_signature=tf.float32)
    return tf.where(t.subset > 0, chosen, tf.ones_like(chosen))


def process_gradient(
    grad: tf.Tensor, velocity: tf.Tensor, t: TransferInputs
) -> tuple[tf.Tensor, tf.Tensor]:
    """TI smoothing, then momentum; returns ``(direction source, new velocity)``.

    With momentum 0 and a 1x1 kernel this returns the gradient unchanged.
    """
    smoothed = tf.nn.depthwise_conv2d(grad, t.kernel, strides=[1, 1, 1, 1], padding="SAME")
    scale = tf.reduce_mean(tf.abs(smoothed), axis=[1, 2, 3], keepdims=True) + 1e-12
    velocity = t.momentum * velocity + smoothed / scale
    use_momentum = t.momentum > 0
    return tf.where(use_momentum, velocity, smoothed), tf.where(
        use_momentum, velocity, tf.zeros_like(velocity)
    )
