"""Print the figures the ``mobilefacenet`` recogniser's verification threshold was chosen from.

Usage: ``.venv/bin/python tools/mobilefacenet_threshold.py [--data ../shared/data/faceoff-celebs]``

Every photo of ``photos/`` (and, as a second set, every crop of ``aligned160/``) goes through
the recogniser exactly as the evaluator runs it
(:class:`faceoff.faces.recognizers.mobilefacenet.MobileFaceNetRecognizer`: YuNet, ArcFace
alignment, MobileFaceNet). For each set the script prints leave-one-out nearest-centroid top-1
(the evaluator's identification), the cosine distances of same-person and different-person
pairs (median, 5th-95th percentile, extremes), the equal-error threshold, and the share of
same-person pairs outside / different-person pairs inside a few candidate thresholds, the
recogniser's own among them. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def embed_folder(folder: Path, pattern: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Embeddings of every file matching ``pattern`` under ``folder`` (one sub-folder per person)."""
    from faceoff.common.errors import NoFaceFound
    from faceoff.common.imaging import decode
    from faceoff.faces.recognizers import get_local

    recognizer = get_local("mobilefacenet")
    embeddings, labels, missing = [], [], []
    for file in sorted(folder.glob(pattern)):
        try:
            embeddings.append(recognizer.embed(decode(file.read_bytes())))
            labels.append(file.parent.name)
        except NoFaceFound:
            missing.append(file.name)
    return np.asarray(embeddings, np.float64), labels, missing


def leave_one_out(embeddings: np.ndarray, labels: list[str]) -> float:
    """Top-1 of nearest-centroid identification, each item against all the others."""
    from faceoff.faces.recognizers import get_local

    recognizer = get_local("mobilefacenet")
    hits = 0
    for i, probe in enumerate(embeddings):
        gallery: dict[str, list[np.ndarray]] = {}
        for j, (e, label) in enumerate(zip(embeddings, labels)):
            if j != i:
                gallery.setdefault(label, []).append(e)
        hits += recognizer.identify_embeddings(probe, gallery, top_k=1)[0].name == labels[i]
    return hits / len(embeddings)


def pair_distances(embeddings: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances of (same-person, different-person) pairs."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    d = 1.0 - unit @ unit.T
    i, j = np.triu_indices(len(labels), 1)
    same = np.asarray(labels)[i] == np.asarray(labels)[j]
    return d[i, j][same], d[i, j][~same]


def report(name: str, folder: Path, pattern: str, threshold: float) -> None:
    embeddings, labels, missing = embed_folder(folder, pattern)
    total = len(labels) + len(missing)
    print(f"== {name}: {total} images, {len(set(labels))} people; no face in {missing or 'none'}")
    top1 = leave_one_out(embeddings, labels)
    print(
        f"leave-one-out top-1: {top1:.1%} (a missing face counts as a miss: {top1 * len(labels) / total:.1%})"
    )
    same, diff = pair_distances(embeddings, labels)
    for what, d in (("same person", same), ("different people", diff)):
        p5, p50, p95 = np.percentile(d, [5, 50, 95])
        print(
            f"{what:17s} ({len(d):4d} pairs): median {p50:.3f}, 5th-95th {p5:.3f}-{p95:.3f}, "
            f"min {d.min():.3f}, max {d.max():.3f}"
        )
    grid = np.linspace(0.0, 1.2, 1201)
    frr = np.array([(same > t).mean() for t in grid])
    far = np.array([(diff <= t).mean() for t in grid])
    k = int(np.argmin(np.abs(frr - far)))
    print(f"equal error: {frr[k]:.1%} / {far[k]:.1%} at {grid[k]:.3f}")
    for t in sorted({0.5, 0.55, 0.6, 0.65, 0.7, threshold}):
        mark = "  <- the recogniser's" if t == threshold else ""
        print(
            f"  threshold {t:.3f}: same-person pairs outside {(same > t).mean():6.1%}, "
            f"different-person pairs inside {(diff <= t).mean():6.1%}{mark}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/faceoff-celebs")
    args = parser.parse_args()

    from faceoff.faces.recognizers import get_local

    threshold = get_local("mobilefacenet").distance_threshold
    report("photos", args.data / "photos", "*/*.jpg", threshold)
    report("aligned160 crops", args.data / "aligned160", "*/*.png", threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
