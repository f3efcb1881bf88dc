"""What ``faceoff protect --check`` prints about each recogniser, on verdicts made up for the test.

The verdicts are the SDK's own (:class:`faceoff.sdk.Verdict`) turned into a receipt's JSON, as
``faceoff protect`` prints them; the real ones come from the evaluator
(tests/integration/test_decoy_identification.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faceoff.cli.batch import Item, summary
from faceoff.cli.main import print_receipt
from faceoff.cli.verdicts import ordinal, overall_line, verdict_line, verdict_word
from faceoff.sdk import Verdict


def ranked(name: str, rank: int, size: int = 10, **kwargs: Any) -> dict[str, Any]:
    verdict = Verdict(
        recognizer=name,
        white_box=False,
        configured=True,
        confidence=0.9 if rank == 1 else 0.1,
        threshold=0.5,
        match=rank == 1,
        distance=0.3,
        identified=rank == 1,
        rank=rank,
        gallery_size=size,
    )
    doc = verdict.to_json()
    doc.update(kwargs)
    return doc


DLIB_FOOLED = ranked("dlib", 4, 11)
MOBILE_STILL = ranked("mobilefacenet", 1, 11)
SFACE_WHITE_BOX = ranked("sface", 3, white_box=True)
LOOP = ranked("facenet512", 2, white_box=True, in_loop=True)
CLOUD_MATCH = Verdict(
    recognizer="facepp",
    white_box=False,
    configured=True,
    confidence=0.82,
    threshold=0.5,
    match=True,
).to_json()
NOT_CONFIGURED = Verdict(recognizer="azure", white_box=False, configured=False).to_json()
NO_FACE = Verdict(
    recognizer="dlib",
    white_box=False,
    configured=True,
    error="dlib: no face found in the photo by dlib's frontal face detector",
    error_kind="no_face",
).to_json()


@pytest.mark.parametrize(
    ("n", "text"),
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (21, "21st")],
)
def test_ordinals(n: int, text: str) -> None:
    assert ordinal(n) == text


def test_each_recogniser_in_one_sentence() -> None:
    assert verdict_line(DLIB_FOOLED) == "dlib: not identified — you rank 4th of 11 (protected)"
    assert verdict_line(MOBILE_STILL) == (
        "mobilefacenet: still identifies you (rank 1 of 11) — not protected against this recogniser"
    )
    assert verdict_line(SFACE_WHITE_BOX) == (
        "sface: attacked by this profile: says nothing (you rank 3rd of 10)"
    )
    assert verdict_line(LOOP).startswith("facenet512: consulted while protecting this photo")
    assert verdict_line(CLOUD_MATCH) == (
        "facepp: still matches you to your photos (confidence 0.82, threshold 0.50) — "
        "not protected against this recogniser"
    )
    assert verdict_line(NOT_CONFIGURED).startswith("azure: not configured here")
    assert verdict_line(NO_FACE) == (
        "dlib: could not check (no_face): dlib: no face found in the photo by dlib's frontal face detector"
    )


def test_the_table_says_protected_not_protected_or_white_box() -> None:
    words = [
        verdict_word(v)
        for v in (DLIB_FOOLED, MOBILE_STILL, SFACE_WHITE_BOX, LOOP, CLOUD_MATCH, NOT_CONFIGURED)
    ]
    assert words == ["protected", "NOT protected", "white-box", "in-loop", "match", "n/a"]
    assert verdict_word(NO_FACE) == "no_face"


def test_one_line_says_whether_the_photo_is_protected() -> None:
    # only independent recognisers that ranked the person count
    assert overall_line([DLIB_FOOLED, SFACE_WHITE_BOX, CLOUD_MATCH]) == (
        "protected: no independent recogniser checked still identifies you (dlib)"
    )
    assert overall_line([MOBILE_STILL, SFACE_WHITE_BOX]) == (
        "NOT protected: every independent recogniser checked still identifies you (mobilefacenet)"
    )
    assert overall_line([DLIB_FOOLED, MOBILE_STILL]) == (
        "partly protected: dlib no longer identifies you; mobilefacenet still does"
    )
    assert overall_line([SFACE_WHITE_BOX, LOOP, NO_FACE]).startswith(
        "protection not measured: no independent recogniser ranked you"
    )


def test_the_receipt_puts_the_verdicts_before_the_faces(capsys: pytest.CaptureFixture[str]) -> None:
    face = {
        "index": 0,
        "target": None,
        "psnr": 37.04,
        "ssim": 0.95,
        "butteraugli": 5.1,
        "butteraugli_native": 5.6,
        "l2": 3.2,
        "distance_before": 0.0,
        "distance_after": 1.1,
    }
    receipt = {
        "width": 640,
        "height": 480,
        "format": "JPEG",
        "faces_found": 1,
        "faces_protected": 1,
        "seconds": 12.0,
        "profile": "medium",
        "faces": [face],
        "verdicts": [DLIB_FOOLED, MOBILE_STILL, SFACE_WHITE_BOX],
    }
    print_receipt(receipt, Path("out/me.protected.jpg"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("out/me.protected.jpg: 640x480 JPEG")
    assert lines[1:5] == [
        "  partly protected: dlib no longer identifies you; mobilefacenet still does",
        "    dlib: not identified — you rank 4th of 11 (protected)",
        "    mobilefacenet: still identifies you (rank 1 of 11) — not protected against this recogniser",
        "    sface: attacked by this profile: says nothing (you rank 3rd of 10)",
    ]
    assert lines[5].startswith("  face 0: PSNR 37.0 dB") and len(lines) == 6
    # several faces: the checks are about the largest
    print_receipt({**receipt, "faces_found": 2}, Path("out/me.protected.jpg"))
    assert capsys.readouterr().out.splitlines()[1].endswith("(largest face)")


def test_the_summary_table_has_a_column_per_check() -> None:
    receipt = {
        "status": "protected",
        "faces_found": 1,
        "faces_protected": 1,
        "seconds": 2.0,
        "faces": [{"psnr": 37.0, "distance_before": 0.1, "distance_after": 0.9}],
        "verdicts": [DLIB_FOOLED, MOBILE_STILL, SFACE_WHITE_BOX],
    }
    item = Item(Path("a.jpg"), Path("out/a.protected.jpg"), receipt)
    row = summary([item], ["dlib", "mobilefacenet", "sface"], 2.0).splitlines()[1]
    assert "  protected  NOT protected  white-box  out/a.protected.jpg" in row
