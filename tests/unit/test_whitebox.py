"""The one white-box rule: which recognisers a protection has seen."""

from __future__ import annotations

import pytest

from faceoff.faces.whitebox import DEFAULT_ATTACKED_MODELS, attacked_models, is_white_box
from faceoff.masker.options import DEFAULT_PROFILE, PROFILES


@pytest.mark.parametrize(
    ("recognizer", "attacked", "expected"),
    [
        ("sface", ("facenet", "sface"), True),  # an ensemble member
        ("facenet", ("facenet512",), False),  # a default surrogate, not used this time
        ("dlib", ("facenet",), False),
        ("dlib", ("facenet", "dlib"), True),  # consulted in the adaptive loop
        ("facenet", (), True),  # not told: the default protection's surrogates
        ("dlib", (), False),
    ],
)
def test_white_box_is_membership_in_the_models_the_protection_used(
    recognizer: str, attacked: tuple[str, ...], expected: bool
) -> None:
    assert is_white_box(recognizer, attacked) is expected


def test_the_default_profile_attacks_the_models_an_evaluation_assumes() -> None:
    assert tuple(PROFILES[DEFAULT_PROFILE]["surrogates"]) == DEFAULT_ATTACKED_MODELS


def test_the_loop_recognisers_count_as_seen() -> None:
    assert attacked_models(["facenet"], ["dlib"]) == {"facenet", "dlib"}
    assert not is_white_box("dlib", attacked_models(["facenet"]))
    assert is_white_box("dlib", attacked_models(["facenet"], ["dlib"]))
