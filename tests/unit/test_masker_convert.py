"""The masker's resolved options travel back to the client in every response."""

from __future__ import annotations

import pytest

from faceoff.masker.convert import options_from_proto, options_to_proto
from faceoff.masker.options import resolve
from faceoff.v1 import masker_pb2


@pytest.mark.parametrize(
    "options",
    [
        resolve(),
        resolve("low", seed=4),
        resolve(
            "high",
            attack="cw",
            norm="linf",
            loss="hinge",
            targeted=True,
            target="leo",
            faces=(0, 2),
            strip_gps=True,
            kappa=0.5,
        ),
        resolve(
            "medium",
            momentum=0.9,
            diversity=0.5,
            ti_kernel=7,
            eot=0.25,
            surrogates=("facenet", "facenet512"),
            surrogate_weights=(2.0, 1.0),
            adaptive_alpha=True,
            psnr_floor=33.0,
            loop_recognizers=("facenet512", "sface"),
        ),
    ],
)
def test_resolved_options_round_trip(options: object) -> None:
    msg = options_to_proto(options)  # type: ignore[arg-type]
    assert (
        msg.mode in (masker_pb2.MODE_TARGETED, masker_pb2.MODE_UNTARGETED)
        and msg.attack
        and msg.norm
        and msg.loss
    )
    for name in (
        "epsilon",
        "iterations",
        "learning_rate",
        "kappa",
        "alpha",
        "initial_const",
        "search_steps",
        "seed",
    ):
        assert msg.HasField(name), f"{name} is not set"
    back = options_from_proto(msg)
    for name in (
        "profile",
        "attack",
        "norm",
        "loss",
        "targeted",
        "target",
        "iterations",
        "search_steps",
        "seed",
        "faces",
        "strip_gps",
        "ti_kernel",
        "surrogates",
        "surrogate_weights",
        "adaptive_alpha",
        "loop_recognizers",
    ):
        assert getattr(back, name) == getattr(options, name), name
    for name in (
        "epsilon",
        "learning_rate",
        "kappa",
        "alpha",
        "initial_const",
        "momentum",
        "diversity",
        "eot",
        "psnr_floor",
    ):  # float32 on the wire
        assert getattr(back, name) == pytest.approx(getattr(options, name), rel=1e-6), name
