"""The ensemble of the two real surrogates and adaptive amplification with a real recogniser.

The ensemble's attack must move the face away on *both* FaceNets (and pull it towards a decoy
that exists in both galleries); adaptive amplification must return an alpha in range whose
verdict the receipt reports, and the receipt must hold what the photo really got.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceoff.detector.detection import FaceDetector
from faceoff.faces.models.ensemble import Ensemble
from faceoff.masker.options import resolve
from faceoff.masker.pipeline import ProtectCall, protect_in_process
from faceoff.masker.protection import Protector
from tests.conftest import ALIGNED, PHOTOS

pytestmark = pytest.mark.slow

NAMES = ("barack", "taylor", "leo")
#: The paper's geometry: the perturbation computed on the 160 px crop, unshaped.
LEGACY_CROP = {"work_size": 0, "feather": 0.0, "chroma": 1.0, "texture": 0.0}


def _load(path: Any) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), np.float32) / 255.0


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    return {n: np.stack([_load(p) for p in sorted((ALIGNED / n).glob("*.png"))[:5]]) for n in NAMES}


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_ensemble_attack_moves_the_face_on_both_surrogates(
    protector: Protector, crops: dict[str, np.ndarray], targeted: bool
) -> None:
    options = resolve(
        "medium",
        surrogates=("facenet", "facenet512"),
        targeted=targeted,
        iterations=15,
        seed=2,
        norm="l2",
        **LEGACY_CROP,
    )
    model = protector.model_for(options)
    assert isinstance(model, Ensemble) and [m.name for m in model.members] == [
        "facenet",
        "facenet512",
    ]
    assert protector.model_for(options) is model, "the ensemble is built once"
    probes = np.stack([crops[n][0] for n in NAMES])
    references = [model.embed_numpy(crops[n][1:]) for n in NAMES]
    job = protector.crop_job(probes, options, references)
    assert job.options.surrogates == ("facenet", "facenet512")
    (delta,) = protector.attack([job])
    assert np.all(np.isfinite(delta)) and np.all(np.any(delta != 0, axis=(1, 2, 3)))
    protected = np.clip(probes + options.alpha * delta, 0, 1)
    gallery = protector.gallery_for(model)
    for member, (a, b) in zip(model.members, model.segments):
        clean, after = member.embed_numpy(probes), member.embed_numpy(protected)
        for k, refs in enumerate(references):
            if targeted:
                decoy = gallery.centroids[gallery.names.index(job.targets[k])][a:b]
                assert np.linalg.norm(after[k] - decoy) < np.linalg.norm(clean[k] - decoy), (
                    member.name,
                    NAMES[k],
                )
            else:
                own = refs[:, a:b]
                assert (
                    np.linalg.norm(after[k] - own, axis=1).mean()
                    > np.linalg.norm(clean[k] - own, axis=1).mean() + 0.2
                ), (member.name, NAMES[k])


def test_adaptive_alpha_with_a_real_recogniser(
    protector: Protector, detector: FaceDetector
) -> None:
    data = (PHOTOS / "barack" / "barack_02.jpg").read_bytes()
    references = [p.read_bytes() for p in sorted((PHOTOS / "barack").glob("*.jpg"))[2:4]]
    plain = {
        "surrogates": ("facenet",),
        "norm": "l2",
        "epsilon": 1.5,
        "iterations": 15,
        "seed": 1,
        **LEGACY_CROP,
    }
    options = resolve(
        "medium",
        adaptive_alpha=True,
        alpha=6.0,
        psnr_floor=33.0,
        loop_recognizers=("sface",),
        **plain,
    )
    result = protect_in_process(ProtectCall(data, options, references), protector, detector)
    (face,) = result.faces
    assert 1.0 <= face.alpha <= 6.0
    assert [v.recognizer for v in face.verdicts] == ["sface"]
    assert face.psnr >= 33.0 - 0.5, "the PSNR floor holds (up to the output's JPEG re-encoding)"
    if face.verdicts[0].matched:
        assert face.alpha == 6.0 or face.psnr < 33.5, (
            "still matched although there was room to amplify further"
        )
    fixed = protect_in_process(
        ProtectCall(data, resolve("medium", alpha=face.alpha, **plain), references),
        protector,
        detector,
    )
    assert fixed.faces[0].l2 == pytest.approx(face.l2, rel=1e-4), (
        "the receipt's alpha is the one applied"
    )
    assert result.receipt()["faces"][0]["verdicts"][0]["recognizer"] == "sface"
