"""Model files: verified by SHA-256 at every load, and nothing in them deserialised as code.

Every loader is run against a model folder of its own (``FACEOFF_MODEL_DIR`` pointing at links
to the real files) in which one file is a tampered copy: the load must stop with an error naming
that file, before the file reaches the library that parses it. MTCNN's weights, which ship inside
the ``mtcnn`` package as pickles, are checked the same way and read by a restricted unpickler.
A source scan and an instrumented FaceNet load show that no code path unpickles or
deserialises a model.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceoff.common import assets
from faceoff.common.assets import AssetError
from tests.conftest import PHOTOS, REPO

REAL_MODELS = assets.default_cache_dir()


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A model folder of links to the real files, selected with ``FACEOFF_MODEL_DIR``."""
    folder = tmp_path / "models"
    folder.mkdir()
    for file in REAL_MODELS.iterdir():
        if file.is_file():
            (folder / file.name).symlink_to(file)
    monkeypatch.setenv("FACEOFF_MODEL_DIR", str(folder))
    yield folder


def tamper(folder: Path, name: str) -> Path:
    """Replace the link to asset ``name`` by a copy with one byte changed in the middle."""
    file = folder / assets.ASSETS[name].filename
    data = bytearray((REAL_MODELS / file.name).read_bytes())
    data[len(data) // 2] ^= 0x01
    file.unlink()
    file.write_bytes(bytes(data))
    return file


def _facenet() -> None:
    from faceoff.faces.models import load_surrogate

    load_surrogate("facenet")


def _sface() -> None:
    from faceoff.faces.recognizers.sface import SFaceRecognizer

    SFaceRecognizer().load()


def _dlib() -> None:
    from faceoff.faces.recognizers.dlib_resnet import DlibRecognizer

    DlibRecognizer().load()


#: Each asset and the real loader that reads it (FaceNet h5 with h5py, ONNX with OpenCV, .dat with dlib).
LOADERS: dict[str, Callable[[], None]] = {
    "facenet": _facenet,
    "sface": _sface,
    "yunet": _sface,
    "dlib_resnet": _dlib,
    "dlib_shape5": _dlib,
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_a_tampered_model_file_is_refused_by_its_loader(model_dir: Path, name: str) -> None:
    file = tamper(model_dir, name)
    with pytest.raises(AssetError) as info:
        LOADERS[name]()
    message = str(info.value)
    assert str(file) in message and "sha256" in message and assets.FETCH_COMMAND in message


@pytest.mark.parametrize("name", sorted(assets.ASSETS))
def test_every_asset_is_verified_on_every_lookup(model_dir: Path, name: str) -> None:
    if not (model_dir / assets.ASSETS[name].filename).exists():
        pytest.skip(f"{name} is not in the model cache")
    assert assets.path(name) == model_dir / assets.ASSETS[name].filename
    file = tamper(model_dir, name)
    with pytest.raises(AssetError, match=re.escape(str(file))):
        assets.path(name)


def test_a_same_size_rewrite_with_its_mtime_set_back_is_caught(tmp_path: Path) -> None:
    """The digest cache keys on the ctime too, which a rewrite changes and no one can set back."""
    data = bytearray((REAL_MODELS / assets.ASSETS["yunet"].filename).read_bytes())
    file = tmp_path / assets.ASSETS["yunet"].filename
    file.write_bytes(bytes(data))
    assert assets.path("yunet", cache_dir=tmp_path) == file
    st = file.stat()
    data[100] ^= 0xFF
    with open(file, "r+b") as f:  # same inode, same size
        f.write(bytes(data))
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (file.stat().st_size, file.stat().st_mtime_ns, file.stat().st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    with pytest.raises(AssetError, match="sha256"):
        assets.path("yunet", cache_dir=tmp_path)


# ---- MTCNN's packaged weights -------------------------------------------------------------------


def test_mtcnn_weights_match_joblib_and_a_tampered_copy_is_refused(tmp_path: Path) -> None:
    import joblib

    from faceoff.detector import mtcnn_weights

    for name, digest in mtcnn_weights.WEIGHTS.items():
        original = mtcnn_weights.weights_dir() / name
        ours = mtcnn_weights.load_weights(original, digest)
        theirs = joblib.load(
            original
        )  # the package's own file, verified above: the reference values
        assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    copy = tmp_path / "pnet.lz4"
    data = bytearray((mtcnn_weights.weights_dir() / "pnet.lz4").read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(AssetError, match=re.escape(str(copy)) + ".*sha256"):
        mtcnn_weights.load_weights(copy, mtcnn_weights.WEIGHTS["pnet.lz4"])


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_weights_file_that_names_code_is_refused_without_running_it(tmp_path: Path) -> None:
    import lz4.frame

    from faceoff.detector import mtcnn_weights

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.lz4"
    evil.write_bytes(lz4.frame.compress(pickle.dumps([_Exploit(marker)], protocol=4)))
    with pytest.raises(AssetError, match=r"refers to (posix|os|nt)\.system"):
        mtcnn_weights.load_weights(
            evil, assets.sha256_file(evil)
        )  # right digest: only the reader stands in the way
    assert not marker.exists()
    arrays = (
        tmp_path / "plain-numpy.lz4"
    )  # a plain pickle of an array also names code (numpy's reconstructor)
    arrays.write_bytes(lz4.frame.compress(pickle.dumps([np.zeros(3, np.float32)], protocol=4)))
    with pytest.raises(AssetError, match="_reconstruct"):
        mtcnn_weights.load_weights(arrays, assets.sha256_file(arrays))
    objects = tmp_path / "objects.lz4"
    objects.write_bytes(lz4.frame.compress(pickle.dumps({"not": "arrays"}, protocol=4)))
    with pytest.raises(AssetError, match="list of float arrays"):
        mtcnn_weights.load_weights(objects, assets.sha256_file(objects))


def test_the_detector_builds_mtcnn_without_joblib_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib
    import mtcnn.utils.tensorflow

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("MTCNN weights must not be loaded with joblib.load (pickle)")

    monkeypatch.setattr(joblib, "load", refuse)
    monkeypatch.setattr(mtcnn.utils.tensorflow, "load_weights", refuse)
    for stage in ("stage_pnet", "stage_rnet", "stage_onet"):
        monkeypatch.setattr(f"mtcnn.stages.{stage}.load_weights", refuse)
    from faceoff.detector.detection import FaceDetector

    photo = PHOTOS / "barack" / "barack_01.jpg"
    assert len(FaceDetector().detect(photo.read_bytes()).faces) == 1


# ---- nothing is deserialised as code ------------------------------------------------------------

#: Calls that turn file contents into code or arbitrary objects. The one restricted unpickler
#: (MTCNN's weights) is named with the reason it is allowed.
FORBIDDEN = {
    r"\bpickle\.loads?\(": "pickle runs code named in the file",
    r"\bUnpickler\b": "pickle runs code named in the file",
    r"\bjoblib\.load\(": "joblib.load is pickle",
    r"\bcloudpickle\b|\bdill\b": "pickle variants",
    r"\bmarshal\.loads?\(": "marshal loads bytecode",
    r"\bload_model\(": "Keras load_model rebuilds layers (and Lambda bytecode) from the file",
    r"\bmodel_from_(json|yaml|config)\(": "Keras rebuilds layers from the file's config",
    r"deserialize_keras_object|\bfunc_load\(": "Keras deserialisation",
    r"saved_model\.load\(|\bload_saved_model\(": "a SavedModel is a program",
    r"allow_pickle\s*=\s*True": "np.load with pickles",
    r"\btorch\.load\(": "torch.load unpickles",
    r"\byaml\.load\(|\byaml\.unsafe_load\(": "YAML tags build objects",
    r"\bMTCNN\(": "MTCNN() loads its weights with joblib.load; use faceoff.detector.mtcnn_weights.build_mtcnn",
}
ALLOWED = {
    # The restricted unpickler itself: three names only, float arrays only (tested above).
    ("services/detector/src/faceoff/detector/mtcnn_weights.py", r"\bUnpickler\b"),
    ("services/detector/src/faceoff/detector/mtcnn_weights.py", r"\bMTCNN\("),
}


def _sources() -> list[Path]:
    roots = [REPO / "services", REPO / "sdk", REPO / "cli", REPO / "protos", REPO / "tools"]
    return sorted(
        p for root in roots for p in root.rglob("*.py") if "/src/faceoff/v1/" not in p.as_posix()
    )


def test_no_code_path_deserialises_a_model_as_code() -> None:
    sources = _sources()
    assert len(sources) > 40  # the scan sees the tree
    found = []
    for path in sources:
        rel = path.relative_to(REPO).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if code.lstrip().startswith(('"', "'")) or not code.strip():
                continue
            for pattern, why in FORBIDDEN.items():
                if re.search(pattern, code) and (rel, pattern) not in ALLOWED:
                    found.append(f"{rel}:{number}: {line.strip()}  ({why})")
    assert not found, "model files must be read as data:\n" + "\n".join(found)


def test_the_facenet_h5_is_read_as_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading FaceNet never calls Keras/TF deserialisation or pickle, nor reads the h5's model config."""
    import h5py
    import keras
    import keras.src.utils.python_utils as python_utils
    import tensorflow as tf

    from faceoff.faces.models.facenet import FaceNet

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a model file was deserialised as code")

    for owner, attr in [
        (keras.models, "load_model"),
        (keras.saving, "load_model"),
        (keras.models, "model_from_json"),
        (keras.saving, "deserialize_keras_object"),
        (keras.layers, "deserialize"),
        (python_utils, "func_load"),
        (tf.saved_model, "load"),
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
    ]:
        monkeypatch.setattr(owner, attr, refuse)
    read: list[str] = []
    real_getitem = h5py.AttributeManager.__getitem__

    def recording(self: Any, name: str) -> Any:
        read.append(name)
        return real_getitem(self, name)

    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", recording)
    model = FaceNet()
    assert "model_config" not in read and "layer_names" in read
    embedding = model.embed_numpy(np.full((1, 160, 160, 3), 0.5, np.float32))
    assert embedding.shape == (1, 128) and np.isfinite(embedding).all()
