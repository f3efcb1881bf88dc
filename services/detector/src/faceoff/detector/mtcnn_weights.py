"""MTCNN's weights, verified by SHA-256 and read without running code from the files.

The ``mtcnn`` 1.0.0 package ships the weights of its three networks as joblib files
(``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``: lz4-compressed pickles of a list of arrays) and
loads them with ``joblib.load``, i.e. with pickle, which runs whatever a tampered file asks.
Here each file is checked against the digest pinned below before it is read, and it is read with
an unpickler that knows three names only, joblib's array wrapper, ``numpy.ndarray`` and
``numpy.dtype``, so a file that names anything else (``os.system``, ``builtins.eval`` ...) is
refused before any of it runs; the result must be a list of float arrays. :func:`build_mtcnn`
builds the package's networks and stages with these weights, never calling ``joblib.load``.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["WEIGHTS", "build_mtcnn", "load_weights", "weights_dir"]

#: SHA-256 of each weights file of ``mtcnn==1.0.0`` (the version pinned in services/detector/pyproject.toml).
WEIGHTS: dict[str, str] = {
    "pnet.lz4": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet.lz4": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet.lz4": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}

#: The only globals a weights file may name.
_ALLOWED_GLOBALS = frozenset(
    {
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


def weights_dir() -> Path:
    """The installed package's weights folder (found without importing the package)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the mtcnn package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"


def _unpickler(data: bytes, file: Path) -> Any:
    from joblib.numpy_pickle import NumpyUnpickler

    class WeightsUnpickler(NumpyUnpickler):
        """joblib's array reader with every global but the allowed three refused."""

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) not in _ALLOWED_GLOBALS:
                raise pickle.UnpicklingError(
                    f"it refers to {module}.{name}; an MTCNN weights file holds float arrays only"
                )
            return super().find_class(module, name)

    return WeightsUnpickler(str(file), io.BytesIO(data), ensure_native_byte_order=True)


def load_weights(file: Path, sha256: str) -> list[np.ndarray]:
    """The arrays of the weights file ``file``, whose SHA-256 must be ``sha256``.

    Raises:
        faceoff.common.assets.AssetError: the file is missing, has another SHA-256, or holds anything
            but a list of float arrays; the message names the file.
    """
    import lz4.frame

    from faceoff.common.assets import AssetError, sha256_file

    fix = "reinstall the pinned mtcnn package (pip install --force-reinstall mtcnn==1.0.0)"
    if not file.is_file():
        raise AssetError(f"MTCNN weights file {file} is missing; {fix}")
    digest = sha256_file(file)
    if digest != sha256:
        raise AssetError(
            f"MTCNN weights file {file} has sha256 {digest} but {sha256} was expected "
            f"(corrupt or tampered); {fix}"
        )
    try:
        arrays = _unpickler(lz4.frame.decompress(file.read_bytes()), file).load()
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        raise AssetError(f"MTCNN weights file {file} cannot be read safely: {exc}") from None
    if not isinstance(arrays, list) or not all(
        isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays
    ):
        raise AssetError(f"MTCNN weights file {file} does not hold a list of float arrays")
    return arrays


def build_mtcnn(device: str) -> Any:
    """``mtcnn.MTCNN`` (face and landmark detection) with verified weights, on ``device``."""
    from mtcnn import MTCNN
    from mtcnn.network.onet import ONet
    from mtcnn.network.pnet import PNet
    from mtcnn.network.rnet import RNet
    from mtcnn.stages import StageONet, StagePNet, StageRNet
    from mtcnn.stages.base import StageBase

    folder = weights_dir()
    stages = []
    for stage_cls, net_cls, file, stage_name, stage_id in (
        (StagePNet, PNet, "pnet.lz4", "Stage PNET", 1),
        (StageRNet, RNet, "rnet.lz4", "Stage RNET", 2),
        (StageONet, ONet, "onet.lz4", "Stage ONET", 3),
    ):
        model = net_cls()
        model.build()
        model.set_weights(load_weights(folder / file, WEIGHTS[file]))
        # The stage's own __init__ would load the file again with joblib.load (pickle): the
        # stage is set up as StageBase does it, with the model built here.
        stage = stage_cls.__new__(stage_cls)
        StageBase.__init__(stage, stage_name=stage_name, stage_id=stage_id, model=model)
        stages.append(stage)
    return MTCNN(stages=stages, device=device)
