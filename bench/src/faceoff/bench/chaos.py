"""``faceoff bench chaos``: faults and hostile resources against ``faceoff serve all``.

Starts ``faceoff serve all --free-ports`` on 127.0.0.1 (the evaluator without local
recognisers) and runs each case in turn against it, printing per case the status codes seen,
whether they are the documented ones, its seconds, and the masker's and detector's peak and
after-case resident memory (``/proc``: each process's peak is reset before a case, the
"after" is read :data:`SETTLE_SECONDS` after it ends). Then a table and the JSON.

Cases (``--cases`` picks some, in this order):

- ``warm``: once the masker is idle (it traces the other profiles after reporting SERVING),
  two cheap protections (profile ``medium``, 20 iterations): the solo latency and the masker's
  resting memory the others are compared with;
- ``refs_49mp``: 16 reference JPEGs of 49 megapixels (7000 x 7000 with a face), decoded at a
  reduced scale: protected;
- ``refs_over_budget``: 6 reference PNGs of 12 megapixels (decoded whole): TOO_MANY_PIXELS;
- ``crowd``: a photo of 197 faces: TOO_MANY_FACES after detection;
- ``work_over_budget``: ``high`` at 10 000 iterations: TOO_MUCH_WORK after detection;
- ``cheap_under_maximal``: a cheap protection while a maximal one (``medium`` at the
  iterations that fill the request budget of 20 000 face-steps: 6 666 on its three surrogates)
  runs; its latency against ``warm``'s (the maximal call is then cancelled);
- ``weights``: 6 distinct ``surrogate_weights`` values (each builds an ensemble and a trace);
- ``kill_detector``, ``kill_evaluator``, ``kill_masker``: SIGKILL the child (the masker with an
  SDK protection in flight, which must end OK through its retries); seconds until it serves
  again (a protection goes through; for the evaluator, its health);
- ``stop_detector``: SIGSTOP the detector: a protection fails with a documented code, the
  supervisor restarts the hung child, seconds until a protection goes through.

Only on this machine (loopback): it kills processes it started itself.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from faceoff.bench.load import DEFAULT_PHOTO, LoadError, serve_all
from faceoff.bench.report import emit, print_table
from faceoff.cli.paths import CELEBS
from faceoff.common.memory import reset_peak, status_bytes
from faceoff.sdk import DEFAULT_PROFILE

#: Seconds after a case before its "after" memory is read.
SETTLE_SECONDS = 3.0
#: How long a killed or stopped child may take to serve again before the case fails.
RECOVERY_SECONDS = 180.0
#: A cheap protection of the default profile (what an app sends), cut to 20 iterations.
CHEAP: dict[str, Any] = {"profile": DEFAULT_PROFILE, "iterations": 20, "seed": 0}
MIB = 1 << 20


# -- processes -----------------------------------------------------------------------------------


def child_pid(supervisor: int, name: str) -> int | None:
    """The pid of ``faceoff serve <name>`` started by ``supervisor`` (it changes on a restart)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == supervisor and b"serve" in argv and name.encode() in argv:
            return int(entry.name)
    return None


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """``faceoff serve all`` as started: addresses, the supervisor's pid, a channel to the masker."""

    info: dict[str, Any]
    supervisor: int
    photo: bytes
    solo_seconds: float | None = None
    rest_bytes: int | None = None
    _stubs: dict[str, Any] = field(default_factory=dict)

    def address(self, name: str) -> str:
        return str(self.info[name]["address"])

    def pid(self, name: str) -> int | None:
        return child_pid(self.supervisor, name)

    def masker(self) -> Any:
        import grpc

        from faceoff.v1 import masker_pb2_grpc

        if "masker" not in self._stubs:
            channel = grpc.insecure_channel(
                self.address("masker"),
                options=[
                    ("grpc.max_receive_message_length", 64 * MIB),
                    ("grpc.max_send_message_length", 64 * MIB),
                    ("grpc.enable_retries", 0),
                ],
            )
            self._stubs["masker"] = masker_pb2_grpc.MaskerStub(channel)
        return self._stubs["masker"]

    def protect(
        self, photo: bytes | None = None, references: list[bytes] | None = None, **options: Any
    ) -> tuple[str, float, str]:
        """One Protect call: ``(code, seconds, message)``."""
        import grpc

        timeout = options.pop("timeout", 300.0)
        request = protect_request(photo or self.photo, references or [], **options)
        started = time.perf_counter()
        try:
            self.masker().Protect(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name, time.perf_counter() - started, exc.details() or ""
        return "OK", time.perf_counter() - started, ""

    def serving(self, name: str) -> bool:
        from faceoff.cli.serve_all import serving

        service = {"detector": "Detector", "masker": "Masker", "evaluator": "Evaluator"}[name]
        return serving(self.address(name), f"faceoff.v1.{service}")


def protect_request(photo: bytes, references: list[bytes], **options: Any) -> Any:
    from faceoff.v1 import common_pb2, masker_pb2

    opts = masker_pb2.ProtectOptions()
    for key, value in options.items():
        if isinstance(value, (list, tuple)):
            getattr(opts, key).extend(value)
        else:
            setattr(opts, key, value)
    return masker_pb2.ProtectRequest(
        image=common_pb2.Image(data=photo),
        reference_images=[common_pb2.Image(data=r) for r in references],
        options=opts,
    )


@contextmanager
def started_stack(photo: bytes) -> Iterator[Stack]:
    """``faceoff serve all`` on loopback, as :class:`Stack`."""
    with serve_all(log_level="WARNING") as info:
        supervisor = int(info["supervisor_pid"])
        yield Stack(info, supervisor, photo)


# -- inputs, made in code ------------------------------------------------------------------------


def _jpeg(img: Image.Image, quality: int = 80) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def big_reference(photo: bytes, side: int = 7000, face: int = 1400) -> bytes:
    """A ``side`` x ``side`` JPEG (49 MP by default) with the photo scaled to ``face`` px in it."""
    canvas = Image.new("RGB", (side, side), (118, 110, 104))
    with Image.open(io.BytesIO(photo)) as src:
        inner = src.convert("RGB")
        inner.thumbnail((face, face), Image.Resampling.BILINEAR)
        inner = inner.resize(
            (face * inner.width // max(inner.size), face * inner.height // max(inner.size))
        )
    canvas.paste(inner, ((side - inner.width) // 2, (side - inner.height) // 2))
    return _jpeg(canvas, 70)


def flat_png(width: int = 4032, height: int = 3024) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 100, 90)).save(out, "PNG")
    return out.getvalue()


def crowd(count: int = 197, columns: int = 16, data: Path = CELEBS) -> bytes:
    """``count`` face crops of the shared ``aligned160`` set (repeated as needed) in a grid."""
    crops = sorted((data / "aligned160").glob("*/*.png"))
    if not crops:
        raise LoadError(f"no face crops under {data / 'aligned160'}")
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * 160, rows * 160), (128, 128, 128))
    for i in range(count):
        with Image.open(crops[i % len(crops)]) as crop:
            sheet.paste(crop.convert("RGB"), ((i % columns) * 160, (i // columns) * 160))
    return _jpeg(sheet, 90)


# -- the cases -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    codes: list[str]
    expected: set[str]
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.codes) and set(self.codes) <= self.expected


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_idle(pid: int | None, limit: float = 180.0, window: float = 2.0) -> float:
    """Wait until ``pid`` uses under 10% of a core over ``window`` seconds (a masker traces the
    other profiles after it reports SERVING); returns the seconds waited."""
    started = time.perf_counter()
    while pid is not None and time.perf_counter() - started < limit:
        before = _cpu_seconds(pid)
        time.sleep(window)
        after = _cpu_seconds(pid)
        if before is None or after is None or after - before < 0.1 * window:
            break
    return time.perf_counter() - started


def case_warm(stack: Stack) -> Outcome:
    waited = wait_idle(stack.pid("masker"))
    codes, seconds = [], []
    for _ in range(2):
        code, s, _ = stack.protect(**CHEAP)
        codes.append(code)
        seconds.append(s)
    stack.solo_seconds = seconds[-1]
    return Outcome(
        codes,
        {"OK"},
        {"solo_seconds": round(seconds[-1], 2), "waited_for_idle_seconds": round(waited, 1)},
    )


def case_refs_49mp(stack: Stack) -> Outcome:
    ref = big_reference(stack.photo)
    code, s, msg = stack.protect(references=[ref] * 16, **CHEAP)
    return Outcome([code], {"OK"}, {"request_mib": round(16 * len(ref) / MIB, 1), "message": msg})


def _refused(code: str, message: str, needle: str) -> list[str]:
    """``[code]``, marked when the refusal is not the one expected (its message lacks ``needle``)."""
    return [code if needle in message else f"{code} (not {needle})"]


def case_refs_over_budget(stack: Stack) -> Outcome:
    code, _, msg = stack.protect(references=[flat_png()] * 6, **CHEAP)
    codes = _refused(code, msg, "FACEOFF_MAX_REQUEST_PIXELS")
    return Outcome(codes, {"INVALID_ARGUMENT"}, {"message": msg[:200]})


def case_crowd(stack: Stack) -> Outcome:
    code, _, msg = stack.protect(photo=crowd(), **CHEAP)
    codes = _refused(code, msg, "FACEOFF_MAX_FACES_PER_REQUEST")
    return Outcome(codes, {"INVALID_ARGUMENT"}, {"message": msg[:200]})


def case_work_over_budget(stack: Stack) -> Outcome:
    code, _, msg = stack.protect(profile="high", iterations=10_000, seed=0)
    codes = _refused(code, msg, "FACEOFF_MAX_REQUEST_WORK")
    return Outcome(codes, {"INVALID_ARGUMENT"}, {"message": msg[:200]})


def case_cheap_under_maximal(stack: Stack) -> Outcome:
    from faceoff.masker.cost import DEFAULT_MAX_REQUEST_WORK
    from faceoff.masker.schema import DEFAULT_SURROGATES

    iterations = DEFAULT_MAX_REQUEST_WORK // len(DEFAULT_SURROGATES)  # one face: the budget
    request = protect_request(
        stack.photo, [], profile=DEFAULT_PROFILE, iterations=iterations, seed=0
    )
    big = stack.masker().Protect.future(request, timeout=900)
    time.sleep(8.0)  # detection, preparation, the first chunks of its attack
    code, seconds, _ = stack.protect(**CHEAP)
    still_running = not big.done()
    big.cancel()
    solo = stack.solo_seconds
    ratio = seconds / solo if solo else None
    codes = [code, "CANCELLED" if still_running else _future_code(big)]
    expected = {"OK", "CANCELLED"} if ratio is not None and ratio <= 2.0 else {"CANCELLED"}
    return Outcome(
        codes,
        expected,
        {
            "cheap_seconds": round(seconds, 2),
            "solo_seconds": round(solo, 2) if solo else None,
            "ratio_to_solo": round(ratio, 2) if ratio else None,
            "maximal_still_running": still_running,
        },
    )


def _future_code(future: Any) -> str:
    try:
        future.result(timeout=0)
    except Exception as exc:  # noqa: BLE001 - a grpc.RpcError, or the future's own
        code = getattr(exc, "code", None)
        return code().name if callable(code) else type(exc).__name__
    return "OK"


def case_weights(stack: Stack) -> Outcome:
    from faceoff.masker.schema import DEFAULT_SURROGATES
    from faceoff.masker.surrogates import WEIGHTED_IDLE_SECONDS

    codes = []
    for k in range(6):
        weights = [0.3 + 0.08 * k] + [1.0] * (len(DEFAULT_SURROGATES) - 1)
        code, _, _ = stack.protect(
            profile=DEFAULT_PROFILE, iterations=2, seed=0, surrogate_weights=weights
        )
        codes.append(code)
    pid = stack.pid("masker")
    held = status_bytes(pid, "VmRSS") if pid else None
    time.sleep(WEIGHTED_IDLE_SECONDS + 5)  # the masker forgets idle weighted ensembles
    pid = stack.pid("masker")
    idle = status_bytes(pid, "VmRSS") if pid else None
    return Outcome(
        codes,
        {"OK"},
        {
            "masker_with_ensembles_mib": round(held / MIB) if held else None,
            "masker_after_idle_mib": round(idle / MIB) if idle else None,
        },
    )


def _until(check: Callable[[], bool], limit: float = RECOVERY_SECONDS) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if check():
            return time.perf_counter() - started
        time.sleep(0.5)
    return None


def _protects(stack: Stack, codes: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        code, _, _ = stack.protect(timeout=60.0, **CHEAP)
        codes.append(code)
        return code == "OK"

    return check


def _kill(stack: Stack, name: str, sig: int) -> int:
    pid = stack.pid(name)
    if pid is None:
        raise LoadError(f"cannot find the {name} process of faceoff serve all")
    os.kill(pid, sig)
    return pid


def case_kill(name: str) -> Callable[[Stack], Outcome]:
    def run(stack: Stack) -> Outcome:
        in_flight: dict[str, Any] = {}
        sdk_thread = None
        if name == "masker":
            from faceoff.sdk import Client, RetryPolicy

            def protect() -> None:
                client = Client(
                    stack.address("masker"),
                    timeout=RECOVERY_SECONDS + 60,
                    retries=RetryPolicy(max_attempts=30, initial_backoff=1.0, max_backoff=5.0),
                )
                try:
                    client.protect(stack.photo, **CHEAP)
                    in_flight["code"] = "OK"
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    in_flight["code"] = str(getattr(exc, "code", type(exc).__name__))
                finally:
                    client.close()

            sdk_thread = threading.Thread(target=protect, daemon=True)
            sdk_thread.start()
            time.sleep(2.0)
        old = _kill(stack, name, signal.SIGKILL)
        time.sleep(0.5)
        codes: list[str] = []
        if name == "evaluator":
            seconds = _until(
                lambda: stack.pid(name) not in (None, old) and stack.serving("evaluator")
            )
        else:
            seconds = _until(_protects(stack, codes))
        if sdk_thread is not None:
            sdk_thread.join(RECOVERY_SECONDS + 90)
            codes.append(in_flight.get("code", "HUNG"))
        codes.append("OK" if seconds is not None else "NOT_BACK")
        detail = {"serving_again_seconds": round(seconds, 1) if seconds is not None else None}
        if sdk_thread is not None:
            detail["sdk_protect_in_flight"] = in_flight.get("code", "HUNG")
        return Outcome(codes, {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, detail)

    return run


def case_stop_detector(stack: Stack) -> Outcome:
    _kill(stack, "detector", signal.SIGSTOP)
    codes: list[str] = []
    code, failed_after, _ = stack.protect(timeout=20.0, **CHEAP)
    codes.append(code)
    seconds = _until(_protects(stack, codes))
    codes.append("OK" if seconds is not None else "NOT_BACK")
    return Outcome(
        codes,
        {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"},
        {
            "first_call_seconds": round(failed_after, 1),
            "serving_again_seconds": round(seconds, 1) if seconds is not None else None,
        },
    )


CASES: dict[str, Callable[[Stack], Outcome]] = {
    "warm": case_warm,
    "refs_49mp": case_refs_49mp,
    "refs_over_budget": case_refs_over_budget,
    "crowd": case_crowd,
    "work_over_budget": case_work_over_budget,
    "cheap_under_maximal": case_cheap_under_maximal,
    "weights": case_weights,
    "kill_detector": case_kill("detector"),
    "kill_evaluator": case_kill("evaluator"),
    "kill_masker": case_kill("masker"),
    "stop_detector": case_stop_detector,
}


def run_case(stack: Stack, name: str, settle: float = SETTLE_SECONDS) -> dict[str, Any]:
    """Run one case, with each service's peak and its memory ``settle`` seconds after it."""
    watched = ("masker", "detector")
    for service in watched:
        pid = stack.pid(service)
        if pid is not None:
            reset_peak(pid)
    started = time.perf_counter()
    outcome = CASES[name](stack)
    seconds = time.perf_counter() - started
    time.sleep(settle)
    row: dict[str, Any] = {
        "case": name,
        "codes": dict(Counter(outcome.codes)),  # code -> calls, in the order first seen
        "documented": outcome.ok,
        "seconds": round(seconds, 1),
    }
    for service in watched:
        pid = stack.pid(service)
        peak = status_bytes(pid, "VmHWM") if pid else None
        after = status_bytes(pid, "VmRSS") if pid else None
        row[f"{service}_peak_mib"] = round(peak / MIB) if peak else None
        row[f"{service}_after_mib"] = round(after / MIB) if after else None
    if name == "warm":
        stack.rest_bytes = status_bytes(stack.pid("masker") or 0, "VmRSS")
    row.update(outcome.detail)
    return row


def summarise(rows: list[dict[str, Any]], rest_bytes: int | None) -> dict[str, Any]:
    masker_peaks = [r["masker_peak_mib"] for r in rows if r.get("masker_peak_mib")]
    detector_peaks = [r["detector_peak_mib"] for r in rows if r.get("detector_peak_mib")]
    rest = round(rest_bytes / MIB) if rest_bytes else None
    last_after = next(
        (r["masker_after_mib"] for r in reversed(rows) if r.get("masker_after_mib")), None
    )
    return {
        "masker_rest_mib": rest,
        "masker_peak_mib": max(masker_peaks) if masker_peaks else None,
        "masker_after_mib_max": max(
            (
                r["masker_after_mib"]
                for r in rows
                if r.get("masker_after_mib") and not r["case"].startswith("kill_masker")
            ),
            default=None,
        ),
        "masker_last_after_mib": last_after,
        "detector_peak_mib": max(detector_peaks) if detector_peaks else None,
        "every_case_documented": all(r["documented"] for r in rows),
    }


def main(args: argparse.Namespace) -> int:
    """Run ``faceoff bench chaos`` (see the module docstring)."""
    names = [n.strip() for n in args.cases.split(",") if n.strip()] if args.cases else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(
            f"faceoff bench chaos: unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASES)}",
            file=sys.stderr,
        )
        return 2
    photo_path = Path(args.photo) if args.photo else DEFAULT_PHOTO
    try:
        photo = photo_path.read_bytes()
    except OSError as exc:
        print(
            f"faceoff bench chaos: cannot read --photo {photo_path}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    print(
        "faceoff bench chaos: starting faceoff serve all on 127.0.0.1 (models load first)",
        file=sys.stderr,
    )
    rows: list[dict[str, Any]] = []
    try:
        with started_stack(photo) as stack:
            for name in names:
                print(f"faceoff bench chaos: {name} ...", file=sys.stderr, flush=True)
                rows.append(run_case(stack, name))
            rest = stack.rest_bytes
    except LoadError as exc:
        print(f"faceoff bench chaos: {exc}", file=sys.stderr)
        return 1
    result: dict[str, Any] = {
        "cases": rows,
        "summary": summarise(rows, rest),
        "photo": photo_path.name,
    }
    emit(result, args.json_out)
    print()
    print_table(
        ["case", "codes", "documented", "s", "masker peak MiB", "after", "detector peak MiB"],
        [
            [
                r["case"],
                " ".join(f"{code}x{n}" for code, n in r["codes"].items()),
                "yes" if r["documented"] else "NO",
                r["seconds"],
                r["masker_peak_mib"],
                r["masker_after_mib"],
                r["detector_peak_mib"],
            ]
            for r in rows
        ],
    )
    return 0 if result["summary"]["every_case_documented"] else 1
