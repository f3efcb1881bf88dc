"""Property-based tests (Hypothesis) of photo decoding and option checks, and a short fuzz run.

The properties are the ones ``faceoff bench fuzz`` runs for minutes (:mod:`faceoff.bench.fuzz`):
on any bytes, ``decode`` returns a sane photo that re-encodes, or raises InvalidImage; on any
values, option checks return valid options or raise InvalidOption; never another exception.
Here Hypothesis draws the inputs (arbitrary bytes, mutated valid photos of every format, PNG
headers, EXIF blocks, option values, and every field of the request messages, read from their
descriptors), derandomised so that CI sees the same examples on every run.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from faceoff.bench import fuzz
from faceoff.bench.hostile import encode, exif_block, no_face_texture, raw_png
from faceoff.masker.options import PROFILES, ProtectionOptions
from faceoff.v1 import detector_pb2, evaluator_pb2, masker_pb2

settings.register_profile(
    "faceoff-suite",
    deadline=None,
    database=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
SUITE = settings.get_profile("faceoff-suite")

_SMALL = no_face_texture(24, 16, seed=5)
#: Valid small photos of every accepted format and the modes decode converts.
SEEDS: list[bytes] = [
    encode(_SMALL, "PNG"),
    encode(_SMALL, "JPEG", quality=80),
    encode(_SMALL, "JPEG", progressive=True),
    encode(_SMALL, "WEBP"),
    encode(_SMALL, "WEBP", lossless=True),
    encode(_SMALL, "BMP"),
    encode(_SMALL, "TIFF"),
    encode(_SMALL, "GIF"),
    encode(np.dstack([_SMALL, _SMALL[:, :, :1]]), "PNG"),
    encode(np.asarray(_SMALL[:, :, 0]), "PNG"),
    encode(Image.fromarray(_SMALL).convert("CMYK"), "JPEG"),
    raw_png(
        24,
        16,
        b"".join(
            b"\0" + (_SMALL[y, :, 0].astype(np.uint16) * 257).astype(">u2").tobytes()
            for y in range(16)
        ),
        depth=16,
        colour=0,
    ),
]


@pytest.fixture(autouse=True)
def _quiet_pillow() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about every corrupt EXIF block it skips
        yield


# -- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("max_side", [None, 8])
@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_every_seed_photo_decodes(index: int, max_side: int | None) -> None:
    """The unmutated seeds are valid: full size and as a reduced copy (16-bit PNG included)."""
    assert fuzz.check_decode(SEEDS[index], max_side=max_side) == "ok"


def test_hostile_photos_decode_as_the_services_answer() -> None:
    """Every photo of the hostile corpus: decoded (sane, re-encodable) exactly when the services accept it."""
    from faceoff.bench.hostile import hostile_inputs
    from faceoff.common.imaging import DEFAULT_MAX_PIXELS
    from tests.conftest import CELEBS

    for case in hostile_inputs(CELEBS):
        if (
            case.skip
            or case.protect_options
            or case.detect_options
            or case.evaluate_fields
            or case.references
        ):
            continue
        if case.expect["Detect"].status not in ("OK", "INVALID_ARGUMENT"):
            continue  # over the message limit: the server never sees it
        expected = "ok" if case.expect["Detect"].ok else "InvalidImage"
        small = len(case.image) < 1 << 20 and (
            case.size is None or case.size[0] * case.size[1] < 4_000_000
        )
        for max_side in (None, 1024):
            outcome = fuzz.check_decode(
                case.image, max_pixels=DEFAULT_MAX_PIXELS, max_side=max_side, round_trip=small
            )
            assert outcome == expected, f"{case.name} (max_side {max_side}): {outcome}"


@settings(SUITE, max_examples=300)
@given(st.binary(max_size=4096))
def test_decode_of_arbitrary_bytes(data: bytes) -> None:
    assert fuzz.check_decode(data) in ("ok", "InvalidImage")


@settings(SUITE, max_examples=400)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=12),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
    max_side=st.sampled_from([None, 8]),
)
def test_decode_of_mutated_photos(
    seed: bytes, edits: list[tuple[int, int]], cut: int | None, max_side: int | None
) -> None:
    data = bytearray(seed)
    for at, value in edits:
        data[at % len(data)] = value
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    assert fuzz.check_decode(bytes(data), max_side=max_side) in ("ok", "InvalidImage")


@settings(SUITE, max_examples=150)
@given(
    width=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    height=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    depth=st.sampled_from([0, 1, 2, 4, 8, 16, 3]),
    colour=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    body=st.binary(max_size=512),
    max_side=st.sampled_from([None, 8]),
)
def test_decode_of_png_headers(
    width: int, height: int, depth: int, colour: int, body: bytes, max_side: int | None
) -> None:
    """Any IHDR (sizes up to 2^32 - 1, invalid depths and colour types) over any data."""
    data = raw_png(width, height, body, depth=depth, colour=colour)
    assert fuzz.check_decode(data, max_pixels=100_000, max_side=max_side) in ("ok", "InvalidImage")


_TAGS = st.one_of(
    st.sampled_from([0x0112, 0x8769, 0x8825, 0xA005, 0x010F, 0x927C]), st.integers(0, 0xFFFF)
)


@settings(SUITE, max_examples=200)
@given(
    st.lists(
        st.tuples(
            _TAGS, st.integers(0, 14), st.integers(0, 2**32 - 1), st.binary(min_size=0, max_size=12)
        ),
        max_size=6,
    )
)
def test_decode_of_junk_exif(entries: list[tuple[int, int, int, bytes]]) -> None:
    """A valid JPEG whose EXIF has any tags, types, counts and values: EXIF never fails a photo."""
    data = encode(_SMALL, "JPEG", exif=exif_block(entries))
    assert fuzz.check_decode(data) == "ok"


# -- options ---------------------------------------------------------------------------------

_OPTION_NAMES = [f.name for f in dataclasses.fields(ProtectionOptions) if f.name != "profile"]
_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=8), st.floats()), max_size=4).map(
        tuple
    ),
    st.lists(st.integers(0, 3), max_size=3),
    st.binary(max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(SUITE, max_examples=400)
@given(
    profile=st.one_of(
        st.none(),
        st.sampled_from(sorted(PROFILES)),
        st.text(max_size=8),
        st.integers(),
        st.lists(st.text()),
    ),
    overrides=st.dictionaries(
        st.one_of(st.sampled_from(_OPTION_NAMES), st.text(max_size=6)), _ANY, max_size=6
    ),
)
def test_resolve_of_arbitrary_values(profile: Any, overrides: dict[str, Any]) -> None:
    assert fuzz.check_resolve(profile, overrides) in ("ok", "InvalidOption")


def _field_values(field: Any, depth: int) -> st.SearchStrategy[Any]:
    from google.protobuf import message_factory
    from google.protobuf.descriptor import FieldDescriptor as F

    scalar: st.SearchStrategy[Any]
    if field.type == F.TYPE_MESSAGE:
        scalar = _messages(message_factory.GetMessageClass(field.message_type), depth + 1)
    elif field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        scalar = st.one_of(st.sampled_from([0.5, 1.0, 2.0]), st.floats(width=32))
    elif field.type == F.TYPE_UINT32:
        scalar = st.one_of(st.integers(0, 4), st.integers(0, 2**32 - 1))
    elif field.type == F.TYPE_UINT64:
        scalar = st.one_of(st.integers(0, 4), st.integers(0, 2**64 - 1))
    elif field.type in (F.TYPE_ENUM, F.TYPE_INT32):
        scalar = st.one_of(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1))
    elif field.type == F.TYPE_BOOL:
        scalar = st.booleans()
    elif field.type == F.TYPE_BYTES:
        scalar = st.one_of(st.sampled_from(SEEDS), st.binary(max_size=64))
    else:
        scalar = st.one_of(
            st.sampled_from(["", "low", "medium", "high", "facenet", "dlib", "sface", "barack"]),
            st.text(max_size=10),
        )
    return st.lists(scalar, max_size=3) if field.is_repeated else scalar


def _messages(cls: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Messages of ``cls`` with any subset of fields set to any value of their type (from the descriptor)."""
    fields = {
        f.name: f for f in cls.DESCRIPTOR.fields if not (depth > 2 and f.type == f.TYPE_MESSAGE)
    }

    def build(values: dict[str, Any]) -> Any:
        message = cls()
        for name, value in values.items():
            target = (
                getattr(message, name)
                if fields[name].is_repeated or fields[name].type == fields[name].TYPE_MESSAGE
                else None
            )
            if fields[name].is_repeated:
                for item in value:
                    target.add().CopyFrom(item) if fields[name].type == fields[
                        name
                    ].TYPE_MESSAGE else target.append(item)
            elif target is not None:
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries(
        {}, optional={n: _field_values(f, depth) for n, f in fields.items()}
    ).map(build)


