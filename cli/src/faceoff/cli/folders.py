"""Folders of photos a command reads: the person's reference photos, a gallery of identities."""

from __future__ import annotations

from pathlib import Path

from faceoff.cli.paths import IMAGE_SUFFIXES


def read_reference_dir(folder: Path) -> list[bytes]:
    """The bytes of every photo in ``folder`` (sorted by name)."""
    if not folder.is_dir():
        raise SystemExit(f"faceoff: --reference {folder} is not a folder")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise SystemExit(
            f"faceoff: --reference {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})"
        )
    return [p.read_bytes() for p in photos]


def read_gallery_dir(folder: Path) -> dict[str, list[bytes]]:
    """``{identity: [photo bytes]}`` from one sub-folder of photos per identity (sorted by name)."""
    if not folder.is_dir():
        raise SystemExit(f"faceoff: --gallery {folder} is not a folder")
    gallery = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            gallery[sub.name] = [p.read_bytes() for p in photos]
    if not gallery:
        raise SystemExit(
            f"faceoff: --gallery {folder} has no sub-folders with photos ({', '.join(IMAGE_SUFFIXES)})"
        )
    return gallery
