"""Surrogate augmentation: dropout on a surrogate's intermediate feature maps (DFANet).

An adversarial perturbation fitted to one network's exact features transfers poorly to other
networks. DFANet (Zhong and Deng, "Towards Transferable Adversarial Attack Against Deep Face
Recognition", IEEE TIFS 2021) and Ghost Networks (Li et al., AAAI 2020) attack instead a random
member of a family of *perturbed* surrogates: each iteration, dropout on intermediate feature
maps gives a slightly different network, so the perturbation cannot lean on any one unit.

How it is wired. A surrogate marks its dropout sites by calling :func:`drop` on a feature map
(FaceNet and MobileFace: every residual branch before its add; SFace: every PReLU activation of
a feature map; FaceRes: every depthwise-separable block's output), with a site scale that makes one setting
mean about the same for every surrogate (see :data:`FACENET_SCALE`). Outside a :func:`feature_dropout` context
:func:`drop` returns its input unchanged and adds nothing to the graph, so evaluation,
enrolment and references never see dropout. Inside it, each site multiplies the map by a
Bernoulli keep-mask scaled by ``1 / (1 - rate)`` (inverted dropout, so the expected activation
is the network's own). The mask is drawn for each face from that face's own seed, the
iteration number and the site's name: every face of a batch draws its own networks, a fresh
one every iteration, and the same seed gives the same draws whichever faces share the batch.
The context is read while a graph is traced (the attacks' compiled steps open it around the
surrogates' call); the rate, seeds and step are tensors, so changing them does not retrace.

FaceNet-512 is a frozen, imported graph with no sites; it is attacked as it is.

The residual branches among the sites (FaceNet's and MobileFace's) also serve the skip-gradient
method (SGM, Wu et al., "Skip Connections Matter", ICLR 2020): within a :func:`skip_gradient`
context each residual branch passes its full value forward but only a fraction ``gamma`` of its
gradient backward, so the attack's gradient leans on the skip connections, the lower-level
features that networks share more, and transfers further.

The same sites serve an intermediate-feature objective: within a :func:`feature_taps` context
each model's one mid-level site (:data:`FEATURE_SITES`) hands its feature map to the caller, so
that an attack can push those features away from the clean face's (a feature-level term, after
ILA / FIA: mid-level features are shared more across networks than the final embedding).
"""

from __future__ import annotations

import contextlib
import contextvars
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import tensorflow as tf

__all__ = [
    "FEATURE_SITES",
    "RESIDUAL_SITES",
    "DropoutDraw",
    "drop",
    "feature_dropout",
    "feature_taps",
    "skip_gradient",
]

#: Site scales: the rate each surrogate's sites apply is the setting times its scale, so that one
#: setting moves every surrogate about as far. FaceNet and MobileFace drop only their residual
#: branches (the skip path stays whole; MobileFace has four, each a large part of the network),
#: SFace and FaceRes every activation of a feature map, which compounds; on the shared 160 px
#: crops at setting 0.3 each surrogate's embedding keeps a median cosine of 0.96 to its clean one
#: (FaceNet 0.962, SFace 0.968, FaceRes 0.961, MobileFace 0.963), and every face its identity.
FACENET_SCALE = 1.0
SFACE_SCALE = 1 / 60
FACERES_SCALE = 1 / 60
MOBILEFACE_SCALE = 0.2

#: Each model's mid-level site whose feature map :func:`feature_taps` hands out, by model name:
#: FaceNet after its five Block35 units (17x17x256, the residual branch), SFace's seventh
#: pointwise layer (14x14x512) and FaceRes's sixth block (14x14x512), each about halfway
#: through its network. MobileFace (four residual units) has none.
FEATURE_SITES = {
    "facenet": "facenet/Block35_5_ScaleResidual",
    "sface": "sface/conv_7_relu",
    "faceres": "faceres/block_6",
}
_TAPPED_SITES = frozenset(FEATURE_SITES.values())
#: The models whose sites are residual branches (a branch before its add to the skip path), by
#: the prefix of their site names: the sites :func:`skip_gradient` acts on.
RESIDUAL_SITES = ("facenet/", "mobileface/")

