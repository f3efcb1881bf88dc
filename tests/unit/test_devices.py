"""Where attacks run (faceoff.masker.devices): the placement logic, tested on a CPU-only machine
with TensorFlow's device list replaced where a GPU has to be seen."""

from __future__ import annotations

import pytest
import tensorflow as tf

from faceoff.common.settings import SettingsError
from faceoff.masker.devices import (
    CPU_BATCH_FACES,
    GPU_BATCH_FACES,
    batch_faces_for,
    resolve_device,
)
from faceoff.masker.server import MaskerSettings

FAKE_GPU = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")


def test_auto_takes_a_gpu_when_tensorflow_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: [FAKE_GPU] if kind == "GPU" else []
    )
    assert resolve_device("auto") == resolve_device("gpu") == "/GPU:0"
    assert resolve_device("cpu") == "/CPU:0"  # asked for: the CPU even with a GPU
    assert batch_faces_for("/GPU:0") == GPU_BATCH_FACES > batch_faces_for("/CPU:0")


def test_without_a_gpu_auto_is_the_cpu_and_gpu_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert resolve_device("auto") == "/CPU:0"
    assert batch_faces_for("/CPU:0") == CPU_BATCH_FACES
    with pytest.raises(ValueError, match=r"FACEOFF_DEVICE is gpu but TensorFlow sees no GPU"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match=r"one of auto, cpu, gpu, got 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(SettingsError, match="FACEOFF_DEVICE"):
        MaskerSettings(device="cuda")
