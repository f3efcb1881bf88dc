"""The SDK against the real services: ``faceoff serve all`` started once for the module, real channels.

Also the embedded pipeline (``Client.local()``) against the same services: the same seed gives
the same bytes (with ``FACEOFF_DETERMINISTIC=1`` on both sides).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from faceoff.sdk import AsyncClient, Client, InvalidArgumentError, Progress, ProtectedPhoto
from faceoff.v1 import common_pb2, masker_pb2, masker_pb2_grpc
from tests.conftest import DETERMINISTIC, PHOTOS, REPO, ServeAll

pytestmark = pytest.mark.slow

LEO = PHOTOS / "leo" / "leo_01.jpg"  # 176x177, one face
LEO_REFS = [PHOTOS / "leo" / "leo_03.jpg", PHOTOS / "leo" / "leo_05.jpg"]
SMALL = [
    "bill/bill_03.jpg",
    "bill/bill_04.jpg",
    "leo/leo_01.jpg",
    "leo/leo_03.jpg",
    "matt/matt_04.jpg",
    "meryl/meryl_03.jpg",
    "meryl/meryl_04.jpg",
    "morgan/morgan_01.jpg",
]  # all under 300 px


@pytest.fixture(scope="module")
def stack(serve_all: ServeAll) -> ServeAll:
    """The run's one ``faceoff serve all`` (``FACEOFF_DETERMINISTIC=1``; tests/conftest.py)."""
    return serve_all


@pytest.fixture(scope="module")
def client(stack: ServeAll) -> Iterator[Client]:
    with Client(
        stack.address("masker"),
        detector=stack.address("detector"),
        evaluator=stack.address("evaluator"),
    ) as c:
        yield c


def test_protect_returns_the_photo_and_typed_receipts(client: Client, tmp_path: Path) -> None:
    protected = client.protect(LEO, profile="low", seed=3)
    assert isinstance(protected, ProtectedPhoto)
    assert (protected.format, protected.width, protected.height, protected.faces_found) == (
        "JPEG",
        176,
        177,
        1,
    )
    face = protected.faces[0]
    assert face.index == 0 and face.psnr is not None and face.psnr > 30 and 0.8 < face.ssim <= 1
    assert face.butteraugli is not None and face.butteraugli > 0 and face.butteraugli_native
    assert face.distance_after > face.distance_before and face.l2 > 0
    assert protected.options is not None and (
        protected.options.profile,
        protected.options.iterations,
    ) == ("low", 20)
    assert protected.options.seed == 3 and protected.verdicts == ()
    out = protected.save(tmp_path / "deep" / "leo.protected.jpg")
    assert out.read_bytes() == protected.data and list(out.parent.iterdir()) == [out]
    with Image.open(io.BytesIO(protected.data)) as img, Image.open(LEO) as original:
        assert img.size == original.size and not np.array_equal(
            np.asarray(img), np.asarray(original)
        )


def test_check_asks_the_evaluator_about_the_protected_photo(client: Client) -> None:
    protected = client.protect(LEO, profile="low", reference_photos=LEO_REFS, check="dlib,sface")
    assert [v.recognizer for v in protected.verdicts] == ["dlib", "sface"]
    for v in protected.verdicts:
        assert v.configured and v.verified and not v.white_box and v.error is None
        assert v.confidence is not None and 0 <= v.confidence <= 1 and v.threshold == 0.5
        assert v.match == (v.confidence >= v.threshold)


def test_detect_and_evaluate(client: Client) -> None:
    detection = client.detect(LEO)
    assert (detection.width, detection.height) == (176, 177) and len(detection.faces) == 1
    face = detection.faces[0]
    assert face.confidence > 0.9 and set(face.landmarks) == {
        "left_eye",
        "right_eye",
        "nose",
        "mouth_left",
        "mouth_right",
    }
    sface, rekognition = client.evaluate(LEO, LEO_REFS, ["sface", "rekognition"])
    assert sface.match is True and sface.distance is not None
    assert (
        rekognition.recognizer == "rekognition"
        and not rekognition.configured
        and rekognition.match is None
    )
    with pytest.raises(InvalidArgumentError, match="unknown recogniser 'nosuch'"):
        client.evaluate(LEO, LEO_REFS, "nosuch")


