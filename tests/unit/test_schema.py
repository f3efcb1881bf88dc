"""One option schema: the contract declares what each protection option accepts, and the masker's
options, its checks, the attack batch key, the SDK's keywords and the command's flags follow it."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from faceoff.common.errors import InvalidOption
from faceoff.masker.options import WIRE_NAMES, ProtectionOptions, resolve
from faceoff.masker.schema import OPTIONS, OptionSpec
from faceoff.sdk._convert import OPTION_NAMES, ProtectOptions

#: ProtectionOptions attributes that are the masker's own, not request options.
INTERNAL = {"profile", "margin"}


def test_every_declared_option_is_a_protection_option_and_back() -> None:
    attributes = {f.name for f in dataclasses.fields(ProtectionOptions)} - INTERNAL
    # one name per option from the command line to the attack: the contract's alias where it
    # declares one (mode: targeted, face_indices: faces), else the wire's name
    assert {spec.keyword for spec in OPTIONS.values()} == attributes
    assert WIRE_NAMES == {"face_indices": "faces"}
    # the wire's name still resolves, for one release
    assert resolve(face_indices=(1, 3)).faces == resolve(faces=(1, 3)).faces == (1, 3)


def test_the_sdk_takes_every_declared_option_as_a_keyword() -> None:
    keywords = {spec.keyword for spec in OPTIONS.values()} - {"target", "seed"}
    detect = {"min_face_size", "min_confidence", "max_faces"}
    assert set(OPTION_NAMES) == keywords | detect
    assert set(typing.get_type_hints(ProtectOptions)) == set(OPTION_NAMES), (
        "the SDK's typed keywords (ProtectOptions) list exactly the declared options"
    )


def test_the_command_has_a_flag_per_declared_option() -> None:
    from faceoff.cli import build_parser

    protect = build_parser().parse_args(["protect", "x.jpg", "-o", "out"])
    for spec in OPTIONS.values():
        assert hasattr(protect, spec.keyword), spec.keyword


def test_the_batch_key_is_the_options_declared_part_of_the_attack() -> None:
    base = resolve("medium")
    changed = {"alpha": 2.0, "seed": 9, "psnr_floor": 40.0, "strip_gps": True}
    for name, value in changed.items():
        assert not OPTIONS[name].attack
        assert dataclasses.replace(base, **{name: value}).batch_key() == base.batch_key()
    for name, value in {"iterations": 7, "momentum": 0.5, "surrogates": ("facenet",)}.items():
        assert OPTIONS[name].attack
        assert dataclasses.replace(base, **{name: value}).batch_key() != base.batch_key()


def _bounded() -> list[tuple[str, OptionSpec]]:
    return [
        (name, spec)
        for name, spec in OPTIONS.items()
        if spec.kind in ("int", "float") and not spec.repeated
    ]


def _outside(spec: OptionSpec) -> list[float]:
    a, out = spec.accepts, []
    if spec.min is not None:
        out.append(spec.min if a.min_exclusive else spec.min - (1 if spec.kind == "int" else 1e-3))
    if spec.max is not None:
        out.append(spec.max if a.max_exclusive else spec.max + (1 if spec.kind == "int" else 1e-3))
    return [v for v in out if v not in a.also and not (spec.kind == "int" and v < 0)]


@pytest.mark.parametrize(("name", "spec"), _bounded(), ids=[n for n, _ in _bounded()])
def test_each_declared_bound_is_enforced_and_named(name: str, spec: OptionSpec) -> None:
    extra = (
        {"attack": "cw", "momentum": 0, "diversity": 0, "ti_kernel": 0, "eot": 0}
        if name
        in (
            "search_steps",
            "initial_const",
        )
        else {}
    )
    for value in _outside(spec):
        value = int(value) if spec.kind == "int" else value
        with pytest.raises(InvalidOption) as info:
            resolve("medium", **extra, **{name: value})
        assert info.value.message.startswith(f"{name} must be"), info.value.message
    if spec.kind == "float":
        with pytest.raises(InvalidOption, match=f"{name} must be a finite number"):
            resolve("medium", **extra, **{name: math.nan})


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("surrogates", ("facenet", "facenet")),
        ("surrogates", ("vgg",)),
        ("loop_recognizers", ("x",)),
    ],
)
def test_declared_names_are_enforced(name: str, bad: tuple[str, ...]) -> None:
    with pytest.raises(InvalidOption, match=f"{name} must be distinct names from"):
        resolve("medium", **{name: bad})


def test_the_attacks_bounds_are_the_declared_ones() -> None:
    from faceoff.masker.attacks.base import MAX_ITERATIONS
    from faceoff.masker.attacks.cw import MAX_SEARCH_STEPS
    from faceoff.masker.attacks.transfer import MAX_TI_KERNEL

    assert (MAX_ITERATIONS, MAX_SEARCH_STEPS, MAX_TI_KERNEL) == (
        OPTIONS["iterations"].max,
        OPTIONS["search_steps"].max,
        OPTIONS["ti_kernel"].max,
    )
