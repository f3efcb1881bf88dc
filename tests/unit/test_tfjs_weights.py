"""The TF.js weights reader: synthetic manifests (plain, float16 and uint8/uint16 quantised), strictness.

The last tests read the real cached model files and skip, saying so, when they have not been
fetched.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from faceoff.faces.models.tfjs import MAX_ELEMENTS, load_asset_weights, read_weights
from tests.conftest import cached_model_file

RNG = np.random.default_rng(7)


def _need(*names: str) -> None:
    """Skip, saying so, unless every asset in ``names`` is in the model cache."""
    for name in names:
        cached_model_file(name)


def _json(groups: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps(
        {"format": "graph-model", "modelTopology": {}, "weightsManifest": groups, **extra}
    ).encode()


def _one_group(weights: list[dict[str, Any]], paths: list[str] | None = None) -> bytes:
    return _json([{"paths": paths or ["group1-shard1of1.bin"], "weights": weights}])


def test_float32_and_int32_weights_in_order_across_shards_and_groups() -> None:
    a = RNG.standard_normal((3, 3, 2, 4)).astype("<f4")
    b = np.arange(-3, 3, dtype="<i4")
    c = RNG.standard_normal(5).astype("<f4")
    data = a.tobytes() + b.tobytes()
    model = _json(
        [
            {
                "paths": ["g1-shard1of2.bin", "g1-shard2of2.bin"],
                "weights": [
                    {"name": "conv/w", "shape": [3, 3, 2, 4], "dtype": "float32"},
                    {"name": "axis", "shape": [6], "dtype": "int32"},
                ],
            },
            {"paths": ["g2.bin"], "weights": [{"name": "bias", "shape": [5], "dtype": "float32"}]},
        ]
    )
    # a shard boundary in the middle of a tensor, as the converter writes them (4 MB shards)
    got = read_weights(model, [data[:50], data[50:], c.tobytes()])
    assert list(got) == ["conv/w", "axis", "bias"]
    assert got["conv/w"].dtype == np.float32 and np.array_equal(got["conv/w"], a)
    assert got["axis"].dtype == np.int32 and np.array_equal(got["axis"], b)
    assert np.array_equal(got["bias"], c)
    got["bias"][0] = 42.0  # the arrays own their memory (frombuffer views would be read-only)


def test_scalar_and_empty_shapes() -> None:
    model = _one_group(
        [
            {"name": "eps", "shape": [], "dtype": "float32"},
            {"name": "nothing", "shape": [0, 3], "dtype": "float32"},
        ]
    )
    got = read_weights(model, [np.float32(1e-10).tobytes()])
    assert got["eps"].shape == () and got["eps"] == np.float32(1e-10)
    assert got["nothing"].shape == (0, 3)


def test_float16_quantisation_widens_to_float32() -> None:
    values = RNG.standard_normal((4, 3)).astype("<f2")
    model = _one_group(
        [
            {
                "name": "w",
                "shape": [4, 3],
                "dtype": "float32",
                "quantization": {"dtype": "float16", "original_dtype": "float32"},
            }
        ]
    )
    got = read_weights(model, [values.tobytes()])["w"]
    assert got.dtype == np.float32 and np.array_equal(got, values.astype(np.float32))


@pytest.mark.parametrize(("qdtype", "stored"), [("uint8", "u1"), ("uint16", "<u2")])
def test_affine_quantisation_is_dequantised(qdtype: str, stored: str) -> None:
    q = np.array([0, 1, 2, 200, 7, 9], dtype=stored)
    scale, low = 0.015625, -1.5
    model = _one_group(
        [
            {
                "name": "w",
                "shape": [2, 3],
                "dtype": "float32",
                "quantization": {"dtype": qdtype, "scale": scale, "min": low},
            },
            {
                "name": "ids",
                "shape": [2],
                "dtype": "int32",
                "quantization": {
                    "dtype": qdtype,
                    "scale": 0.5,
                    "min": 10,
                    "original_dtype": "int32",
                },
            },
        ]
    )
    ids = np.array([3, 4], dtype=stored)
    got = read_weights(model, [q.tobytes() + ids.tobytes()])
    assert got["w"].dtype == np.float32
    np.testing.assert_allclose(
        got["w"], (q.astype(np.float64) * scale + low).reshape(2, 3), rtol=1e-6
    )
    assert got["ids"].dtype == np.int32 and got["ids"].tolist() == [12, 12]  # round(11.5), 12


def _entry(**overrides: Any) -> dict[str, Any]:
    return {"name": "w", "shape": [2], "dtype": "float32", **overrides}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry(dtype="float64"), "weight 'w' has dtype 'float64'"),
        (_entry(dtype="string"), "weight 'w' has dtype 'string'"),
        (_entry(dtype="bool"), "weight 'w' has dtype 'bool'"),
        (_entry(shape=[2, -1]), r"weight 'w': shape \[2, -1\] must hold integers >= 0"),
        (_entry(shape=[2.0]), "must hold integers"),
        (_entry(shape=[True, 2]), "must hold integers"),
        (_entry(shape="2"), "must be a list"),
        (_entry(shape=[MAX_ELEMENTS + 1]), "elements; at most"),
        (_entry(shape=[1 << 20, 1 << 20]), "elements; at most"),
        (_entry(quantization={"dtype": "int4"}), "quantization dtype 'int4'"),
        (_entry(quantization={"dtype": "uint8", "scale": 1.0}), "quantization min None"),
        (_entry(quantization={"dtype": "uint8", "scale": "x", "min": 0}), "quantization scale 'x'"),
        (_entry(quantization={"dtype": "uint8", "scale": float("nan"), "min": 0}), "finite"),
        (_entry(quantization={"dtype": "float16", "extra": 1}), "keys outside"),
        (_entry(quantization={"dtype": "float16", "original_dtype": "int32"}), "original_dtype"),
        (
            _entry(dtype="int32", quantization={"dtype": "float16"}),
            "float16 quantization of a int32",
        ),
        (_entry(group="x"), r"weight 'w' has keys \['group'\]"),
        ({"shape": [2], "dtype": "float32"}, "weight entry 0 has no name"),
        ("w", "weight entry 0 is a str"),
    ],
)
def test_malformed_entries_are_refused_naming_them(entry: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_weights(_one_group([entry]), [bytes(8)])


def test_byte_counts_must_match_exactly() -> None:
    model = _one_group([_entry(name="a", shape=[2]), _entry(name="b", shape=[3])])
    assert set(read_weights(model, [bytes(20)])) == {"a", "b"}
    with pytest.raises(
        ValueError, match=r"weight 'b' needs 12 bytes at offset 8 but the shards hold 19"
    ):
        read_weights(model, [bytes(19)])
    with pytest.raises(ValueError, match="hold 1 bytes after the last weight"):
        read_weights(model, [bytes(21)])


def test_duplicate_names_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="weight 'a' is listed twice"):
        read_weights(_one_group([_entry(name="a"), _entry(name="a")]), [bytes(16)])
    doubled = b'{"weightsManifest": [], "weightsManifest": []}'
    with pytest.raises(ValueError, match="duplicate keys"):
        read_weights(doubled, [])


def test_shard_count_and_manifest_shape_are_checked() -> None:
    model = _one_group([_entry()], paths=["a.bin", "b.bin"])
    with pytest.raises(ValueError, match=r"lists 2 shard files \['a.bin', 'b.bin'\]; got 1"):
        read_weights(model, [bytes(8)])
    with pytest.raises(ValueError, match="no weightsManifest"):
        read_weights(b'{"modelTopology": {}}', [])
    with pytest.raises(ValueError, match="cannot be parsed"):
        read_weights(b"\xff not json", [])
    with pytest.raises(ValueError, match="expected exactly"):
        read_weights(_json([{"paths": ["a.bin"]}]), [b""])
    with pytest.raises(ValueError, match="paths must be a list of file names"):
        read_weights(_json([{"paths": "a.bin", "weights": []}]), [b""])


def test_the_topology_is_never_read() -> None:
    # Whatever the topology holds, only the manifest counts.
    model = _json(
        [{"paths": ["a.bin"], "weights": [_entry()]}],
        modelTopology={"node": [{"op": "PyFunc", "name": "x"}], "library": {"function": ["?"]}},
    )
    assert read_weights(model, [bytes(8)])["w"].tolist() == [0.0, 0.0]


# --- the real files ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stem", "count"),
    [("mobilefacenet", 139), ("faceres", 128), ("mobileface", 75)],
)
def test_the_human_models_files_read(stem: str, count: int) -> None:
    _need(f"{stem}_json", f"{stem}_bin")
    weights = load_asset_weights(f"{stem}_json", f"{stem}_bin")
    assert len(weights) == count
    assert all(np.all(np.isfinite(w)) for w in weights.values())


@pytest.mark.slow
def test_load_asset_weights_checks_the_shard_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _need("mobilefacenet_json", "faceres_bin")
    with pytest.raises(
        ValueError,
        match=r"lists shards \['mobilefacenet.bin'\]; expected the one file 'faceres.bin'",
    ):
        load_asset_weights("mobilefacenet_json", "faceres_bin")
