"""``faceoff bench detector``: detector latency on a ~12 MP and a ~1 MP photo.

The photos are made in memory from a shared celebrity photo (upscaled and re-encoded as JPEG
quality 90), so the figures include what a Detect RPC pays: decoding (JPEGs at a reduced DCT
scale), the reduced copy, MTCNN and mapping boxes back. Nothing is written to disk.
"""

from __future__ import annotations

import io
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from PIL import Image

from faceoff.bench.report import emit, print_table
from faceoff.cli.paths import CELEBS

DEFAULT_PHOTO = CELEBS / "photos/barack/barack_01.jpg"
SIZES = {"12MP": (4000, 3000), "1MP": (1152, 864)}


def _jpeg_at(photo: Path, size: tuple[int, int]) -> bytes:
    with Image.open(photo) as img:
        buf = io.BytesIO()
        img.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=90)
        return buf.getvalue()


def run(
    photo: Path = DEFAULT_PHOTO, repeats: int = 10, detect_max_side: int = 1024
) -> dict[str, Any]:
    """Time ``FaceDetector.detect`` on each size; returns a JSON-ready dict."""
    from faceoff.detector.detection import FaceDetector

    detector = FaceDetector(detect_max_side=detect_max_side)
    results = []
    for label, size in SIZES.items():
        data = _jpeg_at(photo, size)
        detector.detect(data)  # warm-up for this input shape
        times = []
        faces = 0
        for _ in range(repeats):
            start = time.perf_counter()
            faces = len(detector.detect(data).faces)
            times.append(time.perf_counter() - start)
        results.append(
            {
                "photo": label,
                "width": size[0],
                "height": size[1],
                "jpeg_bytes": len(data),
                "faces": faces,
                "seconds_median": statistics.median(times),
                "seconds_p90": sorted(times)[int(0.9 * (len(times) - 1))],
                "seconds_min": min(times),
                "repeats": repeats,
            }
        )
    return {
        "benchmark": "detector",
        "source_photo": photo.name,
        "detect_max_side": detect_max_side,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "results": results,
    }


def main(photo: str | None, repeats: int, json_path: str | None, detect_max_side: int) -> int:
    """Run and print the benchmark."""
    result = run(Path(photo) if photo else DEFAULT_PHOTO, repeats, detect_max_side)
    emit(result, json_path)
    print_table(
        ["photo", "size", "faces", "median s", "p90 s"],
        [
            [
                r["photo"],
                f"{r['width']}x{r['height']}",
                r["faces"],
                r["seconds_median"],
                r["seconds_p90"],
            ]
            for r in result["results"]
        ],
    )
    return 0
