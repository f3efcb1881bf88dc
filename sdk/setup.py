"""Dependencies of ``faceoff-sdk``: the contract from this checkout when built from one.

``faceoff-contract`` (the generated ``faceoff.v1`` modules) is built from ``../protos`` in a
source checkout, so ``pip install ./sdk`` works from a clean clone; a build outside a checkout
(from an sdist), or a workspace install that names ``./protos`` itself (``./dev setup`` sets
``FACEOFF_WORKSPACE_INSTALL=1``), asks for it by name and version instead. Everything else is declared in
``pyproject.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

RUNTIME = [
    "grpcio>=1.71,<2",
    "protobuf>=6.31,<8",
    "googleapis-common-protos>=1.63,<2",
]

protos = Path(__file__).resolve().parent.parent / "protos"
if (protos / "pyproject.toml").is_file() and os.environ.get("FACEOFF_WORKSPACE_INSTALL") != "1":
    contract = f"faceoff-contract @ {protos.as_uri()}"
else:
    contract = "faceoff-contract>=0.1,<0.2"

setup(install_requires=[contract, *RUNTIME])