def test_progress_events_arrive_in_order(client: Client) -> None:
    events: list[Progress] = []
    protected = client.protect(LEO, profile="low", on_progress=events.append)
    assert all(isinstance(e, Progress) for e in events) and len(protected.faces) == 1
    stages = [e.stage for e in events]
    assert (
        stages[0] == "detect"
        and stages[-1] == "paste"
        and set(stages) == {"detect", "attack", "paste"}
    )
    assert stages == sorted(stages, key=["detect", "attack", "paste"].index)
    attack = [e for e in events if e.stage == "attack"]
    assert [e.iteration for e in attack] == sorted(e.iteration for e in attack)
    assert attack[0].iteration == 0 and attack[-1].iteration == attack[-1].iterations == 20
    assert all(e.faces == 1 for e in attack)


def test_every_input_kind_is_accepted(client: Client) -> None:
    data = LEO.read_bytes()
    pixels = np.asarray(Image.open(LEO).convert("RGB"))

    def protect(photo: object) -> ProtectedPhoto:
        return client.protect(photo, profile="low", iterations=2, seed=1)  # type: ignore[arg-type]

    with LEO.open("rb") as f:
        as_file = protect(f)
    files = [protect(str(LEO)), protect(LEO), protect(data), protect(bytearray(data)), as_file]
    assert {p.format for p in files} == {"JPEG"} and len({p.data for p in files}) == 1
    images = [protect(Image.fromarray(pixels)), protect(pixels)]
    assert {p.format for p in images} == {"PNG"} and images[0].data == images[1].data
    assert all(len(p.faces) == 1 for p in files + images)


def test_bad_photos_and_options_are_invalid_argument(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match="not an image"):
        client.protect(b"these bytes are not a photo")
    with pytest.raises(InvalidArgumentError, match="alpha") as info:
        client.protect(LEO, alpha=0.0)
    assert info.value.code == "INVALID_ARGUMENT"


class GiveUp(Exception):
    pass


def test_clients_giving_up_mid_stream_leave_the_masker_serving(
    client: Client, stack: ServeAll
) -> None:
    def give_up(event: Progress) -> None:
        if event.stage == "attack":
            raise GiveUp

    for _ in range(2):  # the SDK cancels the stream when its callback raises
        with pytest.raises(GiveUp):
            client.protect(LEO, profile="low", on_progress=give_up)
    # Any gRPC client may cancel a stream mid-attack; the masker's access log once asked the
    # finished call for its peer then, and the process died with SIGSEGV.
    request = masker_pb2.ProtectRequest(
        image=common_pb2.Image(data=LEO.read_bytes()),
        options=masker_pb2.ProtectOptions(profile="low"),
    )
    with grpc.insecure_channel(stack.address("masker")) as channel:
        stub = masker_pb2_grpc.MaskerStub(channel)
        for _ in range(6):
            call = stub.ProtectStream(request, timeout=60)
            for event in call:
                if event.WhichOneof("event") == "progress" and event.progress.stage == "attack":
                    call.cancel()
                    break
            time.sleep(0.2)  # let the server see the cancellation before the next call
    assert stack.process.poll() is None, "a service died"
    assert len(client.protect(LEO, profile="low", iterations=2).faces) == 1


def test_async_client_runs_eight_protections_concurrently(stack: ServeAll) -> None:
    photos = [PHOTOS / p for p in SMALL]
    finished: list[str] = []

    async def main() -> list[ProtectedPhoto]:
        async with AsyncClient(stack.address("masker")) as client:

            async def one(photo: Path) -> ProtectedPhoto:
                async def on_progress(event: Progress) -> None:
                    if event.stage == "paste":
                        finished.append(photo.name)

                return await client.protect(
                    photo, profile="low", seed=2, iterations=5, on_progress=on_progress
                )

            return await asyncio.gather(*(one(p) for p in photos))

    results = asyncio.run(main())
    assert len(results) == 8 and sorted(finished) == sorted(p.name for p in photos)
    for photo, protected in zip(photos, results):
        with Image.open(photo) as original:
            assert (protected.width, protected.height) == original.size
        assert protected.faces_found >= 1 and len(protected.faces) == protected.faces_found
        assert all(f.distance_after > f.distance_before for f in protected.faces)


