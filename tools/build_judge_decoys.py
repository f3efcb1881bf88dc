"""Regenerate the evaluator's decoy galleries ``services/evaluator/src/faceoff/evaluator/data/decoys_<recogniser>.json``.

Usage: ``.venv/bin/python tools/build_judge_decoys.py [--recognizers dlib,mobilefacenet] [--data ../shared/data/faceoff-celebs/photos]``

For each local recogniser and each public figure of the shared celebrity set (one folder of full
photos each), the decoy is the recogniser's centroid (``EmbeddingRecognizer.centroid``) of its
embeddings of the photos, each found and aligned by the recogniser's own detector
(``EmbeddingRecognizer.embed``); a photo in which it finds no face is left out and the count of
photos used is recorded. Each file records its provenance: the recogniser, the SHA-256 of every
model file it ran (``faceoff.common.assets``), the source and this tool. Deterministic for the
same weights and photos. Only public figures' embeddings are written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "services/evaluator/src/faceoff/evaluator/data"

#: The model files (``faceoff.common.assets`` names) each recogniser runs.
WEIGHTS: dict[str, tuple[str, ...]] = {
    "dlib": ("dlib_resnet", "dlib_shape5"),
    "sface": ("sface", "yunet"),
    "facenet": ("facenet",),
    "facenet512": ("facenet512",),
    "mobilefacenet": ("mobilefacenet_json", "mobilefacenet_bin", "yunet"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def build(name: str, data: Path) -> dict[str, object]:
    """The gallery document of recogniser ``name`` from the identity folders in ``data``."""
    from faceoff.common import assets
    from faceoff.common.errors import NoFaceFound
    from faceoff.evaluator.decoys import file_name
    from faceoff.faces.recognizers import get_local
    from faceoff.faces.recognizers.base import FacePhoto

    recognizer = get_local(name)
    centroids: dict[str, list[float]] = {}
    used: dict[str, int] = {}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        embeddings = []
        for photo in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                face = FacePhoto.from_bytes(photo.read_bytes(), label=photo.name)
                embeddings.append(recognizer.embed(face))
            except NoFaceFound:
                print(f"{name}: no face in {photo.name}; left out")
        if not embeddings:
            raise SystemExit(f"{name}: no face found in any photo of {folder}")
        centroid = recognizer.centroid(embeddings)
        centroids[folder.name] = [round(float(v), 6) for v in centroid]
        used[folder.name] = len(embeddings)
    print(f"{name}: {len(centroids)} decoys -> {file_name(name)}")
    return {
        "recognizer": name,
        "metric": recognizer.metric,
        "distance_threshold": recognizer.distance_threshold,
        "weights_sha256": {a: assets.ASSETS[a].sha256 for a in WEIGHTS[name]},
        "source": (
            "shared/data/faceoff-celebs/photos (ten public figures, five full photos each): the "
            "recogniser's own detection, alignment and embedding, centroid per identity"
        ),
        "photos": used,
        "generated_by": "tools/build_judge_decoys.py",
        "centroids": centroids,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--recognizers",
        default=",".join(WEIGHTS),
        help=f"comma-separated local recognisers (default {','.join(WEIGHTS)})",
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/faceoff-celebs/photos"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.recognizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        parser.error(f"unknown recognisers {unknown}; known: {', '.join(WEIGHTS)}")

    from faceoff.evaluator.decoys import file_name, parse

    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        doc = build(name, args.data)
        parse(doc, name)  # the evaluator must be able to read what was written
        (OUT / file_name(name)).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
