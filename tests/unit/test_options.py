"""Profiles resolve to checked options; every bad value names its field."""

from __future__ import annotations

import pytest

from faceoff.common.errors import InvalidOption
from faceoff.masker.options import PROFILES, resolve


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_resolves(profile: str) -> None:
    o = resolve(profile)
    assert o.profile == profile and o.epsilon > 0 and o.alpha > 0 and o.iterations >= 1
    assert o.learning_rate == pytest.approx(2.5 * o.epsilon / o.iterations)  # Madry's PGD step


def test_overrides_win_and_epsilon_follows_the_norm() -> None:
    assert resolve("medium", alpha=4.0).alpha == 4.0
    l2, linf = resolve("medium", norm="l2"), resolve("medium")
    assert l2.epsilon > 0.5 and linf.epsilon < 0.05
    assert resolve("medium", epsilon=0.7).epsilon == 0.7
    assert resolve("medium", attack="cw").learning_rate != resolve("medium").learning_rate


def test_cw_drops_the_profiles_pgd_shaping_and_work_size() -> None:
    cw = resolve("medium", attack="cw", norm="l2")
    assert (cw.feather, cw.chroma, cw.texture, cw.work_size) == (0, 1, 0, 0)
    medium = resolve("medium")
    assert medium.norm == "linf" and medium.work_size == 512 and medium.feather > 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"norm": "linf", "epsilon": 2.0}, "epsilon"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -2.0}, "alpha"),
        ({"attack": "fgsm"}, "attack"),
        ({"norm": "l1"}, "norm"),
        ({"loss": "triplet"}, "loss"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 10**9}, "iterations"),
        ({"kappa": -0.1}, "kappa"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"initial_const": -1.0}, "initial_const"),
        ({"attack": "cw", "search_steps": 0}, "search_steps"),
        ({"attack": "cw", "iterations": 5000, "search_steps": 10}, "iterations x search_steps"),
        ({"face_indices": (-1,)}, "face_indices"),
        ({"seed": -5}, "seed"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"target": "barack"}, "target"),
        ({"bogus": 1}, "unknown option"),
    ],
)
def test_invalid_values_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidOption) as info:
        resolve("medium", **overrides)
    assert field in info.value.message
    assert info.value.status == "INVALID_ARGUMENT"


def test_unknown_profile() -> None:
    with pytest.raises(InvalidOption, match="profile must be one of low, medium, high"):
        resolve("extreme")


def test_the_masker_fills_exactly_the_contract_s_profiles() -> None:
    import faceoff.sdk
    from faceoff.masker.options import DEFAULT_PROFILE, PROFILE_NAMES, PROFILES, resolve

    assert tuple(PROFILES) == PROFILE_NAMES == faceoff.sdk.PROFILES
    assert resolve(None).profile == resolve("").profile == DEFAULT_PROFILE
    assert DEFAULT_PROFILE == faceoff.sdk.DEFAULT_PROFILE
