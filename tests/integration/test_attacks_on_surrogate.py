"""Every attack x loss pair, in both modes, reaches its objective on the real FaceNet surrogate.

Probes are the first crop of five of the ten shared celebrities (every other one: the attacks'
cost grows with the batch, and these 16 runs are the suite's largest part); the user's
references are their other eight crops; identification is nearest centroid among all ten (the
probe's own identity without the probe). Untargeted succeeds when the protected crop (amplified by the
profile's alpha) is no longer top-1 for its own identity; targeted when it becomes the decoy.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceoff.masker.options import resolve
from faceoff.masker.protection import Protector
from tests.conftest import ALIGNED

pytestmark = pytest.mark.slow

#: The paper's attacks alone, on FaceNet: no transfer techniques, the perturbation amplified by alpha
#: (the paper's settings, without the transfer techniques and the alignment the profiles add).
_PLAIN = {
    "surrogates": ("facenet",),
    "momentum": 0.0,
    "diversity": 0.0,
    "ti_kernel": 0,
    "eot": 0.0,
    "warp": 0.0,
    "balance": False,
    "align": False,
    "iterations": 30,
    "alpha": 2.5,
}
#: The paper's geometry: the perturbation computed on the 160 px crop, unshaped.
_UNSHAPED = {"feather": 0.0, "chroma": 1.0, "texture": 0.0}
PAPER = {
    "l2": {**_PLAIN, **_UNSHAPED, "epsilon": 1.5},
    "linf": {**_PLAIN, **_UNSHAPED, "epsilon": 3 / 255},
}

#: CW runs ``search_steps`` rounds of ``iterations`` (three under ``medium``); 20 a round reach
#: the objective here as 30 do (eight of eight rows), and CW's rows are the file's slowest.
CW_ROUNDS = {"cw": {"iterations": 20}}

PAIRS = list(itertools.product(("pgd", "cw"), ("l2", "linf"), ("target", "hinge"), (False, True)))


def _load(path: Any) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), np.float32) / 255.0


@pytest.fixture(scope="module")
def setup(protector: Protector) -> dict[str, Any]:
    names = sorted(p.name for p in ALIGNED.iterdir() if p.is_dir())
    crops = {n: np.stack([_load(p) for p in sorted((ALIGNED / n).glob("*.png"))]) for n in names}
    emb = {n: protector.model.embed_numpy(c) for n, c in crops.items()}
    probed = names[::2]
    probes = np.stack([crops[n][0] for n in probed])
    references = [emb[n][1:] for n in probed]
    centroids = np.stack([emb[n][1:].mean(0) for n in names])
    return {
        "protector": protector,
        "names": names,
        "probed": probed,
        "probes": probes,
        "references": references,
        "centroids": centroids,
    }


def _top1(protector: Protector, images: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    e = protector.model.embed_numpy(images)
    return np.argmin(np.linalg.norm(e[:, None, :] - centroids[None], axis=2), axis=1)


def test_probes_are_recognised_when_clean(setup: dict[str, Any]) -> None:
    top1 = _top1(setup["protector"], setup["probes"], setup["centroids"])
    assert [setup["names"][t] for t in top1] == setup["probed"]


@pytest.mark.parametrize(
    ("attack", "norm", "loss", "targeted"),
    PAIRS,
    ids=[f"{a}-{n}-{loss}-{'targeted' if t else 'untargeted'}" for a, n, loss, t in PAIRS],
)
def test_attack_reaches_its_objective(
    setup: dict[str, Any], attack: str, norm: str, loss: str, targeted: bool
) -> None:
    protector: Protector = setup["protector"]
    options = resolve(
        "medium",
        attack=attack,
        norm=norm,
        loss=loss,
        targeted=targeted,
        seed=1,
        **{**PAPER[norm], **CW_ROUNDS.get(attack, {})},
    )
    job = protector.crop_job(setup["probes"], options, setup["references"])
    (delta,) = protector.attack([job])
    assert np.isfinite(delta).all()
    assert (np.abs(delta).reshape(len(delta), -1).max(axis=1) > 0).all(), (
        "a face got an all-zero delta"
    )
    x = setup["probes"]
    assert (x + delta).min() >= -1e-6 and (x + delta).max() <= 1 + 1e-6
    if attack == "pgd":  # bounded attacks stay in their own ball before amplification
        flat = delta.reshape(len(delta), -1)
        norms = np.linalg.norm(flat, axis=1) if norm == "l2" else np.abs(flat).max(axis=1)
        assert (norms <= options.epsilon * (1 + 1e-4)).all(), (
            f"{norm} norms {norms} exceed epsilon {options.epsilon}"
        )
    protected = np.clip(x + options.alpha * delta, 0.0, 1.0)
    top1 = _top1(protector, protected, setup["centroids"])
    names, probed = setup["names"], setup["probed"]
    if targeted:
        hits = [names[t] == job.targets[i] for i, t in enumerate(top1)]
        assert all(target != probed[i] for i, target in enumerate(job.targets)), (
            "a decoy was the user"
        )
    else:
        hits = [names[t] != probed[i] for i, t in enumerate(top1)]
    assert sum(hits) >= len(probed) - 1, (
        f"objective reached for {sum(hits)}/{len(probed)} probes: {dict(zip(probed, hits))}"
    )
