"""``faceoff protect`` over folders as a person runs it: resuming, receipts, the summary, progress.

The remote runs use the test run's one ``faceoff serve all`` (``--server``; the ``serve_all``
fixture of tests/conftest.py, shared with tests/integration/test_sdk.py); one run is embedded.
The batch runs take two attack steps a photo (``TWO_STEPS``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import PHOTOS, ServeAll

pytestmark = pytest.mark.slow

FACEOFF = [sys.executable, "-m", "faceoff.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
SMALL = ["bill/bill_03.jpg", "leo/leo_01.jpg", "morgan/morgan_01.jpg"]
#: The batch runs' options: ``low`` cut to two attack steps a photo (the batch is under test, not
#: the protection).
TWO_STEPS = ["--profile", "low", "--iterations", "2"]


@pytest.fixture(scope="module")
def stack(serve_all: ServeAll) -> ServeAll:
    """The run's one ``faceoff serve all`` (tests/conftest.py; its end checks Ctrl-C's drain)."""
    return serve_all


def _inputs(folder: Path, names: list[str] = SMALL) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(PHOTOS / name, folder / Path(name).name)) for name in names]


def _protect(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FACEOFF, "protect", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def test_folder_batch_skips_finished_outputs_and_clears_leftovers(
    tmp_path: Path, stack: ServeAll
) -> None:
    photos = _inputs(tmp_path / "in")
    with Image.open(PHOTOS / "meryl" / "meryl_04.jpg") as img:
        img.convert("P").save(tmp_path / "in" / "meryl_04.gif")  # a GIF comes back as PNG
    out = tmp_path / "out"
    out.mkdir()
    finished = out / "bill_03.protected.jpg"
    finished.write_bytes(photos[0].read_bytes())  # from an earlier run: must be left alone
    leftover = out / ".leo_01.protected.jpg.x1y2z3.part"
    leftover.write_bytes(b"half a photo from a run that crashed")
    receipts = tmp_path / "receipts.jsonl"

    run = _protect(
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--server",
        stack.address("masker"),
        *TWO_STEPS,
        "--json",
        "--receipts",
        str(receipts),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(Path(r["input"]).name, r["status"]) for r in lines] == [
        ("bill_03.jpg", "skipped"),
        ("leo_01.jpg", "protected"),
        ("meryl_04.gif", "protected"),
        ("morgan_01.jpg", "protected"),
    ]
    assert [json.loads(line) for line in receipts.read_text().splitlines()] == lines
    assert finished.read_bytes() == photos[0].read_bytes() and not leftover.exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "bill_03.protected.jpg",
        "leo_01.protected.jpg",
        "meryl_04.protected.png",
        "morgan_01.protected.jpg",
    ]
    for r in lines[1:]:
        assert (
            r["faces_protected"] >= 1 and r["profile"] == "low" and r["options"]["iterations"] == 2
        )
        with Image.open(r["output"]) as img, Image.open(r["input"]) as original:
            assert img.format == r["format"] == ("PNG" if r["input"].endswith(".gif") else "JPEG")
            assert img.size == original.size
    assert (
        "[1/4]" in run.stderr and "exists, skipped" in run.stderr
    )  # plain progress lines off a terminal
    for line in run.stderr.splitlines():
        assert "\\x" not in line and len(line) < 1000, "something like image bytes reached the log"


def test_a_killed_batch_resumes_where_it_stopped(tmp_path: Path, stack: ServeAll) -> None:
    _inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = [
        *FACEOFF,
        "protect",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--server",
        stack.address("masker"),
        *TWO_STEPS,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        while not any(out.glob("*.protected.jpg")) and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = {p.name: p.read_bytes() for p in out.glob("*.protected.jpg")}
    assert done, "the first run wrote nothing before it was killed"
    for name in done:  # a finished output is always a whole photo
        with Image.open(out / name) as img:
            img.load()

    rerun = _protect(
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--server",
        stack.address("masker"),
        *TWO_STEPS,
        "--json",
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    statuses = {
        Path(r["output"]).name: r["status"] for r in map(json.loads, rerun.stdout.splitlines())
    }
    assert {n for n, s in statuses.items() if s == "skipped"} == set(done)
    assert len(statuses) == 3 and all(s in ("skipped", "protected") for s in statuses.values())
    assert {p.name: p.read_bytes() for p in out.glob("*.protected.jpg") if p.name in done} == done
    assert not list(out.glob(".*.part"))


def test_summary_table_with_checks_and_a_failed_photo(tmp_path: Path, stack: ServeAll) -> None:
    _inputs(tmp_path / "in", SMALL[1:])
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a JPEG")
    run = _protect(
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--server",
        stack.address("masker"),
        "--evaluator",
        stack.address("evaluator"),
        "--check",
        "dlib,sface",
        *TWO_STEPS,
        "--reference",
        str(PHOTOS / "leo"),
    )
    assert run.returncode == 1, run.stderr[-3000:]  # one photo failed; the others were protected
    table = run.stdout.splitlines()
    assert table[0].split() == [
        "photo",
        "status",
        "faces",
        "PSNR",
        "min",
        "distance",
        "seconds",
        "dlib",
        "sface",
        "output",
    ]
    # cells are two spaces apart at least; a verdict may be two words ("NOT protected")
    rows = {cells[0]: cells for cells in (re.split(r" {2,}", line) for line in table[1:-1])}
    assert (
        rows["broken.jpg"][1] == "failed"
        and rows["leo_01.jpg"][1] == rows["morgan_01.jpg"][1] == "protected"
    )
    # dlib and sface (black-box under low) rank the person among their decoys
    assert {rows["leo_01.jpg"][-3], rows["leo_01.jpg"][-2]} <= {"protected", "NOT protected"}
    assert table[-1].startswith("3 photo(s): 2 protected, 0 skipped, 1 failed")
    assert "broken.jpg: bytes are not an image" in run.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "leo_01.protected.jpg",
        "morgan_01.protected.jpg",
    ]


def test_one_photo_to_a_named_file_with_progress_bars_on_a_terminal(
    tmp_path: Path, stack: ServeAll
) -> None:
    output = tmp_path / "mine.jpg"
    primary, replica = os.openpty()
    fcntl.ioctl(
        replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0)
    )  # a 100-column terminal
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.run(
        [
            *FACEOFF,
            "protect",
            str(PHOTOS / "leo" / "leo_01.jpg"),
            "-o",
            str(output),
            "--server",
            stack.address("masker"),
            "--profile",
            "low",
        ],
        stdout=subprocess.PIPE,
        stderr=replica,
        text=True,
        env=ENV,
        timeout=600,
    )
    os.close(replica)
    reader.join(timeout=10)
    os.close(primary)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"{output}: 176x177 JPEG, 1 of 1 face(s) perturbed")
    assert output.is_file() and not list(tmp_path.glob(".*.part"))
    bars = b"".join(chunks).decode(errors="replace")
    assert "photo" in bars and "100%" in bars, bars[-2000:]


def test_embedded_batch_without_a_server(tmp_path: Path) -> None:
    _inputs(tmp_path / "in", ["matt/matt_04.jpg", "meryl/meryl_04.jpg"])
    run = _protect(
        str(tmp_path / "in" / "matt_04.jpg"),
        str(tmp_path / "in" / "meryl_04.jpg"),
        "-o",
        str(tmp_path / "out"),
        *TWO_STEPS,
        "--seed",
        "3",
        "--json",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    receipts = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(r["output"]).name for r in receipts] == [
        "matt_04.protected.jpg",
        "meryl_04.protected.jpg",
    ]
    assert all(r["status"] == "protected" and r["options"]["seed"] == 3 for r in receipts)


def test_bad_usage_is_refused_before_any_photo(tmp_path: Path) -> None:
    run = _protect(
        str(PHOTOS / "leo"),
        "-o",
        str(tmp_path / "out"),
        "--iterations",
        "0",
        "--server",
        "127.0.0.1:1",
    )
    assert run.returncode == 2 and "iterations must be an integer in 1..10000" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()
    run = _protect(
        str(tmp_path / "missing"), "-o", str(tmp_path / "out"), "--server", "127.0.0.1:1"
    )
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_a_hung_or_killed_masker_fails_each_photo_within_its_timeout(tmp_path: Path) -> None:
    """`faceoff protect --server --timeout`: a masker that never answers, and one that is gone,
    cost each photo its budget at most; the photo is reported failed, nothing half-written."""
    import threading
    import time
    from concurrent import futures

    import grpc

    from faceoff.v1 import masker_pb2_grpc

    release = threading.Event()

    class Hung(masker_pb2_grpc.MaskerServicer):
        def Protect(self, request: Any, context: grpc.ServicerContext) -> Any:
            release.wait(60)
            context.abort(grpc.StatusCode.UNAVAILABLE, "released")

        def ProtectStream(self, request: Any, context: grpc.ServicerContext) -> Any:
            release.wait(60)
            context.abort(grpc.StatusCode.UNAVAILABLE, "released")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    masker_pb2_grpc.add_MaskerServicer_to_server(Hung(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for name, address in (("hung", f"127.0.0.1:{port}"), ("killed", "127.0.0.1:1")):
            out = tmp_path / name / "leo.jpg"
            started = time.monotonic()
            run = _protect(
                str(PHOTOS / "leo" / "leo_01.jpg"),
                "-o",
                str(out),
                "--server",
                address,
                "--timeout",
                "3",
                timeout=120,
            )
            took = time.monotonic() - started
            assert run.returncode == 1, (name, run.returncode, run.stderr[-2000:])
            assert "Traceback" not in run.stderr, run.stderr
            said = run.stdout + run.stderr  # which photo, why, and how to resume
            assert "leo_01.jpg" in said and "run the same command again to resume" in said, said
            assert re.search(r"deadline|unavailable|connect", said, re.IGNORECASE), said
            assert not out.exists() and not list(out.parent.glob("*.part*"))
            assert took < 3 + 30, f"{name}: {took:.1f} s"  # the budget, plus starting Python
    finally:
        release.set()
        server.stop(0)
