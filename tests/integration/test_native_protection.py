"""The native-resolution, shaped protection on the real surrogates: a large and a small face.

The photo goes in as PNG so that the output can be compared pixel for pixel: nothing outside
each face's soft ellipse changes, the change fades out at its rim (at most 1 grey level there),
the surrogate's distance to the user grows, and the receipt measures the face as displayed.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from faceoff.common.crops import crop_region
from faceoff.detector.detection import FaceDetector
from faceoff.masker.attacks.shape import soft_mask
from faceoff.masker.options import resolve
from faceoff.masker.pipeline import ProtectCall, protect_in_process
from faceoff.masker.protection import Protector
from tests.conftest import PHOTOS, REPO

pytestmark = pytest.mark.slow

#: barack_01: a 336 x 483 px face (larger than the work size); barack_02: a 63 x 89 px face.
PHOTOS_BY_FACE = {"large": "barack/barack_01.jpg", "small": "barack/barack_02.jpg"}
SHAPED = {
    "work_size": 320,
    "feather": 0.25,
    "chroma": 0.3,
    "texture": 0.5,
    "iterations": 8,
    "surrogates": ("facenet",),
    "eot": 0.0,
    "seed": 4,
}


def _png(path: str) -> tuple[bytes, np.ndarray]:
    with Image.open(PHOTOS / path) as img:
        pixels = np.asarray(img.convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue(), pixels


@pytest.mark.parametrize("size", sorted(PHOTOS_BY_FACE))
def test_shaped_native_protection_changes_only_the_soft_face_ellipse(
    protector: Protector, detector: FaceDetector, size: str
) -> None:
    data, original = _png(PHOTOS_BY_FACE[size])
    options = resolve("medium", **SHAPED)
    result = protect_in_process(ProtectCall(data, options, []), protector, detector)
    assert result.format == "PNG" and result.faces
    with Image.open(io.BytesIO(result.data)) as img:
        out = np.asarray(img.convert("RGB"))
    inside = np.zeros(original.shape[:2], bool)
    rim = np.zeros(original.shape[:2], bool)
    for face in result.faces:
        region = crop_region(face.box, original.shape[1], original.shape[0], options.margin)
        mask = soft_mask(region.height, region.width, options.feather)
        inside[region.slices] |= mask > 0
        rim[region.slices] |= (mask > 0) & (mask < 0.05)
    change = np.abs(out.astype(int) - original.astype(int))
    assert change[~inside].max() == 0, "a pixel outside the faces' ellipses changed"
    assert change[inside].max() > 0
    assert change[rim].max() <= 1, "the perturbation has an edge at the mask's rim"
    face = result.faces[0]
    if size == "large":
        assert face.box[2] > SHAPED["work_size"], "the large face is larger than the work size"
    else:
        assert max(face.box[2:]) < 100
    assert face.distance_after > face.distance_before, "the face moved away from the user"
    assert np.isfinite(face.psnr) and 0 < face.ssim < 1
    if shutil.which("butteraugli"):
        assert face.butteraugli is not None and face.butteraugli > 0
    applied = result.receipt()["options"]
    assert applied["work_size"] == 320 and applied["feather"] == 0.25


#: Run in a child with bit-exact kernels (``FACEOFF_DETERMINISTIC=1``; this process runs
#: TensorFlow's default oneDNN kernels, whose sums depend on the batch and thread scheduling).
BATCHED = """
import sys
import numpy as np
from faceoff.detector.detection import FaceDetector
from faceoff.masker.options import resolve
from faceoff.masker.protection import Protector
from tests.conftest import PHOTOS, REPO
protector, detector = Protector(), FaceDetector()
options = dict(work_size=320, iterations=4, surrogates=("facenet",))
def job(path, seed):
    data = (PHOTOS / path).read_bytes()
    return protector.prepare(data, resolve("medium", **options, seed=seed), detector.detect(data))
def attack(jobs):
    return protector.attack(jobs, lambda i, n: None)  # in chunks, as the masker's batcher runs
mine = job("barack/barack_02.jpg", 4)
(alone,) = attack([mine])
batched = attack([job("barack/barack_01.jpg", 9), mine, job("taylor/taylor_02.jpg", 4)])[1]
(reseeded,) = attack([job("barack/barack_02.jpg", 5)])
print("DIFF", float(np.abs(batched - alone).max()), float(np.abs(reseeded - alone).max()))
"""


def test_a_photo_gets_the_same_perturbation_alone_or_batched_with_other_requests() -> None:
    """Requests that differ in seed and references share one attack batch in the masker; each
    face is seeded by its own request's seed and its index in the photo, so with bit-exact
    kernels a request's perturbation is bit for bit the one it gets alone."""
    done = subprocess.run(
        [sys.executable, "-c", BATCHED],
        cwd=REPO,
        env={**os.environ, "FACEOFF_DETERMINISTIC": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("DIFF ")]
    batched, reseeded = (float(v) for v in line.split()[1:])
    assert batched == 0.0, f"batched with other requests, the perturbation moved by {batched}"
    assert reseeded > 1e-3, "the request's seed does not reach its face"


def test_aligned_protection_reads_each_face_through_its_own_landmarks(
    protector: Protector, detector: FaceDetector
) -> None:
    """With ``align``, each face gets the alignment its MTCNN landmarks give (not the identity),
    the aligned surrogate sees the face that way (its embedding changes), the attack still moves
    the face away from the user, and without ``align`` the job carries none."""
    from faceoff.faces.alignment import IDENTITY

    data = (PHOTOS / "matt/matt_02.jpg").read_bytes()  # a tilted head
    detection = detector.detect(data)
    options = resolve("medium", surrogates=("sface",), iterations=6, align=True, seed=2)
    job = protector.prepare(data, options, detection)
    assert job.aligns is not None and job.aligns.shape == (1, 6)
    rotation = np.degrees(np.arctan2(job.aligns[0, 3], job.aligns[0, 0]))
    assert abs(rotation) > 3, f"the tilted face's alignment turns by only {rotation:.1f} degrees"
    model = job.model
    assert model is not None
    fixed = model.embed_numpy(job.crops)
    aligned = model.embed_numpy(job.crops, align=job.aligns)
    identity = model.embed_numpy(job.crops, align=IDENTITY[None])
    np.testing.assert_allclose(identity, fixed, atol=1e-4)
    assert float(np.linalg.norm(aligned - fixed)) > 0.05
    (delta,) = protector.attack([job])
    result = protector.finish(job, delta)
    face = result.faces[0]
    assert face.distance_after > face.distance_before + 0.2
    plain = protector.prepare(
        data, resolve("medium", surrogates=("sface",), align=False), detection
    )
    assert plain.aligns is None
