"""The Face-Off adversarial losses on a metric embedding (paper section II-B).

A loss says, for each face of a batch, how far its perturbed embedding still is from the goal
(a value *to minimise*) and whether the goal is reached (a success flag). The optimisers in
:mod:`faceoff.masker.attacks.pgd` and :mod:`faceoff.masker.attacks.cw` only ever see those two
numbers, so any loss combines with any optimiser.

Notation. ``f`` is the surrogate embedding (:class:`~faceoff.faces.models.EmbeddingModel`),
``A_y`` a set of reference embeddings of identity ``y`` and

    d'(x, A_y) = mean over a in A_y of ||f(x) - a||_2

the paper's mean distance. The norm is smoothed, ``sqrt(sum(u**2) + 1e-12)``, so that its
gradient stays finite when the probe *is* one of its references (the service uses the probe
and light augmentations of it when the user sends no reference photos).

Each face carries its own identities, as a ragged set padded to a fixed size with a mask:
slot 0 is the *anchor* identity (the user's own references ``A_y`` when untargeted, the
decoy's ``A_t`` when targeted) and slots 1.. the *other* identities (a decoy gallery; in
targeted mode this should include the user's own references). One compiled step therefore
serves a batch of faces whose reference sets differ in size.

Units. The surrogates return L2-normalised embeddings, so every distance here lies in [0, 2].
The paper's margins (kappa = 5..13) were measured on unnormalised embeddings and do not carry
over; :data:`DEFAULT_KAPPA` and :data:`DEFAULT_THRESHOLD` are in normalised units.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import tensorflow as tf

from faceoff.faces.models.base import DISTANCE_SMOOTHING, EmbeddingModel, smooth_l2  # noqa: F401 (re-exported)
from faceoff.masker.attacks._checks import check_bool, check_non_negative, check_positive
from faceoff.masker.attacks._compile import compiled, relax_dims

#: Default hinge margin kappa, in normalised-embedding units (distances lie in [0, 2]).
#: On FaceNet the mean distance of a face to its own identity's other photos is about 0.6-0.9
#: and to the nearest other identity about 1.1-1.3, a gap of about 0.4; a margin of 0.2 asks
#: the protected face to end up clearly, not marginally, nearer another identity, while keeping
#: CW's search (whose cost grows with kappa, section IV-B) short.
DEFAULT_KAPPA = 0.2

#: Default success threshold on d'(x, A_anchor) when no other identities are given: untargeted
#: succeeds once the mean distance to the user's references exceeds it, targeted once the mean
#: distance to the decoy's falls below it. 1.1 is about where FaceNet-style verifiers stop
#: matching two L2-normalised embeddings of the same person.
DEFAULT_THRESHOLD = 1.1

_FAR = 1e9  # stands in for "no identity here" in minimum distances


class LossInputs(NamedTuple):
    """The per-batch tensors a loss needs; passed into compiled steps, never captured.

    Attributes:
        references: ``(N, G, K, D)`` float32 reference embeddings. Slot ``g = 0`` is the anchor
            identity of each face, slots ``1..G-1`` the other identities; zero where padded.
        mask: ``(N, G, K)`` float32, 1 for a real reference and 0 for padding.
        targeted: ``()`` bool, whether the anchor is a decoy to approach.
        kappa: ``()`` float32 hinge margin (0 for the target loss).
        threshold: ``()`` float32 success threshold used when a face has no other identities.
        align: ``(N, 6)`` float32, each face's alignment (:mod:`faceoff.faces.alignment`), which
            surrogates trained on aligned faces read their window through; the identity when the
            faces are not aligned.
    """

    references: tf.Tensor
    mask: tf.Tensor
    targeted: tf.Tensor
    kappa: tf.Tensor
    threshold: tf.Tensor
    align: tf.Tensor


# traced with faces, identities and references per identity open (see attacks._compile)
relax_dims(LossInputs, references=3, mask=3, align=1)


def embed_unconverted(model: EmbeddingModel, images01: tf.Tensor, align: tf.Tensor) -> tf.Tensor:
    """``model.embed_aligned(images01, align)`` traced as written, not through AutoGraph.

    The models' graphs have no data-dependent Python control flow, so AutoGraph's conversion of
    every layer call changes nothing in the graph (the protected bytes are the same) but adds
    seconds of Python tracing to each trace of an attack step (the "trace of the attack" row of
    ``faceoff bench startup``).
    """
    return tf.autograph.experimental.do_not_convert(model.embed_aligned)(images01, align)


def parts_unconverted(
    model: EmbeddingModel, images01: tf.Tensor, align: tf.Tensor
) -> list[tf.Tensor]:
    """``model.parts_aligned(images01, align)`` traced as written (see :func:`embed_unconverted`)."""
    return tf.autograph.experimental.do_not_convert(model.parts_aligned)(images01, align)


def set_distances(
    embeddings: tf.Tensor,
    references: tf.Tensor,
    mask: tf.Tensor,
    distance: Callable[[tf.Tensor], tf.Tensor] = smooth_l2,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Distances from each face's embedding to each of its identities.

    Args:
        embeddings: ``(N, D)`` embeddings of the (perturbed) faces.
        references: ``(N, G, K, D)`` padded reference embeddings.
        mask: ``(N, G, K)`` reference mask.
        distance: Maps difference vectors ``(..., D)`` to distances ``(...)``: the model's
            :meth:`~faceoff.faces.models.EmbeddingModel.distance` (the smoothed L2 norm, or an
            ensemble's weighted mean of its members' norms).

    Returns:
        ``(mean, centroid, present)``, each ``(N, G)``: the paper's d' (mean distance to the
        identity's references, the attack objective), the distance to the identity's centroid
        (the recogniser's decision rule, section II-A) and whether the identity has any
        reference at all.
    """
    per_ref = distance(embeddings[:, None, None, :] - references)  # (N, G, K)
    count = tf.reduce_sum(mask, axis=-1)  # (N, G)
    present = count > 0
    safe_count = tf.maximum(count, 1.0)
    mean = tf.reduce_sum(per_ref * mask, axis=-1) / safe_count
    centroids = tf.reduce_sum(references * mask[..., None], axis=2) / safe_count[..., None]
    centroid = distance(embeddings[:, None, :] - centroids)
    return mean, centroid, present


