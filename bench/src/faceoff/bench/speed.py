"""``faceoff bench speed``: how fast the masker protects faces, against the floor the model sets.

For batches of 1, 8 and 32 real face crops (the shared ``aligned160`` set, repeated as needed) it
measures, per face:

- the surrogate's forward pass (compiled);
- one forward + backward pass (the gradient of the embedding with respect to the pixels), the
  unavoidable cost of one attack iteration;
- the default profile's whole attack, and from it the time of one attack step;
- the ratio of the attack's time to the floor, ``iterations x (forward + backward)``.

It also times one single-face photo protected end to end in-process (decode, MTCNN, reference
set, attack, paste-back, encode, receipts) after a warm-up, which is what a user waits for.
Figures are medians over repeats; nothing is written to disk unless ``--json`` names a file.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceoff.bench.report import emit, print_table
from faceoff.cli.paths import CELEBS
from faceoff.sdk import DEFAULT_PROFILE

SHARED = CELEBS


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (tracing, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _crops(data: Path, n: int) -> np.ndarray:
    files = sorted((data / "aligned160").glob("*/*.png"))
    if not files:
        raise SystemExit(f"faceoff bench speed: no face crops under {data / 'aligned160'}")
    out = []
    for i in range(n):
        with Image.open(files[i % len(files)]) as img:
            out.append(np.asarray(img.convert("RGB").resize((160, 160)), np.float32) / 255.0)
    return np.stack(out)


def _run_numpy(function: Callable[[Any], Any], x: Any) -> Any:
    return function(x).numpy()


def _member_row(model: Any, repeats: int, xla: bool) -> dict[str, Any]:
    """One surrogate's forward + backward pass on one crop, and with ``xla`` the same compiled
    by XLA (``jit_compile=True``): its first call (the compile) and its warm time."""
    import tensorflow as tf

    size = model.input_size
    x = tf.constant(np.random.default_rng(0).uniform(size=(1, size, size, 3)).astype(np.float32))
    direction = tf.constant(
        np.random.default_rng(1).normal(size=(1, model.embedding_dim)).astype(np.float32)
    )
    row: dict[str, Any] = {"surrogate": model.name, "input_size": size}
    for name, jit in (("graph", False), ("xla", True)) if xla else (("graph", False),):

        @tf.function(jit_compile=jit)
        def forward_backward(x: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = tf.reduce_sum(model.embed(x) * direction)
            return tape.gradient(value, x)

        started = time.perf_counter()
        try:
            forward_backward(x).numpy()
        except tf.errors.InvalidArgumentError as exc:  # an op without an XLA kernel
            row[f"{name}_error"] = str(exc).split("\n")[0][:300]
            continue
        row[f"{name}_first_call_seconds"] = time.perf_counter() - started
        row[f"{name}_forward_backward_ms"] = 1000 * _median_seconds(
            functools.partial(_run_numpy, forward_backward, x), repeats
        )
    return row


def run(
    data: Path = SHARED,
    batches: tuple[int, ...] = (1, 8, 32),
    repeats: int = 3,
    profile: str = DEFAULT_PROFILE,
    overrides: dict[str, Any] | None = None,
    xla: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Measure and return a JSON-ready dict (``overrides``: options over the profile's; ``xla``:
    also time each surrogate's pass compiled by XLA; ``device``: auto, cpu or gpu, see
    :mod:`faceoff.masker.devices`)."""
    import tensorflow as tf

    from faceoff.detector.detection import FaceDetector
    from faceoff.masker.devices import resolve_device
    from faceoff.masker.options import resolve
    from faceoff.masker.pipeline import ProtectCall, protect_in_process
    from faceoff.masker.protection import Protector

    try:
        placed = resolve_device(device)
    except ValueError as exc:
        raise SystemExit(f"faceoff bench speed: --device {device}: {exc}") from None
    protector = Protector(device=placed)
    options = protector.resolved(resolve(profile, **(overrides or {})))
    model = protector.model_for(
        options
    )  # the profile's surrogate, or its ensemble: the floor is on it

    @tf.function(reduce_retracing=True)
    def forward_backward(x: tf.Tensor, direction: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(model.embed(x) * direction)
        return tape.gradient(value, x)

    with tf.device(placed):  # the passes measured where the attack runs
        rows = []
        for batch in batches:
            crops = _crops(data, batch)
            x = tf.constant(crops)
            direction = tf.constant(
                np.random.default_rng(0)
                .normal(size=(batch, model.embedding_dim))
                .astype(np.float32)
            )
            forward = (
                _median_seconds(lambda: model.embed_numpy(crops, batch_size=batch), repeats) / batch
            )
            fwd_bwd = (
                _median_seconds(lambda: forward_backward(x, direction).numpy(), repeats) / batch
            )
            job = protector.crop_job(crops, options)
            attack = _median_seconds(lambda: protector.attack([job]), max(1, repeats - 1)) / batch
            iterations = options.total_iterations
            rows.append(
                {
                    "batch": batch,
                    "forward_seconds_per_face": forward,
                    "forward_backward_seconds_per_face": fwd_bwd,
                    "attack_step_seconds_per_face": attack / iterations,
                    "attack_seconds_per_face": attack,
                    "floor_seconds_per_face": iterations * fwd_bwd,
                    "ratio_to_floor": attack / (iterations * fwd_bwd),
                }
            )

        members = [_member_row(m, repeats, xla) for m in getattr(model, "members", [model])]

    photo = data / "photos/taylor/taylor_02.jpg"
    detector = FaceDetector()
    photo_bytes = photo.read_bytes()
    end_to_end = _median_seconds(
        lambda: protect_in_process(ProtectCall(photo_bytes, options), protector, detector), repeats
    )
    return {
        "benchmark": "speed",
        "profile": profile,
        "overrides": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in (overrides or {}).items()
        },
        "work_size": options.work_size,
        "attack": options.attack,
        "norm": options.norm,
        "surrogates": list(options.surrogates),
        "iterations": options.total_iterations,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "device": placed,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0",
        },
        "batches": rows,
        "members": members,
        "photo_end_to_end": {"photo": photo.name, "faces": 1, "seconds": end_to_end},
    }


