"""The masker's readiness follows its detector: NOT_SERVING after failed checks, back after one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from faceoff.common.server import NOT_SERVING, SERVING
from faceoff.common.settings import SettingsError
from faceoff.masker.server import (
    DETECTOR_HEALTH_FAILURES,
    MaskerSettings,
    load_settings,
    watch_detector,
)


class ScriptedDetector:
    """Answers health checks from a script (True: SERVING), then stays on its last answer."""

    address = "detector:50051"

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.checks = 0

    async def serving(self, timeout: float) -> bool:
        answer = self.answers[min(self.checks, len(self.answers) - 1)]
        self.checks += 1
        return answer


class RecordingHealth:
    def __init__(self) -> None:
        self.sets: list[tuple[str, Any]] = []

    async def set(self, service: str, status: Any) -> None:
        self.sets.append((service, status))


def _watch(answers: list[bool]) -> tuple[RecordingHealth, ScriptedDetector]:
    health, detector = RecordingHealth(), ScriptedDetector(answers)

    async def main() -> None:
        task = asyncio.ensure_future(watch_detector(health, detector, 0.001))  # type: ignore[arg-type]
        while detector.checks < len(answers) + 2:
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    return health, detector


def test_one_failed_check_changes_nothing() -> None:
    health, _ = _watch([True, False, True, True])
    assert health.sets == []


def test_failed_checks_in_a_row_turn_the_masker_not_serving_until_one_passes() -> None:
    answers = [True] + [False] * (DETECTOR_HEALTH_FAILURES + 3) + [True]
    health, _ = _watch(answers)
    assert health.sets == [("faceoff.v1.Masker", NOT_SERVING), ("faceoff.v1.Masker", SERVING)]


def test_liveness_is_never_touched() -> None:
    health, _ = _watch([False] * 10)
    assert health.sets == [("faceoff.v1.Masker", NOT_SERVING)]
    assert all(service != "" for service, _ in health.sets)


def test_the_interval_and_the_detect_timeout_are_checked() -> None:
    with pytest.raises(SettingsError, match="FACEOFF_DETECTOR_HEALTH_SECONDS"):
        MaskerSettings(detector_health_seconds=-1)
    with pytest.raises(SettingsError, match="FACEOFF_DETECT_TIMEOUT_SECONDS"):
        MaskerSettings(detect_timeout_seconds=0)
    _, settings = load_settings(env={"FACEOFF_DETECT_TIMEOUT_SECONDS": "90"})
    assert settings.detect_timeout_seconds == 90.0
