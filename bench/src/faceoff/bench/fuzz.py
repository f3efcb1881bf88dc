"""Fuzzing photo decoding and option checks: the properties, and ``faceoff bench fuzz``.

Every entry point first decodes the user's photo (:func:`faceoff.common.imaging.decode`) and
checks the request's options (:func:`faceoff.masker.options.resolve` and the proto
conversions of the masker, detector and evaluator). Their contract on any input:

- ``decode`` returns a sane :class:`~faceoff.common.imaging.Photo` (``(H, W, 3)`` uint8 with
  ``H, W >= 1`` within the pixel limit, alpha of the same size, an RGB colour profile or none)
  that :func:`~faceoff.common.imaging.encode` can write back, or raises
  :class:`~faceoff.common.errors.InvalidImage` with a message; never any other exception.
- option checks return options that pass :func:`~faceoff.masker.options.validate` or raise
  :class:`~faceoff.common.errors.InvalidOption`; never any other exception.

The ``check_*`` functions below assert that contract for one input and return its outcome
(``"ok"`` or the expected exception's name); any other exception propagates. The test suite
drives them with Hypothesis (``tests/reliability/test_fuzz_properties.py``); :func:`run` drives
them for a given time with a seeded mutation loop over the hostile corpus of
:mod:`faceoff.bench.hostile` and random option values (no Hypothesis needed), and reports the
outcomes, the unexpected exceptions, the slowest input and the peak memory.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import random
import resource
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceoff.bench.report import emit, print_table
from faceoff.common.errors import InvalidImage, InvalidOption
from faceoff.common.imaging import SUPPORTED_FORMATS, Photo, decode, encode
from faceoff.sdk import PROFILES

#: Pixel limit of the fuzz run: lower than the services' 50 MP so that an input that claims a
#: large size is refused (or decoded) quickly; the check runs the same way at any limit.
FUZZ_MAX_PIXELS = 4_000_000
#: Inputs taking longer than this are reported as slow (a decoder that loops would show here).
SLOW_SECONDS = 5.0
#: The share of ``ProtectOptions``' fields a fuzzed message sets (other messages: 0.3).
PROTECT_DENSITY = 0.1


# -- the properties --------------------------------------------------------------------------


def check_photo(photo: Photo, max_pixels: int, max_side: int | None = None) -> None:
    """Assert that a decoded photo is sane (see the module docstring)."""
    pixels = photo.pixels
    assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8, f"pixels are {pixels.dtype}"
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and min(pixels.shape[:2]) >= 1, (
        f"pixels are {pixels.shape}"
    )
    assert photo.format in SUPPORTED_FORMATS, photo.format
    assert photo.full_width >= 1 and photo.full_height >= 1
    assert photo.full_width * photo.full_height <= max_pixels, "decoded past the pixel limit"
    if max_side is None:
        assert (photo.width, photo.height) == (photo.full_width, photo.full_height)
    else:
        assert max(photo.width, photo.height) <= max(max_side, 1)
        assert photo.width <= photo.full_width and photo.height <= photo.full_height
    if photo.alpha is not None:
        assert photo.alpha.dtype == np.uint8 and photo.alpha.shape == pixels.shape[:2]
    if photo.icc_profile is not None:
        assert photo.icc_profile[16:20] == b"RGB ", "a non-RGB colour profile on RGB pixels"


def check_decode(
    data: bytes,
    *,
    max_pixels: int = FUZZ_MAX_PIXELS,
    max_side: int | None = None,
    round_trip: bool = True,
) -> str:
    """Decode ``data``; ``"ok"`` (the photo is sane and, with ``round_trip``, re-encodes to a
    photo of the same size, as the masker does) or ``"InvalidImage"``."""
    try:
        photo = decode(data, max_pixels=max_pixels, max_side=max_side)
    except InvalidImage as exc:
        assert exc.message and "Traceback" not in exc.message
        return "InvalidImage"
    check_photo(photo, max_pixels, max_side)
    if round_trip and max_side is None:
        again = decode(encode(photo, photo.pixels), max_pixels=max_pixels)
        assert (again.full_width, again.full_height) == (photo.full_width, photo.full_height)
    return "ok"


def check_resolve(profile: Any, overrides: dict[str, Any]) -> str:
    """``resolve(profile, **overrides)``: ``"ok"`` (the options validate) or ``"InvalidOption"``."""
    from faceoff.masker.options import ProtectionOptions, resolve, validate

    try:
        options = resolve(profile, **overrides)
    except InvalidOption as exc:
        assert exc.message
        return "InvalidOption"
    assert isinstance(options, ProtectionOptions)
    assert validate(options) is options
    assert (
        math.isfinite(options.epsilon)
        and options.epsilon > 0
        and 1 <= options.total_iterations <= 10_000
    )
    return "ok"


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return bool(a == b)


def check_protect_options(message: Any) -> str:
    """The masker's ``options_from_proto`` on a ``ProtectOptions`` message: ``"ok"`` (and the
    applied options sent back as a message resolve to the same options) or ``"InvalidOption"``."""
    from faceoff.masker.convert import options_from_proto, options_to_proto

    try:
        options = options_from_proto(message)
    except InvalidOption as exc:
        assert exc.message
        return "InvalidOption"
    tiny = float(np.finfo(np.float32).tiny)
    if any(isinstance(v, float) and 0 < abs(v) < tiny for v in dataclasses.astuple(options)):
        # A value derived below float32's normal range (PGD's step from an epsilon of 1e-40)
        # reads back from a message as 0: the round trip cannot hold, the options are still valid.
        return "ok"
    again = options_from_proto(options_to_proto(options))
    for f in dataclasses.fields(options):
        assert _close(getattr(options, f.name), getattr(again, f.name)), (
            f"{f.name} changed on the round trip"
        )
    return "ok"


def check_detect_options(message: Any) -> str:
    """The detector's ``options_from_proto`` on a ``DetectOptions`` message."""
    from faceoff.detector.convert import options_from_proto

    try:
        options = options_from_proto(message)
    except InvalidOption as exc:
        assert exc.message
        return "InvalidOption"
    assert (
        options.min_face_size >= 1 and 0 <= options.min_confidence <= 1 and options.max_faces >= 0
    )
    return "ok"


