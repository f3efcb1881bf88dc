"""No photo, crop or embedding of a user reaches a log or the disk, nor stays in memory after the answer.

Every RPC runs against the real servers (Detect, Protect, ProtectStream, Evaluate with the SFace
and dlib recognisers and a gallery, and refused requests) with the log at DEBUG, configured as
the ``faceoff serve`` entry points configure it, and with ``TMPDIR`` pointing at a fresh folder.
The photo is a shared celebrity photo with noise of a random seed (so its bytes exist nowhere
else) and an EXIF block with a GPS position and a random "canary" description. Afterwards:

- no log record (message, arguments and traceback rendered) and nothing the process wrote to
  its stdout or stderr contains the photo's bytes (raw, hex, base64), a run of its decoded pixels,
  its EXIF canary or GPS position, the protected photo's bytes, the face crop the masker attacks,
  or the face's embeddings (FaceNet, SFace, dlib; raw float32 bytes or printed digits);
- the fresh ``TMPDIR`` is empty, ``~/.cache/faceoff`` (model files aside) has no new file, and no
  file modified under ``/tmp``, ``~/.cache`` or the working directory since the start holds any
  of those byte runs;
- after a garbage collection, no object of the servers still holds the photo, the reference
  photo or the protected photo: no ``Photo``, ``Job`` or ``FacePhoto`` of them, no copy of their
  bytes and no array of their pixels in any container.
"""

from __future__ import annotations

import base64
import gc
import io
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pytest
from PIL import Image

from faceoff.common.crops import crop_region, extract_crop
from faceoff.common.imaging import Photo, decode
from faceoff.common.server import configure_logging
from faceoff.v1 import (
    common_pb2,
    detector_pb2,
    detector_pb2_grpc,
    evaluator_pb2,
    evaluator_pb2_grpc,
    masker_pb2,
    masker_pb2_grpc,
)
from tests.conftest import PHOTOS

if TYPE_CHECKING:
    from tests.reliability.pipeline import Pipeline

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.reliability.pipeline"]

_GPS = {
    1: "N",
    2: (Fraction(51, 1), Fraction(30, 1), Fraction(2671, 100)),
    3: "W",
    4: (Fraction(0, 1), Fraction(7, 1), Fraction(3953, 100)),
}
_SKIP_DIRS = ("models", "__pycache__", ".git", ".venv", "node_modules", ".hypothesis")


