"""Identification among decoys through the real path: SDK -> channel -> evaluator -> real models.

An evaluator service runs the two independent judges, dlib and mobilefacenet, with their real
models and built-in galleries of the ten public figures of the shared set; the SDK asks it about
clean (unprotected) shared photos. A clean photo must be picked out: rank 1, with the person's
own public-figure decoy left out of the gallery (the person is one of the ten).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from faceoff.common.settings import ServerSettings
from faceoff.evaluator import server as evaluator_server
from faceoff.sdk import Client
from tests.conftest import PHOTOS, LoopThread

pytestmark = pytest.mark.slow

JUDGES = ["dlib", "mobilefacenet"]


@pytest.fixture(scope="module")
def client(loop_thread: LoopThread) -> Iterator[Client]:
    _, settings = evaluator_server.load_settings(
        env={}, local_recognizers=",".join(JUDGES), backend_timeout_seconds=300
    )
    server_settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)
    running: Any = loop_thread.run(
        evaluator_server.serve(server_settings, settings, registry=CollectorRegistry())
    )
    loop_thread.run(running.wait_ready(timeout=600))
    with Client(running.address, timeout=300) as c:
        yield c
    loop_thread.run(running.stop(0))


def photo(person: str, n: int) -> bytes:
    return (PHOTOS / person / f"{person}_{n:02d}.jpg").read_bytes()


def test_a_clean_photo_is_identified_at_rank_1_by_both_judges(client: Client) -> None:
    verdicts = client.evaluate(photo("barack", 1), [photo("barack", 2), photo("barack", 3)], JUDGES)
    assert [v.recognizer for v in verdicts] == JUDGES
    for v in verdicts:
        assert v.configured and not v.error and not v.white_box, (v.recognizer, v.error)
        # the ten public figures less barack himself, plus the person
        assert (v.identified, v.rank, v.gallery_size) == (True, 1, 10), v.recognizer


def test_the_original_photo_as_reference_is_identified_too(client: Client) -> None:
    # what faceoff protect --check sends without --reference: the original photo is the person
    original = photo("meryl", 2)
    for v in client.evaluate(original, [original], JUDGES):
        assert (v.identified, v.rank, v.gallery_size) == (True, 1, 10), v.recognizer
        assert v.match and v.confidence is not None and v.confidence > 0.99, v.recognizer


def test_someone_else_is_not_identified_as_the_person(client: Client) -> None:
    # leo's photo against barack's references: someone among the decoys is nearer than barack
    for v in client.evaluate(photo("leo", 1), [photo("barack", 2), photo("barack", 3)], JUDGES):
        assert v.identified is False and v.rank is not None and v.rank > 1, v.recognizer