#: The embedded pipeline, sync and async, in a child process with bit-exact kernels (the test
#: process runs TensorFlow's default oneDNN kernels, whose sums depend on thread scheduling).
EMBEDDED = """
import asyncio, sys
from pathlib import Path
from typing import Any
from faceoff.sdk import AsyncClient, Client
photo, out = Path(sys.argv[1]), Path(sys.argv[2])
with Client.local() as local:
    (out / "sync").write_bytes(local.protect(photo, profile="low", seed=5, iterations=5).data)
async def main():
    async with AsyncClient.local() as client:
        return await client.protect(photo, profile="low", seed=5, iterations=5)
(out / "async").write_bytes(asyncio.run(main()).data)
"""


def test_embedded_and_remote_agree_for_a_fixed_seed(client: Client, tmp_path: Path) -> None:
    remote = client.protect(LEO, profile="low", seed=5, iterations=5)
    child = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED, str(LEO), str(tmp_path)],
        cwd=REPO,
        env={**os.environ, **DETERMINISTIC},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Meanwhile, in this process: the same calls, results and errors as the remote clients.
    events: list[Progress] = []
    with Client.local(recognizers=["sface"]) as local:
        embedded = local.protect(
            LEO, profile="low", seed=5, iterations=5, on_progress=events.append
        )
        here, there = local.detect(LEO), client.detect(LEO)  # equal up to the kernels' rounding
        assert (
            (here.width, here.height, len(here.faces))
            == (there.width, there.height, len(there.faces))
            == (176, 177, 1)
        )
        assert here.faces[0].box.as_tuple() == pytest.approx(
            there.faces[0].box.as_tuple(), abs=0.01
        )
        assert here.faces[0].landmarks.keys() == there.faces[0].landmarks.keys()
        local_verdicts = local.evaluate(remote.data, LEO_REFS, "sface")
        with pytest.raises(InvalidArgumentError, match="alpha"):
            local.protect(LEO, alpha=-1.0)
    assert embedded.options == remote.options and len(embedded.faces) == len(remote.faces) == 1
    assert embedded.faces[0].distance_after == pytest.approx(
        remote.faces[0].distance_after, rel=0.05
    )
    assert [e.stage for e in events][0] == "detect" and events[-1] == Progress("paste", 1, 5, 5)
    (remote_verdict,) = client.evaluate(remote.data, LEO_REFS, "sface")
    assert local_verdicts[0].match == remote_verdict.match
    assert local_verdicts[0].confidence == pytest.approx(remote_verdict.confidence, abs=1e-6)
    output, _ = child.communicate(timeout=600)
    assert child.returncode == 0, output[-3000:]
    assert (tmp_path / "sync").read_bytes() == remote.data, (
        "the embedded pipeline and the masker disagree for the same seed"
    )
    assert (tmp_path / "async").read_bytes() == remote.data, (
        "the async embedded pipeline and the masker disagree"
    )


def test_the_masker_gives_the_same_bytes_for_the_same_seed(client: Client) -> None:
    photo = PHOTOS / "bill" / "bill_03.jpg"  # the default profile (an ensemble), shortened
    first, again, other = (client.protect(photo, seed=s, iterations=10) for s in (11, 11, 12))
    assert again.data == first.data and other.data != first.data


def _serving(address: str) -> bool:
    from faceoff.cli.serve_all import serving

    return serving(address, "")


