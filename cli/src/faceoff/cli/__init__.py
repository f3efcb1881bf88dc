"""The ``faceoff`` command: protect, detect, evaluate, serve, models, bench and deploy.

The command itself is :mod:`faceoff.cli.main`; ``python -m faceoff.cli`` runs it.
"""

from faceoff.cli.main import build_parser, main
from faceoff.cli.paths import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "build_parser", "main"]
