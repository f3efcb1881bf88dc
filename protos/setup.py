"""Build hook of ``faceoff-contract``: generate ``faceoff.v1`` from the .proto files first.

setuptools reads the package folder in every build step (metadata, wheel, editable), so the
modules are generated when this file is loaded, in the build's environment, which has the
tools (``[build-system] requires``). Everything else is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import generate

if generate() != 0:
    raise SystemExit("faceoff-contract: generating faceoff.v1 from protos/faceoff/v1 failed")

setup()
