"""The built-in decoy galleries of the local recognisers: would a recogniser still pick you out?

A protected photo is protected against a recogniser when that recogniser no longer identifies the
person among other people. Each local recogniser therefore ships a gallery of decoys: for each of
the ten public figures of the shared celebrity set, the recogniser's own centroid embedding of
five full photos of them (its own detection and alignment, :meth:`EmbeddingRecognizer.embed`,
and :meth:`EmbeddingRecognizer.centroid`). The evaluator ranks a photo's face among the person
and these decoys (:meth:`EmbeddingRecognizer.rank_among_decoys`).

The galleries are data files, ``data/decoys_<recogniser>.json``, written by
``tools/build_judge_decoys.py``. Each records its provenance: the recogniser, the SHA-256 of
every model file it was computed with (as pinned in :mod:`faceoff.common.assets`), the source
photos and the tool. They hold embeddings of public figures only, never anything of a user.
Reading one checks that its model files are the ones pinned now: a gallery computed with other
weights would rank in another space, so it is refused, naming the command that rebuilds it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

#: The tool that writes the galleries (named in errors).
BUILD_COMMAND = ".venv/bin/python tools/build_judge_decoys.py"


@dataclass(frozen=True)
class DecoyGallery:
    """One recogniser's decoys and where they come from.

    Attributes:
        recognizer: The local recogniser whose space the centroids are in.
        centroids: Public figure -> the recogniser's centroid embedding of them.
        weights_sha256: Model file name (:data:`faceoff.common.assets.ASSETS`) -> SHA-256 of
            the file the centroids were computed with.
        source: The photos they were computed from.
    """

    recognizer: str
    centroids: dict[str, np.ndarray]
    weights_sha256: dict[str, str]
    source: str


def file_name(recognizer: str) -> str:
    """The data file of ``recognizer``'s gallery, inside ``faceoff/evaluator/data``."""
    return f"decoys_{recognizer}.json"


def parse(doc: dict[str, Any], recognizer: str) -> DecoyGallery:
    """A gallery from the JSON document of ``recognizer``'s data file.

    Raises:
        ValueError: the document is for another recogniser, has no centroids, centroids of
            different lengths, or model files other than those pinned now (the message names
            the command that rebuilds it).
    """
    from faceoff.common import assets

    where = file_name(recognizer)
    if doc.get("recognizer") != recognizer:
        raise ValueError(f"{where} is the gallery of {doc.get('recognizer')!r}, not {recognizer!r}")
    centroids = {
        str(name): np.asarray(values, np.float32) for name, values in doc["centroids"].items()
    }
    if not centroids or len({c.shape for c in centroids.values()}) != 1:
        raise ValueError(f"{where}: expected centroids of one length, got {len(centroids)} of them")
    weights = {str(k): str(v) for k, v in doc["weights_sha256"].items()}
    stale = [
        name
        for name, sha in weights.items()
        if name not in assets.ASSETS or assets.ASSETS[name].sha256 != sha
    ]
    if stale:
        raise ValueError(
            f"{where} was computed with model files other than those pinned now ({', '.join(stale)}); "
            f"rebuild it: {BUILD_COMMAND} --recognizers {recognizer}"
        )
    return DecoyGallery(
        recognizer=recognizer,
        centroids=centroids,
        weights_sha256=weights,
        source=str(doc.get("source", "")),
    )


@functools.cache
def load(recognizer: str) -> DecoyGallery:
    """The built-in gallery of local recogniser ``recognizer`` (read once per process).

    Raises:
        FileNotFoundError: no gallery ships for ``recognizer``.
        ValueError: the file does not fit the recogniser (see :func:`parse`).
    """
    resource = resources.files("faceoff.evaluator") / "data" / file_name(recognizer)
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no decoy gallery ships for recogniser {recognizer!r} ({file_name(recognizer)}); "
            f"build it: {BUILD_COMMAND} --recognizers {recognizer}"
        ) from None
    return parse(json.loads(text), recognizer)