def _user_photo(path: Path, canary: str, seed: int) -> bytes:
    """The shared photo, 400 px at most, with seeded noise and an EXIF block (canary + GPS)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((400, 400))
        noise = np.random.default_rng(seed).integers(-3, 4, (img.height, img.width, 3))
        pixels = np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x010E] = canary  # ImageDescription
    exif[0xA431] = canary[::-1]  # BodySerialNumber (in the Exif IFD once written; fine here)
    exif.get_ifd(0x8825).update(_GPS)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


@dataclass
class Needles:
    """What must not be found, as bytes (for files) and text (for logs)."""

    raw: list[bytes] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)  # printed numbers: searched in logs only

    def add_bytes(self, run: bytes) -> None:
        self.raw.append(run)
        self.text += [run.hex(), base64.b64encode(run).decode()[4:-4]]

    def add_file(self, data: bytes) -> None:
        """Runs from a quarter, half and three quarters into an encoded file, and its base64."""
        for at in (len(data) // 4, len(data) // 2, 3 * len(data) // 4):
            self.add_bytes(data[at : at + 32])
        b64 = base64.b64encode(data).decode()
        self.text.append(b64[len(b64) // 2 : len(b64) // 2 + 40])

    def add_floats(self, values: np.ndarray) -> None:
        """An embedding or crop: raw float32 bytes and the leading digits of a few printed values."""
        flat = np.asarray(values, np.float32).ravel()
        middle = len(flat) // 2
        self.raw.append(flat[middle : middle + 8].tobytes())
        for v in flat[middle : middle + 4]:
            if abs(v) >= 1e-3:
                digits = f"{abs(float(v)):.9f}"
                self.digits.append(digits[: digits.index(".") + 6])

    def found_in_log(self, text: str) -> list[str]:
        lower = text.lower()
        return [n for n in self.text + self.digits if n.lower() in lower]

    def found_in_file(self, data: bytes) -> bool:
        lower = data.decode("latin-1").lower()
        return any(run in data for run in self.raw) or any(n.lower() in lower for n in self.text)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.levels: list[int] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.levels.append(record.levelno)
        self.lines.append(self.format(record))  # message with its arguments and any traceback


@pytest.fixture
def debug_logging() -> Iterator[_Records]:
    """The root logger at DEBUG as ``faceoff serve --log-level DEBUG`` sets it, recorded."""
    root = logging.getLogger()
    quieted = ("tensorflow", "PIL")
    saved = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in quieted})
    handler = _Records()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    configure_logging("DEBUG")  # the entry points' own set-up (which libraries it quiets)
    try:
        yield handler
    finally:
        root.setLevel(saved[0])
        for h in list(root.handlers):
            if h not in saved[1]:
                root.removeHandler(h)
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def fresh_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("privacy-tmpdir")
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


def _files(
    root: Path, since: float | None = None, limit: int = 20000
) -> dict[Path, tuple[int, float]]:
    out: dict[Path, tuple[int, float]] = {}
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if path.is_symlink() or (since is not None and st.st_mtime < since):
                continue
            out[path] = (st.st_size, st.st_mtime)
            if len(out) >= limit:
                return out
    return out


def _leftovers(keep: list[Any], datas: list[bytes], shapes: set[tuple[int, int]]) -> list[str]:
    """Objects of this process, other than ``keep`` (the test's own), that still hold one of
    ``datas`` (a copy of the bytes) or an array of one of the photos' sizes."""
    from faceoff.faces.recognizers.base import FacePhoto
    from faceoff.masker.jobs import Job

    keep_ids = {id(k) for k in keep}

    def holds(value: Any) -> str | None:
        if (
            isinstance(value, (bytes, bytearray))
            and id(value) not in keep_ids
            and any(len(value) == len(d) and value == d for d in datas)
        ):
            return f"bytes of a photo ({len(value)} B)"
        if (
            isinstance(value, np.ndarray)
            and id(value) not in keep_ids
            and value.ndim >= 2
            and value.shape[:2] in shapes
        ):
            return f"an array of a photo's size {value.shape}"
        return None

    found = []
    gc.collect()
    for obj in gc.get_objects():
        if id(obj) in keep_ids:
            continue
        if isinstance(obj, Photo) and (obj.pixels.shape[:2] in shapes):
            found.append(f"a Photo {obj.pixels.shape}")
        elif (
            isinstance(obj, Job) and obj.photo is not None and obj.photo.pixels.shape[:2] in shapes
        ):
            found.append("a masker Job")
        elif isinstance(obj, FacePhoto) and obj.photo.pixels.shape[:2] in shapes:
            found.append(f"an evaluator FacePhoto ({obj.label})")
        else:
            if isinstance(obj, dict):
                values: Any = obj.values()
            elif str(getattr(type(obj), "__module__", "")).startswith("faceoff.") and hasattr(
                obj, "__dict__"
            ):
                values = vars(obj).values()
            elif isinstance(obj, (list, tuple, set, frozenset)):
                values = obj
            elif type(obj).__name__ == "cell":
                try:
                    values = (obj.cell_contents,)
                except ValueError:
                    continue
            else:
                continue
            try:
                for value in list(values):
                    what = holds(value)
                    if what:
                        found.append(f"{what} in a {type(obj).__name__}")
                        break
            except Exception:  # noqa: BLE001 - a container changing under the scan
                continue
    return found


def test_no_photo_crop_or_embedding_in_logs_disk_or_memory(
    pipeline: Pipeline,
    debug_logging: _Records,
    fresh_tmpdir: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from faceoff.faces.recognizers import get_local
    from faceoff.masker.protection import Protector

    started = time.time() - 1
    canary = f"faceoff-canary-{secrets.token_hex(6)}"
    seed = secrets.randbits(32)
    data = _user_photo(PHOTOS / "barack" / "barack_01.jpg", canary, seed)
    reference = _user_photo(PHOTOS / "barack" / "barack_02.jpg", canary, seed + 1)
    cache = Path.home() / ".cache" / "faceoff"
    cache_before = _files(cache)

    needles = Needles()
    needles.add_file(data)
    needles.add_file(reference)
    needles.text += [
        canary,
        canary[::-1],
        "30.0, 26.71",
        "7.0, 39.53",
    ]  # the GPS position as Pillow prints it
    photo = decode(data)
    pixels, shapes = photo.pixels, {photo.pixels.shape[:2], decode(reference).pixels.shape[:2]}
    row = pixels[pixels.shape[0] // 2]
    needles.add_bytes(row[len(row) // 2 : len(row) // 2 + 16].tobytes())

    detector = detector_pb2_grpc.DetectorStub(pipeline.channels["detector"])
    masker = masker_pb2_grpc.MaskerStub(pipeline.channels["masker"])
    evaluator = evaluator_pb2_grpc.EvaluatorStub(pipeline.channels["evaluator"])
    image, ref_image = common_pb2.Image(data=data), common_pb2.Image(data=reference)

    # -- every RPC, with a user's photo -------------------------------------------------------
    detection = detector.Detect(detector_pb2.DetectRequest(image=image), timeout=120)
    assert detection.faces, "the shared photo has a face"
    options = masker_pb2.ProtectOptions(profile="low", iterations=2, seed=3, strip_gps=False)
    protect = masker_pb2.ProtectRequest(image=image, options=options, reference_images=[ref_image])
    protected = masker.Protect(protect, timeout=300).image.data
    events = list(masker.ProtectStream(protect, timeout=300))
    assert events[-1].result.faces, "the face was protected"
    streamed = events[-1].result.image.data
    verdicts = evaluator.Evaluate(
        evaluator_pb2.EvaluateRequest(
            image=image,
            reference_images=[ref_image],
            recognizers=["sface", "dlib"],
            top_k=1,
            gallery=[evaluator_pb2.GalleryIdentity(name="me", images=[ref_image])],
        ),
        timeout=300,
    ).verdicts
    assert all(v.verified and not v.error for v in verdicts), [v.error for v in verdicts]
    evaluator.Evaluate(
        evaluator_pb2.EvaluateRequest(
            image=common_pb2.Image(data=protected),
            reference_images=[ref_image],
            recognizers=["sface"],
        ),
        timeout=300,
    )
    broken = common_pb2.Image(data=data[: len(data) * 3 // 4])
    for call in (
        lambda: detector.Detect(detector_pb2.DetectRequest(image=broken), timeout=60),
        lambda: masker.Protect(
            masker_pb2.ProtectRequest(image=broken, options=options), timeout=60
        ),
        lambda: evaluator.Evaluate(
            evaluator_pb2.EvaluateRequest(image=broken, reference_images=[ref_image]), timeout=60
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    pipeline.health("masker")  # one health check: the access log writes it at DEBUG
    time.sleep(0.5)  # let the servers' coroutines finish their bookkeeping

    # -- what the servers computed from it: the crop the masker attacks and the embeddings --
    needles.add_file(protected)
    needles.add_file(streamed)
    face = detection.faces[0]
    region = crop_region(
        (face.box.x, face.box.y, face.box.width, face.box.height), photo.width, photo.height
    )
    crop = extract_crop(pixels, region, 160)
    needles.add_floats(crop)
    surrogate = next(o for o in gc.get_objects() if isinstance(o, Protector)).model
    needles.add_floats(surrogate.embed_numpy(crop[None])[0])
    for name in ("sface", "dlib"):
        needles.add_floats(get_local(name).embed(photo))

    # -- logs --------------------------------------------------------------------------------
    out, err = capfd.readouterr()
    assert logging.DEBUG in debug_logging.levels, "DEBUG records were not captured"
    assert any("Protect" in line for line in debug_logging.lines), "the access log was not captured"
    for line in debug_logging.lines:
        assert not needles.found_in_log(line), (
            f"a log record carries the user's data: {line[:300]!r}"
        )
    assert not needles.found_in_log(out + err), "the process printed the user's data"

    # -- disk ----------------------------------------------------------------------------------
    assert not _files(fresh_tmpdir), (
        f"files were written to TMPDIR: {sorted(_files(fresh_tmpdir))[:5]}"
    )
    assert _files(cache) == cache_before, "files appeared or changed in ~/.cache/faceoff"
    written: dict[Path, tuple[int, float]] = {}
    for root in (Path("/tmp"), Path.home() / ".cache", Path.cwd()):
        written.update(_files(root, since=started))
    budget = 1 << 30  # bytes read at most (other work on the machine writes to /tmp too)
    for path, (size, _) in sorted(written.items(), key=lambda item: item[1][0]):
        if size > budget:
            break
        try:
            content = path.read_bytes()
        except OSError:
            continue
        budget -= len(content)
        assert not needles.found_in_file(content), f"{path} holds the user's data"

    # -- memory --------------------------------------------------------------------------------
    mine = [data, reference, protected, streamed, pixels, photo, events, crop]
    left = _leftovers(mine, [data, reference, protected, streamed], shapes)
    assert not left, f"after the answers, the servers still hold: {left}"
