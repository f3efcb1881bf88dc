"""The evaluator's orchestration: request checks, concurrency, per-backend timeouts and failures.

The backends here are small in-process recognisers written for the test (they only decide what
to answer); the real recognisers are tested in test_recognizers.py and behind the service in
tests/integration/test_evaluator_service.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from faceoff.common.errors import InvalidImage, InvalidOption, NoFaceFound
from faceoff.evaluator.cloud.errors import CloudAuthError
from faceoff.evaluator.evaluation import MAX_REFERENCES, OUTCOMES, EvaluationRequest, Evaluator
from faceoff.faces.recognizers.base import (
    FacePhoto,
    Gallery,
    IdentityScore,
    Recognizer,
    Verification,
)
from tests.conftest import encode

PHOTO = encode(np.full((64, 64, 3), 120, np.uint8))


class Scripted(Recognizer):
    """Answers a fixed verdict, raises a given error, or blocks until released."""

    def __init__(
        self, name: str, error: Exception | None = None, block: threading.Event | None = None
    ) -> None:
        self.name = name
        self.error = error
        self.block = block
        self.calls = 0

    def _answer(self) -> None:
        self.calls += 1
        if self.block is not None:
            self.block.wait(timeout=30)
        if self.error is not None:
            raise self.error

    def verify(
        self,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        *,
        use_api_threshold: bool = False,
        deadline: float | None = None,
    ) -> Verification:
        self._answer()
        assert probe.label == "the photo" and references[0].label == "reference photo 1"
        return Verification(confidence=0.75, threshold=0.5, match=True, distance=0.4)

    def identify(
        self, probe: FacePhoto, gallery: Gallery, top_k: int = 3, *, deadline: float | None = None
    ) -> list[IdentityScore]:
        self._answer()
        return [IdentityScore(name=n, confidence=0.9 - i / 10) for i, n in enumerate(gallery)][
            :top_k
        ]


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let a blocked backend thread finish after the test


def make(
    backends: dict[str, Recognizer], **kwargs: object
) -> tuple[Evaluator, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    evaluator = Evaluator(
        local=(), backends=backends, observer=lambda b, o, s: seen.append((b, o)), **kwargs
    )  # type: ignore[arg-type]
    return evaluator, seen


def test_one_failing_backend_never_fails_the_others() -> None:
    evaluator, seen = make(
        {
            "good": Scripted("good"),
            "noface": Scripted("noface", NoFaceFound("noface: no face found in the photo by X")),
            "denied": Scripted("denied", CloudAuthError("denied: refused the credentials")),
        }
    )
    verdicts = evaluator.evaluate(
        EvaluationRequest(photo=PHOTO, references=[PHOTO], recognizers=["denied", "good", "noface"])
    )
    assert [v.recognizer for v in verdicts] == ["denied", "good", "noface"]  # request order
    denied, good, noface = verdicts
    assert good.verification is not None and good.verification.match and not good.error
    assert (noface.error_kind, noface.verification) == ("no_face", None)
    assert denied.error_kind == "auth" and "refused" in denied.error
    assert sorted(seen) == [("denied", "auth"), ("good", "ok"), ("noface", "no_face")]
    assert {o for _, o in seen} <= set(OUTCOMES)


def test_a_slow_backend_times_out_alone(release: threading.Event) -> None:
    slow = Scripted("slow", block=release)
    evaluator, seen = make({"slow": slow, "fast": Scripted("fast")}, backend_timeout=0.3)
    verdicts = evaluator.evaluate(
        EvaluationRequest(photo=PHOTO, references=[PHOTO], recognizers=["slow", "fast"])
    )
    assert verdicts[0].error_kind == "timeout" and "no answer within" in verdicts[0].error
    assert verdicts[1].verification is not None and not verdicts[1].error
    assert ("slow", "timeout") in seen


def test_a_bug_in_a_backend_is_internal_and_says_nothing_more() -> None:
    evaluator, _ = make(
        {
            "buggy": Scripted("buggy", RuntimeError("secret detail /home/x")),
            "good": Scripted("good"),
        }
    )
    buggy, good = evaluator.evaluate(
        EvaluationRequest(photo=PHOTO, references=[PHOTO], recognizers=["buggy", "good"])
    )
    assert buggy.error_kind == "internal" and "secret detail" not in buggy.error
    assert good.verification is not None


def test_unknown_or_repeated_names_refuse_the_request() -> None:
    evaluator, _ = make({})
    with pytest.raises(InvalidOption) as info:
        evaluator.evaluate(
            EvaluationRequest(photo=PHOTO, references=[PHOTO], recognizers=["dlib", "vggface"])
        )
    assert "'vggface'" in info.value.message
    assert (
        "accepted: dlib, sface, facenet, facenet512, mobilefacenet, rekognition, azure, facepp"
        in info.value.message
    )
    with pytest.raises(InvalidOption) as info:
        evaluator.evaluate(
            EvaluationRequest(photo=PHOTO, references=[PHOTO], recognizers=["azure", "Azure"])
        )
    assert "twice" in info.value.message


def test_unconfigured_backends_are_reported_not_failed() -> None:
    evaluator, seen = make(
        {"good": Scripted("good")}
    )  # no cloud credentials; no local models on this one
    verdicts = evaluator.evaluate(
        EvaluationRequest(
            photo=PHOTO, references=[PHOTO], recognizers=["rekognition", "facenet", "dlib", "good"]
        )
    )
    assert [(v.recognizer, v.configured, v.error) for v in verdicts] == [
        ("rekognition", False, ""),
        ("facenet", False, ""),
        ("dlib", False, ""),
        ("good", True, ""),
    ]
    assert verdicts[1].white_box and not verdicts[2].white_box  # facenet: a default surrogate
    assert ("rekognition", "not_configured") in seen


def test_empty_list_asks_every_configured_backend() -> None:
    evaluator, _ = make({"a": Scripted("a"), "sface": Scripted("sface")})
    verdicts = evaluator.evaluate(EvaluationRequest(photo=PHOTO, references=[PHOTO]))
    assert {v.recognizer: v.white_box for v in verdicts} == {"a": False, "sface": True}


@pytest.mark.parametrize(
    ("attacked", "white"),
    [
        ((), {"facenet", "sface"}),  # not told: the default protection's surrogates
        (("facenet512",), {"facenet512"}),
        (("facenet", "facenet512", "sface"), {"facenet", "facenet512", "sface"}),
        (("facenet", "dlib"), {"facenet", "dlib"}),  # dlib consulted in the adaptive loop
    ],
)
def test_white_box_is_decided_by_the_models_the_request_names(
    attacked: tuple[str, ...], white: set[str]
) -> None:
    names = ["dlib", "sface", "facenet", "facenet512", "x"]
    evaluator, _ = make({n: Scripted(n) for n in names})
    verdicts = evaluator.evaluate(
        EvaluationRequest(
            photo=PHOTO, references=[PHOTO], recognizers=names, attacked_models=attacked
        )
    )
    assert {v.recognizer for v in verdicts if v.white_box} == white


def test_gallery_only_identifies_without_verifying() -> None:
    evaluator, _ = make({"a": Scripted("a")})
    (verdict,) = evaluator.evaluate(
        EvaluationRequest(photo=PHOTO, gallery={"x": [PHOTO], "y": [PHOTO]}, top_k=1)
    )
    assert verdict.verification is None and [s.name for s in verdict.top_k] == ["x"]


@pytest.mark.parametrize(
    "request_kwargs,error,needle",
    [
        ({}, InvalidOption, "reference photos"),
        (
            {"references": [PHOTO] * (MAX_REFERENCES + 1)},
            InvalidOption,
            f"at most {MAX_REFERENCES}",
        ),
        ({"references": [PHOTO], "top_k": -1}, InvalidOption, "top_k"),
        ({"references": [PHOTO], "top_k": 1000}, InvalidOption, "top_k"),
        ({"gallery": {"x": []}}, InvalidOption, "'x' has no photos"),
        (
            {"references": [PHOTO, b"not a photo"]},
            InvalidImage,
            "reference photo 2: bytes are not an image",
        ),
    ],
)
def test_bad_requests(
    request_kwargs: dict[str, object], error: type[Exception], needle: str
) -> None:
    evaluator, _ = make({"a": Scripted("a")})
    with pytest.raises(error) as info:
        evaluator.evaluate(EvaluationRequest(photo=PHOTO, **request_kwargs))  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert evaluator._backends["a"].calls == 0  # type: ignore[attr-defined]


def test_a_bad_photo_names_itself() -> None:
    evaluator, _ = make({"a": Scripted("a")})
    with pytest.raises(InvalidImage) as info:
        evaluator.evaluate(EvaluationRequest(photo=b"", references=[PHOTO]))
    assert info.value.message.startswith("the photo: image is empty")


def test_to_json_carries_no_embeddings() -> None:
    # the one verdict serialiser is the SDK's: the CLI prints verdicts as a client receives them
    from faceoff.evaluator.convert import verdicts_to_proto
    from faceoff.sdk._convert import verdicts as sdk_verdicts

    evaluator, _ = make({"a": Scripted("a")})
    verdicts = evaluator.evaluate(
        EvaluationRequest(photo=PHOTO, references=[PHOTO], gallery={"x": [PHOTO]})
    )
    (verdict,) = sdk_verdicts(verdicts_to_proto(verdicts))
    doc = verdict.to_json()
    assert set(doc) == {
        "recognizer",
        "white_box",
        "configured",
        "confidence",
        "threshold",
        "match",
        "distance",
        "top_k",
    }