_EVALUATOR: Any = None


def check_evaluate_request(message: Any) -> str:
    """An ``EvaluateRequest`` through the evaluator's conversion, request checks and decoding
    (an evaluator without models: every recogniser it is asked for answers "not configured")."""
    global _EVALUATOR
    from faceoff.evaluator.convert import request_from_proto
    from faceoff.evaluator.evaluation import Evaluator

    if _EVALUATOR is None:
        _EVALUATOR = Evaluator(local=(), max_pixels=FUZZ_MAX_PIXELS, max_side=256)
    try:
        verdicts = _EVALUATOR.evaluate(request_from_proto(message))
    except (InvalidOption, InvalidImage) as exc:
        assert exc.message
        return type(exc).__name__
    assert all(not v.configured for v in verdicts)
    return "ok"


# -- inputs for the long run -----------------------------------------------------------------


def seed_corpus(data_dir: Path | None = None) -> list[bytes]:
    """Valid small photos of every format plus the photo cases of the hostile corpus."""
    from faceoff.bench.hostile import encode as encode_image
    from faceoff.bench.hostile import hostile_inputs, no_face_texture

    small = no_face_texture(48, 32, seed=7)
    corpus = [encode_image(small, fmt) for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")]
    corpus.append(encode_image(small, "WEBP", lossless=True))
    corpus.append(encode_image(np.dstack([small, small[:, :, :1]]), "PNG"))  # RGBA
    corpus += [
        c.image
        for c in hostile_inputs(data_dir)
        if c.image
        and not c.skip
        and not (c.protect_options or c.detect_options or c.evaluate_fields)
        and c.references is None
        and len(c.image) < 1 << 20
    ]
    return corpus


_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One to four random mutations: bit flips, interesting bytes, inserted, deleted or repeated
    runs, truncation, a splice with another corpus entry, or a 16/32-bit header field overwritten."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(8)
        n = len(out)
        if kind == 0 and n:
            out[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif kind == 1 and n:
            out[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif kind == 2:
            at = rng.randint(0, n)
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        elif kind == 3 and n:
            at = rng.randrange(n)
            del out[at : at + rng.randint(1, 64)]
        elif kind == 4 and n:
            del out[rng.randint(0, n) :]
        elif kind == 5 and n:
            at = rng.randrange(n)
            out[at:at] = out[at : at + rng.randint(1, 256)] * rng.randint(1, 8)
        elif kind == 6:
            other = rng.choice(corpus)
            out = out[: rng.randint(0, n)] + bytearray(other[rng.randint(0, len(other)) :])
        elif n >= 4:  # a width, height, length or offset field: 16 or 32 bits at a header position
            at = rng.randrange(min(n - 3, 64))
            value = rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)))
            out[at : at + 4] = value.to_bytes(4, rng.choice(("big", "little")))
    return bytes(out)


