"""The local recognisers (dlib, SFace, FaceNet, FaceNet512) on the shared celebrity photos, with the real models.

Each photo is embedded once per recogniser per session (:class:`EmbeddingCache`); the tests then
work on those embeddings: leave-one-out nearest-centroid identification, the confidence map,
and the agreement of verification with identification. A few tests go through the photo-level
API on purpose (no face, large photos, concurrent calls).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faceoff.common.errors import InvalidOption, NoFaceFound
from faceoff.common.imaging import decode
from faceoff.faces.recognizers import DEFAULT_LOCAL_RECOGNIZERS, LOCAL_RECOGNIZERS, get_local
from faceoff.faces.recognizers.base import EmbeddingRecognizer, FacePhoto, distance_confidence
from tests.conftest import ALIGNED, celeb_photos, encode

pytestmark = pytest.mark.slow


class EmbeddingCache:
    """Embeddings of the 50 shared photos, computed once per recogniser per session."""

    def __init__(self) -> None:
        self.paths = celeb_photos()
        self.photos = {p: decode(p.read_bytes()) for p in self.paths}
        self._done: dict[str, tuple[dict[Path, np.ndarray], list[str]]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> tuple[dict[Path, np.ndarray], list[str]]:
        """``({photo: embedding}, [photos without a face])`` for recogniser ``name``."""
        with self._lock:
            if name not in self._done:
                recognizer = get_local(name)
                embeddings: dict[Path, np.ndarray] = {}
                missing: list[str] = []
                for path in self.paths:
                    try:
                        embeddings[path] = recognizer.embed(self.photos[path])
                    except NoFaceFound:
                        missing.append(path.name)
                self._done[name] = (embeddings, missing)
            return self._done[name]


@pytest.fixture(scope="session")
def cache() -> EmbeddingCache:
    if not celeb_photos():
        pytest.fail("the shared photo set is missing")
    return EmbeddingCache()


def by_identity(
    embeddings: dict[Path, np.ndarray], exclude: Path | None = None
) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for path, e in embeddings.items():
        if path != exclude:
            out[path.parent.name].append(e)
    return dict(out)


# -- interface and confidence map (no model needed) ---------------------------------------------


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_declarations(name: str) -> None:
    r = get_local(name)
    assert r.name == name
    assert r.threshold() == r.threshold(use_api_threshold=True) == 0.5
    assert get_local(name) is r  # one instance per process


def test_documented_thresholds() -> None:
    assert (get_local("dlib").metric, get_local("dlib").distance_threshold) == ("euclidean", 0.6)
    assert get_local("sface").metric == "cosine"
    assert 1.0 - get_local("sface").distance_threshold == pytest.approx(
        0.363
    )  # OpenCV's cosine threshold
    assert (get_local("facenet").metric, get_local("facenet").distance_threshold) == (
        "euclidean",
        1.05,
    )
    assert (get_local("facenet512").metric, get_local("facenet512").distance_threshold) == (
        "euclidean",
        1.05,
    )


def test_facenet512_is_known_but_not_run_by_default() -> None:
    assert "facenet512" in LOCAL_RECOGNIZERS and "facenet512" not in DEFAULT_LOCAL_RECOGNIZERS
    assert set(DEFAULT_LOCAL_RECOGNIZERS) < set(LOCAL_RECOGNIZERS)


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_confidence_is_a_monotone_map_centred_on_the_threshold(name: str) -> None:
    r = get_local(name)
    t = r.distance_threshold
    distances = np.concatenate(
        [np.linspace(0.0, 2.0, 401), [t, np.nextafter(t, 0), np.nextafter(t, 9)]]
    )
    distances.sort()
    confidences = [r.confidence(float(d)) for d in distances]
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert all(a >= b for a, b in zip(confidences, confidences[1:]))
    assert r.confidence(t) == 0.5
    for d, c in zip(distances, confidences):
        assert (c >= 0.5) == (d <= t), (d, c)
    assert r.confidence(0.0) > 0.99 and r.confidence(2.0) < 0.01


def test_distance_confidence_extremes() -> None:
    assert distance_confidence(1e6, 0.6, 0.1) == 0.0
    assert distance_confidence(-1e6, 0.6, 0.1) == 1.0
    with pytest.raises(ValueError):
        distance_confidence(0.5, 0.6, 0.0)


def test_unknown_local_recogniser_names_the_accepted_ones() -> None:
    with pytest.raises(InvalidOption) as info:
        get_local("vggface")
    assert "dlib, sface, facenet" in info.value.message


# -- accuracy on the shared set -----------------------------------------------------------------


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_leave_one_out_identification_on_photos(name: str, cache: EmbeddingCache) -> None:
    embeddings, missing = cache.get(name)
    r = get_local(name)
    correct = 0
    for path, e in embeddings.items():
        ranking = r.identify_embeddings(e, by_identity(embeddings, exclude=path), top_k=3)
        assert len(ranking) == 3
        assert [s.distance for s in ranking] == sorted(s.distance for s in ranking)  # type: ignore[type-var]
        correct += ranking[0].name == path.parent.name
    accuracy = correct / len(cache.paths)  # a photo without a face counts as a miss
    print(
        f"{name}: leave-one-out top-1 {correct}/{len(cache.paths)} = {accuracy:.0%}; no face in {missing}"
    )
    assert not missing, f"{name} found no face in {missing}"
    assert accuracy >= 0.95


def test_facenet_embeds_aligned_crops() -> None:
    # The shared aligned160 crops are cut as the masker cuts them; FaceNet's leave-one-out on
    # all 90 is covered in test_facenet.py, here only the recogniser's crop entry point.
    files = [sorted((ALIGNED / person).glob("*.png"))[:2] for person in ("barack", "taylor")]
    crops = np.stack(
        [
            np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0
            for pair in files
            for f in pair
        ]
    )
    r = get_local("facenet")
    e = r.embed_crops(crops)
    assert e.shape == (4, 128) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert r.verify_embeddings(e[0], [e[1]]).match and r.verify_embeddings(e[2], [e[3]]).match
    assert not r.verify_embeddings(e[0], [e[2]]).match


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_pairwise_verification_separates_people(name: str, cache: EmbeddingCache) -> None:
    embeddings, _ = cache.get(name)
    r = get_local(name)
    items = list(embeddings.items())
    same, different = [], []
    for i, (pa, ea) in enumerate(items):
        for pb, eb in items[i + 1 :]:
            v = r.verify_embeddings(ea, [eb])
            (same if pa.parent == pb.parent else different).append(v.match)
    assert np.mean(same) >= 0.9, f"{name}: only {np.mean(same):.0%} of same-person pairs match"
    assert np.mean(different) <= 0.02, (
        f"{name}: {np.mean(different):.1%} of different-person pairs match"
    )


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_verification_agrees_with_identification(name: str, cache: EmbeddingCache) -> None:
    embeddings, _ = cache.get(name)
    r = get_local(name)
    for probe_path in cache.paths[::5]:
        probe = embeddings[probe_path]
        gallery = by_identity(embeddings, exclude=probe_path)
        ranking = {s.name: s for s in r.identify_embeddings(probe, gallery, top_k=len(gallery))}
        for identity, refs in gallery.items():
            v = r.verify_embeddings(probe, refs)
            assert v.confidence == pytest.approx(ranking[identity].confidence, abs=1e-9)
            assert v.distance == pytest.approx(ranking[identity].distance, abs=1e-9)
            assert v.match == (v.confidence >= 0.5) == (v.distance <= r.distance_threshold)  # type: ignore[operator]


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_photo_level_assessment_matches_cached_embeddings(name: str, cache: EmbeddingCache) -> None:
    embeddings, _ = cache.get(name)
    r = get_local(name)
    paths = {p.name: p for p in cache.paths}

    def face(filename: str) -> FacePhoto:
        return FacePhoto.from_bytes(paths[filename].read_bytes(), label=filename)

    refs = ["barack_02.jpg", "barack_03.jpg"]
    gallery = {
        "barack": [face("barack_04.jpg")],
        "meryl": [face("meryl_01.jpg"), face("meryl_02.jpg")],
    }
    result = r.assess(face("barack_01.jpg"), [face(f) for f in refs], gallery, top_k=2)
    assert result.verification is not None and result.verification.match
    want = r.verify_embeddings(
        embeddings[paths["barack_01.jpg"]], [embeddings[paths[f]] for f in refs]
    )
    assert result.verification.distance == pytest.approx(want.distance, abs=1e-4)
    assert [s.name for s in result.ranking] == ["barack", "meryl"]
    alone = r.verify(face("barack_01.jpg"), [face(f) for f in refs])
    assert alone.confidence == pytest.approx(result.verification.confidence, abs=1e-6)


# -- robustness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_no_face_is_a_clear_error(name: str) -> None:
    blank = FacePhoto.from_bytes(
        encode(np.full((240, 320, 3), 200, np.uint8)), label="the blank photo"
    )
    with pytest.raises(NoFaceFound) as info:
        get_local(name).embed(blank)
    assert info.value.message.startswith(f"{name}: no face found in the blank photo by ")
    assert info.value.status == "FAILED_PRECONDITION"


@pytest.mark.parametrize("name", ["dlib", "sface"])
def test_a_large_photo_still_shows_its_face(name: str, cache: EmbeddingCache) -> None:
    # YuNet misses faces that fill a large input; dlib's detector is slow on one. Both detect on
    # a reduced copy and must still find the face of a 4x upscaled photo, with a close embedding.
    embeddings, _ = cache.get(name)
    path = next(p for p in cache.paths if p.name == "meryl_01.jpg")  # 1200x1200, a close-up
    pixels = cache.photos[path].pixels
    big = cv2.resize(
        pixels, (pixels.shape[1] * 4, pixels.shape[0] * 4), interpolation=cv2.INTER_CUBIC
    )
    r = get_local(name)
    e = r.embed(FacePhoto.from_bytes(encode(big, "JPEG", quality=92), label="the 4800 px photo"))
    assert r.distance(e, embeddings[path]) < 0.5 * r.distance_threshold


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_concurrent_embeds_agree_with_sequential(name: str, cache: EmbeddingCache) -> None:
    embeddings, _ = cache.get(name)
    chosen = cache.paths[:4]
    results: dict[int, np.ndarray] = {}
    r = get_local(name)

    def work(i: int) -> None:
        results[i] = r.embed(cache.photos[chosen[i]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chosen))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, path in enumerate(chosen):
        assert np.allclose(results[i], embeddings[path], atol=1e-4)


def test_load_runs_once_under_concurrency() -> None:
    class Counting(EmbeddingRecognizer):
        name = "counting"
        loads = 0

        def _load(self) -> None:
            import time

            time.sleep(0.05)
            Counting.loads += 1

        def _embed(self, photo: object) -> np.ndarray:
            return np.ones(4, np.float32)

    r = Counting()
    threads = [threading.Thread(target=r.load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counting.loads == 1 and r.loaded
