"""``faceoff bench transfer``'s option parsing and its verdict on the transfer goal."""

from __future__ import annotations

from typing import Any

import pytest

from faceoff.cli.bench.transfer import goal, parse_settings
from faceoff.masker.options import resolve


def test_settings_parse_to_the_option_types() -> None:
    got = parse_settings(
        [
            "momentum=1",
            "ti_kernel=5",
            "surrogates=facenet,facenet512",
            "adaptive_alpha=true",
            "surrogate_weights=2,1",
            "loop-recognizers=sface",
        ]
    )
    assert got == {
        "momentum": 1.0,
        "ti_kernel": 5,
        "surrogates": ("facenet", "facenet512"),
        "adaptive_alpha": True,
        "surrogate_weights": (2.0, 1.0),
        "loop_recognizers": ("sface",),
    }
    resolve("medium", **got)  # and they are valid options


@pytest.mark.parametrize(
    "item", ["momentum", "nonsense=1", "profile=high", "ti_kernel=five", "adaptive_alpha=maybe"]
)
def test_bad_settings_are_refused_with_the_accepted_names(item: str) -> None:
    with pytest.raises(SystemExit, match="--set"):
        parse_settings([item])


def _rec(
    evasion: float, platform: float, white_box: bool = False, in_loop: bool = False
) -> dict[str, Any]:
    return {
        "evasion_rate": evasion,
        "evasion_rate_jpeg75_half": platform,
        "white_box": white_box,
        "in_loop": in_loop,
    }


def test_goal_is_judged_on_independent_recognisers_only() -> None:
    per_rec = {
        "dlib": _rec(0.96, 0.93),
        "sface": _rec(0.40, 0.30, in_loop=True),
        "facenet": _rec(0.1, 0.1, white_box=True),
    }
    g = goal(per_rec, 32.5)
    assert g["met"] and g["judged_on"] == ["dlib"] and g["min_evasion"] == 0.96
    assert not goal(per_rec, 31.9)["met"], "PSNR under 32 dB"
    per_rec["dlib"] = _rec(0.99, 0.90)
    assert not goal(per_rec, 35)["met"], "9 points lost on the platform copy"
    assert not goal({"facenet": _rec(1, 1, white_box=True)}, 40)["met"], (
        "nothing independent to judge on"
    )
