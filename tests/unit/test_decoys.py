"""Identification among decoys: the person's rank, same-person decoys, the built-in galleries.

The ranking is tested with a recogniser whose embedding of a photo is its mean colour (no model),
so every distance is known; the built-in galleries are read as data (no model either). The real
recognisers rank real photos in tests/integration/test_decoy_identification.py.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from faceoff.common import assets
from faceoff.common.imaging import Photo
from faceoff.evaluator import decoys
from faceoff.evaluator.convert import verdict_to_proto, verdicts_to_proto
from faceoff.evaluator.evaluation import EvaluationRequest, Evaluator, Verdict
from faceoff.faces.recognizers import LOCAL_RECOGNIZERS, get_local
from faceoff.faces.recognizers.base import EmbeddingRecognizer
from faceoff.sdk import Verdict as SdkVerdict
from tests.conftest import encode


class MeanColour(EmbeddingRecognizer):
    """Embeds a photo as its mean colour in [0, 1] (Euclidean, verification threshold 0.1)."""

    name = "colour"
    distance_threshold = 0.1

    def _load(self) -> None:
        pass

    def _embed(self, photo: Photo) -> np.ndarray | None:
        return photo.pixels.reshape(-1, 3).mean(axis=0) / 255.0


def photo(r: float, g: float, b: float) -> bytes:
    """A flat photo whose :class:`MeanColour` embedding is ``(r, g, b)``."""
    rgb = np.round(np.array([r, g, b]) * 255).astype(np.uint8)
    return encode(np.broadcast_to(rgb, (32, 32, 3)).copy())


def vec(*values: float) -> np.ndarray:
    return np.array(values, np.float64)


# Decoys far from each other and from the person at the origin (0, 0, 0).
DECOYS = {"near": vec(0.5, 0, 0), "mid": vec(0, 0.7, 0), "far": vec(0, 0, 0.9)}


def _as_received(verdict: Verdict) -> SdkVerdict:
    """The verdict as a client (and the CLI) receives it: through the wire's conversion."""
    from faceoff.sdk._convert import verdicts as sdk_verdicts

    return sdk_verdicts(verdicts_to_proto([verdict]))[0]


def test_the_person_ranks_after_every_decoy_nearer_to_the_face() -> None:
    r = MeanColour()
    person = vec(0, 0, 0)
    # the face moved 0.4 towards "near": "near" (0.1 away) beats the person (0.4); the others do not
    moved = r.rank_among_decoys(vec(0.4, 0, 0), person, DECOYS)
    assert (moved.rank, moved.gallery_size, moved.identified) == (2, 4, False)
    # the face moved 0.6 between "near" and "mid" (0.6 from the person): both are nearer
    between = r.rank_among_decoys(vec(0.3, 0.5, 0), person, DECOYS)
    assert (between.rank, between.identified) == (3, False)
    # a face at the person ranks the person first
    clean = r.rank_among_decoys(vec(0.01, 0, 0), person, DECOYS)
    assert (clean.rank, clean.gallery_size, clean.identified) == (1, 4, True)


def test_a_tie_counts_as_identified() -> None:
    r = MeanColour()
    tie = r.rank_among_decoys(vec(0.25, 0, 0), vec(0, 0, 0), {"near": vec(0.5, 0, 0)})
    assert (tie.rank, tie.identified) == (1, True)


def test_a_decoy_who_is_the_person_is_left_out() -> None:
    r = MeanColour()
    # The person is a public figure of the gallery: their decoy lies 0.05 from them, within the
    # threshold 0.1. Even though the face is nearest that decoy, they do not compete with themselves.
    gallery = {**DECOYS, "themselves": vec(0.05, 0, 0)}
    result = r.rank_among_decoys(vec(0.06, 0, 0), vec(0, 0, 0), gallery)
    assert result.excluded == ("themselves",)
    assert (result.rank, result.gallery_size, result.identified) == (1, 4, True)
    # just outside the threshold, a look-alike is a decoy like any other
    lookalike = r.rank_among_decoys(
        vec(0.2, 0, 0), vec(0, 0, 0), {**DECOYS, "alike": vec(0.15, 0, 0)}
    )
    assert lookalike.excluded == () and (lookalike.rank, lookalike.gallery_size) == (2, 5)


def test_cosine_recognisers_rank_by_direction() -> None:
    class Cosine(MeanColour):
        metric = "cosine"
        distance_threshold = 0.05

    r = Cosine()
    gallery = {"x": vec(1, 0, 0), "y": vec(0, 1, 0), "same": vec(0, 0, 5)}
    # "same" points where the person does (distance 0): left out whatever its length
    result = r.rank_among_decoys(vec(0.9, 0, 0.3), vec(0, 0, 1), gallery)
    assert result.excluded == ("same",) and (result.rank, result.gallery_size) == (2, 3)


def evaluator() -> Evaluator:
    return Evaluator(local=(), backends={"colour": MeanColour()}, decoys={"colour": DECOYS})


