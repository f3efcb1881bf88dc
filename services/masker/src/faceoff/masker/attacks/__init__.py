"""The Face-Off attacks: adversarial losses on a metric embedding and the optimisers that use them.

Losses (:mod:`.losses`: target, hinge) are separate from optimisers (:mod:`.pgd`, :mod:`.cw`), so
every pair combines::

    loss = make_loss("hinge", model, references, others, targeted=True, kappa=0.2)
    result = make_attack("cw", "l2", iterations=100).attack(faces01, loss, seed=7)
    protected = faces01 + result.delta

Attacks depend only on :class:`~faceoff.faces.models.EmbeddingModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from faceoff.faces.models.base import EmbeddingModel
from faceoff.masker.attacks.base import Attack, AttackResult, ProgressCallback
from faceoff.masker.attacks.cw import CW, CWL2, CWLinf
from faceoff.masker.attacks.losses import (
    DEFAULT_KAPPA,
    DEFAULT_THRESHOLD,
    HingeLoss,
    Loss,
    TargetLoss,
)
from faceoff.masker.attacks.pgd import PGD, PGDL2, PGDLinf
from faceoff.masker.attacks.transfer import Transfer

#: Optimisers by name, then by norm (``"l2"`` or ``"linf"``).
ATTACKS: dict[str, dict[str, type[Attack]]] = {
    "pgd": {"l2": PGDL2, "linf": PGDLinf},
    "cw": {"l2": CWL2, "linf": CWLinf},
}

#: Losses by name.
LOSSES: dict[str, type[Loss]] = {"target": TargetLoss, "hinge": HingeLoss}


def make_attack(name: str, norm: str, **params: Any) -> Attack:
    """Build the optimiser ``name`` ("pgd", "cw") for ``norm`` ("l2", "linf") with ``params``.

    Raises:
        ValueError: Unknown name or norm, or a parameter out of range (the message names it).
        TypeError: A parameter the attack does not take.
    """
    if name not in ATTACKS:
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {name!r}")
    if norm not in ATTACKS[name]:
        raise ValueError(f"norm must be one of {sorted(ATTACKS[name])}, got {norm!r}")
    return ATTACKS[name][norm](**params)


def make_loss(
    name: str,
    model: EmbeddingModel,
    references: Sequence[np.ndarray] | np.ndarray,
    others: Sequence[Sequence[np.ndarray]] | None = None,
    **params: Any,
) -> Loss:
    """Build the loss ``name`` ("target", "hinge") for one batch; see :class:`Loss`.

    Raises:
        ValueError: Unknown name, or a malformed parameter or array (the message names it).
        TypeError: A parameter the loss does not take (e.g. ``kappa`` for "target").
    """
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name](model, references, others, **params)


__all__ = [
    "ATTACKS",
    "CW",
    "CWL2",
    "CWLinf",
    "DEFAULT_KAPPA",
    "DEFAULT_THRESHOLD",
    "LOSSES",
    "PGD",
    "PGDL2",
    "PGDLinf",
    "Attack",
    "AttackResult",
    "HingeLoss",
    "Loss",
    "ProgressCallback",
    "TargetLoss",
    "Transfer",
    "make_attack",
    "make_loss",
]