_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 3.4e38, -3.4e38, math.nan, math.inf, -math.inf, 1e9)
_INTS = (0, 1, 2, 3, 7, 15, 50, 10_000, 10_001, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1)
_ENUMS = (0, 1, 2, 3, -1, 99, 2**31 - 1, -(2**31))


_BENIGN: dict[str, tuple[Any, ...]] = {
    "float": (0.5, 1.0, 1.5, 2.0),
    "uint32": (1, 2, 3),
    "uint64": (0, 1, 7),
    "int32": (0, 1, 2),
    "enum": (0, 1, 2),
    "bool": (False, True),
    "string": ("", *PROFILES, "facenet", "dlib", "sface"),
}


def random_value(rng: random.Random, kind: str) -> Any:
    """A value of a protobuf scalar kind (float, uint32, uint64, int32, enum, bool, string): half
    the time a plausible one, else a boundary or random one."""
    if rng.random() < 0.5:
        return rng.choice(_BENIGN[kind])
    if kind == "float":
        return rng.choice(_FLOATS) if rng.random() < 0.6 else rng.uniform(-100, 100)
    if kind in ("uint32", "uint64"):
        limit = 2**32 - 1 if kind == "uint32" else 2**64 - 1
        return min(limit, rng.choice(_INTS)) if rng.random() < 0.7 else rng.randint(0, limit)
    if kind in ("int32", "enum"):
        return rng.choice(_ENUMS)
    if kind == "bool":
        return rng.random() < 0.5
    return rng.choice(
        (
            "",
            *PROFILES,
            "pgd",
            "cw",
            "l2",
            "dlib",
            "sface",
            "facenet",
            "ultra",
            "no-such-decoy",
            "barack",
            "\x00",
            "é" * 3,
            "a" * 300,
        )
    )


def _scalar_kind(field: Any) -> str:
    from google.protobuf.descriptor import FieldDescriptor as F

    return {
        F.TYPE_FLOAT: "float",
        F.TYPE_DOUBLE: "float",
        F.TYPE_UINT32: "uint32",
        F.TYPE_UINT64: "uint64",
        F.TYPE_INT32: "int32",
        F.TYPE_INT64: "int32",
        F.TYPE_ENUM: "enum",
        F.TYPE_BOOL: "bool",
        F.TYPE_STRING: "string",
    }.get(field.type, "")


