"""The evaluator service over a real channel: health, reflection, Evaluate, bad input, metrics.

The server runs the three local recognisers with their real models; its cloud backends point
at the local fake APIs (tests/integration/fakes.py): Face++ with good credentials, Azure with a
key the fake refuses, Rekognition without credentials. So one call shows every kind of verdict:
local answers, a cloud answer, a failed backend and an unconfigured one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from faceoff.common.settings import ServerSettings
from faceoff.evaluator import server as evaluator_server
from faceoff.evaluator.cloud.credentials import AzureConfig, CloudConfig, FaceppConfig
from faceoff.v1 import common_pb2, evaluator_pb2, evaluator_pb2_grpc
from tests.conftest import PHOTOS, LoopThread, encode, metric_value, scrape_metrics
from tests.integration import fakes
from tests.integration.fakes import FakeCloud

pytestmark = pytest.mark.slow

SERVICE = "faceoff.v1.Evaluator"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCloud]:
    server = FakeCloud()
    for photo in sorted(PHOTOS.glob("*/*.jpg")):
        server.register(photo.read_bytes(), photo.parent.name)
    yield server
    server.close()


@pytest.fixture(scope="module")
def evaluator(loop_thread: LoopThread, fake: FakeCloud) -> Iterator[Any]:
    cloud = CloudConfig(
        azure=AzureConfig(endpoint=fake.url, key="not-the-right-key"),
        facepp=FaceppConfig(key=fakes.FACEPP_KEY, secret=fakes.FACEPP_SECRET, endpoint=fake.url),
    )
    _, settings = evaluator_server.load_settings(
        env={},
        cloud=cloud,
        cloud_backoff_seconds=0.01,
        cloud_backoff_max_seconds=0.05,
        backend_timeout_seconds=120,
    )
    server_settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)
    running = loop_thread.run(
        evaluator_server.serve(server_settings, settings, registry=CollectorRegistry())
    )
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def channel(evaluator: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(evaluator.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def ready(evaluator: Any, loop_thread: LoopThread) -> None:
    loop_thread.run(evaluator.wait_ready(timeout=600))


def _health(channel: grpc.Channel, service: str = SERVICE) -> int:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        .status
    )


def _image(person: str, n: int) -> common_pb2.Image:
    return common_pb2.Image(data=(PHOTOS / person / f"{person}_{n:02d}.jpg").read_bytes())


def _evaluate(channel: grpc.Channel, **fields: Any) -> evaluator_pb2.EvaluateResponse:
    return evaluator_pb2_grpc.EvaluatorStub(channel).Evaluate(
        evaluator_pb2.EvaluateRequest(**fields), timeout=300
    )


def test_health_turns_serving_after_the_models_load(
    evaluator: Any, channel: grpc.Channel, loop_thread: LoopThread
) -> None:
    first = _health(channel)
    assert first in (
        health_pb2.HealthCheckResponse.NOT_SERVING,
        health_pb2.HealthCheckResponse.SERVING,
    )
    if first == health_pb2.HealthCheckResponse.NOT_SERVING:
        try:
            _evaluate(channel, image=_image("barack", 1), reference_images=[_image("barack", 2)])
        except grpc.RpcError as exc:  # still loading: refused as unavailable, not failed
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        else:  # the models finished loading between the two calls: it must say so now
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    loop_thread.run(evaluator.wait_ready(timeout=600))
    assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_evaluator(evaluator: Any, channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    assert SERVICE in {s.name for r in responses for s in r.list_services_response.service}


GALLERY = {"leo": (2, 3), "barack": (4, 5), "meryl": (1, 2)}


def test_every_backend_answers_in_one_call_and_one_failure_spares_the_rest(
    ready: None, channel: grpc.Channel
) -> None:
    names = ["dlib", "sface", "facenet", "facepp", "azure", "rekognition"]
    response = _evaluate(
        channel,
        image=_image("barack", 1),
        reference_images=[_image("barack", 2), _image("barack", 3)],
        gallery=[
            evaluator_pb2.GalleryIdentity(name=n, images=[_image(n, i) for i in ids])
            for n, ids in GALLERY.items()
        ],
        recognizers=names,
        top_k=2,
    )
    verdicts = {v.recognizer: v for v in response.verdicts}
    assert [v.recognizer for v in response.verdicts] == names
    for name in ("dlib", "sface", "facenet", "facepp"):
        v = verdicts[name]
        assert v.configured and not v.error and v.verified, (name, v.error)
        assert v.match and v.threshold == pytest.approx(0.5) and 0.5 <= v.confidence <= 1.0
        assert [s.name for s in v.top_k][:1] == ["barack"] and len(v.top_k) == 2
    for name in (
        "dlib",
        "sface",
        "facenet",
    ):  # local: distances, and verification agrees with the ranking
        v = verdicts[name]
        assert v.distance > 0 and v.top_k[0].distance > 0
        # among the built-in decoys (barack's own left out), barack's photo is still barack
        assert (v.identified, v.rank, v.gallery_size) == (True, 1, 10), name
    # cloud APIs have no decoy gallery: the identification fields stay unset
    assert not any(verdicts["facepp"].HasField(f) for f in ("identified", "rank", "gallery_size"))
    # Not told which models were attacked: the default protection's (facenet, sface, faceres)
    # are white-box; faceres is no recogniser.
    assert [verdicts[n].white_box for n in names] == [False, True, True, False, False, False]
    told = _evaluate(
        channel,
        image=_image("barack", 1),
        reference_images=[_image("barack", 2)],
        recognizers=["dlib", "sface", "facenet"],
        attacked_models=["facenet512"],
    )
    assert [v.white_box for v in told.verdicts] == [False, False, False]
    azure = verdicts["azure"]
    assert (
        azure.configured
        and azure.error_kind == "auth"
        and "HTTP 401" in azure.error
        and not azure.verified
    )
    rekognition = verdicts["rekognition"]
    assert not rekognition.configured and not rekognition.error


def test_a_different_person_does_not_match(ready: None, channel: grpc.Channel) -> None:
    response = _evaluate(
        channel,
        image=_image("leo", 1),
        reference_images=[_image("barack", 2)],
        recognizers=["dlib", "sface", "facenet", "facepp"],
    )
    for v in response.verdicts:
        assert v.verified and not v.match and v.confidence < 0.5, v.recognizer


def test_api_threshold_is_reported(ready: None, channel: grpc.Channel) -> None:
    response = _evaluate(
        channel,
        image=_image("barack", 1),
        reference_images=[_image("barack", 2)],
        recognizers=["facepp", "sface"],
        use_api_threshold=True,
    )
    facepp, sface = response.verdicts
    assert facepp.threshold == pytest.approx(0.62327) and facepp.match
    assert sface.threshold == pytest.approx(0.5)


def test_a_photo_without_a_face_is_a_per_backend_error(ready: None, channel: grpc.Channel) -> None:
    blank = common_pb2.Image(data=encode(np.full((240, 320, 3), 180, np.uint8)))
    response = _evaluate(
        channel,
        image=blank,
        reference_images=[_image("barack", 2)],
        recognizers=["dlib", "sface", "facenet", "facepp"],
    )
    for v in response.verdicts:
        assert v.error_kind == "no_face" and "no face found in the photo" in v.error, v.recognizer


def test_unknown_recogniser_is_invalid_argument(ready: None, channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _evaluate(
            channel,
            image=_image("barack", 1),
            reference_images=[_image("barack", 2)],
            recognizers=["vggface"],
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "accepted: dlib, sface, facenet, facenet512, mobilefacenet, rekognition, azure, facepp"
        in info.value.details()
    )


@pytest.mark.parametrize(
    "fields,needle",
    [
        (
            {
                "image": common_pb2.Image(data=b"junk"),
                "reference_images": [common_pb2.Image(data=b"junk")],
            },
            "the photo: bytes are not an image",
        ),
        ({"reference_images": []}, "reference photos"),
        (
            {
                "gallery": [
                    evaluator_pb2.GalleryIdentity(name="a"),
                    evaluator_pb2.GalleryIdentity(name="a"),
                ]
            },
            "twice",
        ),
    ],
)
def test_bad_requests_are_invalid_argument(
    ready: None, channel: grpc.Channel, fields: dict[str, Any], needle: str
) -> None:
    request = {"image": _image("barack", 1), **fields}
    with pytest.raises(grpc.RpcError) as info:
        _evaluate(channel, **request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in info.value.details()
    assert "Traceback" not in info.value.details()
    assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_metrics_move(ready: None, evaluator: Any, channel: grpc.Channel) -> None:
    before = scrape_metrics(evaluator.metrics_port)
    _evaluate(
        channel,
        image=_image("meryl", 3),
        reference_images=[_image("meryl", 4)],
        recognizers=["sface", "azure"],
    )
    after = scrape_metrics(evaluator.metrics_port)
    calls = "faceoff_evaluator_backend_calls_total"
    for backend, outcome in (("sface", "ok"), ("azure", "auth")):
        assert (
            metric_value(after, calls, backend=backend, outcome=outcome)
            == metric_value(before, calls, backend=backend, outcome=outcome) + 1
        )
    assert metric_value(after, "faceoff_evaluator_backend_seconds_count", backend="sface") >= 1
    ok = "faceoff_evaluator_requests_total"
    assert (
        metric_value(after, ok, method="Evaluate", code="OK")
        == metric_value(before, ok, method="Evaluate", code="OK") + 1
    )