def test_the_evaluator_ranks_the_face_against_the_centroid_of_the_references() -> None:
    ev = evaluator()
    try:
        # references at (0, 0, 0) and (0.1, 0, 0): the person is their centroid (0.05, 0, 0);
        # the photo at (0.4, 0, 0) is 0.35 from the person and 0.1 from "near": rank 2 of 4
        (verdict,) = ev.evaluate(
            EvaluationRequest(
                photo=photo(0.4, 0, 0),
                references=[photo(0, 0, 0), photo(0.1, 0, 0)],
                recognizers=["colour"],
            )
        )
    finally:
        ev.close()
    assert verdict.decoys is not None and not verdict.error
    assert (verdict.decoys.rank, verdict.decoys.gallery_size) == (2, 4)
    assert verdict.verification is not None and not verdict.verification.match
    doc = _as_received(verdict).to_json()
    assert (doc["identified"], doc["rank"], doc["gallery_size"]) == (False, 2, 4)
    msg = verdict_to_proto(verdict)
    assert (msg.identified, msg.rank, msg.gallery_size) == (False, 2, 4)


def test_without_references_the_clean_face_is_the_person() -> None:
    # faceoff protect --check and check= without reference photos send the original photo as
    # the reference (tests/unit/test_sdk.py checks that request): the clean face is the person.
    ev = evaluator()
    try:
        original, protected = photo(0.02, 0, 0), photo(0.45, 0, 0)
        still, moved = ev.evaluate(
            EvaluationRequest(photo=original, references=[original], recognizers=["colour"])
        ) + ev.evaluate(
            EvaluationRequest(photo=protected, references=[original], recognizers=["colour"])
        )
    finally:
        ev.close()
    assert still.decoys is not None and (still.decoys.rank, still.decoys.identified) == (1, True)
    assert moved.decoys is not None and (moved.decoys.rank, moved.decoys.identified) == (2, False)


def test_no_rank_without_references_or_without_decoys() -> None:
    ev = Evaluator(
        local=(),
        backends={"colour": MeanColour(), "plain": MeanColour()},
        decoys={"colour": DECOYS},
    )
    try:
        gallery_only, no_decoys = ev.evaluate(
            EvaluationRequest(
                photo=photo(0, 0, 0),
                gallery={"someone": [photo(0, 0, 0)]},
                recognizers=["colour"],
            )
        ) + ev.evaluate(
            EvaluationRequest(
                photo=photo(0, 0, 0), references=[photo(0, 0, 0)], recognizers=["plain"]
            )
        )
    finally:
        ev.close()
    for verdict in (gallery_only, no_decoys):
        assert verdict.decoys is None and "rank" not in _as_received(verdict).to_json()
        msg = verdict_to_proto(verdict)
        assert not any(msg.HasField(f) for f in ("identified", "rank", "gallery_size"))
    assert no_decoys.verification is not None and gallery_only.top_k


# -- the built-in galleries ------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOCAL_RECOGNIZERS)
def test_every_local_recogniser_ships_its_gallery_of_public_figures(name: str) -> None:
    gallery = decoys.load(name)
    recognizer = get_local(name)  # not loaded: only its class attributes are read
    assert gallery.recognizer == name and len(gallery.centroids) == 10
    assert {c.shape for c in gallery.centroids.values()} in ({(128,)}, {(192,)}, {(512,)})
    # provenance: the model files it was computed with are the pinned ones, and where it came from
    assert gallery.weights_sha256 and all(
        assets.ASSETS[a].sha256 == sha for a, sha in gallery.weights_sha256.items()
    )
    doc = json.loads(
        (resources.files("faceoff.evaluator") / "data" / decoys.file_name(name)).read_text()
    )
    assert (
        doc["generated_by"] == "tools/build_judge_decoys.py" and "faceoff-celebs" in doc["source"]
    )
    assert doc["metric"] == recognizer.metric
    # ten different people: no two decoys are the same point
    names = sorted(gallery.centroids)
    assert (
        min(
            recognizer.distance(gallery.centroids[a], gallery.centroids[b])
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        )
        > 0.25 * recognizer.distance_threshold
    )


def test_a_gallery_is_refused_for_other_weights_or_another_recogniser() -> None:
    doc = json.loads(
        (resources.files("faceoff.evaluator") / "data" / decoys.file_name("dlib")).read_text()
    )
    with pytest.raises(ValueError, match="gallery of 'dlib', not 'sface'"):
        decoys.parse(doc, "sface")
    stale = {**doc, "weights_sha256": {**doc["weights_sha256"], "dlib_resnet": "0" * 64}}
    with pytest.raises(
        ValueError, match=r"other than those pinned now \(dlib_resnet\).*--recognizers dlib"
    ):
        decoys.parse(stale, "dlib")
    with pytest.raises(FileNotFoundError, match="no decoy gallery ships for recogniser 'nobody'"):
        decoys.load("nobody")