def random_message(
    cls: Any,
    rng: random.Random,
    depth: int = 0,
    image: Callable[[], bytes] | None = None,
    density: float = 0.3,
) -> Any:
    """A ``cls`` message with a random subset of its fields (each with probability ``density``)
    set to boundary or random values, read from its descriptor (new fields are fuzzed without
    changing this code); ``bytes`` fields (photos) come from ``image``."""
    from google.protobuf import message_factory
    from google.protobuf.descriptor import FieldDescriptor as F

    message = cls()
    for field in cls.DESCRIPTOR.fields:
        if rng.random() >= density:
            continue
        repeated = field.is_repeated
        count = rng.choice((0, 1, 1, 2, 3, 12)) if repeated else 1
        for _ in range(count):
            if field.type == F.TYPE_MESSAGE:
                if depth > 2:
                    break
                sub = random_message(
                    message_factory.GetMessageClass(field.message_type),
                    rng,
                    depth + 1,
                    image,
                    density,
                )
                (
                    getattr(message, field.name).add() if repeated else getattr(message, field.name)
                ).CopyFrom(sub)
            elif field.type == F.TYPE_BYTES:
                value = image() if image else b""
                getattr(message, field.name).append(value) if repeated else setattr(
                    message, field.name, value
                )
            else:
                kind = _scalar_kind(field)
                if not kind:
                    break
                value = random_value(rng, kind)
                try:
                    getattr(message, field.name).append(value) if repeated else setattr(
                        message, field.name, value
                    )
                except (ValueError, TypeError):  # e.g. a negative number for an unsigned field
                    pass
    return message


def random_overrides(rng: random.Random) -> tuple[Any, dict[str, Any]]:
    """A profile and keyword overrides for :func:`faceoff.masker.options.resolve`, typed or not."""
    from faceoff.masker.options import ProtectionOptions

    names = [f.name for f in dataclasses.fields(ProtectionOptions) if f.name != "profile"] + [
        "bogus"
    ]
    pool: tuple[Any, ...] = (
        None,
        True,
        False,
        "",
        "pgd",
        "linf",
        "hinge",
        "facenet",
        (0, 1),
        (),
        [3],
        "0,1",
        (1.0, -1.0),
        {"x": 1},
        b"\x00",
    )
    overrides = {}
    for name in rng.sample(names, rng.randint(0, 6)):
        kind = rng.random()
        overrides[name] = (
            rng.choice(_FLOATS)
            if kind < 0.3
            else rng.choice(_INTS)
            if kind < 0.6
            else rng.choice(pool)
        )
    profile = rng.choice((None, *PROFILES, "", "ultra", 3))
    return profile, overrides


# -- the long run ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Target:
    name: str
    make: Callable[[random.Random], Any]
    check: Callable[[Any], str]
    expected: frozenset[str]


def _targets(corpus: list[bytes]) -> list[_Target]:
    from faceoff.v1 import detector_pb2, evaluator_pb2, masker_pb2

    def photo(rng: random.Random) -> bytes:
        return mutate(rng.choice(corpus), rng, corpus)

    def tiny_photo(rng: random.Random) -> bytes:
        small = [c for c in corpus if len(c) < 20_000]
        return mutate(rng.choice(small), rng, small) if rng.random() < 0.5 else rng.choice(small)

    def evaluate_request(rng: random.Random) -> Any:
        return random_message(evaluator_pb2.EvaluateRequest, rng, image=lambda: tiny_photo(rng))

    return [
        _Target("decode", photo, check_decode, frozenset({"ok", "InvalidImage"})),
        _Target(
            "decode (reduced copy)",
            photo,
            lambda data: check_decode(data, max_side=64),
            frozenset({"ok", "InvalidImage"}),
        ),
        _Target(
            "resolve options",
            random_overrides,
            lambda po: check_resolve(*po),
            frozenset({"ok", "InvalidOption"}),
        ),
        _Target(
            "ProtectOptions message",
            # 42 fields, most with bounds and dependencies: a few set at a time, so that valid
            # combinations come up as well as refused ones
            lambda rng: random_message(masker_pb2.ProtectOptions, rng, density=PROTECT_DENSITY),
            check_protect_options,
            frozenset({"ok", "InvalidOption"}),
        ),
        _Target(
            "DetectOptions message",
            lambda rng: random_message(detector_pb2.DetectOptions, rng),
            check_detect_options,
            frozenset({"ok", "InvalidOption"}),
        ),
        _Target(
            "EvaluateRequest message",
            evaluate_request,
            check_evaluate_request,
            frozenset({"ok", "InvalidOption", "InvalidImage"}),
        ),
    ]


