"""``faceoff protect``'s batch planning: output names, file-or-folder, collisions, leftovers, the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceoff.cli.batch import (
    Item,
    PlanError,
    output_name,
    photos_in,
    plan,
    remove_leftovers,
    summary,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_outputs_keep_the_name_and_format_except_gif() -> None:
    assert output_name(Path("a/IMG_1.JPG")) == "IMG_1.protected.JPG"
    assert output_name(Path("b.jpeg")) == "b.protected.jpeg"
    assert output_name(Path("c.gif")) == "c.protected.png"
    assert output_name(Path("d.tiff")) == "d.protected.tiff"


def test_folders_give_their_photos_but_not_hidden_files_or_outputs(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.png", ".hidden.jpg", "a.protected.png", "notes.txt"):
        _touch(tmp_path / name)
    (tmp_path / "sub").mkdir()
    assert [p.name for p in photos_in(tmp_path)] == ["a.png", "b.jpg"]


def test_one_photo_may_name_its_output_file(tmp_path: Path) -> None:
    photo = _touch(tmp_path / "in" / "me.jpg")
    items, folder = plan([photo], tmp_path / "out" / "mine.jpg")
    assert not folder and [i.output for i in items] == [tmp_path / "out" / "mine.jpg"]
    for output in (tmp_path / "out", Path(f"{tmp_path / 'new'}/")):
        items, folder = plan([photo], output)
        assert folder and items[0].output.name == "me.protected.jpg"
    (tmp_path / "existing.jpg").mkdir()  # a folder that happens to have a suffix
    items, folder = plan([photo], tmp_path / "existing.jpg")
    assert folder and items[0].output == tmp_path / "existing.jpg" / "me.protected.jpg"


def test_several_inputs_write_into_a_folder_and_may_not_collide(tmp_path: Path) -> None:
    a = _touch(tmp_path / "x" / "a.jpg")
    b = _touch(tmp_path / "y" / "b.gif")
    items, folder = plan(
        [a, b, tmp_path / "y"], tmp_path / "out.jpg"
    )  # b is named twice: protected once
    assert folder and [(i.source, i.output.name) for i in items] == [
        (a, "a.protected.jpg"),
        (b, "b.protected.png"),
    ]
    _touch(tmp_path / "z" / "a.jpg")
    with pytest.raises(PlanError, match="would both be written"):
        plan([a, tmp_path / "z"], tmp_path / "out")
    with pytest.raises(PlanError, match="does not exist"):
        plan([tmp_path / "nope.jpg"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlanError, match="holds no photos"):
        plan([tmp_path / "empty"], tmp_path / "out")


def test_leftovers_of_an_output_are_removed_and_nothing_else(tmp_path: Path) -> None:
    output = tmp_path / "a.protected.jpg"
    mine = _touch(tmp_path / ".a.protected.jpg.1a2b3c4d.part")
    other = _touch(tmp_path / ".b.protected.jpg.1a2b3c4d.part")
    finished = _touch(output)
    remove_leftovers(output)
    assert not mine.exists() and other.exists() and finished.exists()


def test_summary_lists_every_photo_and_the_totals() -> None:
    face = {"psnr": 41.234, "distance_before": 0.1, "distance_after": 0.9}
    items = [
        Item(
            Path("a.jpg"),
            Path("out/a.protected.jpg"),
            {
                "status": "protected",
                "faces_found": 2,
                "faces_protected": 2,
                "seconds": 2.5,
                "faces": [face, {**face, "psnr": 38.0}],
                "verdicts": [
                    {
                        "recognizer": "dlib",
                        "configured": True,
                        "match": False,
                        "identified": False,
                        "rank": 4,
                        "gallery_size": 10,
                    },
                    {
                        "recognizer": "sface",
                        "configured": True,
                        "error": "no face",
                        "error_kind": "no_face",
                    },
                ],
            },
        ),
        Item(Path("b.jpg"), Path("out/b.protected.jpg"), {"status": "skipped"}),
        Item(
            Path("c.jpg"),
            Path("out/c.protected.jpg"),
            {"status": "failed", "code": "INVALID_ARGUMENT"},
        ),
    ]
    lines = summary(items, ["dlib", "sface"], 9.0).splitlines()
    assert lines[0].split()[:2] == ["photo", "status"] and lines[0].split()[-3:] == [
        "dlib",
        "sface",
        "output",
    ]
    assert lines[1].split() == [
        "a.jpg",
        "protected",
        "2/2",
        "38.0",
        "0.10",
        "->",
        "0.90",
        "2.5",
        "protected",
        "no_face",
        "out/a.protected.jpg",
    ]
    assert lines[2].split() == ["b.jpg", "skipped", "out/b.protected.jpg"]
    assert lines[-1] == "3 photo(s): 1 protected, 1 skipped, 1 failed in 9.0 s"
