"""``faceoff detect PHOTO [--json]``: find the faces in a photo, in-process (no server)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any, loud: argparse.ArgumentParser) -> None:
    """Add ``detect`` to the command's sub-parsers (``loud``: the shared ``--verbose`` flag)."""
    p = sub.add_parser("detect", help="find the faces in a photo (in-process)", parents=[loud])
    p.add_argument("photo", type=Path, help="a JPEG, PNG, WebP, BMP, TIFF or GIF file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--min-face-size", type=int, default=20, help="smallest face, in pixels (default 20)"
    )
    p.add_argument(
        "--min-confidence", type=float, default=0.9, help="smallest confidence (default 0.9)"
    )
    p.set_defaults(run=run, traced=True)


def run(args: argparse.Namespace) -> int:
    from faceoff.sdk import Client, FaceOffError

    try:
        data = args.photo.read_bytes()
    except OSError as exc:
        print(f"faceoff detect: cannot read {args.photo}: {exc.strerror}", file=sys.stderr)
        return 2
    # in-process through the SDK, as an app would call the detector (the photo is checked
    # before the model loads: a bad file is refused at once, not after ~5 s)
    with Client.local(detect_max_side=1024) as client:
        try:
            result = client.detect(
                data, min_face_size=args.min_face_size, min_confidence=args.min_confidence
            )
        except FaceOffError as exc:
            print(f"faceoff detect: {args.photo}: {exc.message}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"{args.photo}: {result.width}x{result.height} px, {len(result.faces)} face(s)")
    for i, face in enumerate(result.faces):
        x, y, w, h = face.box.as_tuple()
        print(
            f"  face {i}: box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}  confidence {face.confidence:.3f}"
        )
    return 0
