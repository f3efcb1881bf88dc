"""What every registered surrogate promises, checked once for all of them (no model is loaded).

Each surrogate's own file tests its network (weights, agreement with the reference runtime,
leave-one-out identification); this one tests the contract the masker relies on: the registry
and the option schema name the same surrogates, each has a decoy gallery pinned to its weights,
of unit-length centroids of its embedding's length, and the surrogates that know faces only
when aligned are the ones the options refuse without ``align``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceoff.common import assets
from faceoff.faces.models import SURROGATES
from faceoff.faces.models.facenet import FaceNet
from faceoff.faces.models.facenet512 import FaceNet512
from faceoff.faces.models.faceres import FaceRes
from faceoff.faces.models.mobileface import MobileFace
from faceoff.faces.models.sface import SFaceModel
from faceoff.masker.options import ALIGNED_ONLY, INDEPENDENT_JUDGES, SURROGATE_NAMES

DATA = Path(__file__).resolve().parents[2] / "services/masker/src/faceoff/masker/data"
#: Each registered surrogate's class (its sizes are class attributes: nothing is loaded).
CLASSES = {
    "facenet": FaceNet,
    "facenet512": FaceNet512,
    "sface": SFaceModel,
    "faceres": FaceRes,
    "mobileface": MobileFace,
}


def test_the_registry_and_the_schema_name_the_same_surrogates_and_no_judge() -> None:
    assert set(SURROGATES) == set(SURROGATE_NAMES) == set(CLASSES)
    assert not set(SURROGATES) & set(INDEPENDENT_JUDGES)
    assert set(ALIGNED_ONLY) <= {n for n, c in CLASSES.items() if c.aligned}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_has_a_decoy_gallery_pinned_to_its_weights(name: str) -> None:
    doc = json.loads((DATA / f"decoys_{name}.json").read_text())
    asset = name if name in assets.ASSETS else f"{name}_bin"
    assert doc["surrogate"] == name and doc["weights_sha256"] == assets.ASSETS[asset].sha256
    centroids = np.asarray(list(doc["centroids"].values()))
    assert centroids.shape == (10, CLASSES[name].embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert CLASSES[name].input_size == 160  # the masker's crops