def main(
    data: str | None,
    repeats: int,
    json_path: str | None,
    profile: str,
    batches: str = "1,8,32",
    settings: list[str] | None = None,
    xla: bool = False,
    device: str = "auto",
) -> int:
    """Run and print the benchmark (``batches``: comma-separated batch sizes)."""
    try:
        sizes = tuple(int(b) for b in batches.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise SystemExit(
            f"faceoff bench speed: --batches is {batches!r}; give positive integers, e.g. 1,8,32"
        )
    from faceoff.bench.transfer import parse_settings

    result = run(
        Path(data) if data else SHARED,
        batches=sizes,
        repeats=repeats,
        profile=profile,
        overrides=parse_settings(settings or []),
        xla=xla,
        device=device,
    )
    emit(result, json_path)
    print_table(
        ["batch", "fwd ms/face", "fwd+bwd ms/face", "step ms/face", "attack s/face", "x floor"],
        [
            [
                r["batch"],
                1000 * r["forward_seconds_per_face"],
                1000 * r["forward_backward_seconds_per_face"],
                1000 * r["attack_step_seconds_per_face"],
                r["attack_seconds_per_face"],
                r["ratio_to_floor"],
            ]
            for r in result["batches"]
        ],
    )
    print()
    print_table(
        ["surrogate", "fwd+bwd ms", "XLA fwd+bwd ms", "XLA first call s"],
        [
            [
                m["surrogate"],
                m.get("graph_forward_backward_ms", "-"),
                m.get("xla_forward_backward_ms", "fails" if "xla_error" in m else "-"),
                m.get("xla_first_call_seconds", "-"),
            ]
            for m in result["members"]
        ],
    )
    e2e = result["photo_end_to_end"]
    print(
        f"single-face photo end to end ({e2e['photo']}, profile {result['profile']}"
        + "".join(f", {k}={v}" for k, v in result["overrides"].items())
        + f"): {e2e['seconds']:.2f} s"
    )
    return 0
