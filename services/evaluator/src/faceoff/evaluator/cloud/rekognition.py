"""The ``rekognition`` backend: AWS Rekognition ``CompareFaces`` through boto3.

One ``CompareFaces`` call per pair: the photo is the *source* (Rekognition uses its largest
face, as every recogniser here does) and the reference or gallery photo the *target*. It is
called with ``SimilarityThreshold=0`` and ``QualityFilter=NONE`` so that every target face comes
back with its similarity, matched or not; the comparison's confidence is the best
``FaceMatches[].Similarity / 100``. Rekognition's own threshold is CompareFaces' default
``SimilarityThreshold`` of 80, i.e. 0.80. When either image has no face Rekognition answers
``InvalidParameterException``, reported as no face found.

boto3's own retries are switched off (``total_max_attempts=1``) so that
:mod:`~faceoff.evaluator.cloud.retry` alone decides: ``ThrottlingException`` and
``ProvisionedThroughputExceededException`` are retried with backoff, as are 5xx answers and
dropped connections. Credentials are the explicit keys of
:class:`~faceoff.evaluator.cloud.credentials.AwsConfig`, or boto3's credential chain without
its EC2 instance-metadata provider (which would probe a link-local address on every machine
that is not EC2). The region is always explicit, for the same reason.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from faceoff.common.errors import NoFaceFound
from faceoff.evaluator.cloud.base import (
    CloudRecognizer,
    Comparison,
    UploadLimits,
    clamp01,
    number,
    upload_bytes,
)
from faceoff.evaluator.cloud.credentials import AwsConfig
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

log = logging.getLogger(__name__)

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "AccessDenied",
        "ExpiredToken",
    }
)
REJECTED_CODES = frozenset(
    {"ImageTooLargeException", "InvalidImageFormatException", "ValidationException"}
)


class RekognitionRecognizer(CloudRecognizer):
    """AWS Rekognition CompareFaces (see the module docstring).

    Args:
        config: Credentials, region and optional endpoint.
        policy: Retries and per-request timeout.
    """

    name = "rekognition"
    api_threshold = 0.80
    limits = UploadLimits(formats=("JPEG", "PNG"), max_bytes=5 * 1024 * 1024, max_side=4096)

    def __init__(self, config: AwsConfig, policy: RetryPolicy | None = None) -> None:
        super().__init__(policy)
        self.config = config
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """Keys were given or the credential chain was asked for."""
        return self.config.configured

    def _session(self) -> Any:
        import boto3
        import botocore.session

        c = self.config
        if c.access_key_id:
            return boto3.session.Session(
                aws_access_key_id=c.access_key_id,
                aws_secret_access_key=c.secret_access_key,
                aws_session_token=c.session_token,
                region_name=c.region,
            )
        core = botocore.session.get_session()
        core.get_component("credential_provider").remove("iam-role")
        return boto3.session.Session(botocore_session=core, region_name=c.region)

    def client(self) -> Any:
        """The boto3 client, built once (boto3 clients are thread-safe)."""
        with self._client_lock:
            if self._client is None:
                from botocore.config import Config

                config = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.policy.request_timeout,
                    read_timeout=self.policy.request_timeout,
                    user_agent_extra="faceoff-evaluator",
                )
                self._client = self._session().client(
                    "rekognition",
                    region_name=self.config.region,
                    endpoint_url=self.config.endpoint_url,
                    config=config,
                )
            return self._client

    def _prepare(self, probe: FacePhoto, deadline: float | None) -> bytes:
        return upload_bytes(probe, self.limits)

    def _compare(
        self, prepared: bytes, probe: FacePhoto, other: FacePhoto, deadline: float | None
    ) -> Comparison:
        target = upload_bytes(other, self.limits)
        response = self._call(
            lambda timeout: self._compare_faces(prepared, target, probe, other), deadline
        )
        matches = response.get("FaceMatches") if isinstance(response, dict) else None
        unmatched = response.get("UnmatchedFaces", []) if isinstance(response, dict) else None
        if not isinstance(matches, list) or not isinstance(unmatched, list):
            raise CloudBadResponse(
                f"{self.name}: CompareFaces answered without the FaceMatches/UnmatchedFaces lists"
            )
        if not matches and not unmatched:
            raise NoFaceFound(f"{self.name}: no face found in {other.label} by Rekognition")
        best = 0.0
        for match in matches:
            similarity = number(
                match.get("Similarity") if isinstance(match, dict) else None,
                "FaceMatches[].Similarity",
                self.name,
            )
            if not 0.0 <= similarity <= 100.0:
                raise CloudBadResponse(f"{self.name}: Similarity {similarity} is outside 0..100")
            best = max(best, similarity)
        return Comparison(confidence=clamp01(best / 100.0), api_threshold=self.api_threshold)

    def _compare_faces(
        self, source: bytes, target: bytes, probe: FacePhoto, other: FacePhoto
    ) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        try:
            return self.client().compare_faces(
                SourceImage={"Bytes": source},
                TargetImage={"Bytes": target},
                SimilarityThreshold=0.0,
                QualityFilter="NONE",
            )
        except ClientError as exc:
            raise self._error(exc, probe, other) from None
        except NoCredentialsError:
            raise CloudAuthError(
                f"{self.name}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or a profile or role)"
            ) from None
        except (
            EndpointConnectionError,
            ConnectTimeoutError,
            ReadTimeoutError,
            ConnectionClosedError,
        ) as exc:
            raise CloudTransient(
                f"{self.name}: cannot reach Rekognition ({type(exc).__name__})"
            ) from None
        except BotoCoreError as exc:
            raise CloudBadResponse(f"{self.name}: {type(exc).__name__}: {exc}") from None

    def _error(self, exc: Any, probe: FacePhoto, other: FacePhoto) -> Exception:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or "Unknown"
        message = str(err.get("Message", "")).strip()
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = f"{code}: {message}" if message else code
        if code in THROTTLING_CODES or status == 429:
            return CloudThrottled(f"{self.name}: throttled ({detail})")
        if code in AUTH_CODES or status in (401, 403):
            return CloudAuthError(
                f"{self.name}: AWS refused the credentials ({detail}); check the AWS keys and region"
            )
        if code == "InvalidParameterException":
            return NoFaceFound(
                f"{self.name}: no face found in {probe.label} or {other.label} by Rekognition ({detail}; "
                "CompareFaces answers this when an image has no face)"
            )
        if code in REJECTED_CODES:
            return CloudRejected(f"{self.name}: the image was refused ({detail})")
        if status >= 500 or code in ("InternalServerError", "ServiceUnavailable"):
            return CloudTransient(f"{self.name}: server error ({detail})")
        return CloudError(f"{self.name}: CompareFaces failed ({detail})")
