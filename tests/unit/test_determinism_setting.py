"""``FACEOFF_DETERMINISTIC``: importing faceoff.common turns TensorFlow's oneDNN kernels off before TF loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW = "import os, faceoff.common; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FACEOFF_DETERMINISTIC", "TF_ENABLE_ONEDNN_OPTS")
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("value", ["1", "true", " ON "])
def test_on_turns_onednn_off(value: str) -> None:
    done = run(SHOW, FACEOFF_DETERMINISTIC=value)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


@pytest.mark.parametrize("value", [None, "0", "off", ""])
def test_off_or_unset_leaves_tensorflow_alone(value: str | None) -> None:
    done = run(SHOW) if value is None else run(SHOW, FACEOFF_DETERMINISTIC=value)
    assert done.returncode == 0 and done.stdout.strip() == "None", done.stderr


def test_a_bad_value_names_what_is_accepted() -> None:
    done = run(SHOW, FACEOFF_DETERMINISTIC="maybe")
    assert done.returncode != 0
    assert "FACEOFF_DETERMINISTIC is 'maybe'; use 1/true/yes/on, or 0/false/no/off" in done.stderr


def test_too_late_warns_that_it_had_no_effect() -> None:
    # A stand-in module named tensorflow: the check is whether TF was imported first, not TF itself.
    code = "import sys, types; sys.modules['tensorflow'] = types.ModuleType('tensorflow'); " + SHOW
    done = run(code, FACEOFF_DETERMINISTIC="1")
    assert (
        done.returncode == 0
        and "has no effect: TensorFlow was imported before faceoff" in done.stderr
    )
