"""The masker's surrogate cache stays bounded however many ensemble weights clients send.

Every new ``surrogate_weights`` value used to build and keep an ensemble, a decoy gallery and a
new trace of the attack (+330 MB and 21 s each on the masker): any client could take a pod down.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from faceoff.masker import surrogates as surrogates_module
from faceoff.masker.attacks import _compile
from faceoff.masker.options import resolve
from faceoff.masker.surrogates import MAX_WEIGHTED_ENSEMBLES, Surrogates
from tests.unit.test_attacks import ToyEmbedding


class Named(ToyEmbedding):
    def __init__(self, name: str, seed: int) -> None:
        super().__init__(seed)
        self.name = name


@pytest.fixture()
def held(monkeypatch: pytest.MonkeyPatch) -> Surrogates:
    members = {"facenet": Named("facenet", 0), "sface": Named("sface", 1)}
    monkeypatch.setattr(surrogates_module, "load_surrogate", members.__getitem__)
    return Surrogates(model=members["facenet"])


def test_weighted_ensembles_are_bounded_and_evicted_ones_are_freed(held: Surrogates) -> None:
    refs = []
    for i in range(3 * MAX_WEIGHTED_ENSEMBLES):
        o = resolve("medium", surrogates=("facenet", "sface"), surrogate_weights=(1.0, 1.0 + i))
        model = held.model_for(o)
        held.gallery_for(model)
        held.attack_model(model, o)
        _compile.compiled(model, "step", lambda ref: object())  # what a traced step holds
        refs.append(weakref.ref(model))
        del model
        assert held.weighted_ensembles <= MAX_WEIGHTED_ENSEMBLES
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert len(alive) == MAX_WEIGHTED_ENSEMBLES, "evicted ensembles must be garbage"
    assert alive == refs[-MAX_WEIGHTED_ENSEMBLES:], "the most recently used are kept"
    with _compile._cache_lock:
        assert all(ref() is not None for ref, _ in _compile._cache.values()), (
            "an evicted ensemble's traced steps go with it"
        )


def test_a_reused_ensemble_is_kept_and_equal_weights_are_never_evicted(held: Surrogates) -> None:
    equal = held.model_for(resolve("medium", surrogates=("facenet", "sface")))
    first = resolve("medium", surrogates=("facenet", "sface"), surrogate_weights=(1.0, 2.0))
    favourite = held.model_for(first)
    for i in range(2 * MAX_WEIGHTED_ENSEMBLES):
        held.model_for(first)  # used between every newcomer: never the least recent
        held.model_for(
            resolve("medium", surrogates=("facenet", "sface"), surrogate_weights=(1.0, 3.0 + i))
        )
    assert held.model_for(first) is favourite
    assert held.model_for(resolve("medium", surrogates=("facenet", "sface"))) is equal


def test_an_evicted_model_still_in_use_is_not_cached_under_its_id(held: Surrogates) -> None:
    o = resolve("medium", surrogates=("facenet", "sface"), surrogate_weights=(1.0, 2.0))
    in_use = held.model_for(o)
    for i in range(MAX_WEIGHTED_ENSEMBLES):
        held.model_for(
            resolve("medium", surrogates=("facenet", "sface"), surrogate_weights=(2.0, 3.0 + i))
        )
    assert held.gallery_for(in_use).surrogate == in_use.name  # still served, built afresh
    assert held.gallery_for(in_use) is not held.gallery_for(in_use)
    assert held.attack_model(in_use, o).input_size == held.work_side(o)


def test_weighted_ensembles_left_idle_are_forgotten(
    held: Surrogates, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(surrogates_module.time, "monotonic", lambda: clock[0])
    equal = held.model_for(resolve("medium", surrogates=("facenet", "sface")))
    old = resolve("medium", surrogates=("facenet", "sface"), surrogate_weights=(1.0, 2.0))
    recent = resolve("medium", surrogates=("facenet", "sface"), surrogate_weights=(1.0, 3.0))
    ref = weakref.ref(held.model_for(old))
    clock[0] += 50
    kept = held.model_for(recent)
    clock[0] += 20  # old: idle 70 s; recent: 20 s
    assert held.expire_idle(60.0) == 1 and held.weighted_ensembles == 1
    gc.collect()
    assert ref() is None, "a forgotten ensemble is garbage"
    assert held.model_for(recent) is kept
    assert held.model_for(resolve("medium", surrogates=("facenet", "sface"))) is equal
    clock[0] += 61
    assert held.expire_idle(60.0) == 1 and held.weighted_ensembles == 0