@settings(SUITE, max_examples=300)
@given(_messages(masker_pb2.ProtectOptions))
def test_protect_options_message(message: masker_pb2.ProtectOptions) -> None:
    """Any ProtectOptions message: valid options that survive the trip back to a message, or InvalidOption."""
    assert fuzz.check_protect_options(message) in ("ok", "InvalidOption")


@settings(SUITE, max_examples=150)
@given(_messages(detector_pb2.DetectOptions))
def test_detect_options_message(message: detector_pb2.DetectOptions) -> None:
    assert fuzz.check_detect_options(message) in ("ok", "InvalidOption")


@settings(SUITE, max_examples=150)
@given(_messages(evaluator_pb2.EvaluateRequest))
def test_evaluate_request_message(message: evaluator_pb2.EvaluateRequest) -> None:
    assert fuzz.check_evaluate_request(message) in ("ok", "InvalidOption", "InvalidImage")


# -- the bench command, short --------------------------------------------------------------


def test_short_fuzz_run_finds_nothing_unexpected() -> None:
    """``faceoff bench fuzz`` for a few seconds: every target runs, none raises anything unexpected."""
    result = fuzz.run(duration=4, seed=0)
    assert result["unexpected_total"] == 0, result["unexpected"]
    for name, outcomes in result["targets"].items():
        assert sum(outcomes.values()) >= 10, f"{name} hardly ran: {outcomes}"
    assert {"ok", "InvalidImage"} <= set(result["targets"]["decode"]), (
        "mutations should give both outcomes"
    )
    assert {"ok", "InvalidOption"} <= set(result["targets"]["ProtectOptions message"])