def _wait(condition: Any, timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting {timeout:.0f} s for {what}"
        time.sleep(0.25)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_node_client_uses_the_contract_from_protos(stack: ServeAll) -> None:
    """The contract outside Python: @grpc/grpc-js + @grpc/proto-loader load protos/ at run time,
    detect, protect, and decode an INVALID_ARGUMENT's BadRequest and ErrorInfo. (Before the
    tests below, which kill the stack's children and stop it.)"""
    import json
    import shutil

    import google.rpc

    modules = REPO / ".venv" / "node" / "node_modules"
    if not (modules / "@grpc" / "grpc-js").is_dir() or shutil.which("node") is None:
        pytest.fail("node and @grpc/grpc-js are needed: run ./dev setup (npm installs them)")
    out = subprocess.run(
        [
            "node",
            str(Path(__file__).with_name("node_client.cjs")),
            stack.address("detector"),
            stack.address("masker"),
            str(LEO),
            str(REPO / "protos"),
            str(Path(google.rpc.__path__[0])),
        ],
        env={**os.environ, "NODE_PATH": str(modules)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["detect"]["width"] == 176 and result["detect"]["faces"] == 1
    assert result["protect"]["faces"] == 1 and result["protect"]["profile"] == "low"
    assert result["protect"]["format"] == "IMAGE_FORMAT_JPEG" and result["protect"]["bytes"] > 1000
    refusal = result["refusal"]
    assert refusal["code"] == 3  # INVALID_ARGUMENT
    details = refusal["status"]["details"]
    assert details["ErrorInfo"]["reason"] == "INVALID_OPTION"
    assert details["ErrorInfo"]["domain"] == "faceoff.v1"
    violation = details["BadRequest"]["field_violations"][0]
    assert (
        violation["field"] == "options.min_confidence"
        and "min_confidence" in violation["description"]
    )


def test_chaos_costly_inputs_end_in_documented_codes_and_cheap_calls_are_not_stuck(
    stack: ServeAll,
) -> None:
    """``faceoff bench chaos``'s resource cases on this stack (its kill cases are the next test's
    subject): over-budget pixels, work and faces are refused with the documented codes, a cheap
    call under a maximal one finishes within 2x its solo latency, and the masker stays under its
    memory bound."""
    from faceoff.bench import chaos

    chaos_stack = chaos.Stack(stack.info, stack.process.pid, chaos.DEFAULT_PHOTO.read_bytes())
    cases = ("warm", "refs_over_budget", "work_over_budget", "crowd", "cheap_under_maximal")
    rows = [chaos.run_case(chaos_stack, name, settle=1.0) for name in cases]  # trims: <= 1/s
    for row in rows:
        assert row["documented"], row
    under = rows[-1]
    assert under["maximal_still_running"] and under["ratio_to_solo"] <= 2.0, under
    assert max(r["masker_peak_mib"] for r in rows) <= 3 * 1024, rows
    assert max(r["detector_peak_mib"] for r in rows) <= 1536, rows
    rest = rows[0]["masker_after_mib"]
    assert all(r["masker_after_mib"] <= 1.2 * rest for r in rows), (rest, rows)


def test_serve_all_restarts_a_killed_or_hung_child_and_the_others_keep_serving(
    stack: ServeAll, client: Client
) -> None:
    detector, masker, evaluator = (
        stack.info[n]["pid"] for n in ("detector", "masker", "evaluator")
    )
    os.kill(detector, signal.SIGKILL)
    _wait(lambda: _gone(detector), 10, "the killed detector to go")
    _wait(lambda: _serving(stack.address("detector")), 180, "the detector to be started again")
    os.kill(evaluator, signal.SIGSTOP)  # hung: alive, but answers nothing
    try:
        _wait(lambda: _gone(evaluator), 60, "the supervisor to kill the hung evaluator")
    finally:
        if not _gone(evaluator):
            os.kill(evaluator, signal.SIGCONT)
    _wait(lambda: _serving(stack.address("evaluator")), 180, "the evaluator to be started again")
    assert not _gone(masker), "the masker kept serving throughout"
    assert client.protect(PHOTOS / "bill" / "bill_03.jpg", iterations=2).faces
    page = (
        urllib.request.urlopen(
            f"http://127.0.0.1:{stack.info['supervisor']['metrics_port']}/metrics", timeout=10
        )
        .read()
        .decode()
    )
    for name, count in (("detector", 1), ("masker", 0), ("evaluator", 1)):
        assert f'faceoff_serve_all_restarts_total{{service="{name}"}} {count}.0' in page, page
