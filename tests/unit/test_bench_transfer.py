"""``faceoff bench transfer``'s option parsing and its verdict on the transfer goal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceoff.bench.transfer import contact_sheet, goal, judged_recognizers, parse_settings, plot
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
    assert g["visibility_judged_by"] == "psnr", "no Butteraugli figures: judged by PSNR"
    assert not goal(per_rec, 31.9)["met"], "PSNR under 32 dB"
    per_rec["dlib"] = _rec(0.99, 0.90)
    assert not goal(per_rec, 35)["met"], "9 points lost on the platform copy"
    assert not goal({"facenet": _rec(1, 1, white_box=True)}, 40)["met"], (
        "nothing independent to judge on"
    )


def test_goal_judges_visibility_by_butteraugli_when_measured() -> None:
    per_rec = {"dlib": _rec(0.91, 0.88), "facenet512": _rec(0.95, 0.93)}
    looks = {"butteraugli_median": 5.0, "butteraugli_p90": 9.5}
    g = goal(per_rec, 20.0, looks)  # a low PSNR does not matter once Butteraugli is measured
    assert g["met"] and g["visibility_judged_by"] == "butteraugli"
    assert not goal(per_rec, 40.0, {**looks, "butteraugli_median": 5.6})["met"]
    assert not goal(per_rec, 40.0, {**looks, "butteraugli_p90": 10.5})["met"]
    per_rec["dlib"] = _rec(0.89, 0.89)
    assert not goal(per_rec, 40.0, looks)["met"], "under 90% evasion on dlib"
    fallback = goal({"dlib": _rec(0.95, 0.95)}, 33.0, {"butteraugli_median": None})
    assert fallback["met"] and fallback["visibility_judged_by"] == "psnr"


def test_contact_sheet_shows_the_worst_and_best_faces(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    faces = [
        {
            "label": f"p{i}.jpg face 0",
            "butteraugli": float(i),
            "psnr": 35.0,
            "config": "medium",
            "original": rng.integers(0, 255, (40 + i, 30, 3), dtype=np.uint8),
            "protected": rng.integers(0, 255, (40 + i, 30, 3), dtype=np.uint8),
        }
        for i in range(20)
    ]
    path = tmp_path / "sheet.png"
    contact_sheet(faces, path, each=2)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 3 * (2 * 30 + 6 + 10)
        # 4 faces (2 worst, 2 best) in 2 rows of 3 columns
        assert img.height > 2 * (40 + 36) and img.height < 3 * (59 + 36 + 10) + 28


def test_frontier_plot_reads_runs(tmp_path: Path) -> None:
    row = {
        "alpha": 1.0,
        "butteraugli_median": 4.0,
        "butteraugli_p90": 7.0,
        "psnr_face_mean": 40.0,
        "recognizers": {
            "dlib": {**_rec(0.9, 0.85), "clean_top1": 1.0},
            "facenet": {**_rec(1, 1, white_box=True), "clean_top1": 1.0},
        },
    }
    runs = [{"label": "a", "probes": 5, "results": [row]}, {"probes": 5, "results": [row]}]
    path = tmp_path / "frontier.png"
    plot(runs, path)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 400
    assert judged_recognizers(runs[0]) == ["dlib"]


def test_native_faces_are_the_face_centre_at_one_to_one() -> None:
    from faceoff.bench.transfer import native_faces

    original = np.zeros((600, 800, 3), np.uint8)
    protected = original.copy()
    protected[300, 400] = 255  # the box's centre
    ((before, after),) = native_faces(original, protected, [(300.0, 200.0, 200.0, 200.0)], 100)
    assert before.shape == after.shape == (100, 100, 3), "the centre, side pixels square"
    assert after[50, 50].tolist() == [255, 255, 255] and not before.any()
    # a window smaller than side is shown whole (box + 25% of 40 px: 60 px)
    ((small, _),) = native_faces(original, protected, [(10.0, 10.0, 40.0, 40.0)], 100)
    assert small.shape == (60, 60, 3)


def test_contact_sheet_adds_the_native_view_when_faces_carry_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    face = {
        "label": "p.jpg face 0",
        "butteraugli": 4.0,
        "psnr": 36.0,
        "config": "medium",
        "original": rng.integers(0, 255, (50, 40, 3), dtype=np.uint8),
        "protected": rng.integers(0, 255, (50, 40, 3), dtype=np.uint8),
    }
    native = {
        "native_original": rng.integers(0, 255, (90, 90, 3), dtype=np.uint8),
        "native_protected": rng.integers(0, 255, (90, 90, 3), dtype=np.uint8),
    }
    plain, both = tmp_path / "plain.png", tmp_path / "both.png"
    contact_sheet([face], plain)
    contact_sheet([{**face, **native}], both)
    with Image.open(plain) as a, Image.open(both) as b:
        # title 28, then the cell: its tallest tile, two caption lines (36), a 10 px gap
        assert a.height == 28 + 50 + 36 + 10, "without it the displayed pair sets the height"
        assert b.height == 28 + 90 + 36 + 10, "the taller native pair sets the cell's height"
        # the protected native tile stands 1:1 beside the displayed pair (first cell)
        x = 2 * (40 + 6) + 12 + 90 + 6
        got = np.asarray(b)[28 : 28 + 90, x : x + 90]
        assert np.array_equal(got, native["native_protected"])
    # a face shown at its native size already gets no second, identical pair
    same = {"native_original": face["original"], "native_protected": face["protected"]}
    contact_sheet([{**face, **same}], tmp_path / "same.png")
    with Image.open(tmp_path / "same.png") as c:
        assert c.height == 28 + 50 + 36 + 10


class _ColourRecognizer:
    """A fake recogniser: a photo's embedding is its first pixel's colour."""

    def embed(self, face: Any) -> np.ndarray:
        return face.photo.pixels[0, 0].astype(np.float64)

    @staticmethod
    def centroid(embeddings: np.ndarray) -> np.ndarray:
        return embeddings.mean(axis=0)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def test_a_held_out_decoy_is_not_ranked_so_a_face_taken_for_it_is_not_protected() -> None:
    from faceoff.bench.transfer import _Gallery

    colours = {"ann": (10, 10, 10), "bob": (200, 200, 200), "cy": (90, 90, 90)}
    paths = {name: [Path(f"{name}_{k}.png") for k in range(2)] for name in colours}
    photos = {p: _png(colours[name]) for name, ps in paths.items() for p in ps}
    gallery = _Gallery(_ColourRecognizer(), paths, photos)  # type: ignore[arg-type]
    pulled_to_bob = np.array([180.0, 180.0, 180.0])  # a face moved nearly onto bob
    assert gallery.rank(pulled_to_bob, paths["ann"][0]) == ["bob", "cy", "ann"]
    # bob held out: the face is nearer cy than ann, so it passes for someone else...
    assert gallery.rank(pulled_to_bob, paths["ann"][0], {"bob"}) == ["cy", "ann"]
    # ...while a face only a little off ann is still ann's once bob is out
    assert gallery.rank(np.array([30.0, 30.0, 30.0]), paths["ann"][0], {"bob"})[0] == "ann"
