"""The servers' log output: plain text for people, or one JSON object per line for collectors.

``FACEOFF_LOG_FORMAT=json`` (or ``--log-format json``) makes every line on stderr a JSON object::

    {"time": "2026-12-01T18:04:05.123Z", "level": "INFO", "logger": "faceoff.access",
     "service": "masker", "message": "rpc /faceoff.v1.Masker/Protect ...",
     "method": "/faceoff.v1.Masker/Protect", "code": "OK", "duration_seconds": 9.81,
     "request_id": "3f0c...", "peer": "ipv4:10.0.0.7:51234", "request_bytes": 183211}

``request_id`` is the current call's (:mod:`faceoff.common.status`) on every record logged while
a call is served, and ``trace_id`` / ``span_id`` are added when a trace is recording; an
exception's traceback goes in ``exception``. Native libraries (TensorFlow, oneDNN, absl, gRPC's
core) write to file descriptor 2 behind Python's back; in JSON mode that descriptor is a pipe
whose lines are re-logged as records of logger ``native`` (their level read from the glog-style
prefix, ``I``/``W``/``E``/``F``), so the stream stays one object per line. Messages never carry
payloads (see the privacy rules in STYLE.md); neither do these fields.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import threading
from typing import IO, Any

from faceoff.common import status

FORMATS = ("text", "json")

#: Attributes of a record that the access log sets (``extra=``) and JSON lines carry as fields.
FIELDS = ("method", "code", "duration_seconds", "peer", "request_bytes", "request_id")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        when = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
        out: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if "request_id" not in out:
            rid = status.current_request_id()
            if rid:
                out["request_id"] = rid
        out.update(_trace_ids())
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _trace_ids() -> dict[str, str]:
    """The recording span's ids (hex, W3C form), when OpenTelemetry is installed and tracing."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


_NATIVE_LEVELS = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}


def _native_level(line: str) -> int:
    """The level of a native library's line: glog/absl prefixes (``I1201 ...``, ``W0000 ...``)."""
    if len(line) > 5 and line[0] in _NATIVE_LEVELS and line[1:5].isdigit():
        return _NATIVE_LEVELS[line[0]]
    return logging.WARNING


def capture_native_stderr(stream: IO[str]) -> None:
    """Point file descriptor 2 at a pipe whose lines become ``native`` log records.

    ``stream`` is where the log handler writes: it must already be a duplicate of the original
    stderr (see :func:`configure`), or the records would feed the pipe they come from.
    """
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = stream  # Python's own writes to stderr (warnings, tracebacks) go out as they are
    native = logging.getLogger("native")

    def pump() -> None:
        with os.fdopen(read, "r", errors="replace") as lines:
            for line in lines:
                text = line.rstrip("\n")
                if text:
                    native.log(_native_level(text), "%s", text)

    threading.Thread(target=pump, name="faceoff-native-log", daemon=True).start()


def configure(level: str = "INFO", fmt: str = "text", service: str = "faceoff") -> None:
    """Configure the root logger; called by entry points only, never by library code."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier call; others (a test's) are kept
        if getattr(old, "faceoff_handler", False):
            root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        # the records go to a copy of the real stderr; fd 2 itself becomes the native pipe
        stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter(service))
        capture_native_stderr(stream)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    setattr(handler, "faceoff_handler", True)  # noqa: B010 - a mark on a stdlib object
    root.addHandler(handler)
    root.setLevel(level.upper())
    # TensorFlow's own chatter is not ours to print at INFO.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
    # Pillow's parsers log every EXIF tag's value at DEBUG (a GPS position, a camera's serial
    # number): a user's photo metadata never goes to the log, whatever the level.
    logging.getLogger("PIL").setLevel(logging.INFO)
