"""Carlini & Wagner attacks in the L2 and Linf norms (Carlini & Wagner, IEEE S&P 2017).

Face-Off (section III-C, Table I) adapts CW to metric embeddings by swapping the classifier
loss for the target or hinge loss: CW_small runs 100 iterations x 8 search steps, CW_large
800 x 15, CW_inf 100 iterations x 10 trials, all with Adam at learning rate 0.1 and an initial
constant of 0.3. CW has no perturbation bound: it looks for the smallest perturbation that
succeeds, and reports against epsilon only in the service's receipts.

Both variants optimise in tanh space, ``x + delta = (tanh(w) + 1) / 2``, so the box [0, 1]
holds without clipping, and start from a tiny random perturbation (never exactly 0).

* CW-L2 minimises ``||delta||_2^2 + c * loss`` per face and binary-searches c per face: a
  success lowers the upper bound, a failure raises the lower bound (c grows x10 until the first
  success, then bisects). It keeps the smallest successful perturbation seen at any iteration.
* CW-Linf is Carlini's shrinking-tau variant: it minimises
  ``c * loss + sum(max(|delta| - tau, 0))`` warm-started from the last accepted perturbation.
  A trial is accepted when some iterate succeeds with every ``|delta| <= tau`` (to within
  :data:`TAU_TOLERANCE`); tau then shrinks to ``decrease_factor * min(tau, max|delta|)``. A
  rejected trial multiplies c by ``const_factor``; a face stops once c exceeds
  ``largest_const`` or tau falls below 1/256, and the batch stops when every face has. It
  keeps the successful perturbation with the smallest Linf norm.

A face that never succeeds gets the perturbation with the lowest loss seen.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from faceoff.masker.attacks._checks import check_bool, check_count, check_positive, check_range
from faceoff.masker.attacks.base import (
    MAX_ITERATIONS,
    Attack,
    FaceRandom,
    Progress,
    as_rows,
    finite_or_zero,
    jitter,
    per_example_linf,
    run_chunked,
)
from faceoff.masker.attacks.losses import Loss, LossInputs
from faceoff.masker.schema import bound

#: Per-pixel-channel size of the random starting perturbation.
START_JITTER = 1e-3

#: Largest accepted number of CW search steps (trials for Linf): the contract's bound.
MAX_SEARCH_STEPS = int(bound("search_steps"))

#: CW-Linf: how far above tau an iterate may reach and still count as within tau (half a grey
#: level at 8 bits, which quantisation cannot show).
TAU_TOLERANCE = 1.0 / 512

#: CW-Linf: a face stops once tau falls below one grey level.
MIN_TAU = 1.0 / 256

_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPSILON = 0.9, 0.999, 1e-8
_INF = np.float32(np.inf)


class _State(NamedTuple):
    """Tensors carried across compiled chunks of one search step (all ``(N, ...)``)."""

    w: tf.Tensor  # tanh-space variable
    m: tf.Tensor  # Adam first moment
    v: tf.Tensor  # Adam second moment
    t: tf.Tensor  # () Adam step count
    best_delta: tf.Tensor  # smallest successful perturbation so far (all search steps)
    best_metric: tf.Tensor  # its size (L2: squared norm; Linf: max |delta|), inf if none
    fallback_delta: tf.Tensor  # lowest-loss perturbation so far
    fallback_loss: tf.Tensor  # its loss
    step_delta: tf.Tensor  # smallest acceptable perturbation of this search step
    step_metric: tf.Tensor  # its size, inf if none


def _to_tanh(images01: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(2.0 * images01 - 1.0, -1 + 1e-6, 1 - 1e-6)).astype(np.float32)


class CW(Attack):
    """Carlini & Wagner: Adam in tanh space on ``size(delta) + c * loss``, searching over c.

    Args:
        iterations: Adam steps per search step, 1..10000 (paper: 100, or 800 for CW_large).
        search_steps: Values of c tried per face, 1..50 (paper: 8 for L2, 15 for CW_large,
            10 trials for Linf).
        learning_rate: Adam learning rate in tanh space, > 0 (paper: 0.1). Adam's first step
            moves every value by about ``learning_rate / 2`` in pixels (a sign step), so at 0.1
            the first iterate is already a 13/255 Linf jump: on FaceNet CW-L2 then keeps some
            L2 ~ 11 results and CW-Linf cannot shrink tau below it. Carlini's 0.01 found L2
            0.5-1.7 and Linf 3-6/255 successes on the same faces.
        initial_const: First value of the loss constant c, > 0 (paper: 0.3).

    ``attack(images01 (N, S, S, 3) in [0, 1], loss)`` returns per face the smallest successful
    perturbation found (else the lowest-loss one); see :meth:`Attack.attack`.
    """

    name = "cw"

    def __init__(
        self,
        iterations: int = 100,
        search_steps: int = 8,
        learning_rate: float = 0.1,
        initial_const: float = 0.3,
    ) -> None:
        self.iterations = check_count("iterations", iterations, MAX_ITERATIONS)
        self.search_steps = check_count("search_steps", search_steps, MAX_SEARCH_STEPS)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.initial_const = check_positive("initial_const", initial_const)

    # Norm-specific parts (traced into the compiled step) ------------------------------------------

    @staticmethod
    @abc.abstractmethod
    def _penalty(delta: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
        """``(N,)`` size term added to ``c * loss``."""

    @staticmethod
    @abc.abstractmethod
    def _metric(delta: tf.Tensor) -> tf.Tensor:
        """``(N,)`` size by which successful perturbations are ranked (smaller is better)."""

    @staticmethod
    @abc.abstractmethod
    def _acceptable(success: tf.Tensor, metric: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
        """``(N,)`` whether an iterate counts as a success of the current search step."""

    # Shared machinery ----------------------------------------------------------------------------

    def _fresh_state(self, x: np.ndarray, start: np.ndarray, previous: _State | None) -> _State:
        """Adam restarted at ``x + start``; the cross-step trackers carried from ``previous``."""
        w = tf.constant(_to_tanh(x + start))
        zeros = tf.zeros_like(w)
        n = x.shape[0]
        inf = tf.fill([n], _INF)
        start_t = tf.constant(start)
        return _State(
            w=w,
            m=zeros,
            v=zeros,
            t=tf.constant(0.0),
            best_delta=previous.best_delta if previous else start_t,
            best_metric=previous.best_metric if previous else inf,
            fallback_delta=previous.fallback_delta if previous else start_t,
            fallback_loss=previous.fallback_loss if previous else inf,
            step_delta=start_t,
            step_metric=inf,
        )

    def _search_step(
        self,
        x: tf.Tensor,
        state: _State,
        const: np.ndarray,
        tau: np.ndarray,
        loss: Loss,
        progress: Progress,
        total: int,
    ) -> _State:
        """Run one search step (all its Adam iterations) and score its last iterate."""
        run = self._compiled(loss, "run", self._run_builder(type(loss)))
        record = self._compiled(loss, "record", self._record_builder(type(loss)))
        c = tf.constant(const, tf.float32)
        tau_t = tf.constant(tau, tf.float32)
        learning_rate = tf.constant(self.learning_rate, tf.float32)

        def step(chunk: tf.Tensor) -> None:
            nonlocal state
            state = _State(*run(x, state, c, tau_t, chunk, learning_rate, loss.inputs))

        run_chunked(self.iterations, progress, total, step)
        return _State(*record(x, state, tau_t, loss.inputs))

    @staticmethod
    def _result(state: _State) -> np.ndarray:
        found = state.best_metric < _INF
        return tf.where(as_rows(found), state.best_delta, state.fallback_delta).numpy()

    @classmethod
    def _track(
        cls,
        state: _State,
        delta: tf.Tensor,
        loss: tf.Tensor,
        success: tf.Tensor,
        tau: tf.Tensor,
    ) -> _State:
        """Fold one scored iterate into the trackers of ``state``."""
        metric = cls._metric(delta)
        best = success & (metric < state.best_metric)
        fallback = loss < state.fallback_loss
        step = cls._acceptable(success, metric, tau) & (metric < state.step_metric)
        return state._replace(
            best_delta=tf.where(as_rows(best), delta, state.best_delta),
            best_metric=tf.where(best, metric, state.best_metric),
            fallback_delta=tf.where(as_rows(fallback), delta, state.fallback_delta),
            fallback_loss=tf.where(fallback, loss, state.fallback_loss),
            step_delta=tf.where(as_rows(step), delta, state.step_delta),
            step_metric=tf.where(step, metric, state.step_metric),
        )

    @classmethod
    def _run_builder(cls, loss_class: type[Loss]) -> Callable[[Callable[[], Any]], Any]:
        def build(model_ref: Callable[[], Any]) -> Any:
            @tf.function(reduce_retracing=True)
            def run(
                x: tf.Tensor,
                state: _State,
                c: tf.Tensor,
                tau: tf.Tensor,
                steps: tf.Tensor,
                learning_rate: tf.Tensor,
                inputs: LossInputs,
            ) -> _State:
                model = model_ref()
                for _ in tf.range(steps):
                    w = state.w
                    with tf.GradientTape() as tape:
                        tape.watch(w)
                        adv = (tf.tanh(w) + 1.0) / 2.0
                        delta = adv - x
                        loss, success = loss_class.evaluate_graph(model, adv, inputs)
                        objective = tf.reduce_sum(cls._penalty(delta, tau) + c * loss)
                    grad = finite_or_zero(tape.gradient(objective, w))
                    state = cls._track(state, delta, loss, success, tau)
                    t = state.t + 1.0
                    m = _ADAM_BETA1 * state.m + (1.0 - _ADAM_BETA1) * grad
                    v = _ADAM_BETA2 * state.v + (1.0 - _ADAM_BETA2) * tf.square(grad)
                    m_hat = m / (1.0 - tf.pow(_ADAM_BETA1, t))
                    v_hat = v / (1.0 - tf.pow(_ADAM_BETA2, t))
                    w = w - learning_rate * m_hat / (tf.sqrt(v_hat) + _ADAM_EPSILON)
                    state = state._replace(w=w, m=m, v=v, t=t)
                return state

            return run

        return build

    @classmethod
    def _record_builder(cls, loss_class: type[Loss]) -> Callable[[Callable[[], Any]], Any]:
        def build(model_ref: Callable[[], Any]) -> Any:
            @tf.function(reduce_retracing=True)
            def record(x: tf.Tensor, state: _State, tau: tf.Tensor, inputs: LossInputs) -> _State:
                adv = (tf.tanh(state.w) + 1.0) / 2.0
                loss, success = loss_class.evaluate_graph(model_ref(), adv, inputs)
                return cls._track(state, adv - x, loss, success, tau)

            return record

        return build


class CWL2(CW):
    """CW-L2: minimise ``||delta||_2^2 + c * loss``, binary search over c per face.

    Per face and search step: success sets ``upper = min(upper, c)``, failure sets
    ``lower = max(lower, c)``; then ``c = (lower + upper) / 2`` once an upper bound exists,
    else ``c *= 10``. Parameters as :class:`CW` (defaults: the paper's CW_small).
    """

    norm = "l2"

    @staticmethod
    def _penalty(delta: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.square(delta), axis=[1, 2, 3])

    @staticmethod
    def _metric(delta: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.square(delta), axis=[1, 2, 3])

    @staticmethod
    def _acceptable(success: tf.Tensor, metric: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
        return success

    def __repr__(self) -> str:
        return (
            f"CWL2(iterations={self.iterations}, search_steps={self.search_steps}, "
            f"learning_rate={self.learning_rate}, initial_const={self.initial_const})"
        )

    def _run(
        self, x: np.ndarray, loss: Loss, rng: FaceRandom, progress: Progress
    ) -> tuple[np.ndarray, int]:
        n = x.shape[0]
        images = tf.constant(x)
        const = np.full(n, self.initial_const)
        lower, upper = np.zeros(n), np.full(n, np.inf)
        total = self.iterations * self.search_steps
        state: _State | None = None
        unused_tau = np.zeros(n)
        for _ in range(self.search_steps):
            state = self._fresh_state(x, jitter(x, rng, START_JITTER), state)
            state = self._search_step(images, state, const, unused_tau, loss, progress, total)
            succeeded = state.step_metric.numpy() < np.inf
            upper = np.where(succeeded, np.minimum(upper, const), upper)
            lower = np.where(succeeded, lower, np.maximum(lower, const))
            const = np.where(np.isfinite(upper), (lower + upper) / 2.0, const * 10.0)
        assert state is not None
        return self._result(state), total


class CWLinf(CW):
    """CW-Linf, Carlini's shrinking-tau variant (see the module docstring).

    Args:
        initial_tau: First tau, in (0, 1]; 1 leaves the first trial unconstrained.
        decrease_factor: tau shrinks to ``decrease_factor * min(tau, max|delta|)`` after an
            accepted trial, in (0, 1] (Carlini: 0.9).
        const_factor: c grows by this factor after a rejected trial, > 1 (Carlini: 2).
        largest_const: A face stops once c exceeds this, > 0 (Carlini: 20).
        reduce_const: Halve c after an accepted trial (Carlini's default: no).
        search_steps: Trials, 1..50 (paper: 10). Other parameters as :class:`CW`.
    """

    norm = "linf"

    def __init__(
        self,
        iterations: int = 100,
        search_steps: int = 10,
        learning_rate: float = 0.1,
        initial_const: float = 0.3,
        initial_tau: float = 1.0,
        decrease_factor: float = 0.9,
        const_factor: float = 2.0,
        largest_const: float = 20.0,
        reduce_const: bool = False,
    ) -> None:
        super().__init__(iterations, search_steps, learning_rate, initial_const)
        self.initial_tau = check_range("initial_tau", initial_tau, 0.0, 1.0)
        self.decrease_factor = check_range("decrease_factor", decrease_factor, 0.0, 1.0)
        self.const_factor = check_positive("const_factor", const_factor)
        if self.const_factor <= 1.0:
            raise ValueError(f"const_factor must be > 1, got {const_factor}")
        self.largest_const = check_positive("largest_const", largest_const)
        self.reduce_const = check_bool("reduce_const", reduce_const)

    def __repr__(self) -> str:
        return (
            f"CWLinf(iterations={self.iterations}, search_steps={self.search_steps}, "
            f"learning_rate={self.learning_rate}, initial_const={self.initial_const}, "
            f"initial_tau={self.initial_tau}, decrease_factor={self.decrease_factor}, "
            f"const_factor={self.const_factor}, largest_const={self.largest_const}, "
            f"reduce_const={self.reduce_const})"
        )

    @staticmethod
    def _penalty(delta: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.nn.relu(tf.abs(delta) - as_rows(tau)), axis=[1, 2, 3])

    @staticmethod
    def _metric(delta: tf.Tensor) -> tf.Tensor:
        return per_example_linf(delta)

    @staticmethod
    def _acceptable(success: tf.Tensor, metric: tf.Tensor, tau: tf.Tensor) -> tf.Tensor:
        return success & (metric <= tau + TAU_TOLERANCE)

    def _run(
        self, x: np.ndarray, loss: Loss, rng: FaceRandom, progress: Progress
    ) -> tuple[np.ndarray, int]:
        n = x.shape[0]
        images = tf.constant(x)
        const = np.full(n, self.initial_const)
        tau = np.full(n, self.initial_tau)
        done = np.zeros(n, bool)
        start = jitter(x, rng, START_JITTER)
        total = self.iterations * self.search_steps
        state: _State | None = None
        trials = 0
        while trials < self.search_steps and not done.all():
            state = self._fresh_state(x, start, state)
            state = self._search_step(images, state, const, tau, loss, progress, total)
            trials += 1
            step_metric = state.step_metric.numpy()
            accepted = (step_metric < np.inf) & ~done
            rejected = (step_metric == np.inf) & ~done
            start = np.where(as_rows(accepted), state.step_delta.numpy(), start)
            tau = np.where(accepted, self.decrease_factor * np.minimum(tau, step_metric), tau)
            if self.reduce_const:
                const = np.where(accepted, const / 2.0, const)
            const = np.where(rejected, const * self.const_factor, const)
            done |= (rejected & (const > self.largest_const)) | (tau < MIN_TAU)
        progress.finish(total)
        assert state is not None
        return self._result(state), trials * self.iterations
