"""Projected gradient descent (PGD) within an L2 or Linf ball (Madry et al., ICLR 2018).

Face-Off (section III-C, Table I) runs PGD on the target loss with epsilon = 0.1, step 0.1 and
20 or 200 iterations. Both norms are implemented here and each really is its own norm: the
paper's public code passes the norm under a name cleverhans ignores, so its "L2 PGD" silently
takes Linf sign steps. Here L2 steps along the L2-normalised gradient and projects onto the L2
ball; Linf steps along the gradient's sign and clips each pixel channel.

What epsilon means depends on the norm. For Linf it bounds every pixel channel (0.1 is about 25
grey levels, clearly visible). For L2 it bounds the Euclidean norm over all S*S*3 values of the
crop, so on a 160x160x3 crop 0.1 is an average change of 0.1 / sqrt(76800) = 0.0004 per channel
(a tenth of a grey level) and too small to move a face embedding; a comparable visual budget
in L2 is eps_inf * sqrt(76800), i.e. several units. The constructor keeps the paper's value as
its default and accepts any positive value.

Measured on FaceNet (the shared celebrity crops, 4 probes, target loss, 20 iterations, step
2.5 * epsilon / iterations, no amplification), the fraction of probes whose nearest centroid is
no longer their own: L2 epsilon 0.1 -> 0/4, 1 -> 2/4, 2 -> 3/4, 3 -> 4/4; Linf 2/255 -> 2/4,
4/255 -> 4/4.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from faceoff.faces.models.augment import feature_taps
from faceoff.masker.attacks._checks import check_bool, check_count, check_positive
from faceoff.masker.attacks.base import (
    MAX_ITERATIONS,
    Attack,
    FaceRandom,
    Progress,
    as_rows,
    better,
    evaluate_perturbed,
    finite_or_zero,
    per_example_l2,
    run_chunked,
)
from faceoff.masker.attacks.losses import Loss, LossInputs, embed_unconverted
from faceoff.masker.attacks.shape import Shape, ShapeInputs, budget, penalty, to_rgb
from faceoff.masker.attacks.transfer import (
    VARIANCE_RADIUS,
    Transfer,
    TransferInputs,
    member_mask,
    neighbour,
    neighbour_step,
    process_gradient,
    surrogate_draws,
    transform_input,
)

#: Scale of the starting perturbation without a random start, as a fraction of epsilon.
TINY_START = 1e-2


class Switches(NamedTuple):
    """What a compiled PGD loop is traced with: each a trace-time switch (one trace each way)."""

    shaped: bool
    balance: bool
    dropout: bool
    subset: bool
    feature: bool
    skip: bool
    variance: int  # neighbours per iteration (0: off)


class PGD(Attack):
    """PGD: ``delta <- project(delta - step * direction(grad loss))``, kept in the [0, 1] box.

    Args:
        epsilon: Radius of the norm ball the perturbation stays in, > 0 (paper: 0.1; see the
            module docstring for what it means per norm).
        step_size: Length of each step in the attack's norm, > 0 (paper's learning rate: 0.1;
            Madry et al.'s rule of thumb is 2.5 * epsilon / iterations).
        iterations: Gradient steps, 1..10000 (paper: 20 or 200).
        random_start: Start at a random point of the ball (Madry et al.) rather than at a tiny
            random perturbation of size ``TINY_START * epsilon``. Never from exactly 0.
        transfer: Transfer techniques (momentum, input diversity, translation invariance,
            expectation over platform transforms); all off by default. See
            :mod:`faceoff.masker.attacks.transfer`.
        shape: Perceptual shaping (soft mask, chroma budget, texture masking); off by default.
            When on, epsilon bounds the shaped variable, not the RGB change: see
            :mod:`faceoff.masker.attacks.shape`.
        balance: With an ensemble, give every member an equal say in each step: each member's
            gradient (of its own objective, see
            :meth:`~faceoff.masker.attacks.losses.Loss.member_objectives`) is divided by its
            per-face mean absolute value before the members' weights combine them, so that no
            member dominates because its gradients happen to be larger. Off by default (the
            gradient of the combined loss).

    ``attack(images01 (N, S, S, 3) in [0, 1], loss)`` returns the iterate (the last one
    included) with the best (success, loss) for each face, or the last iterate when an input
    transform or dropout is on; see :meth:`Attack.attack`.
    """

    name = "pgd"

    def __init__(
        self,
        epsilon: float = 0.1,
        step_size: float = 0.1,
        iterations: int = 20,
        random_start: bool = True,
        transfer: Transfer | None = None,
        shape: Shape | None = None,
        balance: bool = False,
    ) -> None:
        self.epsilon = check_positive("epsilon", epsilon)
        self.step_size = check_positive("step_size", step_size)
        self.iterations = check_count("iterations", iterations, MAX_ITERATIONS)
        self.random_start = check_bool("random_start", random_start)
        if transfer is not None and not isinstance(transfer, Transfer):
            raise ValueError(f"transfer must be a Transfer, got {type(transfer).__name__}")
        self.transfer = transfer or Transfer()
        if shape is not None and not isinstance(shape, Shape):
            raise ValueError(f"shape must be a Shape, got {type(shape).__name__}")
        self.shape = shape or Shape()
        self.balance = check_bool("balance", balance)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(epsilon={self.epsilon}, step_size={self.step_size}, "
            f"iterations={self.iterations}, random_start={self.random_start}, transfer={self.transfer}, "
            f"shape={self.shape}, balance={self.balance})"
        )

    # Norm-specific parts -----------------------------------------------------------------------

    @staticmethod
    @abc.abstractmethod
    def _direction(grad: tf.Tensor) -> tf.Tensor:
        """The unit step direction (in the attack's norm) for a gradient."""

    @staticmethod
    @abc.abstractmethod
    def _project(delta: tf.Tensor, epsilon: tf.Tensor) -> tf.Tensor:
        """``delta`` moved into the epsilon ball of the attack's norm."""

    @abc.abstractmethod
    def _sample(self, shape: tuple[int, ...], radius: float, rng: FaceRandom) -> np.ndarray:
        """Random perturbations inside the ball of ``radius``."""

    @staticmethod
    @abc.abstractmethod
    def _per_value(epsilon: tf.Tensor, variable: tf.Tensor) -> tf.Tensor:
        """The change of one value that ``epsilon`` stands for in the attack's norm (the
        scale of variance tuning's neighbourhood)."""

    # Shared algorithm --------------------------------------------------------------------------

    def _start(self, x: np.ndarray, rng: FaceRandom, radius: float) -> np.ndarray:
        delta = self._sample(x.shape, radius, rng)
        return (np.clip(x + delta, 0.0, 1.0) - x).astype(np.float32)

    def _fallback(self, x: np.ndarray, rng: FaceRandom) -> np.ndarray:
        if self.shape.active:  # shaped too, so nothing changes outside the mask
            z = tf.constant(self._sample(x.shape, TINY_START * self.epsilon, rng))
            return self._change_of(tf.constant(x), self.shape.inputs())(z).numpy()
        return self._start(x, rng, TINY_START * self.epsilon)

    @abc.abstractmethod
    def _bound(self, delta: np.ndarray) -> np.ndarray:
        """``delta`` exactly inside the epsilon ball (float32), after the box clip."""

    def _run(
        self, x: np.ndarray, loss: Loss, rng: FaceRandom, progress: Progress
    ) -> tuple[np.ndarray, int]:
        """PGD on the attack's variable: the RGB change itself, or with shaping on the shaped
        variable z (see :mod:`.shape`); returns the RGB change."""
        shaped = self.shape.active
        radius = self.epsilon if self.random_start else TINY_START * self.epsilon
        images = tf.constant(x)
        start = self._sample(x.shape, radius, rng) if shaped else self._start(x, rng, radius)
        variable = tf.constant(start)
        n = x.shape[0]
        state = (
            variable,
            variable,
            tf.fill([n], np.float32(np.inf)),
            tf.zeros([n], tf.bool),
            tf.zeros_like(variable),
            tf.zeros_like(variable),
            tf.constant(0, tf.int32),
        )
        switches = Switches(
            shaped=shaped,
            balance=self.balance,
            dropout=self.transfer.dropout > 0,
            subset=self.transfer.subset > 0,
            feature=self.transfer.feature_level > 0,
            skip=self.transfer.skip_gradient > 0,
            variance=self.transfer.variance,
        )
        if switches.feature and not self.balance:
            raise ValueError(
                "feature_level needs balance: each surrogate's embedding and feature gradients are "
                "normalised before the fraction splits its say"
            )
        members = len(loss.model.shares)
        if switches.subset and self.transfer.subset >= members:
            raise ValueError(
                f"subset must be below the number of surrogates ({members}) or 0 (all), "
                f"got {self.transfer.subset}"
            )
        run = self._compiled(loss, f"run/{switches}", self._builder(type(loss), switches))
        epsilon = tf.constant(self.epsilon, tf.float32)
        step_size = tf.constant(self.step_size, tf.float32)
        transfer = self.transfer.inputs(rng.integers(0, 2**62, size=(n,)))
        shape = self.shape.inputs()

        def step(chunk: tf.Tensor) -> None:
            nonlocal state
            state = run(images, *state, chunk, epsilon, step_size, loss.inputs, transfer, shape)

        run_chunked(self.iterations, progress, self.iterations, step)
        last, best, best_loss, best_success = state[:4]
        change = self._change_of(images, shape)
        delta = change(last)
        if self.transfer.randomises:
            return delta.numpy(), self.iterations
        last_loss, last_success = evaluate_perturbed(loss)(images, delta, loss.inputs)
        take = better(last_success, last_loss, best_success, best_loss)
        chosen = tf.where(as_rows(take), delta, change(best))
        return chosen.numpy(), self.iterations

    def _change_of(self, images: tf.Tensor, shape: ShapeInputs) -> Callable[[tf.Tensor], tf.Tensor]:
        """The map from the attack's variable to the RGB change of ``images``: the identity
        unshaped (every step keeps it in the box), else z through the shaping (its budget
        computed once) and clipped to the box."""
        if not self.shape.active:
            return lambda variable: variable
        room = budget(images, shape)
        return lambda z: tf.clip_by_value(images + to_rgb(z, room, shape), 0.0, 1.0) - images

    @classmethod
    def _builder(
        cls, loss_class: type[Loss], switches: Switches
    ) -> Callable[[Callable[[], Any]], Any]:

        def build(model_ref: Callable[[], Any]) -> Any:
            @tf.function(reduce_retracing=True)
            def run(
                x: tf.Tensor,
                variable: tf.Tensor,
                best: tf.Tensor,
                best_loss: tf.Tensor,
                best_success: tf.Tensor,
                velocity: tf.Tensor,
                tuning: tf.Tensor,
                done: tf.Tensor,
                steps: tf.Tensor,
                epsilon: tf.Tensor,
                step_size: tf.Tensor,
                inputs: LossInputs,
                transfer: TransferInputs,
                shape: ShapeInputs,
            ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
                model = model_ref()
                # shaped and unshaped are one loop; which one is a trace-time switch
                room = budget(x, shape) if switches.shaped else None

                def view(v: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                    if room is None:
                        return transform_input(x + v, transfer, step), tf.constant(0.0)
                    adv = tf.clip_by_value(x + to_rgb(v, room, shape), 0.0, 1.0)
                    return transform_input(adv, transfer, step), tf.reduce_sum(
                        penalty(x, adv, shape)
                    )

                def gradient(
                    at: tf.Tensor, draw: tf.Tensor, chosen: tf.Tensor | None
                ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
                    with surrogate_draws(transfer, draw, switches.dropout, switches.skip):
                        return step_gradient(
                            loss_class,
                            model,
                            inputs,
                            switches.balance,
                            at,
                            view,
                            draw,
                            chosen,
                            transfer.feature_level if switches.feature else None,
                        )

                for i in tf.range(steps):
                    chosen = (
                        member_mask(transfer, done + i, len(model.shares))
                        if switches.subset
                        else None
                    )
                    grad, loss, success = gradient(variable, done + i, chosen)
                    if switches.variance:  # VMI: this step uses the last one's variance
                        around = tf.zeros_like(grad)
                        radius = VARIANCE_RADIUS * cls._per_value(epsilon, variable)
                        for k in range(switches.variance):
                            draw = neighbour_step(done + i, k)
                            near = neighbour(variable, transfer, draw, radius)
                            around += gradient(near, draw, chosen)[0]
                        grad, tuning = grad + tuning, around / switches.variance - grad
                    take = better(success, loss, best_success, best_loss)
                    best = tf.where(as_rows(take), variable, best)
                    best_loss = tf.where(take, loss, best_loss)
                    best_success = tf.where(take, success, best_success)
                    grad, velocity = process_gradient(grad, velocity, transfer)
                    variable = cls._project(variable - step_size * cls._direction(grad), epsilon)
                    if room is None:  # the RGB change itself: kept in the [0, 1] box
                        variable = tf.clip_by_value(x + variable, 0.0, 1.0) - x
                return variable, best, best_loss, best_success, velocity, tuning, done + steps

            return run

        return build


def step_gradient(
    loss_class: type[Loss],
    model: Any,
    inputs: LossInputs,
    balance: bool,
    variable: tf.Tensor,
    view: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    step: tf.Tensor,
    chosen: tf.Tensor | None = None,
    feature: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One step's gradient with respect to ``variable``, and the per-face loss and success.

    ``view(variable, step)`` returns what the surrogates see at iteration ``step`` (``(N, S, S, 3)``) and a scalar
    penalty added to the loss. Without ``balance`` the gradient is that of the summed loss plus
    the penalty. With it, each surrogate's objective is differentiated with respect to the view
    on its own, divided by its per-face mean absolute value, weighted by the surrogate's share and
    summed, and that combined gradient of the view is carried back to ``variable`` (with the
    penalty's) in one more backward pass. ``chosen`` ``(N, members)``, when given, keeps for each
    face only the members it attacks this step (each on its own objective, normalised only
    with ``balance``); the loss and success returned stay the whole ensemble's. ``feature``, a
    fraction (with ``balance``), gives that share of each surrogate's normalised step to pushing
    its mid-level features away from the clean face's under the same view (``view`` of a zero
    change), see :func:`feature_disruption`.
    """
    if not balance and chosen is None:
        with tf.GradientTape() as tape:
            tape.watch(variable)
            seen, extra = view(variable, step)
            loss, success = loss_class.evaluate_graph(model, seen, inputs)
            total = tf.reduce_sum(loss) + extra
        return finite_or_zero(tape.gradient(total, variable)), loss, success
    # Two tapes: the view's (random transforms in a per-face loop) is differentiated once; the
    # surrogates' once per member, from the view.
    with tf.GradientTape() as view_tape:
        view_tape.watch(variable)
        seen, extra = view(variable, step)
    clean: dict[str, tf.Tensor] = {}
    if feature is not None:  # the clean face through this step's same view: no gradient
        with feature_taps() as clean:
            embed_unconverted(
                model, tf.stop_gradient(view(tf.zeros_like(variable), step)[0]), inputs.align
            )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(seen)
        # the feature maps are handed out only when the feature term asks for them
        taps: contextlib.AbstractContextManager[dict[str, tf.Tensor]] = (
            feature_taps() if feature is not None else contextlib.nullcontext({})
        )
        with taps as perturbed:
            objectives, loss, success = loss_class.member_objectives(model, seen, inputs)
        totals = [tf.reduce_sum(objective) for objective in objectives]
        disrupted = {
            name: -tf.reduce_sum(feature_disruption(perturbed[name], clean[name])) for name in clean
        }
    names = model.name.split("+")
    combined = tf.zeros_like(seen)
    for m, (share, total) in enumerate(zip(model.shares, totals)):
        g = finite_or_zero(tape.gradient(total, seen))
        if balance:
            g = _per_face_unit(g)
        if feature is not None and names[m] in disrupted:
            f = _per_face_unit(finite_or_zero(tape.gradient(disrupted[names[m]], seen)))
            g = (1.0 - feature) * g + feature * f
        if chosen is not None:
            g = g * as_rows(chosen[:, m])
        combined += share * g
    del tape
    grad = view_tape.gradient(
        [seen, extra], variable, output_gradients=[combined, tf.ones_like(extra)]
    )
    return finite_or_zero(grad), loss, success


def feature_disruption(perturbed: tf.Tensor, clean: tf.Tensor) -> tf.Tensor:
    """``(N,)`` how far each face's feature map moved from the clean one, relative to its size:
    ``||F(x + delta) - F(x)|| / ||F(x)||`` (smoothed, so its gradient is finite at no change)."""
    change = tf.sqrt(tf.reduce_sum(tf.square(perturbed - clean), axis=[1, 2, 3]) + 1e-12)
    return change / (tf.sqrt(tf.reduce_sum(tf.square(clean), axis=[1, 2, 3])) + 1e-6)


def _per_face_unit(g: tf.Tensor) -> tf.Tensor:
    """``g`` divided by each face's mean absolute value."""
    return g / (tf.reduce_mean(tf.abs(g), axis=[1, 2, 3], keepdims=True) + 1e-12)


class PGDL2(PGD):
    """PGD bounded in the L2 norm over the whole ``(S, S, 3)`` crop.

    Each step moves ``step_size`` along the gradient divided by its per-face L2 norm, then
    rescales the perturbation onto the L2 ball of radius ``epsilon``. Parameters as
    :class:`PGD`; on 160x160 crops useful epsilons are several units, not 0.1.
    """

    norm = "l2"

    @staticmethod
    def _direction(grad: tf.Tensor) -> tf.Tensor:
        return grad / (as_rows(per_example_l2(grad)) + 1e-12)

    @staticmethod
    def _project(delta: tf.Tensor, epsilon: tf.Tensor) -> tf.Tensor:
        norm = per_example_l2(delta)
        return delta * as_rows(tf.minimum(1.0, epsilon / (norm + 1e-12)))

    def _bound(self, delta: np.ndarray) -> np.ndarray:
        if self.shape.active:  # epsilon bounds the shaped variable, not the RGB change
            return delta
        norm = np.sqrt(np.sum(delta.astype(np.float64) ** 2, axis=(1, 2, 3), keepdims=True))
        shrink = self.epsilon / np.maximum(norm, 1e-30) * (1 - 1e-6)
        scale = np.where(norm > self.epsilon, shrink, 1.0)
        return (delta * scale).astype(np.float32)

    @staticmethod
    def _per_value(epsilon: tf.Tensor, variable: tf.Tensor) -> tf.Tensor:
        # an L2 ball of radius epsilon over n values: epsilon / sqrt(n) each, evenly spread
        return epsilon / tf.sqrt(tf.cast(tf.reduce_prod(tf.shape(variable)[1:]), tf.float32))

    def _sample(self, shape: tuple[int, ...], radius: float, rng: FaceRandom) -> np.ndarray:
        direction = rng.standard_normal(size=shape)
        direction /= np.sqrt(np.sum(direction**2, axis=(1, 2, 3), keepdims=True))
        length = radius * rng.uniform(0.0, 1.0, size=(shape[0], 1, 1, 1))
        return (direction * length).astype(np.float32)


class PGDLinf(PGD):
    """PGD bounded in the Linf norm: every pixel channel changes by at most ``epsilon``.

    Each step moves every value by ``step_size`` along the sign of the gradient, then clips to
    ``[-epsilon, epsilon]``. Parameters as :class:`PGD`.
    """

    norm = "linf"

    @staticmethod
    def _direction(grad: tf.Tensor) -> tf.Tensor:
        return tf.sign(grad)

    @staticmethod
    def _project(delta: tf.Tensor, epsilon: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(delta, -epsilon, epsilon)

    def _bound(self, delta: np.ndarray) -> np.ndarray:
        if self.shape.active:  # epsilon bounds the shaped variable, not the RGB change
            return delta
        epsilon = np.float32(self.epsilon)
        if float(epsilon) > self.epsilon:  # rounded up to float32: take the float32 just below
            epsilon = np.nextafter(epsilon, np.float32(0))
        return np.clip(delta, -epsilon, epsilon)

    @staticmethod
    def _per_value(epsilon: tf.Tensor, variable: tf.Tensor) -> tf.Tensor:
        return epsilon

    def _sample(self, shape: tuple[int, ...], radius: float, rng: FaceRandom) -> np.ndarray:
        return rng.uniform(-radius, radius, size=shape).astype(np.float32)