#: Mixed into each face's seed so that dropout draws never coincide with the input transforms'.
_SALT = 0x5EED_D40F


class DropoutDraw(NamedTuple):
    """What one traced step's dropout draws from."""

    rate: tf.Tensor  # () float32 in [0, 1)
    seed: tf.Tensor  # (N,) int64, one per face
    step: tf.Tensor  # () int32 iteration number


_ACTIVE: contextvars.ContextVar[DropoutDraw | None] = contextvars.ContextVar(
    "faceoff_feature_dropout", default=None
)


_TAPS: contextvars.ContextVar[dict[str, tf.Tensor] | None] = contextvars.ContextVar(
    "faceoff_feature_taps", default=None
)


@contextlib.contextmanager
def feature_taps() -> Iterator[dict[str, tf.Tensor]]:
    """Within this context, each :data:`FEATURE_SITES` site a surrogate passes records its
    feature map (before any dropout) in the dict yielded, by model name."""
    taps: dict[str, tf.Tensor] = {}
    token = _TAPS.set(taps)
    try:
        yield taps
    finally:
        _TAPS.reset(token)


_SKIP: contextvars.ContextVar[tf.Tensor | None] = contextvars.ContextVar(
    "faceoff_skip_gradient", default=None
)


@contextlib.contextmanager
def skip_gradient(gamma: tf.Tensor) -> Iterator[None]:
    """Within this context every residual-branch site (:data:`RESIDUAL_SITES`) passes its value
    unchanged forward and ``gamma`` (in (0, 1]) times its gradient backward (SGM)."""
    token = _SKIP.set(tf.convert_to_tensor(gamma, tf.float32))
    try:
        yield
    finally:
        _SKIP.reset(token)


@contextlib.contextmanager
def feature_dropout(rate: tf.Tensor, seed: tf.Tensor, step: tf.Tensor) -> Iterator[None]:
    """Within this context, every :func:`drop` site of a surrogate called applies dropout at
    ``rate`` with masks drawn from each face's ``seed`` ``(N,)`` and the iteration ``step``."""
    token = _ACTIVE.set(
        DropoutDraw(
            rate=tf.convert_to_tensor(rate, tf.float32),
            seed=tf.convert_to_tensor(seed, tf.int64),
            step=tf.cast(step, tf.int32),
        )
    )
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def site_number(site: str) -> int:
    """A stable number for a site's name (the same in every process, unlike ``hash``)."""
    return zlib.crc32(site.encode()) & 0x7FFF_FFFF


def drop(x: tf.Tensor, site: str, scale: float = 1.0) -> tf.Tensor:
    """``x`` ``(N, ...)`` with this step's dropout at ``site`` when a :func:`feature_dropout`
    context is open (at the context's rate times ``scale``, the model's :data:`site scale
    <FACENET_SCALE>`); else ``x`` itself."""
    taps = _TAPS.get()
    if taps is not None and site in _TAPPED_SITES:
        taps[site.split("/", 1)[0]] = x
    gamma = _SKIP.get()
    if gamma is not None and site.startswith(RESIDUAL_SITES):
        x = gamma * x + tf.stop_gradient((1.0 - gamma) * x)  # the same value, gamma's gradient
    draw = _ACTIVE.get()
    if draw is None:
        return x
    number = tf.constant(site_number(site), tf.int64)
    step = tf.cast(draw.step, tf.int64)
    rate = draw.rate * scale

    def mask(seed: tf.Tensor) -> tf.Tensor:
        key = tf.stack([tf.bitwise.bitwise_xor(seed, _SALT), step * 2**31 + number])
        return tf.cast(tf.random.stateless_uniform(tf.shape(x)[1:], key) >= rate, x.dtype)

    keep = tf.map_fn(mask, draw.seed, fn_output_signature=x.dtype)
    return x * tf.stop_gradient(keep) / (1.0 - rate)