def run(
    duration: float = 60.0, seed: int = 0, data_dir: Path | None = None, crashes: Path | None = None
) -> dict[str, Any]:
    """Fuzz every target in turn for ``duration`` seconds; a JSON-ready summary.

    ``crashes``: a folder where each input that raised an unexpected exception is written
    (inputs are synthetic or from the shared data set; the folder is made when needed).
    """
    import warnings

    rng = random.Random(seed)
    corpus = seed_corpus(data_dir)
    targets = _targets(corpus)
    for (
        target
    ) in targets:  # import what each check needs (TensorFlow, for one) before the clock starts
        try:
            target.check(target.make(random.Random(seed)))
        except Exception:  # noqa: BLE001 - counted in the loop below, if it happens again
            pass
    counts: dict[str, Counter[str]] = {t.name: Counter() for t in targets}
    unexpected: list[dict[str, Any]] = []
    slowest: dict[str, Any] = {"seconds": 0.0}
    started = time.monotonic()
    cases = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about every corrupt EXIF block
        while time.monotonic() - started < duration:
            target = targets[cases % len(targets)]
            value = target.make(rng)
            began = time.perf_counter()
            try:
                outcome = target.check(value)
            except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
                outcome = f"{type(exc).__name__}"
                if len(unexpected) < 50:
                    where = traceback.extract_tb(exc.__traceback__)[-1]
                    record = {
                        "target": target.name,
                        "exception": outcome,
                        "message": str(exc)[:300],
                        "at": f"{Path(where.filename).name}:{where.lineno}",
                        "case": cases,
                    }
                    if crashes is not None and isinstance(value, bytes):
                        crashes.mkdir(parents=True, exist_ok=True)
                        path = crashes / f"crash-{cases:07d}.bin"
                        path.write_bytes(value)
                        record["input"] = str(path)
                    unexpected.append(record)
            seconds = time.perf_counter() - began
            if seconds > slowest["seconds"]:
                slowest = {
                    "seconds": round(seconds, 3),
                    "target": target.name,
                    "outcome": outcome,
                    "input_bytes": len(value) if isinstance(value, bytes) else None,
                }
            counts[target.name][outcome] += 1
            cases += 1
    elapsed = time.monotonic() - started
    return {
        "benchmark": "fuzz",
        "seed": seed,
        "seconds": round(elapsed, 1),
        "cases": cases,
        "cases_per_second": round(cases / elapsed, 1) if elapsed else 0.0,
        "corpus": len(corpus),
        "max_pixels": FUZZ_MAX_PIXELS,
        "targets": {t.name: dict(counts[t.name]) for t in targets},
        "unexpected": unexpected,
        "unexpected_total": sum(
            n for t in targets for o, n in counts[t.name].items() if o not in t.expected
        ),
        "slowest": slowest,
        "slow_inputs": slowest["seconds"] > SLOW_SECONDS,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }


def main(duration: float, seed: int, json_path: str | None, crashes: str | None = None) -> int:
    """Run, print the JSON and a table; exit 1 when an unexpected exception or a slow input showed up."""
    result = run(duration, seed, crashes=Path(crashes) if crashes else None)
    emit(result, json_path)
    targets = _targets([b""])
    rows = []
    for t in targets:
        outcomes = result["targets"][t.name]
        odd = sum(n for o, n in outcomes.items() if o not in t.expected)
        rows.append(
            [
                t.name,
                sum(outcomes.values()),
                ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items())),
                odd,
            ]
        )
    print()
    print_table(["target", "cases", "outcomes", "unexpected"], rows)
    print(
        f"\n{result['cases']} cases in {result['seconds']} s; slowest {result['slowest']['seconds']} s "
        f"({result['slowest'].get('target')}); peak RSS {result['peak_rss_mib']} MiB"
    )
    return 1 if result["unexpected_total"] or result["slow_inputs"] else 0
