"""Regenerate the committed decoy gallery ``services/masker/data/decoys_<surrogate>.json``.

Usage: ``.venv/bin/python tools/build_decoys.py [--surrogate facenet] [--data ../shared/data/faceoff-celebs/aligned160]``

Each decoy is the unit-length mean of the surrogate's embeddings of one public figure's face
crops (the shared celebrity set). Deterministic for the same weights and crops.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def weights_sha256(surrogate: str) -> str:
    """The SHA-256 of the file holding the surrogate's weights: its own asset, or the ``.bin`` of
    a TF.js graph model (``faceres_bin``, ``mobileface_bin``), whose ``.json`` only describes it."""
    from faceoff.common import assets

    name = surrogate if surrogate in assets.ASSETS else f"{surrogate}_bin"
    return assets.ASSETS[name].sha256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surrogate", default="facenet")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/faceoff-celebs/aligned160"
    )
    args = parser.parse_args()

    from faceoff.faces.models import load_surrogate

    model = load_surrogate(args.surrogate)
    centroids = {}
    for folder in sorted(p for p in args.data.iterdir() if p.is_dir()):
        crops = []
        for f in sorted(folder.glob("*.png")):
            with Image.open(f) as img:
                crops.append(
                    np.asarray(
                        img.convert("RGB").resize((model.input_size, model.input_size)), np.float32
                    )
                    / 255.0
                )
        emb = np.asarray(model.embed_numpy(np.stack(crops)))  # type: ignore[attr-defined]
        mean = emb.mean(axis=0)
        centroids[folder.name] = [round(float(v), 6) for v in mean / np.linalg.norm(mean)]
    out = ROOT / "services/masker/src/faceoff/masker/data" / f"decoys_{args.surrogate}.json"
    doc = {
        "surrogate": args.surrogate,
        "weights_sha256": weights_sha256(args.surrogate),
        "source": "shared/data/faceoff-celebs/aligned160 (public figures), unit-length mean embedding per identity",
        "generated_by": "tools/build_decoys.py",
        "centroids": centroids,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(centroids)} decoys to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
