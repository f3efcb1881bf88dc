"""The cloud adapters against local fakes of the APIs (tests/integration/fakes.py), over real HTTP.

boto3 and requests talk to a server on 127.0.0.1 that speaks each API's documented wire format;
every case goes through the adapter's real client code: match, no match, throttled then fine,
throttled for good, auth failure, malformed answers, no face, identification and the APIs' own
thresholds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from faceoff.common.errors import NoFaceFound
from faceoff.common.settings import SettingsError
from faceoff.evaluator.cloud import CLOUD_BACKENDS, CloudRecognizer, build_cloud
from faceoff.evaluator.cloud.credentials import AwsConfig, AzureConfig, CloudConfig, FaceppConfig
from faceoff.evaluator.cloud.errors import (
    CloudAuthError,
    CloudBadResponse,
    CloudThrottled,
    CloudTimeout,
    CloudTransient,
)
from faceoff.evaluator.cloud.retry import RetryPolicy
from faceoff.faces.recognizers.base import FacePhoto
from tests.conftest import PHOTOS, encode
from tests.integration import fakes
from tests.integration.fakes import Canned, FakeCloud

#: Fast retries so that throttling tests take milliseconds, not seconds.
POLICY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, request_timeout=5.0)
#: The API calls one pairwise comparison makes, per backend (Azure: detect the other photo, verify).
COMPARE_APIS = {
    "rekognition": ("rekognition",),
    "azure": ("azure_detect", "azure_verify"),
    "facepp": ("facepp",),
}
WRONG = "zz-wrong-secret-9"
THROTTLED = {
    "rekognition": fakes.AWS_THROTTLED,
    "azure": fakes.AZURE_THROTTLED,
    "facepp": fakes.FACEPP_THROTTLED,
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCloud]:
    server = FakeCloud()
    for photo in sorted(PHOTOS.glob("*/*.jpg")):
        server.register(photo.read_bytes(), photo.parent.name)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _clean(fake: FakeCloud) -> Iterator[None]:
    fake.reset()
    yield
    assert not fake.rejected, f"the adapter broke the wire format: {fake.rejected}"


def config_for(fake: FakeCloud, **wrong: bool) -> CloudConfig:
    """Credentials pointing at the fake (``wrong=True`` per backend: a bad key)."""
    return CloudConfig(
        aws=AwsConfig(
            access_key_id="AKIAWRONGWRONGWRONG0" if wrong.get("rekognition") else fakes.AWS_KEY_ID,
            secret_access_key=fakes.AWS_SECRET,
            region="eu-west-1",
            endpoint_url=fake.url,
        ),
        azure=AzureConfig(endpoint=fake.url, key=WRONG if wrong.get("azure") else fakes.AZURE_KEY),
        facepp=FaceppConfig(
            key=fakes.FACEPP_KEY,
            secret=WRONG if wrong.get("facepp") else fakes.FACEPP_SECRET,
            endpoint=fake.url,
        ),
    )


def adapter(
    fake: FakeCloud, name: str, policy: RetryPolicy = POLICY, **wrong: bool
) -> CloudRecognizer:
    return build_cloud(name, config_for(fake, **wrong), policy)


def photo(person: str, n: int) -> FacePhoto:
    path = PHOTOS / person / f"{person}_{n:02d}.jpg"
    return FacePhoto.from_bytes(path.read_bytes(), label=path.name)


BLANK = FacePhoto.from_bytes(encode(np.full((200, 200, 3), 128, np.uint8)), label="the blank photo")


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_match(fake: FakeCloud, name: str) -> None:
    verdict = adapter(fake, name).verify(photo("barack", 1), [photo("barack", 2)])
    assert verdict.match and verdict.threshold == 0.5
    assert verdict.confidence == pytest.approx(
        {"rekognition": 0.987, "azure": 0.91, "facepp": 0.884}[name]
    )
    assert verdict.distance is None


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_no_match(fake: FakeCloud, name: str) -> None:
    verdict = adapter(fake, name).verify(photo("barack", 1), [photo("leo", 1)])
    assert not verdict.match and verdict.confidence < 0.5


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_best_reference_decides(fake: FakeCloud, name: str) -> None:
    verdict = adapter(fake, name).verify(photo("barack", 1), [photo("leo", 1), photo("barack", 3)])
    assert verdict.match


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_throttled_then_ok(fake: FakeCloud, name: str) -> None:
    api = COMPARE_APIS[name][-1]
    fake.script(api, THROTTLED[name])
    verdict = adapter(fake, name).verify(photo("barack", 1), [photo("barack", 2)])
    assert verdict.match
    assert fake.calls[api] == 2  # the throttled call was retried once


def test_rekognition_throughput_exceeded_is_retried(fake: FakeCloud) -> None:
    fake.script("rekognition", fakes.AWS_THROUGHPUT, fakes.AWS_THROUGHPUT)
    assert adapter(fake, "rekognition").verify(photo("barack", 1), [photo("barack", 2)]).match
    assert fake.calls["rekognition"] == 3


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_throttled_for_good_gives_up_after_max_attempts(fake: FakeCloud, name: str) -> None:
    api = COMPARE_APIS[name][-1]
    fake.script(api, *[THROTTLED[name]] * POLICY.max_attempts)
    with pytest.raises(CloudThrottled) as info:
        adapter(fake, name).verify(photo("barack", 1), [photo("barack", 2)])
    assert fake.calls[api] == POLICY.max_attempts
    assert name in info.value.message and "gave up after 3 attempts" in info.value.message


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_auth_error_is_clear_and_not_retried(fake: FakeCloud, name: str) -> None:
    with pytest.raises(CloudAuthError) as info:
        adapter(fake, name, **{name: True}).verify(photo("barack", 1), [photo("barack", 2)])
    assert sum(fake.calls.values()) == 1
    message = info.value.message
    assert message.startswith(f"{name}:")
    assert {
        "rekognition": "UnrecognizedClientException",
        "azure": "HTTP 401",
        "facepp": "AUTHENTICATION_ERROR",
    }[name] in message
    assert WRONG not in message and fakes.AWS_SECRET not in message  # no secrets in messages
    assert info.value.kind == "auth" and info.value.status == "UNAVAILABLE"


MALFORMED = {
    "rekognition": [
        Canned(200, "this is not JSON", {"Content-Type": "application/x-amz-json-1.1"}),
        Canned(
            200,
            {"FaceMatches": [{"Similarity": "high"}], "UnmatchedFaces": []},
            {"Content-Type": "application/x-amz-json-1.1"},
        ),
        Canned(200, {"SourceImageFace": {}}, {"Content-Type": "application/x-amz-json-1.1"}),
    ],
    "azure": [
        Canned(200, "<html>gateway</html>", {"Content-Type": "text/html"}),
        Canned(200, {"isIdentical": "yes", "confidence": 0.9}),
        Canned(200, {"isIdentical": True, "confidence": 7.5}),
    ],
    "facepp": [
        Canned(200, "not json"),
        Canned(200, {"confidence": 91.0}),
        Canned(200, {"confidence": 910.0, "thresholds": fakes.FACEPP_THRESHOLDS}),
    ],
}


@pytest.mark.parametrize("name,case", [(n, i) for n in CLOUD_BACKENDS for i in range(3)])
def test_malformed_response(fake: FakeCloud, name: str, case: int) -> None:
    fake.script(COMPARE_APIS[name][-1], MALFORMED[name][case])
    with pytest.raises(CloudBadResponse) as info:
        adapter(fake, name).verify(photo("barack", 1), [photo("barack", 2)])
    assert info.value.kind == "bad_response" and info.value.message.startswith(f"{name}:")


def test_azure_detect_answer_without_face_id_is_malformed(fake: FakeCloud) -> None:
    fake.script(
        "azure_detect",
        Canned(200, [{"faceRectangle": {"top": 1, "left": 1, "width": 9, "height": 9}}]),
    )
    with pytest.raises(CloudBadResponse):
        adapter(fake, "azure").verify(photo("barack", 1), [photo("barack", 2)])


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_no_face_names_the_photo(fake: FakeCloud, name: str) -> None:
    with pytest.raises(NoFaceFound) as info:
        adapter(fake, name).verify(photo("barack", 1), [BLANK])
    assert (
        info.value.message.startswith(f"{name}: no face found in")
        and "the blank photo" in info.value.message
    )
    with pytest.raises(NoFaceFound):
        adapter(fake, name).verify(BLANK, [photo("barack", 1)])


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_api_threshold(fake: FakeCloud, name: str) -> None:
    verdict = adapter(fake, name).verify(
        photo("barack", 1), [photo("barack", 2)], use_api_threshold=True
    )
    assert verdict.threshold == pytest.approx(
        {"rekognition": 0.80, "azure": 0.5, "facepp": 0.62327}[name]
    )
    assert verdict.match


@pytest.mark.parametrize("name", CLOUD_BACKENDS)
def test_identify_ranks_the_right_person_first(fake: FakeCloud, name: str) -> None:
    gallery = {p: [photo(p, 2), photo(p, 3)] for p in ("leo", "barack", "taylor")}
    ranking = adapter(fake, name).identify(photo("barack", 1), gallery, top_k=2)
    assert [s.name for s in ranking][:1] == ["barack"] and len(ranking) == 2
    assert ranking[0].confidence > ranking[1].confidence


def test_azure_detects_the_probe_once_per_assessment(fake: FakeCloud) -> None:
    gallery = {p: [photo(p, 2)] for p in ("leo", "barack")}
    result = adapter(fake, "azure").assess(
        photo("barack", 1), [photo("barack", 3)], gallery, top_k=2
    )
    assert result.verification is not None and result.verification.match
    assert fake.calls["azure_detect"] == 1 + 1 + 2 and fake.calls["azure_verify"] == 3


def test_server_errors_are_retried(fake: FakeCloud) -> None:
    fake.script("facepp", fakes.facepp_error(500, "INTERNAL_ERROR"))
    fake.script("azure_verify", fakes.azure_error(503, "ServiceUnavailable", "try later"))
    assert adapter(fake, "facepp").verify(photo("barack", 1), [photo("barack", 2)]).match
    assert adapter(fake, "azure").verify(photo("barack", 1), [photo("barack", 2)]).match


def test_slow_api_hits_the_request_timeout_then_the_deadline(fake: FakeCloud) -> None:
    import time

    fake.script("facepp", *[Canned(200, {}, delay=1.0)] * 3)
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, request_timeout=0.2)
    with pytest.raises((CloudTransient, CloudTimeout)) as info:
        adapter(fake, "facepp", policy).verify(
            photo("barack", 1), [photo("barack", 2)], deadline=time.monotonic() + 0.5
        )
    assert info.value.kind in ("unavailable", "timeout")


def test_unreachable_endpoint_is_unavailable() -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = CloudConfig(
        facepp=FaceppConfig(key="k", secret="s", endpoint=f"http://127.0.0.1:{port}")
    )
    with pytest.raises(CloudTransient) as info:
        build_cloud("facepp", config, POLICY).verify(photo("barack", 1), [photo("barack", 2)])
    assert "cannot reach" in info.value.message


# -- credentials ---------------------------------------------------------------------------------


def test_no_credentials_means_not_configured() -> None:
    config = CloudConfig.from_env({})
    assert [build_cloud(n, config).configured for n in CLOUD_BACKENDS] == [False, False, False]


def test_credentials_from_the_environment() -> None:
    config = CloudConfig.from_env(
        {
            "AWS_ACCESS_KEY_ID": "AKIA1",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "eu-central-1",
            "FACEOFF_AZURE_FACE_ENDPOINT": "https://x.cognitiveservices.azure.com/",
            "FACEOFF_AZURE_FACE_KEY": "k",
            "FACEOFF_FACEPP_KEY": "k",
            "FACEOFF_FACEPP_SECRET": "s",
            "FACEOFF_FACEPP_FAR": "1e-5",
        }
    )
    assert config.aws.configured and config.aws.region == "eu-central-1"
    assert config.azure.endpoint == "https://x.cognitiveservices.azure.com"
    assert config.facepp.configured and config.facepp.endpoint == "https://api-us.faceplusplus.com"
    assert build_cloud("facepp", config).threshold(use_api_threshold=True) == pytest.approx(0.73975)
    assert "key=" not in repr(config) and "secret" not in repr(config)  # secrets stay out of logs


def test_profile_or_role_selects_the_default_chain() -> None:
    assert CloudConfig.from_env({"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"}).aws.configured


@pytest.mark.parametrize("fmt", ["json", "ini"])
def test_credentials_from_a_secret_file(tmp_path: Path, fmt: str) -> None:
    if fmt == "json":
        text = json.dumps(
            {
                "azure": {"endpoint": "https://a.example", "key": "k1"},
                "facepp": {"key": "k", "secret": "s"},
            }
        )
    else:
        text = "[azure]\nendpoint = https://a.example\nkey = k1\n[facepp]\nkey = k\nsecret = s\n"
    secrets = tmp_path / f"cloud.{fmt}"
    secrets.write_text(text)
    config = CloudConfig.from_env(
        {"FACEOFF_CLOUD_SECRETS_FILE": str(secrets), "FACEOFF_AZURE_FACE_KEY": "from-env"}
    )
    assert config.azure.configured and config.azure.key == "from-env"  # variables win over the file
    assert config.facepp.configured and not config.aws.configured


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"FACEOFF_FACEPP_KEY": "k"}, "FACEOFF_FACEPP_SECRET"),
        ({"AWS_SECRET_ACCESS_KEY": "s"}, "AWS_ACCESS_KEY_ID"),
        ({"FACEOFF_AZURE_FACE_ENDPOINT": "ftp://x", "FACEOFF_AZURE_FACE_KEY": "k"}, "http(s) URL"),
        ({"FACEOFF_FACEPP_FAR": "1e-2"}, "FACEOFF_FACEPP_FAR"),
        ({"FACEOFF_CLOUD_SECRETS_FILE": "/nonexistent/cloud.json"}, "cannot be read"),
    ],
)
def test_bad_cloud_settings_fail_fast(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as info:
        CloudConfig.from_env(env)
    assert needle in str(info.value)
