"""The quiet command line: native libraries' chatter is dropped from descriptor 2, the rest kept."""

from __future__ import annotations

import subprocess
import sys

import pytest

from faceoff.cli.quiet import is_chatter

CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796537112.454821   21510 port.cc:153] oneDNN custom operations are on.",
    "W1206 06:10:00.000000   1234 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
    "[ WARN:0@50.452] global net_impl_backend.cpp:345 setPreferableTarget Targets are not supported",
    "[ INFO:0@1.000] global plugin_loader.impl.hpp:67 loading plugin",
]
KEPT = [
    "E0000 00:00:1796537112.454821   21510 cuda_dnn.cc:8579] Unable to register cuDNN factory",
    "F1206 06:10:00.000000   1234 check.cc:1] Check failed: x",
    "[ERROR:0@1.0] global dnn.cpp:1 failed",
    "faceoff protect: photo.jpg: bytes are not an image of a known format",
    "Traceback (most recent call last):",
    "I am a line a person wrote",
]


@pytest.mark.parametrize("line", CHATTER)
def test_library_chatter_is_recognised(line: str) -> None:
    assert is_chatter(line)


@pytest.mark.parametrize("line", KEPT)
def test_errors_and_everything_else_are_kept(line: str) -> None:
    assert not is_chatter(line)


def test_descriptor_2_is_filtered_and_python_s_own_writes_pass_through() -> None:
    """In a child process: native writes to fd 2 lose their chatter, keep the rest in order;
    Python's sys.stderr and stdout are untouched; nothing is lost at exit."""
    script = (
        "import os, sys\n"
        "from faceoff.cli.quiet import quiet_native_stderr\n"
        "quiet_native_stderr()\n"
        f"lines = {CHATTER + KEPT!r}\n"
        "os.write(2, ''.join(line + '\\n' for line in lines).encode())\n"
        "print('progress 50%', file=sys.stderr)\n"
        "print('receipt')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "receipt\n"
    err = run.stderr.splitlines()
    assert not [line for line in err if is_chatter(line)]
    assert [line for line in err if line in KEPT] == KEPT
    assert "progress 50%" in err
