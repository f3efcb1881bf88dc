"""Settings come from the environment once, typed, and fail fast naming the variable."""

from __future__ import annotations

import pytest

from faceoff.common.settings import ServerSettings, SettingsError, from_env
from faceoff.detector.server import DetectorSettings, load_settings


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    env = {"FACEOFF_PORT": "6000", "FACEOFF_GRACE_SECONDS": "1.5", "FACEOFF_MAX_PIXELS": "1000"}
    server, detector = load_settings(env, port=7000)
    assert server.port == 7000 and server.grace_seconds == 1.5 and server.metrics_port == 9101
    assert detector == DetectorSettings(max_pixels=1000)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"FACEOFF_PORT": "http"}, "FACEOFF_PORT='http' is not a valid int"),
        ({"FACEOFF_PORT": "70000"}, "FACEOFF_PORT must be 0..65535"),
        ({"FACEOFF_MAX_MESSAGE_BYTES": "10"}, "FACEOFF_MAX_MESSAGE_BYTES"),
        ({"FACEOFF_LOG_LEVEL": "LOUD"}, "FACEOFF_LOG_LEVEL"),
        ({"FACEOFF_GRACE_SECONDS": "-1"}, "FACEOFF_GRACE_SECONDS"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle.replace("(", r"\(").replace("'", "'")):
        from_env(ServerSettings, env)


def test_detector_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="FACEOFF_DETECT_MAX_SIDE"):
        load_settings({"FACEOFF_DETECT_MAX_SIDE": "10"})


def test_default_message_limit_is_20_mib() -> None:
    assert from_env(ServerSettings, {}).max_message_bytes == 20 * 1024 * 1024
