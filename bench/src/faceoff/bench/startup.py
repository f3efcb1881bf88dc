"""``faceoff bench startup``: where the seconds of a cold ``faceoff protect`` go.

A fresh Python process (nothing imported, nothing traced) does what ``faceoff protect photo.jpg``
does in-process (``Client.local()``), one step at a time, and stamps each: the interpreter and
Face-Off's imports, the TensorFlow import, MTCNN, the default surrogate (FaceNet and its decoy
gallery), the profile's other surrogates, then the first photo (detection, preparation, the
attack with its trace, paste-back + encode + receipts) and ``--photos - 1`` more photos, warm.

The cold figure is the process's wall time from its start to the first protected photo; the warm
figure the median of the later photos; the trace is the first attack less a warm one. Nothing is
written to disk unless ``--json`` names a file (the photos stay in memory).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faceoff.bench.report import emit, print_table
from faceoff.cli.paths import CELEBS
from faceoff.sdk import DEFAULT_PROFILE

DEFAULT_PHOTO = CELEBS / "photos/barack/barack_01.jpg"
#: The goals of issue 15 (docs/speed.md): cold at most 3x warm and 20 s, warm at most 5 s.
COLD_TO_WARM_GOAL = 3.0
COLD_GOAL_SECONDS = 20.0
WARM_GOAL_SECONDS = 5.0


def child(profile: str, photo: Path, photos: int, spawned: float) -> dict[str, Any]:
    """Run in the fresh process: the steps of a cold protection, stamped (seconds since spawn)."""
    marks: list[tuple[str, float]] = []

    def mark(step: str) -> None:
        marks.append((step, time.time() - spawned))

    from faceoff.sdk import Client

    mark("interpreter and imports")
    import tensorflow as tf  # noqa: F401 - its import is a step of its own

    mark("tensorflow import")
    client = Client.local()
    pipeline = client._backend  # LocalPipeline: loads each model when first asked
    detector = pipeline.detector()  # type: ignore[attr-defined]
    mark("detector (MTCNN)")
    protector = pipeline.protector()  # type: ignore[attr-defined]
    mark("default surrogate (FaceNet, decoys)")
    from faceoff.masker.options import resolve

    protector.model_for(protector.resolved(resolve(profile)))
    mark(f"other surrogates of {profile}")

    stages: dict[str, float] = {}

    def timed(obj: Any, name: str, stage: str) -> None:
        function: Callable[..., Any] = getattr(obj, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - started

        setattr(obj, name, wrapper)

    timed(detector, "detect", "detect")
    timed(protector, "prepare", "prepare")
    timed(protector, "attack", "attack")
    timed(protector, "finish", "finish")
    data = photo.read_bytes()
    runs = []
    for i in range(photos):
        stages.clear()
        started = time.perf_counter()
        client.protect(data, profile=profile, seed=1)
        runs.append({"seconds": time.perf_counter() - started, **stages})
        if i == 0:
            mark("first photo")
    client.close()
    steps, previous = [], 0.0
    for step, at in marks:
        steps.append({"step": step, "seconds": at - previous, "at": at})
        previous = at
    return {"steps": steps, "photos": runs}


def run(
    profile: str = DEFAULT_PROFILE, photo: Path = DEFAULT_PHOTO, photos: int = 3
) -> dict[str, Any]:
    """Start the fresh process, collect its stamps and summarise them."""
    if photos < 2:
        raise SystemExit(f"faceoff bench startup: --photos is {photos}; at least 2 (cold + warm)")
    if not photo.is_file():
        raise SystemExit(f"faceoff bench startup: no photo at {photo}")
    spawned = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "faceoff.bench.startup",
            "--child",
            profile,
            str(photo),
            str(photos),
            repr(spawned),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"faceoff bench startup: the fresh process failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return summarise(out, profile, photo.name)


def summarise(out: dict[str, Any], profile: str, photo_name: str) -> dict[str, Any]:
    """The JSON-ready result from the fresh process's stamps (``child``'s return value)."""
    first, warm_runs = out["photos"][0], out["photos"][1:]
    warm = statistics.median(r["seconds"] for r in warm_runs)
    warm_attack = statistics.median(r["attack"] for r in warm_runs)
    cold = next(s["at"] for s in out["steps"] if s["step"] == "first photo")
    breakdown = [s for s in out["steps"] if s["step"] != "first photo"]
    for stage in ("detect", "prepare"):
        breakdown.append({"step": f"first photo: {stage}", "seconds": first[stage]})
    breakdown.append(
        {"step": "first photo: trace of the attack", "seconds": first["attack"] - warm_attack}
    )
    breakdown.append({"step": "first photo: attack", "seconds": warm_attack})
    breakdown.append({"step": "first photo: paste, encode, receipts", "seconds": first["finish"]})
    rest = first["seconds"] - sum(first[s] for s in ("detect", "prepare", "attack", "finish"))
    breakdown.append({"step": "first photo: the rest (checks, threads)", "seconds": rest})
    return {
        "benchmark": "startup",
        "profile": profile,
        "photo": photo_name,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "cold_seconds": cold,
        "warm_seconds": warm,
        "cold_to_warm": cold / warm,
        "goals": {
            "cold_to_warm_at_most": COLD_TO_WARM_GOAL,
            "cold_seconds_at_most": COLD_GOAL_SECONDS,
            "warm_seconds_at_most": WARM_GOAL_SECONDS,
        },
        "breakdown": [{"step": b["step"], "seconds": round(b["seconds"], 2)} for b in breakdown],
        "photos": [{k: round(v, 2) for k, v in r.items()} for r in out["photos"]],
    }


def main(profile: str, photo: str | None, photos: int, json_path: str | None) -> int:
    """Run and print the benchmark."""
    result = run(profile, Path(photo) if photo else DEFAULT_PHOTO, photos)
    emit(result, json_path)
    print_table(["step", "s"], [[b["step"], b["seconds"]] for b in result["breakdown"]])
    print(
        f"cold (process start to the first protected photo) {result['cold_seconds']:.1f} s; "
        f"warm photo {result['warm_seconds']:.2f} s (median of {photos - 1}); "
        f"cold / warm {result['cold_to_warm']:.2f} (goals: <= {COLD_TO_WARM_GOAL:g}x, "
        f"<= {COLD_GOAL_SECONDS:g} s cold, <= {WARM_GOAL_SECONDS:g} s warm)"
    )
    return 0


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--child":
    result = child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    sys.stdout.write(json.dumps(result) + "\n")
