"""A quiet command line: the native libraries' own log lines stay off the terminal.

TensorFlow (2.19 and later logs through absl before anything can configure it, so
``TF_CPP_MIN_LOG_LEVEL`` no longer silences its start-up lines: "oneDNN custom operations are
on", twice) and OpenCV's DNN module ("setPreferableTarget ...") write to file descriptor 2
behind Python's back. A person running ``faceoff protect`` should see the command's own lines:
its progress, the receipt, and errors.

:func:`quiet_native_stderr` points descriptor 2 at a pipe and relays what arrives on it,
dropping only the libraries' informational and warning lines (glog/absl's ``I``/``W`` prefix,
absl's "before absl::InitializeLog()" notice, OpenCV's ``[ INFO:`` / ``[ WARN:``); errors and
anything else pass through unchanged. Python's own writes (progress bars, tracebacks) go to a
copy of the real stderr and never through the pipe. ``--verbose`` leaves descriptor 2 alone.
At exit descriptor 2 is restored and the relay drained, so nothing written before is lost.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from typing import IO

#: A native library's informational or warning line (absl/glog ``I1206 ...``/``W0000 ...``,
#: absl's pre-initialisation notice, OpenCV's ``[ INFO:0@...]``/``[ WARN:0@...]``).
CHATTER = re.compile(
    r"^(?:[IW]\d{4} |WARNING: All log messages before absl::InitializeLog\(\)|\[ ?(?:INFO|WARN):)"
)


def is_chatter(line: str) -> bool:
    """Whether ``line`` is a native library's informational or warning line."""
    return CHATTER.match(line) is not None


def quiet_native_stderr() -> None:
    """Relay descriptor 2 through a filter that drops native chatter (see the module docstring).

    Call it once, first thing in the command's process, before TensorFlow or OpenCV load.
    """
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # OpenCV's own switch, read at import
    original = os.dup(2)
    stream: IO[str] = os.fdopen(
        os.dup(original), "w", buffering=1, encoding="utf-8", errors="replace"
    )
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = stream

    def relay() -> None:
        with os.fdopen(read, "r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not is_chatter(line):
                    stream.write(line)
                    stream.flush()

    pump = threading.Thread(target=relay, name="faceoff-quiet-stderr", daemon=True)
    pump.start()

    def restore() -> None:
        os.dup2(original, 2)  # the pipe's last writer closes: the relay reads to its end
        pump.join(timeout=2)

    atexit.register(restore)
