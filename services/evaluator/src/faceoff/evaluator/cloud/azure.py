"""The ``azure`` backend: Azure AI Face ``detect`` + ``verify`` (REST, v1.0).

Each photo goes to ``POST {endpoint}/face/v1.0/detect?returnFaceId=true`` (binary body,
``recognition_04`` / ``detection_03``), which answers a JSON list of faces with a ``faceId``;
the largest face is used. ``POST {endpoint}/face/v1.0/verify`` with ``{"faceId1", "faceId2"}``
answers ``{"isIdentical": bool, "confidence": float}``; the confidence is already in [0, 1] and
Azure's own threshold (``isIdentical``) is 0.5. The photo is detected once per verification.

Errors follow the documented body ``{"error": {"code", "message"}}``: 401 (bad key or endpoint)
and 403 (quota used up, or an account without approval for verification) are auth errors, 429
is throttling (its ``Retry-After`` header is honoured), 408 and 5xx are retried, other 4xx refuse
the request. The key travels in the ``Ocp-Apim-Subscription-Key`` header only.
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
from faceoff.evaluator.cloud.credentials import AzureConfig
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

DETECT_PARAMS = {
    "returnFaceId": "true",
    "returnFaceLandmarks": "false",
    "recognitionModel": "recognition_04",
    "detectionModel": "detection_03",
}


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the HTTP-date form is not used by these APIs)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


class AzureFaceRecognizer(CloudRecognizer):
    """Azure Face detect + verify (see the module docstring).

    Args:
        config: Endpoint and key.
        policy: Retries and per-request timeout.
    """

    name = "azure"
    api_threshold = 0.5
    limits = UploadLimits(
        formats=("JPEG", "PNG", "GIF", "BMP"), max_bytes=6 * 1024 * 1024, max_side=4096
    )

    def __init__(self, config: AzureConfig, policy: RetryPolicy | None = None) -> None:
        super().__init__(policy)
        self.config = config

    @property
    def configured(self) -> bool:
        """Endpoint and key are set."""
        return self.config.configured

    def _post(self, path: str, timeout: float, **kwargs: Any) -> Any:
        headers = {"Ocp-Apim-Subscription-Key": self.config.key or "", **kwargs.pop("headers", {})}
        url = f"{self.config.endpoint}{path}"
        try:
            response = requests.post(url, headers=headers, timeout=timeout, **kwargs)
        except requests.Timeout:
            raise CloudTransient(f"{self.name}: {path} timed out after {timeout:.1f} s") from None
        except requests.RequestException as exc:
            raise CloudTransient(
                f"{self.name}: cannot reach {self.config.endpoint} ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise self._error(response, path)
        try:
            return response.json()
        except ValueError:
            raise CloudBadResponse(
                f"{self.name}: {path} answered HTTP 200 with a body that is not JSON"
            ) from None

    def _error(self, response: requests.Response, path: str) -> Exception:
        status = response.status_code
        code, message = str(status), ""
        try:
            err = response.json().get("error", {})
            code = str(err.get("code", code))
            message = str(err.get("message", "")).strip()
        except (ValueError, AttributeError):
            pass
        detail = f"HTTP {status} {code}" + (f": {message}" if message else "")
        if status == 429:
            return CloudThrottled(
                f"{self.name}: throttled ({detail})",
                retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status in (401, 403):
            return CloudAuthError(
                f"{self.name}: Azure refused the request ({detail}); check FACEOFF_AZURE_FACE_KEY and "
                "FACEOFF_AZURE_FACE_ENDPOINT, and that the resource may use face verification"
            )
        if status == 408 or status >= 500:
            return CloudTransient(f"{self.name}: server error on {path} ({detail})")
        if 400 <= status < 500:
            return CloudRejected(f"{self.name}: {path} refused the request ({detail})")
        return CloudError(f"{self.name}: {path} failed ({detail})")

    def _detect(self, photo: FacePhoto, deadline: float | None) -> str:
        """The ``faceId`` of the largest face in ``photo``."""
        body = upload_bytes(photo, self.limits)
        faces = self._call(
            lambda timeout: self._post(
                "/face/v1.0/detect",
                timeout,
                params=DETECT_PARAMS,
                data=body,
                headers={"Content-Type": "application/octet-stream"},
            ),
            deadline,
        )
        if not isinstance(faces, list):
            raise CloudBadResponse(
                f"{self.name}: detect answered {type(faces).__name__}, not a list of faces"
            )
        if not faces:
            raise NoFaceFound(f"{self.name}: no face found in {photo.label} by Azure Face detect")
        try:
            largest = max(
                faces,
                key=lambda f: (
                    float(f["faceRectangle"]["width"]) * float(f["faceRectangle"]["height"])
                ),
            )
            face_id = largest["faceId"]
        except (KeyError, TypeError, ValueError):
            raise CloudBadResponse(
                f"{self.name}: detect answered faces without faceId/faceRectangle"
            ) from None
        if not isinstance(face_id, str) or not face_id:
            raise CloudBadResponse(f"{self.name}: detect answered an empty faceId")
        return face_id

    def _prepare(self, probe: FacePhoto, deadline: float | None) -> str:
        return self._detect(probe, deadline)

    def _compare(
        self, prepared: str, probe: FacePhoto, other: FacePhoto, deadline: float | None
    ) -> Comparison:
        other_id = self._detect(other, deadline)
        answer = self._call(
            lambda timeout: self._post(
                "/face/v1.0/verify", timeout, json={"faceId1": prepared, "faceId2": other_id}
            ),
            deadline,
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("isIdentical"), bool):
            raise CloudBadResponse(f"{self.name}: verify answered without isIdentical/confidence")
        confidence = number(answer.get("confidence"), "confidence", self.name)
        if not 0.0 <= confidence <= 1.0:
            raise CloudBadResponse(f"{self.name}: verify confidence {confidence} is outside 0..1")
        return Comparison(confidence=clamp01(confidence), api_threshold=self.api_threshold)
