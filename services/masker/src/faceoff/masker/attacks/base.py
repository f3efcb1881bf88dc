"""The small base every Face-Off optimiser (PGD, CW) builds on.

An attack turns a batch of face crops and a :class:`~faceoff.masker.attacks.losses.Loss` into a
perturbation per face. This module holds what all of them share: the result type, parameter
validation, input checks, the random start, the chunked run with a progress callback, the cache
of compiled steps (see :mod:`._compile`) and the final clean-up that guarantees a usable
perturbation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from faceoff.masker.attacks._compile import compiled
from faceoff.masker.attacks.losses import Loss, LossInputs
from faceoff.masker.schema import bound

#: ``progress(iteration, total)``, called between compiled chunks; it may raise to abort.
ProgressCallback = Callable[[int, int], None]

#: Iterations per compiled chunk when a progress callback is given.
PROGRESS_EVERY = 10

#: Largest accepted iteration count (per search step for CW): the contract's bound.
MAX_ITERATIONS = int(bound("iterations"))

#: A face's seed: a non-negative integer, or a tuple of them (e.g. a request's seed and the
#: face's index in its photo).
FaceSeed = int | tuple[int, ...]


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns for a batch of N faces.

    Attributes:
        delta: ``(N, S, S, 3)`` float32 perturbation: finite, never all zero for a face, and
            ``images01 + delta`` lies in [0, 1] exactly.
        success: ``(N,)`` bool, the loss's success flag for ``images01 + delta``.
        loss: ``(N,)`` float32, the loss (to minimise) of ``images01 + delta``.
        iterations_run: Optimiser iterations run (all faces of the batch run in lockstep; for
            CW, summed over the search steps).
    """

    delta: np.ndarray
    success: np.ndarray
    loss: np.ndarray
    iterations_run: int


class Attack(abc.ABC):
    """An optimiser that perturbs face crops to minimise a :class:`Loss`.

    Subclasses validate their parameters in ``__init__`` (``ValueError`` naming the parameter)
    and implement :meth:`_run`.
    """

    #: Registry name of the optimiser (``"pgd"`` or ``"cw"``).
    name: ClassVar[str]
    #: Norm the perturbation is bounded (PGD) or minimised (CW) in: ``"l2"`` or ``"linf"``.
    norm: ClassVar[str]

    def attack(
        self,
        images01: np.ndarray | tf.Tensor,
        loss: Loss,
        *,
        seed: int | Sequence[FaceSeed] = 0,
        progress: ProgressCallback | None = None,
    ) -> AttackResult:
        """Perturb a batch of faces.

        Args:
            images01: ``(N, S, S, 3)`` float face crops with values in [0, 1], where S is the
                surrogate's ``input_size``.
            loss: The loss built for these N faces (it carries the surrogate model).
            seed: One seed per face (see :class:`FaceRandom`), or one integer ``s`` for the
                batch, which seeds face ``i`` with ``(s, i)``. A face's randomness (its start
                and each iteration's input transform) comes from its own seed only, so it does
                not depend on which faces share its batch.
            progress: Optional ``progress(iteration, total)``, called about every
                :data:`PROGRESS_EVERY` iterations from Python; it may raise to abort.

        Returns:
            An :class:`AttackResult`.

        Raises:
            ValueError: The images do not fit the loss or the surrogate, or a seed is not a
                non-negative integer (or tuple of them).
        """
        x = _check_images(images01, loss)
        rng = FaceRandom(face_seeds(seed, x.shape[0]))
        delta, iterations = self._run(x, loss, rng, Progress(progress))
        delta = finalise_delta(x, delta, self._fallback(x, rng), self._bound)
        evaluate = evaluate_perturbed(loss)
        loss_value, success = evaluate(tf.constant(x), tf.constant(delta), loss.inputs)
        return AttackResult(
            delta=delta,
            success=success.numpy().astype(bool),
            loss=loss_value.numpy().astype(np.float32),
            iterations_run=int(iterations),
        )

    @abc.abstractmethod
    def _run(
        self, x: np.ndarray, loss: Loss, rng: FaceRandom, progress: Progress
    ) -> tuple[np.ndarray, int]:
        """Return the ``(N, S, S, 3)`` perturbation and the iterations run."""

    def _fallback(self, x: np.ndarray, rng: FaceRandom) -> np.ndarray:
        """A tiny valid perturbation, used where the optimiser's result would be all zero."""
        return jitter(x, rng, 1e-3)

    def _bound(self, delta: np.ndarray) -> np.ndarray:
        """``delta`` moved into the attack's norm bound, if it has one (PGD); float32 exact."""
        return delta

    def _compiled(self, loss: Loss, what: str, build: Callable[[Callable[[], Any]], Any]) -> Any:
        """The compiled function ``what`` of this attack class for ``loss``'s model and class."""
        return compiled(loss.model, (type(self), type(loss), what), build)


