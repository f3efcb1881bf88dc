"""Weights of a TensorFlow.js graph model (``model.json`` + ``*.bin`` shards), read as plain data.

A TF.js graph model is a JSON file with two parts: ``modelTopology``, a TensorFlow graph
(nodes, ops, attributes), and ``weightsManifest``, which says how the binary shards hold the
weights. Only the manifest is read here; the topology is never executed or interpreted (the
architectures are written out in code, e.g. :mod:`faceoff.faces.models.mobilefacenet`, and look
their weights up by name in the dictionary :func:`read_weights` returns).

The manifest is a list of groups, each ``{"paths": [shard, ...], "weights": [entry, ...]}``.
The shards of all groups, in manifest order, concatenated, hold the entries back to back, in
order, little-endian, with no padding. An entry is ``{"name", "shape", "dtype"}`` with dtype
``float32`` or ``int32``, and optionally ``"quantization": {"dtype", ...}``:

- ``float16``: stored as IEEE half floats, widened to float32;
- ``uint8`` / ``uint16``: stored as integers ``q``, read as ``q * scale + min`` (``scale`` and
  ``min`` given in the entry), float32, or rounded to int32 for an int32 entry (as TF.js does).

Everything is checked and anything unexpected refused with a :class:`ValueError` naming the
entry: an unknown dtype or quantization, a key this format does not have, a negative or
non-integer dimension, a tensor larger than :data:`MAX_ELEMENTS`, a duplicate name, shards that
end before an entry does or hold bytes after the last one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np

__all__ = ["MAX_ELEMENTS", "MAX_JSON_BYTES", "load_asset_weights", "read_weights"]

#: Largest tensor accepted, in elements (2^28: 1 GiB of float32).
MAX_ELEMENTS = 1 << 28
#: Largest ``model.json`` accepted (the face models' are 30 to 130 kB).
MAX_JSON_BYTES = 64 << 20
#: Largest total of all shards accepted (as for any one model file in the asset cache).
MAX_SHARD_BYTES = 1 << 30

# How each dtype and quantisation is stored in the shards (little-endian).
_PLAIN: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
_QUANTIZED: dict[str, np.dtype[Any]] = {
    "float16": np.dtype("<f2"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
}
_ENTRY_KEYS = frozenset({"name", "shape", "dtype", "quantization"})
_QUANT_KEYS = frozenset({"dtype", "scale", "min", "original_dtype"})
_GROUP_KEYS = frozenset({"paths", "weights"})


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"model JSON has duplicate keys {dupes} in one object")
    return dict(pairs)


def _manifest(model_json: bytes) -> list[dict[str, Any]]:
    """The ``weightsManifest`` of a model JSON, its groups' keys checked."""
    if len(model_json) > MAX_JSON_BYTES:
        raise ValueError(
            f"model JSON is {len(model_json)} bytes; at most {MAX_JSON_BYTES} accepted"
        )
    try:
        doc = json.loads(model_json, object_pairs_hook=_refuse_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"model JSON cannot be parsed: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("weightsManifest"), list):
        raise ValueError("model JSON has no weightsManifest list; not a TF.js model")
    groups: list[dict[str, Any]] = doc["weightsManifest"]
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or set(group) != _GROUP_KEYS:
            keys = sorted(group) if isinstance(group, dict) else type(group).__name__
            raise ValueError(
                f"weightsManifest group {i} has {keys}; expected exactly {sorted(_GROUP_KEYS)}"
            )
        if not isinstance(group["paths"], list) or not all(
            isinstance(p, str) and p for p in group["paths"]
        ):
            raise ValueError(f"weightsManifest group {i}: paths must be a list of file names")
        if not isinstance(group["weights"], list):
            raise ValueError(f"weightsManifest group {i}: weights must be a list")
    return groups


def _shape(where: str, shape: object) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > 8:
        raise ValueError(f"{where}: shape {shape!r} must be a list of at most 8 dimensions")
    for d in shape:
        # bool is an int subclass in Python; JSON true/false is not a dimension
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise ValueError(f"{where}: shape {shape!r} must hold integers >= 0")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ValueError(
            f"{where}: shape {shape} has {math.prod(shape)} elements; at most {MAX_ELEMENTS} accepted"
        )
    return tuple(shape)


def _finite_number(where: str, what: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{where}: quantization {what} {value!r} must be a finite number")
    return float(value)


def _decode_entry(
    entry: object, index: int, data: memoryview, offset: int
) -> tuple[str, np.ndarray, int]:
    """``(name, array, next offset)`` for manifest entry number ``index`` read at ``offset``."""
    where = f"weight entry {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is a {type(entry).__name__}, not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} has no name")
    where = f"weight {name!r}"
    if unknown := set(entry) - _ENTRY_KEYS:
        raise ValueError(f"{where} has keys {sorted(unknown)}; accepted: {sorted(_ENTRY_KEYS)}")
    shape = _shape(where, entry.get("shape"))
    dtype = entry.get("dtype")
    if dtype not in _PLAIN:
        raise ValueError(f"{where} has dtype {dtype!r}; accepted: {', '.join(_PLAIN)}")
    quant = entry.get("quantization")
    stored: np.dtype[Any]
    values: np.ndarray
    if quant is None:
        stored = _PLAIN[dtype]
    else:
        if not isinstance(quant, dict) or set(quant) - _QUANT_KEYS:
            raise ValueError(
                f"{where}: quantization {quant!r} has keys outside {sorted(_QUANT_KEYS)}"
            )
        qdtype = quant.get("dtype")
        if qdtype not in _QUANTIZED:
            raise ValueError(
                f"{where}: quantization dtype {qdtype!r}; accepted: {', '.join(_QUANTIZED)}"
            )
        original = quant.get("original_dtype", dtype)
        if original != dtype:
            raise ValueError(
                f"{where}: quantization original_dtype {original!r} is not its dtype {dtype!r}"
            )
        if qdtype == "float16" and dtype != "float32":
            raise ValueError(f"{where}: float16 quantization of a {dtype} weight")
        stored = _QUANTIZED[qdtype]
    count = math.prod(shape)
    nbytes = count * stored.itemsize
    if offset + nbytes > len(data):
        raise ValueError(
            f"{where} needs {nbytes} bytes at offset {offset} but the shards hold {len(data)}"
        )
    raw = np.frombuffer(data[offset : offset + nbytes], dtype=stored)
    if quant is None:
        values = raw.astype(np.float32 if dtype == "float32" else np.int32)  # a native copy
    elif quant["dtype"] == "float16":
        values = raw.astype(np.float32)
    else:
        scale = _finite_number(where, "scale", quant.get("scale"))
        low = _finite_number(where, "min", quant.get("min"))
        values = raw.astype(np.float32) * np.float32(scale) + np.float32(low)
        if dtype == "int32":
            values = np.round(values).astype(np.int32)
    return name, values.reshape(shape), offset + nbytes


def read_weights(model_json: bytes, shards: Sequence[bytes]) -> dict[str, np.ndarray]:
    """Every weight of a TF.js graph model, by name, as float32 (or int32) numpy arrays.

    Args:
        model_json: The bytes of ``model.json`` (only its ``weightsManifest`` is read).
        shards: The bytes of each shard file, in the order the manifest lists their paths
            (all groups, in order).

    Returns:
        ``{name: array}`` in manifest order; each array owns its memory, quantised weights
        dequantised (see the module docstring).

    Raises:
        ValueError: the JSON or a manifest entry is malformed or not of this format, or the
            shards do not hold exactly the listed weights; the message names the entry.
    """
    groups = _manifest(model_json)
    paths = [p for g in groups for p in g["paths"]]
    if len(shards) != len(paths):
        raise ValueError(f"the manifest lists {len(paths)} shard files {paths}; got {len(shards)}")
    total = sum(len(s) for s in shards)
    if total > MAX_SHARD_BYTES:
        raise ValueError(f"the shards hold {total} bytes; at most {MAX_SHARD_BYTES} accepted")
    data = memoryview(b"".join(shards))
    weights: dict[str, np.ndarray] = {}
    offset = 0
    index = 0
    for group in groups:
        for entry in group["weights"]:
            name, array, offset = _decode_entry(entry, index, data, offset)
            if name in weights:
                raise ValueError(f"weight {name!r} is listed twice in the manifest")
            weights[name] = array
            index += 1
    if offset != len(data):
        raise ValueError(
            f"the shards hold {len(data) - offset} bytes after the last weight "
            f"({offset} of {len(data)} used); they do not belong to this manifest"
        )
    return weights


def load_asset_weights(json_asset: str, bin_asset: str) -> dict[str, np.ndarray]:
    """:func:`read_weights` of two cached model assets (see :mod:`faceoff.common.assets`).

    Both files are read with :func:`~faceoff.common.assets.read_verified`, so the bytes parsed
    are the bytes whose SHA-256 was checked. The manifest must name exactly one shard, whose
    file name is the bin asset's file name in its package (the cache renames files).

    Raises:
        faceoff.common.assets.AssetError: a file is missing or fails its SHA-256 check.
        ValueError: the manifest names other shards, or :func:`read_weights` refuses the files.
    """
    from faceoff.common import assets

    model_json = assets.read_verified(json_asset)
    shard_name = PurePosixPath(assets.ASSETS[bin_asset].member).name
    paths = [p for g in _manifest(model_json) for p in g["paths"]]
    if len(paths) != 1 or PurePosixPath(paths[0]).name != shard_name:
        raise ValueError(
            f"asset {json_asset!r} lists shards {paths}; expected the one file {shard_name!r} "
            f"(asset {bin_asset!r})"
        )
    return read_weights(model_json, [assets.read_verified(bin_asset)])