def _nearest_other(distances: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
    """``(N,)`` smallest distance over the other identities (slots 1..), _FAR if there are none."""
    others = tf.where(present[:, 1:], distances[:, 1:], _FAR)
    return tf.reduce_min(tf.concat([others, tf.fill([tf.shape(others)[0], 1], _FAR)], 1), 1)


class Loss(abc.ABC):
    """An adversarial loss for one batch of faces, built from precomputed reference embeddings.

    Args:
        model: The surrogate the attack runs on; reference embeddings must come from it.
        references: One ``(k_i, D)`` array per face (``k_i >= 1``; sizes may differ), or one
            ``(N, K, D)`` array: the anchor identity's embeddings, the user's own (``A_y``)
            when untargeted and the decoy's (``A_t``) when targeted.
        others: Optional, one entry per face, each a (possibly empty) sequence of ``(k, D)``
            arrays: the other identities the recogniser could choose. Success is then decided
            the paper's way, by the nearest centroid; targeted attacks should list the user's
            own references here. A shared gallery is passed as ``[gallery] * N``.
        targeted: ``False`` pushes each face away from its anchor, ``True`` pulls it towards.
        threshold: Success threshold on ``d'(x, A_anchor)`` for faces without other identities
            (untargeted: exceeded; targeted: undercut), > 0, in embedding units.
        align: ``(N, 6)`` alignments of the faces (:mod:`faceoff.faces.alignment`); default the
            identity (the crops as they are). The references must come from faces embedded the
            same way.

    Raises:
        ValueError: A parameter or array is malformed; the message names it.
    """

    #: Registry name (``"target"`` or ``"hinge"``).
    name: ClassVar[str]

    def __init__(
        self,
        model: EmbeddingModel,
        references: Sequence[np.ndarray] | np.ndarray,
        others: Sequence[Sequence[np.ndarray]] | None = None,
        *,
        targeted: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        align: np.ndarray | None = None,
    ) -> None:
        if not isinstance(model, EmbeddingModel):
            raise ValueError(f"model must be an EmbeddingModel, got {type(model).__name__}")
        self.model = model
        self.targeted = check_bool("targeted", targeted)
        self.threshold = check_positive("threshold", threshold)
        refs, mask = _pad_identities(references, others, model.embedding_dim)
        self.inputs = LossInputs(
            align=tf.constant(_alignments(align, len(refs))),
            references=tf.constant(refs),
            mask=tf.constant(mask),
            targeted=tf.constant(self.targeted),
            kappa=tf.constant(self._kappa(), tf.float32),
            threshold=tf.constant(self.threshold, tf.float32),
        )

    @property
    def batch_size(self) -> int:
        """Number of faces N the loss was built for."""
        return int(self.inputs.references.shape[0])

    def _kappa(self) -> float:
        return 0.0

    @classmethod
    def evaluate_graph(
        cls, model: EmbeddingModel, images01: tf.Tensor, inputs: LossInputs
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-face ``(loss (N,) float32, success (N,) bool)`` of ``images01`` (differentiable).

        Depends only on the class, ``model`` and ``inputs``, so a compiled step traced for one
        batch serves every later batch.
        """
        embeddings = embed_unconverted(model, images01, inputs.align)
        return cls._decide(model, embeddings, inputs)

    @classmethod
    def member_objectives(
        cls, model: EmbeddingModel, images01: tf.Tensor, inputs: LossInputs
    ) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        """Each surrogate's own ``(N,)`` objective, then :meth:`evaluate_graph`'s loss and success.

        An ensemble's members each get the objective on their own distances (for the hinge, a
        hinge per member: a member already past its margin stops pulling); a single model has
        one, equal to the loss. The embeddings are computed once, each member's on its own
        (:meth:`~faceoff.faces.models.EmbeddingModel.parts_aligned`), so that each objective's
        gradient runs back through its own member only.
        """
        parts = parts_unconverted(model, images01, inputs.align)
        embeddings = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
        loss, success = cls._decide(model, embeddings, inputs)
        if len(parts) == 1:
            return [loss], loss, success
        objectives = []
        for part, (a, b) in zip(parts, model.segments):
            mean, _, present = set_distances(part, inputs.references[..., a:b], inputs.mask)
            objectives.append(cls._objective(mean, present, inputs))
        return objectives, loss, success

    @classmethod
    def _decide(
        cls, model: EmbeddingModel, embeddings: tf.Tensor, inputs: LossInputs
    ) -> tuple[tf.Tensor, tf.Tensor]:
        mean, centroid, present = set_distances(
            embeddings, inputs.references, inputs.mask, model.distance
        )
        has_others = tf.reduce_any(present[:, 1:], axis=1)
        own_centroid = centroid[:, 0]
        nearest_other = _nearest_other(centroid, present)
        by_rank = tf.where(
            inputs.targeted, own_centroid < nearest_other, nearest_other < own_centroid
        )
        by_threshold = tf.where(
            inputs.targeted, mean[:, 0] < inputs.threshold, mean[:, 0] > inputs.threshold
        )
        success = tf.where(has_others, by_rank, by_threshold)
        return cls._objective(mean, present, inputs), success

    @staticmethod
    @abc.abstractmethod
    def _objective(mean: tf.Tensor, present: tf.Tensor, inputs: LossInputs) -> tf.Tensor:
        """``(N,)`` value to minimise from the ``(N, G)`` mean distances."""

    def compiled_evaluate(self) -> Callable[[tf.Tensor, LossInputs], tuple[tf.Tensor, tf.Tensor]]:
        """:meth:`evaluate_graph` compiled once per (model, loss class): ``(images, inputs)``."""
        loss_class = type(self)

        def build(model_ref: Callable[[], Any]) -> Any:
            @tf.function(reduce_retracing=True)
            def evaluate(images01: tf.Tensor, inputs: LossInputs) -> tuple[tf.Tensor, tf.Tensor]:
                return loss_class.evaluate_graph(model_ref(), images01, inputs)

            return evaluate

        return compiled(self.model, (loss_class, "evaluate"), build)

    def evaluate(self, images01: np.ndarray | tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(loss (N,), success (N,))`` of ``(N, S, S, 3)`` images in [0, 1]."""
        images = tf.convert_to_tensor(images01, tf.float32)
        loss, success = self.compiled_evaluate()(images, self.inputs)
        return loss.numpy(), success.numpy()

    def anchor_distance(self, images01: np.ndarray | tf.Tensor) -> np.ndarray:
        """``(N,)`` d'(x, A_anchor) of ``(N, S, S, 3)`` images in [0, 1], e.g. for a receipt."""

        def build(model_ref: Callable[[], Any]) -> Any:
            @tf.function(reduce_retracing=True)
            def distance(images01: tf.Tensor, inputs: LossInputs) -> tf.Tensor:
                model = model_ref()
                embeddings = embed_unconverted(model, images01, inputs.align)
                return set_distances(embeddings, inputs.references, inputs.mask, model.distance)[0][
                    :, 0
                ]

            return distance

        distance = compiled(self.model, (Loss, "anchor_distance"), build)
        return distance(tf.convert_to_tensor(images01, tf.float32), self.inputs).numpy()


def _target_objective(mean: tf.Tensor, inputs: LossInputs) -> tf.Tensor:
    return tf.where(inputs.targeted, mean[:, 0], -mean[:, 0])


class TargetLoss(Loss):
    """The paper's target loss: untargeted ``-d'(x+delta, A_y)``, targeted ``d'(x+delta, A_t)``.

    Minimising it pushes the face away from every one of the user's reference embeddings (not
    only their centroid, which the paper found weaker), or pulls it towards the decoy's. It has
    no margin: it keeps pushing for as long as the optimiser runs. Arguments as :class:`Loss`.
    """

    name = "target"

    @staticmethod
    def _objective(mean: tf.Tensor, present: tf.Tensor, inputs: LossInputs) -> tf.Tensor:
        return _target_objective(mean, inputs)


class HingeLoss(Loss):
    """The paper's hinge loss with margin kappa, against the nearest competing identity.

    Targeted: ``[d'(x+delta, A_t) - min_{j != t} d'(x+delta, A_j) + kappa]_+``, zero once the
    decoy is nearer than every other identity (the user's own included) by kappa.

    Untargeted: ``[min_{j != y} d'(x+delta, A_j) - d'(x+delta, A_y) + kappa]_+``, zero once some
    other identity is nearer than the user's own by kappa.

    The paper writes ``max_{y != t}`` for the targeted case; its code compares against the
    source identity only. With several other identities ``max`` would reach zero while another
    identity is still nearer than the decoy, so the nearest one (``min``) is used, as in Carlini
    & Wagner's f6; with one other identity the three readings agree. A face with no other
    identities falls back to the target loss.

    Args:
        kappa: Margin, >= 0, in embedding units (normalised: distances lie in [0, 2]); see
            :data:`DEFAULT_KAPPA`. Other arguments as :class:`Loss`.
    """

    name = "hinge"

    def __init__(
        self,
        model: EmbeddingModel,
        references: Sequence[np.ndarray] | np.ndarray,
        others: Sequence[Sequence[np.ndarray]] | None = None,
        *,
        targeted: bool = False,
        kappa: float = DEFAULT_KAPPA,
        threshold: float = DEFAULT_THRESHOLD,
        align: np.ndarray | None = None,
    ) -> None:
        self.kappa = check_non_negative("kappa", kappa)
        super().__init__(
            model, references, others, targeted=targeted, threshold=threshold, align=align
        )

    def _kappa(self) -> float:
        return self.kappa

    @staticmethod
    def _objective(mean: tf.Tensor, present: tf.Tensor, inputs: LossInputs) -> tf.Tensor:
        nearest_other = _nearest_other(mean, present)
        gap = tf.where(inputs.targeted, mean[:, 0] - nearest_other, nearest_other - mean[:, 0])
        hinge = tf.nn.relu(gap + inputs.kappa)
        has_others = tf.reduce_any(present[:, 1:], axis=1)
        return tf.where(has_others, hinge, _target_objective(mean, inputs))


def _alignments(align: np.ndarray | None, faces: int) -> np.ndarray:
    """The faces' ``(N, 6)`` alignments, checked (the identity for each when None)."""
    from faceoff.faces.alignment import IDENTITY

    if align is None:
        return np.tile(IDENTITY, (faces, 1))
    array = np.asarray(align, np.float32)
    if array.shape != (faces, 6) or not np.all(np.isfinite(array)):
        raise ValueError(f"align has shape {array.shape}; expected ({faces}, 6), all finite")
    return array


def _as_set(value: object, where: str, dim: int) -> np.ndarray:
    """One identity's reference embeddings as a checked ``(k, dim)`` float32 array, k >= 1."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != dim:
        raise ValueError(f"{where} has shape {array.shape}; expected (k, {dim}) with k >= 1")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where} contains NaN or infinite values")
    return array


def _pad_identities(
    references: Sequence[np.ndarray] | np.ndarray,
    others: Sequence[Sequence[np.ndarray]] | None,
    dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pack each face's anchor and other identities into ``(N, G, K, D)`` plus a mask."""
    if isinstance(references, (str, bytes)) or len(references) == 0:
        raise ValueError("references must hold one (k, D) array per face; got none")
    faces: list[list[np.ndarray]] = [
        [_as_set(r, f"references[{i}]", dim)] for i, r in enumerate(references)
    ]
    if others is not None:
        if len(others) != len(faces):
            raise ValueError(
                f"others has {len(others)} entries; expected one per face ({len(faces)})"
            )
        for i, sets in enumerate(others):
            if isinstance(sets, np.ndarray) and sets.ndim == 2:
                raise ValueError(
                    f"others[{i}] must be a sequence of (k, {dim}) arrays (one per identity), "
                    f"got one array of shape {sets.shape}"
                )
            faces[i].extend(_as_set(s, f"others[{i}][{j}]", dim) for j, s in enumerate(sets))
    groups = max(len(sets) for sets in faces)
    size = max(s.shape[0] for sets in faces for s in sets)
    refs = np.zeros((len(faces), groups, size, dim), np.float32)
    mask = np.zeros((len(faces), groups, size), np.float32)
    for i, sets in enumerate(faces):
        for g, s in enumerate(sets):
            refs[i, g, : s.shape[0]] = s
            mask[i, g, : s.shape[0]] = 1.0
    return refs, mask
