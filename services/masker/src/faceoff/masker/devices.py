"""Where the masker's attacks run: a GPU when TensorFlow sees one, else the CPU.

``FACEOFF_DEVICE`` (and ``faceoff bench speed --device``) is ``auto`` (a GPU if present), ``gpu``
(refused with a clear error when TensorFlow sees none, rather than silently running on the CPU)
or ``cpu``. Every op of an attack (the surrogates' forward and backward passes, the shaping,
the optimiser's update) is placed on that one device, so a batch's tensors never cross between
host and device inside an iteration; decode, detection, paste-back and encoding stay on the
host.

Batch sizes: on a CPU a batch of 8 faces is about 30% cheaper per face than one face and larger
batches gain nothing more (``faceoff bench speed``: the floor per face flattens from batch 8 on,
docs/results.md), so the masker's default ``FACEOFF_MAX_BATCH_FACES`` is 8. A GPU's cores are
mostly idle at batch 1, so the GPU overlay sets 32 (:data:`GPU_BATCH_FACES`) and a queue of 256
faces; that is reasoning and an estimate of memory (docs/speed.md), not a measurement on a GPU.
"""

from __future__ import annotations

DEVICES = ("auto", "cpu", "gpu")
#: Faces per attack batch on a CPU (the masker's default) and on a GPU (the GPU overlay's).
CPU_BATCH_FACES = 8
GPU_BATCH_FACES = 32


def resolve_device(name: str = "auto") -> str:
    """The TensorFlow device (``/CPU:0`` or ``/GPU:0``) that ``name`` stands for.

    Raises:
        ValueError: ``name`` is not one of :data:`DEVICES`, or is ``gpu`` and TensorFlow sees
            no GPU (the message says what it found and what to set instead).
    """
    if name not in DEVICES:
        raise ValueError(f"FACEOFF_DEVICE must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cpu":
        return "/CPU:0"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return "/GPU:0"
    if name == "gpu":
        raise ValueError(
            "FACEOFF_DEVICE is gpu but TensorFlow sees no GPU (tf.config.list_physical_devices"
            "('GPU') is empty: no NVIDIA driver, or the CPU build of TensorFlow is installed; "
            "the GPU image installs tensorflow[and-cuda]); use auto or cpu"
        )
    return "/CPU:0"


def batch_faces_for(device: str) -> int:
    """Faces per attack batch that suit ``device`` (see the module docstring)."""
    return GPU_BATCH_FACES if "GPU" in device.upper() else CPU_BATCH_FACES
