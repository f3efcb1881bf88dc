"""Where a protection's effect on FaceNet is lost between the attack and the photo a recogniser reads.

Usage: ``.venv/bin/python tools/whitebox_stages.py [--profile medium] [--set NAME=VALUE ...]
[--seed 0] [--json OUT.json]``

Each of the shared photos (``../shared/data/faceoff-celebs/photos``) is protected in this process
as ``faceoff bench transfer`` does (MTCNN -> masker, the identity's other photos as the user's
references, seed 0, alpha 1), and the ``facenet`` recogniser (the masker's FaceNet surrogate:
box + 10%, 160 px) identifies the face top-1 among the ten identities (nearest centroid of the other
photos, the bench's ``facenet`` recogniser's gallery, the probe left out) at four stages:

1. ``inside``: the attack's own view — the work-size crop plus the perturbation, shrunk to 160 px
   with the anti-aliased resize the attack differentiated through;
2. ``pasted``: the perturbation pasted into the photo (uint8), the same crop region cut out;
3. ``encoded``: the masker's output as delivered (encoded like the input: a JPEG keeps its
   quantisation tables and chroma subsampling), decoded, the same crop region cut out;
4. ``re-read``: the output read by the ``facenet`` recogniser (MTCNN finds the face again).

Evasion at each stage is the share of probes FaceNet no longer identifies; every probe is
identified when clean. FaceNet is white-box when it is among the options' surrogates (every
profile's): the figures then say how much of what the attack did to its own model survives each
step, not anything about transfer. Prints a table and, with ``--json``, writes the figures. Nothing
else is written; no pixels or embeddings leave the process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("inside", "pasted", "encoded", "re-read")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/faceoff-celebs/photos"
    )
    parser.add_argument("--profile", default=None, help="protection profile (default: the default)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, dest="json_out")
    args = parser.parse_args()

    import tensorflow as tf

    from faceoff.bench.transfer import _Gallery, _identities, parse_settings
    from faceoff.common.crops import extract_crop, paste_delta
    from faceoff.common.errors import NoFaceFound
    from faceoff.common.imaging import decode
    from faceoff.detector.detection import FaceDetector
    from faceoff.faces.recognizers import FacePhoto, get_local
    from faceoff.faces.recognizers.facenet import CROP_SIZE
    from faceoff.masker.options import resolve
    from faceoff.masker.protection import Protector

    overrides = parse_settings(args.set)
    if "alpha" in overrides:  # the inside stage is the unamplified perturbation
        parser.error("--set alpha is not accepted: every stage is measured at alpha 1")
    options = resolve(args.profile, seed=args.seed, alpha=1.0, **overrides)
    identities = _identities(args.data)
    photos = {p: p.read_bytes() for paths in identities.values() for p in paths}
    detector, protector = FaceDetector(), Protector()
    recognizer = get_local("facenet")
    recognizer.load()
    gallery = _Gallery(recognizer, identities, photos)
    side = CROP_SIZE
    detections = {p: detector.detect(data) for p, data in photos.items()}

    missed = {stage: 0 for stage in STAGES}
    probes = 0
    for name, paths in identities.items():
        for probe in paths:
            if not detections[probe].faces:
                continue
            refs = [(photos[r], detections[r]) for r in paths if r != probe]
            job = protector.prepare(photos[probe], options, detections[probe], refs)
            full = protector.attack([job])[0]  # every face of the photo; the first is judged
            result = protector.finish(job, full)
            delta = full[:1]
            work = job.attacked[:1]
            applied = np.clip(work + delta, 0.0, 1.0) - work
            region = job.regions[0]
            inside = tf.image.resize(work + applied, [side, side], "bilinear", antialias=True)
            pasted = paste_delta(job.photo.pixels, region, applied[0])
            shown = decode(result.data, max_pixels=protector.max_pixels).pixels
            crops = np.concatenate(
                [inside.numpy(), extract_crop(pasted, region, side)[None],
                 extract_crop(shown, region, side)[None]]
            )  # fmt: skip
            embeddings: list[np.ndarray | None] = list(recognizer.embed_crops(crops))
            try:
                embeddings.append(recognizer.embed(FacePhoto.from_bytes(result.data)))
            except NoFaceFound:
                embeddings.append(None)
            ranks = {}
            for stage, emb in zip(STAGES, embeddings):
                order = gallery.rank(emb, probe)
                ranks[stage] = order.index(name) + 1 if name in order else None
                missed[stage] += ranks[stage] != 1
            probes += 1
            print(probe.name, " ".join(f"{s}:{r}" for s, r in ranks.items()), file=sys.stderr)
    rates = {stage: round(missed[stage] / max(probes, 1), 4) for stage in STAGES}
    print(
        f"{'stage':<8}  FaceNet evasion  ({probes} probes; {options.profile}, {' '.join(args.set)})"
    )
    for stage in STAGES:
        print(f"{stage:<8}  {rates[stage]:.0%}")
    if args.json_out:
        doc = {"probes": probes, "profile": options.profile, "set": args.set, "seed": args.seed,
               "surrogates": list(options.surrogates), "evasion": rates}  # fmt: skip
        args.json_out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
