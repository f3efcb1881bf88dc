"""``faceoff evaluate PHOTO --reference DIR``: would recognisers still match a photo to the person?
In-process (no server), through the SDK's embedded pipeline (``Client.local``), with the cloud
APIs this environment configures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceoff.cli.folders import read_gallery_dir, read_reference_dir

if TYPE_CHECKING:
    from faceoff.sdk import Verdict


def register(sub: Any, loud: argparse.ArgumentParser) -> None:
    """Add ``evaluate`` to the command's sub-parsers (``loud``: the shared ``--verbose`` flag)."""
    p = sub.add_parser(
        "evaluate",
        help="would recognisers still match a photo to the person? (in-process)",
        parents=[loud],
    )
    p.add_argument("photo", type=Path, help="the (protected) photo to check")
    p.add_argument(
        "--reference", type=Path, help="folder of the person's own photos, to verify against"
    )
    p.add_argument(
        "--gallery",
        type=Path,
        help="folder with one sub-folder of photos per identity, to identify in",
    )
    p.add_argument(
        "--recognizers",
        help="comma-separated: dlib, sface, facenet, facenet512, mobilefacenet, rekognition, "
        "azure, facepp (default: dlib, sface, facenet and every configured cloud API)",
    )
    p.add_argument(
        "--top-k", type=int, default=0, help="identities to rank with --gallery (default 3)"
    )
    p.add_argument(
        "--use-api-threshold",
        action="store_true",
        help="each API's own threshold instead of tau = 0.5",
    )
    p.add_argument(
        "--attacked",
        help="models the photo's protection used (its surrogates and loop recognisers), "
        "comma-separated; their verdicts are marked white-box (default: the default "
        "profile's surrogates, facenet,sface,faceres)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run, traced=True)


def print_verdicts(photo: Path, verdicts: list[Verdict]) -> None:
    """One line per recogniser, plus its ranking when there is one."""
    print(f"{photo}:")
    for v in verdicts:
        box = "white-box" if v.white_box else "black-box"
        if not v.configured:
            line = "not configured"
        elif v.error:
            line = f"error ({v.error_kind}): {v.error}"
        elif v.verified:
            distance = f", distance {v.distance:.3f}" if v.distance is not None else ""
            line = (
                f"{'MATCH   ' if v.match else 'no match'} confidence {v.confidence:.3f} "
                f"(threshold {v.threshold:.2f}{distance})"
            )
        else:
            line = "identification only"
        print(f"  {v.recognizer:12s} {box}  {line}")
        if v.rank is not None:
            among = f"rank {v.rank} of {v.gallery_size} among public-figure decoys"
            print(f"  {'':12s} {'still identified' if v.identified else 'not identified'}: {among}")
        if v.top_k:
            print(f"  {'':12s} top: " + ", ".join(f"{s.name} {s.confidence:.3f}" for s in v.top_k))


def run(args: argparse.Namespace) -> int:
    from faceoff.faces.recognizers import DEFAULT_LOCAL_RECOGNIZERS, LOCAL_RECOGNIZERS
    from faceoff.sdk import Client, FaceOffError, FailedPreconditionError

    if args.reference is None and args.gallery is None:
        print("faceoff evaluate: give --reference DIR, --gallery DIR or both", file=sys.stderr)
        return 2
    try:
        data = args.photo.read_bytes()
    except OSError as exc:
        print(f"faceoff evaluate: cannot read {args.photo}: {exc.strerror}", file=sys.stderr)
        return 2
    references = read_reference_dir(args.reference) if args.reference else []
    gallery = read_gallery_dir(args.gallery) if args.gallery else {}
    names = [n.strip() for n in (args.recognizers or "").split(",") if n.strip()]
    # Load only the local models that were asked for (the default ones when none was named).
    local = (
        [n for n in LOCAL_RECOGNIZERS if n in names] if names else list(DEFAULT_LOCAL_RECOGNIZERS)
    )
    try:
        with Client.local(recognizers=local, cloud_apis=True) as client:
            verdicts = client.evaluate(
                data,
                references,
                names,
                gallery=gallery,
                top_k=args.top_k,
                use_api_threshold=args.use_api_threshold,
                attacked_models=args.attacked or (),
            )
    except FailedPreconditionError as exc:  # a malformed cloud setting: not the photo's fault
        print(f"faceoff evaluate: {exc.message}", file=sys.stderr)
        return 2
    except FaceOffError as exc:
        print(f"faceoff evaluate: {args.photo}: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"photo": str(args.photo), "verdicts": [v.to_json() for v in verdicts]}))
    else:
        print_verdicts(args.photo, verdicts)
    return 0
