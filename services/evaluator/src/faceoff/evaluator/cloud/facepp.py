"""The ``facepp`` backend: Face++ (Megvii) ``compare`` (REST, v3).

``POST {endpoint}/facepp/v3/compare`` as a multipart form with ``api_key``, ``api_secret``,
``image_file1`` (the photo) and ``image_file2`` (a reference or gallery photo); Face++ compares
the largest face of each. It answers ``confidence`` in 0..100 and ``thresholds`` at three false
accept rates, ``{"1e-3": ..., "1e-4": ..., "1e-5": ...}``, on the same scale; both are divided by
100 here. Face++'s own threshold is the one at ``FACEOFF_FACEPP_FAR`` (default 1e-3, the loosest:
Face++ advises that below it the faces should not be taken as the same person, and an evaluator
should not overstate protection). Without a face in either image there is no ``confidence``, and
``faces1``/``faces2`` say which image had none.

Errors follow the documented body ``{"error_message": "...", "request_id": ...}``:
``CONCURRENCY_LIMIT_EXCEEDED`` (HTTP 403) is throttling and is retried with backoff,
``AUTHENTICATION_ERROR`` (401) and ``AUTHORIZATION_ERROR`` (403) are auth errors, 5xx are
retried, other 4xx (``INVALID_IMAGE_SIZE``, ``IMAGE_ERROR_UNSUPPORTED_FORMAT``, 413 ...) refuse
the request. Key and secret travel only in the form body.
"""

from __future__ import annotations

from typing import Any

import requests

from faceoff.common.errors import NoFaceFound
from faceoff.evaluator.cloud.base import (
    CloudRecognizer,
    Comparison,
    UploadLimits,
    clamp01,
    number,
    upload_bytes,
)
from faceoff.evaluator.cloud.credentials import FaceppConfig
from faceoff.evaluator.cloud.errors import (
    CloudAuthError,
    CloudBadResponse,
    CloudError,
    CloudRejected,
    CloudThrottled,
    CloudTransient,
)
from faceoff.evaluator.cloud.retry import RetryPolicy
from faceoff.faces.recognizers.base import FacePhoto

COMPARE_PATH = "/facepp/v3/compare"


class FaceppRecognizer(CloudRecognizer):
    """Face++ compare (see the module docstring).

    Args:
        config: Key, secret, endpoint and the false-accept rate of Face++'s own threshold.
        policy: Retries and per-request timeout.
    """

    name = "facepp"
    limits = UploadLimits(formats=("JPEG", "PNG"), max_bytes=2 * 1024 * 1024, max_side=4096)

    def __init__(self, config: FaceppConfig, policy: RetryPolicy | None = None) -> None:
        super().__init__(policy)
        self.config = config

    @property
    def configured(self) -> bool:
        """Key and secret are set."""
        return self.config.configured

    @property
    def api_threshold(self) -> float:  # type: ignore[override]
        """Face++'s typical threshold at the configured FAR (each answer carries the exact one)."""
        return {"1e-3": 0.62327, "1e-4": 0.69101, "1e-5": 0.73975}[self.config.far]

    def _prepare(self, probe: FacePhoto, deadline: float | None) -> bytes:
        return upload_bytes(probe, self.limits)

    def _post(self, image1: bytes, image2: bytes, timeout: float) -> Any:
        data = {"api_key": self.config.key or "", "api_secret": self.config.secret or ""}
        files = {"image_file1": ("image1", image1), "image_file2": ("image2", image2)}
        url = f"{self.config.endpoint}{COMPARE_PATH}"
        try:
            response = requests.post(url, data=data, files=files, timeout=timeout)
        except requests.Timeout:
            raise CloudTransient(f"{self.name}: compare timed out after {timeout:.1f} s") from None
        except requests.RequestException as exc:
            raise CloudTransient(
                f"{self.name}: cannot reach {self.config.endpoint} ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise self._error(response)
        try:
            return response.json()
        except ValueError:
            raise CloudBadResponse(
                f"{self.name}: compare answered HTTP 200 with a body that is not JSON"
            ) from None

    def _error(self, response: requests.Response) -> Exception:
        status = response.status_code
        message = ""
        try:
            message = str(response.json().get("error_message", "")).strip()
        except (ValueError, AttributeError):
            pass
        detail = f"HTTP {status}" + (f" {message}" if message else "")
        if message.startswith("CONCURRENCY_LIMIT_EXCEEDED") or status == 429:
            return CloudThrottled(f"{self.name}: throttled ({detail})")
        if message.startswith(("AUTHENTICATION_ERROR", "AUTHORIZATION_ERROR")) or status == 401:
            return CloudAuthError(
                f"{self.name}: Face++ refused the credentials ({detail}); check FACEOFF_FACEPP_KEY, "
                "FACEOFF_FACEPP_SECRET and FACEOFF_FACEPP_ENDPOINT (keys are per region)"
            )
        if status >= 500 or status == 412:
            return CloudTransient(f"{self.name}: server error ({detail})")
        if 400 <= status < 500:
            return CloudRejected(f"{self.name}: compare refused the request ({detail})")
        return CloudError(f"{self.name}: compare failed ({detail})")

    def _compare(
        self, prepared: bytes, probe: FacePhoto, other: FacePhoto, deadline: float | None
    ) -> Comparison:
        image2 = upload_bytes(other, self.limits)
        answer = self._call(lambda timeout: self._post(prepared, image2, timeout), deadline)
        if not isinstance(answer, dict):
            raise CloudBadResponse(
                f"{self.name}: compare answered {type(answer).__name__}, not an object"
            )
        if "confidence" not in answer:
            for key, photo in (("faces1", probe), ("faces2", other)):
                if answer.get(key) == []:
                    raise NoFaceFound(f"{self.name}: no face found in {photo.label} by Face++")
            raise CloudBadResponse(
                f"{self.name}: compare answered without confidence or faces1/faces2"
            )
        confidence = number(answer["confidence"], "confidence", self.name)
        thresholds = answer.get("thresholds")
        if not isinstance(thresholds, dict) or self.config.far not in thresholds:
            raise CloudBadResponse(
                f"{self.name}: compare answered without thresholds[{self.config.far!r}]"
            )
        threshold = number(
            thresholds[self.config.far], f"thresholds[{self.config.far!r}]", self.name
        )
        if not (0.0 <= confidence <= 100.0 and 0.0 <= threshold <= 100.0):
            raise CloudBadResponse(
                f"{self.name}: confidence {confidence} or threshold {threshold} is outside 0..100"
            )
        return Comparison(confidence=clamp01(confidence / 100.0), api_threshold=threshold / 100.0)
