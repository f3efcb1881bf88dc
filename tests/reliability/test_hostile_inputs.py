"""Every hostile input through every RPC and the CLI: a clear error or a correct result.

The cases come from :func:`faceoff.bench.hostile.hostile_inputs` (generated in code). Each goes
to Detect, Protect, ProtectStream and Evaluate on real servers (the field cases only to the
RPCs that have the field); the answer must be the expected status with a message naming the
problem, or a result that is right (display size, faces, output format, alpha, colour profile).
The peak resident memory of the process, which runs the three servers, is measured around every
request. Then the CLI: ``faceoff protect`` over every photo case in one process (with
``--server``, so it loads no model), each option case as its own ``faceoff protect`` (refused
before any photo), and ``faceoff detect`` / ``faceoff evaluate`` on five refused photos. At the
end the three services must still be SERVING and the peak memory below a bound that one
decoded decompression bomb would break.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from faceoff.bench.hostile import (
    EVALUATE_RECOGNIZERS,
    RPCS,
    HostileCase,
    hostile_inputs,
    reference_photo,
    request,
)
from faceoff.common.imaging import MAX_ICC_BYTES, decode
from faceoff.masker.convert import FORMATS
from faceoff.v1 import detector_pb2_grpc, evaluator_pb2_grpc, masker_pb2_grpc
from tests.conftest import CELEBS
from tests.reliability.memory import peak_rss_bytes, reset_peak_rss, rss_bytes

if TYPE_CHECKING:
    from tests.reliability.pipeline import Pipeline

# Pillow warns about each corrupt EXIF block it skips: expected here.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin"),
]
pytest_plugins = ["tests.reliability.pipeline"]

CASES: dict[str, HostileCase] = {case.name: case for case in hostile_inputs(CELEBS)}
PAIRS = [
    (name, rpc)
    for name, case in CASES.items()
    for rpc in RPCS
    if rpc in case.expect or (case.skip and rpc == "Detect")
]
#: Bound on how far the process's peak RSS may rise over the hostile cases, from where it stood at
#: the first one (with the three servers and their models loaded, and whatever earlier tests in
#: the same pytest process left behind: the peak is process-wide, so an absolute bound would
#: depend on test order). Measured rises are 1.3-1.7 GiB; a 3.6-gigapixel bomb decoded would
#: need 10 GiB.
RSS_BOUND = 3 << 30
#: (case, RPC or command) -> (status, RSS before, peak RSS during; bytes, 0 for CLI runs), reported at the end.
OUTCOMES: dict[tuple[str, str], tuple[str, int, int]] = {}
#: Bad photos ``faceoff detect`` and ``faceoff evaluate`` are run on (one process each, so a subset).
CLI_SUBSET = ("empty", "text_file", "jpeg_truncated", "png_bomb_60000x60000", "png_bad_crc")
FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
CLI_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def reference() -> bytes:
    return reference_photo(CELEBS)


def _call(pipeline: Pipeline, rpc: str, message: Any) -> tuple[Any, list[Any]]:
    """The response (and, for ProtectStream, the progress events before it)."""
    if rpc == "Detect":
        return detector_pb2_grpc.DetectorStub(pipeline.channels["detector"]).Detect(
            message, timeout=300
        ), []
    if rpc == "Protect":
        return masker_pb2_grpc.MaskerStub(pipeline.channels["masker"]).Protect(
            message, timeout=300
        ), []
    if rpc == "ProtectStream":
        events = list(
            masker_pb2_grpc.MaskerStub(pipeline.channels["masker"]).ProtectStream(
                message, timeout=300
            )
        )
        assert events and events[-1].WhichOneof("event") == "result", (
            "the stream must end with its result"
        )
        assert all(e.WhichOneof("event") == "progress" for e in events[:-1])
        return events[-1].result, events[:-1]
    return evaluator_pb2_grpc.EvaluatorStub(pipeline.channels["evaluator"]).Evaluate(
        message, timeout=300
    ), []


def _check_faces(case: HostileCase, found: int) -> None:
    if case.faces is not None:
        least, most = case.faces
        assert least <= found <= most, f"{case.name}: {found} faces, expected {least}..{most}"


def _check_protected(case: HostileCase, response: Any) -> None:
    out = Image.open(io.BytesIO(response.image.data))
    photo = decode(response.image.data)
    if case.size is not None:
        assert (photo.full_width, photo.full_height) == case.size, (
            "the output must keep the photo's display size"
        )
    if case.output_format is not None:
        assert FORMAT_NAMES[response.image.format] == case.output_format == out.format
    _check_faces(case, response.faces_found)
    assert len(response.faces) == response.faces_found, "every face found is protected"
    assert out.getexif().get(0x0112) in (None, 1), "pixels are stored upright: no orientation tag"
    icc = out.info.get("icc_profile")
    assert not icc or icc[16:20] == b"RGB ", (
        "an RGB photo must not carry a CMYK or grayscale ICC profile"
    )
    assert not icc or len(icc) <= MAX_ICC_BYTES, "an oversized ICC profile is not copied"
    notes = " ".join(response.notes).lower()
    assert case.note in notes if case.note else not notes, (case.note, list(response.notes))
    if case.name == "palette_transparency":
        assert photo.alpha is not None and photo.alpha.min() == 0, "transparency must survive"
    for face in response.faces:
        assert face.l2 > 0 and face.psnr > 20


def _check_result(case: HostileCase, rpc: str, response: Any, events: list[Any]) -> None:
    if rpc == "Detect":
        if case.size is not None:
            assert (response.width, response.height) == case.size
        _check_faces(case, len(response.faces))
    elif rpc in ("Protect", "ProtectStream"):
        _check_protected(case, response)
        if rpc == "ProtectStream":
            assert [e.progress.stage for e in events][:1] == ["detect"]
    else:
        assert [v.recognizer for v in response.verdicts] == list(EVALUATE_RECOGNIZERS)
        for verdict in response.verdicts:
            if case.faces == (0, 0):
                assert verdict.error_kind == "no_face", verdict.error
            elif case.faces is not None:
                assert verdict.verified and not verdict.error, verdict.error


@pytest.mark.parametrize(("name", "rpc"), PAIRS, ids=[f"{n}-{r}" for n, r in PAIRS])
def test_hostile_input(pipeline: Pipeline, reference: bytes, name: str, rpc: str) -> None:
    case = CASES[name]
    if case.skip:
        pytest.skip(case.skip)
    expect = case.expect[rpc]
    message = request(case, rpc, reference)
    before = rss_bytes()
    reset_peak_rss()
    events: list[Any] = []
    try:
        response, events = _call(pipeline, rpc, message)
        code, details = "OK", ""
    except grpc.RpcError as exc:
        response, code, details = None, exc.code().name, exc.details() or ""
    OUTCOMES[name, rpc] = (code, before, peak_rss_bytes())
    assert code == expect.status, f"{name} via {rpc}: {code} {details!r}, expected {expect.status}"
    if not expect.ok:
        assert expect.needle in details.lower(), (
            f"{name} via {rpc}: the message {details!r} should name {expect.needle!r}"
        )
        assert "Traceback" not in details and "internal error" not in details
        return
    _check_result(case, rpc, response, events)


# -- the CLI -----------------------------------------------------------------------------------


def _suffix(data: bytes) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return SUFFIXES.get(str(img.format), ".bin")
    except Exception:  # noqa: BLE001 - not an image: any name will do
        return ".txt" if data[:1].isascii() and data[:1].isalpha() else ".jpg"


def _photo_cases() -> list[HostileCase]:
    """Cases whose photo is the problem (no option, no reference) and that the CLI can express."""
    return [
        c
        for c in CASES.values()
        if not c.skip
        and c.cli == ()
        and not c.protect_options
        and not c.detect_options
        and not c.evaluate_fields
        and c.references is None
    ]


def _faceoff(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faceoff.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=CLI_ENV,
    )


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    files = {}
    for case in _photo_cases():
        path = folder / f"{case.name}{_suffix(case.image)}"
        path.write_bytes(case.image)
        files[case.name] = path
    return files


def test_cli_protect_takes_every_photo_case(
    pipeline: Pipeline, photo_files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = _faceoff(
        "protect",
        *map(str, photo_files.values()),
        "-o",
        str(out),
        "--server",
        pipeline.masker.address,
        "--profile",
        "low",
        "--iterations",
        "2",
        "--seed",
        "1",
        "--json",
    )
    receipts = {Path(r["input"]).name: r for r in map(json.loads, run.stdout.splitlines())}
    failures = sum(1 for name in photo_files if not CASES[name].expect["Protect"].ok)
    assert run.returncode == (1 if failures else 0), run.stderr[-2000:]
    for name, path in photo_files.items():
        case, receipt = CASES[name], receipts[path.name]
        expect = case.expect["Protect"]
        if expect.ok:
            assert receipt["status"] == "protected", receipt
            output = Path(receipt["output"])
            photo = decode(output.read_bytes())
            if case.size is not None:
                assert (photo.full_width, photo.full_height) == case.size
            if case.faces is not None:
                assert case.faces[0] <= receipt["faces_found"] <= case.faces[1]
        else:
            assert receipt["status"] == "failed" and receipt["code"] == expect.status, receipt
            assert expect.needle in receipt["error"].lower(), receipt
            assert f"{path}: " in run.stderr, (
                "each failure is reported on standard error, naming the file"
            )
    for name, path in photo_files.items():
        OUTCOMES[name, "faceoff protect"] = (receipts[path.name]["status"], 0, 0)


def test_cli_refuses_bad_options_before_any_photo(
    photo_files: dict[str, Path], tmp_path: Path
) -> None:
    photo = next(p for n, p in photo_files.items() if n == "no_faces")
    for case in CASES.values():
        if not case.cli or case.skip:
            continue
        run = _faceoff(
            "protect", str(photo), "-o", str(tmp_path / case.name), *case.cli, timeout=120
        )
        assert run.returncode == 2, f"{case.name}: exit {run.returncode}: {run.stderr[-500:]}"
        needle = next(e.needle for e in case.expect.values())
        assert needle in run.stderr.lower(), f"{case.name}: {run.stderr[-500:]}"
        assert "Traceback" not in run.stderr
        assert not (tmp_path / case.name).exists(), (
            "nothing is written when the options are refused"
        )
        OUTCOMES[case.name, "faceoff protect"] = ("exit 2", 0, 0)


def test_cli_detect_and_evaluate_refuse_bad_photos(
    photo_files: dict[str, Path], tmp_path: Path
) -> None:
    references = tmp_path / "references"
    references.mkdir()
    (references / "me.jpg").write_bytes(reference_photo(CELEBS))
    for name in CLI_SUBSET:
        path, expect = photo_files[name], CASES[name].expect["Detect"]
        for command in (
            ("detect", str(path)),
            ("evaluate", str(path), "--reference", str(references), "--recognizers", "sface"),
        ):
            run = _faceoff(*command, timeout=120)
            assert run.returncode == 2, (
                f"faceoff {command[0]} {name}: exit {run.returncode}: {run.stderr[-500:]}"
            )
            assert expect.needle in run.stderr.lower() and str(path) in run.stderr, run.stderr[
                -500:
            ]
            assert "Traceback" not in run.stderr
            OUTCOMES[name, f"faceoff {command[0]}"] = ("exit 2", 0, 0)


# -- after everything ------------------------------------------------------------------------


def test_services_still_serving_and_memory_bounded(pipeline: Pipeline) -> None:
    for service in ("detector", "masker", "evaluator"):
        assert pipeline.health(service) == health_pb2.HealthCheckResponse.SERVING, (
            f"the {service} stopped serving"
        )
    ran = {k: v for k, v in OUTCOMES.items() if v[2]}
    assert ran, "no hostile case ran"
    worst = max(ran, key=lambda k: ran[k][2])
    growth = max(ran, key=lambda k: ran[k][2] - ran[k][1])
    print(
        f"\nhostile inputs: {len(ran)} requests; peak RSS {ran[worst][2] / 2**20:.0f} MiB ({worst[0]} via {worst[1]}); "
        f"largest growth in one request {(ran[growth][2] - ran[growth][1]) / 2**20:.0f} MiB ({growth[0]} via {growth[1]})"
    )
    for (name, rpc), (code, before, peak) in OUTCOMES.items():
        rss = f"{before / 2**20:6.0f} -> {peak / 2**20:6.0f} MiB" if peak else ""
        print(f"  {name:28s} {rpc:16s} {code:20s} {rss}")
    baseline = min(before for _, before, _ in ran.values())
    assert ran[worst][2] - baseline < RSS_BOUND, (
        f"{worst}: peak RSS {ran[worst][2] / 2**30:.1f} GiB, {(ran[worst][2] - baseline) / 2**30:.1f} GiB over "
        f"the {baseline / 2**30:.1f} GiB the process had at the first case"
    )