def face_seeds(seed: int | Sequence[FaceSeed], n: int) -> list[FaceSeed]:
    """The per-face seeds of a batch of ``n`` faces: ``seed`` itself (one per face), or
    ``(seed, i)`` for face ``i`` when ``seed`` is one integer."""

    def natural(value: Any) -> int | None:
        ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 0
        return int(value) if ok else None

    one = natural(seed)
    if one is not None:
        return [(one, i) for i in range(n)]
    if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence) or len(seed) != n:
        raise ValueError(
            f"seed must be a non-negative integer or one seed per face ({n}), got {seed!r}"
        )
    seeds: list[FaceSeed] = []
    for s in seed:
        if (value := natural(s)) is not None:
            seeds.append(value)
        elif isinstance(s, tuple) and s and all(natural(v) is not None for v in s):
            seeds.append(tuple(int(v) for v in s))
        else:
            raise ValueError(
                f"each face's seed must be a non-negative integer or a tuple of them, got {s!r}"
            )
    return seeds


class FaceRandom:
    """One random generator per face of a batch, drawn as one.

    Each method takes a ``size`` whose first dimension is the number of faces and stacks what
    each face's generator draws for the rest of it, so face ``i``'s numbers depend on its seed
    only, never on the faces beside it or their number (``numpy.random.Generator``'s methods
    by the same names, per face).
    """

    def __init__(self, seeds: Sequence[FaceSeed]) -> None:
        self.generators = [np.random.default_rng(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def _each(self, draw: Callable[..., Any], size: tuple[int, ...]) -> np.ndarray:
        if size[0] != len(self.generators):
            raise ValueError(f"size {size} does not start with the {len(self)} faces")
        return np.stack([np.asarray(draw(g, size[1:])) for g in self.generators])

    def uniform(self, low: float, high: float, size: tuple[int, ...]) -> np.ndarray:
        return self._each(lambda g, rest: g.uniform(low, high, size=rest), tuple(size))

    def standard_normal(self, size: tuple[int, ...]) -> np.ndarray:
        return self._each(lambda g, rest: g.standard_normal(size=rest), tuple(size))

    def integers(self, low: int, high: int, size: tuple[int, ...]) -> np.ndarray:
        return self._each(lambda g, rest: g.integers(low, high, size=rest), tuple(size))


class Progress:
    """Counts iterations and forwards them to the caller's callback."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.done = 0

    @property
    def chunk(self) -> int | None:
        """Iterations per compiled call: :data:`PROGRESS_EVERY` with a callback, else all."""
        return PROGRESS_EVERY if self.callback is not None else None

    def advance(self, iterations: int, total: int) -> None:
        self.done += iterations
        if self.callback is not None:
            self.callback(min(self.done, total), total)

    def finish(self, total: int) -> None:
        """Report completion when the attack stopped before ``total`` (CW-Linf gives up early)."""
        if self.callback is not None and self.done < total:
            self.callback(total, total)


def run_chunked(
    iterations: int, progress: Progress, total: int, step: Callable[[tf.Tensor], None]
) -> None:
    """Call ``step(n)`` with tensor chunk sizes summing to ``iterations``, reporting progress."""
    chunk = progress.chunk or iterations
    done = 0
    while done < iterations:
        n = min(chunk, iterations - done)
        step(tf.constant(n, tf.int32))
        done += n
        progress.advance(n, total)


def evaluate_perturbed(
    loss: Loss,
) -> Callable[[tf.Tensor, tf.Tensor, LossInputs], tuple[tf.Tensor, tf.Tensor]]:
    """``(x, delta, inputs) -> (loss, success)`` of ``x + delta``, compiled once per model."""
    evaluate = loss.compiled_evaluate()
    return lambda x, delta, inputs: evaluate(x + delta, inputs)


# --- shared numerics ---------------------------------------------------------------------------


def per_example_l2(t: tf.Tensor) -> tf.Tensor:
    """``(N,)`` Euclidean norm of each example of an ``(N, ...)`` tensor."""
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=tf.range(1, tf.rank(t))))


def per_example_linf(t: tf.Tensor) -> tf.Tensor:
    """``(N,)`` largest absolute value of each example of an ``(N, ...)`` tensor."""
    return tf.reduce_max(tf.abs(t), axis=tf.range(1, tf.rank(t)))


def finite_or_zero(t: tf.Tensor) -> tf.Tensor:
    """``t`` with NaN and infinite entries replaced by 0 (a model can emit NaN gradients)."""
    return tf.where(tf.math.is_finite(t), t, tf.zeros_like(t))


def as_rows(flags: tf.Tensor) -> tf.Tensor:
    """``(N,)`` -> ``(N, 1, 1, 1)`` for selecting whole images with ``tf.where``."""
    return flags[:, None, None, None]


def better(
    success: tf.Tensor, loss: tf.Tensor, best_success: tf.Tensor, best_loss: tf.Tensor
) -> tf.Tensor:
    """Whether (success, loss) beats the best so far: success first, then a lower loss."""
    return (success & ~best_success) | ((success == best_success) & (loss < best_loss))


def jitter(x: np.ndarray, rng: FaceRandom, scale: float) -> np.ndarray:
    """Uniform noise in ``[-scale, scale]`` per pixel channel, kept inside the [0, 1] box.

    Attacks start here rather than at exactly 0: when the probe is one of its own references
    the gradient of its distance to that reference vanishes at delta = 0.
    """
    noise = rng.uniform(-scale, scale, size=x.shape).astype(np.float32)
    return (np.clip(x + noise, 0.0, 1.0) - x).astype(np.float32)


def finalise_delta(
    x: np.ndarray,
    delta: np.ndarray,
    fallback: np.ndarray,
    bound: Callable[[np.ndarray], np.ndarray] = lambda d: d,
) -> np.ndarray:
    """Make ``delta`` finite, within ``bound``, with ``x + delta`` exactly in [0, 1], never all 0.

    The in-graph steps already do all this up to float32 rounding; this makes it exact. The last
    adjustments only move components towards 0, so they cannot leave a norm ball. Faces whose
    perturbation is all zero get ``fallback`` (tiny, already valid).
    """
    delta = np.nan_to_num(np.asarray(delta, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    delta = bound((np.clip(x + delta, 0.0, 1.0) - x).astype(np.float32)).astype(np.float32)
    for _ in range(4):  # float32 rounding can leave x + delta one ulp outside [0, 1]
        high, low = x + delta > 1.0, x + delta < 0.0
        if not (high.any() or low.any()):
            break
        delta = np.where(high, np.nextafter(delta, np.float32(-np.inf)), delta)
        delta = np.where(low, np.nextafter(delta, np.float32(np.inf)), delta).astype(np.float32)
    zero = ~np.any(delta != 0, axis=(1, 2, 3))
    delta[zero] = fallback[zero]
    return delta


# --- validation --------------------------------------------------------------------------------


def _check_images(images01: np.ndarray | tf.Tensor, loss: Loss) -> np.ndarray:
    if not isinstance(loss, Loss):
        raise ValueError(f"loss must be a Loss, got {type(loss).__name__}")
    x = np.asarray(images01.numpy() if isinstance(images01, tf.Tensor) else images01)
    size = loss.model.input_size
    if x.ndim != 4 or x.shape[1:] != (size, size, 3):
        raise ValueError(f"images01 has shape {x.shape}; expected (N, {size}, {size}, 3)")
    if x.shape[0] != loss.batch_size:
        raise ValueError(
            f"images01 holds {x.shape[0]} faces but the loss was built for {loss.batch_size}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images01 must be floating point in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(
            f"images01 values must be finite and in [0, 1], got range [{x.min()}, {x.max()}]"
        )
    return x
