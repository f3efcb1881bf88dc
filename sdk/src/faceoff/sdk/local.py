"""The embedded pipeline: the three services' cores in this process, behind the SDK's interface.

:meth:`faceoff.sdk.Client.local` and :meth:`faceoff.sdk.AsyncClient.local` use it instead of the
network. It takes and returns the same ``faceoff.v1`` messages as the services and runs the
masker's own pipeline (:func:`faceoff.masker.pipeline.protect`) with the detector in this
process and each attack run alone, so a request with a fixed seed gives the same bytes
in-process as from a masker that ran it alone.

Models load on first use (MTCNN for the first call, FaceNet for the first protection, each
recogniser for the first evaluation that asks for it) and stay loaded for the life of the
process, shared by every embedded client in it. TensorFlow is imported then, not when the SDK
is imported. Domain errors become the SDK's exceptions by their status,
as the services' error interceptor would map them.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from faceoff.sdk.errors import FailedPreconditionError, error_for
from faceoff.v1 import detector_pb2, evaluator_pb2, masker_pb2

if TYPE_CHECKING:
    from faceoff.detector.detection import FaceDetector
    from faceoff.evaluator.evaluation import Evaluator
    from faceoff.masker.protection import Protector

__all__ = ["LocalPipeline", "require_services"]

#: The service distributions the embedded pipeline runs, by the package each provides.
SERVICE_DISTRIBUTIONS = {
    "faceoff.detector": "faceoff-detector",
    "faceoff.masker": "faceoff-masker",
    "faceoff.evaluator": "faceoff-evaluator",
}


def require_services() -> None:
    """Raise ImportError naming what to install unless the service distributions are here.

    ``faceoff-sdk`` alone is the thin client; running the pipeline in-process needs the
    services (and with them TensorFlow and the models).
    """
    missing = []
    for package, distribution in SERVICE_DISTRIBUTIONS.items():
        try:
            found = importlib.util.find_spec(package) is not None
        except ModuleNotFoundError:  # the faceoff namespace itself without any service
            found = False
        if not found:
            missing.append(distribution)
    if missing:
        raise ImportError(
            "Client.local() runs the Face-Off services in this process and needs their "
            f"distributions; missing: {', '.join(missing)}. Install them (from a checkout: "
            "./dev setup, or pip install ./services/... with their TensorFlow extra), or talk "
            "to running services with Client('host:port')."
        )


ProgressSink = Callable[[masker_pb2.ProtectProgress], None]

# The models of this process, shared by every LocalPipeline: loading one takes 10-20 s.
_models_lock = threading.Lock()
_detectors: dict[tuple[int, int], FaceDetector] = {}
_protectors: dict[int, Protector] = {}
# One attack at a time, as the masker's single attack worker runs them.
_attack_lock = threading.Lock()


@contextmanager
def _as_sdk_errors() -> Iterator[None]:
    """Re-raise the services' domain errors as the SDK exception of the same status."""
    from faceoff.common.errors import FaceOffError as DomainError

    try:
        yield
    except DomainError as exc:
        raise error_for(exc.status, exc.message, reason=exc.reason, field=exc.field) from None


class LocalPipeline:
    """Detector, masker and evaluator cores in this process (thread-safe).

    Args:
        recognizers: Local recognisers :meth:`evaluate` may run (default dlib, sface, facenet).
        detect_max_side: Longer side of the copy MTCNN runs on (as ``FACEOFF_DETECT_MAX_SIDE``).
        max_pixels: Largest photo accepted (as ``FACEOFF_MAX_PIXELS``).
        cloud_apis: Let :meth:`evaluate` call the cloud APIs configured in this process's
            environment (the evaluator service's variables, docs/evaluator.md); off, they answer
            ``configured=False``.
    """

    def __init__(
        self,
        recognizers: Sequence[str] | None = None,
        detect_max_side: int = 1024,
        max_pixels: int | None = None,
        cloud_apis: bool = False,
    ) -> None:
        require_services()
        from faceoff.common.imaging import DEFAULT_MAX_PIXELS

        self._recognizers = tuple(recognizers) if recognizers is not None else None
        self._detect_max_side = detect_max_side
        self._max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self._cloud_apis = cloud_apis
        self._lock = threading.Lock()
        self._evaluator: Evaluator | None = None

    # -- lazily loaded models ------------------------------------------------------------------

    def detector(self) -> FaceDetector:
        """The MTCNN detector (loaded on first use in this process)."""
        key = (self._detect_max_side, self._max_pixels)
        with _models_lock:
            if key not in _detectors:
                from faceoff.detector.detection import FaceDetector

                _detectors[key] = FaceDetector(
                    detect_max_side=self._detect_max_side, max_pixels=self._max_pixels
                )
            return _detectors[key]

    def protector(self) -> Protector:
        """The FaceNet surrogate (loaded on first use in this process; each attack is traced by its first use)."""
        with _models_lock:
            if self._max_pixels not in _protectors:
                from faceoff.masker.protection import Protector

                protector = Protector(max_pixels=self._max_pixels)
                # FACEOFF_WARM_UP as for the masker, but off unless set: each attack is traced
                # by its first use, so a one-photo process traces only the profile it runs
                protector.warm_up_as(os.environ.get("FACEOFF_WARM_UP", "off"))
                _protectors[self._max_pixels] = protector
            return _protectors[self._max_pixels]

    def evaluator(self) -> Evaluator:
        """The evaluator over the local recognisers (each model loads once per process, when
        first asked for), and the configured cloud APIs when the pipeline may call them.

        Raises:
            FailedPreconditionError: A cloud setting of the environment is malformed.
        """
        with self._lock:
            if self._evaluator is None:
                from faceoff.common.errors import SettingsError
                from faceoff.evaluator.cloud.credentials import CloudConfig
                from faceoff.evaluator.evaluation import Evaluator
                from faceoff.faces.recognizers import DEFAULT_LOCAL_RECOGNIZERS

                try:
                    cloud = CloudConfig.from_env() if self._cloud_apis else None
                except SettingsError as exc:
                    raise FailedPreconditionError(f"bad setting: {exc}") from None
                self._evaluator = Evaluator(
                    local=self._recognizers or DEFAULT_LOCAL_RECOGNIZERS,
                    max_pixels=self._max_pixels,
                    cloud_config=cloud,
                )
            return self._evaluator

    # -- the three calls -------------------------------------------------------------------------

    def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: ProgressSink | None = None,
        timeout: float | None = None,
    ) -> masker_pb2.ProtectResponse:
        """What ``Masker.ProtectStream`` does, in-process: progress to ``on_event``, then the
        result. ``timeout`` is accepted for the clients' sake: an in-process call runs to its end."""
        from faceoff.masker.convert import call_from_proto, result_to_proto
        from faceoff.masker.pipeline import protect_in_process
        from faceoff.masker.server import MaskerSettings

        def progress(stage: str, faces: int, iteration: int, iterations: int) -> None:
            if on_event is not None:
                on_event(
                    masker_pb2.ProtectProgress(
                        stage=stage, faces=faces, iteration=iteration, iterations=iterations
                    )
                )

        with _as_sdk_errors():
            call = call_from_proto(request)
            result = protect_in_process(
                call,
                self.protector(),
                self.detector(),
                lock=_attack_lock,
                limits=MaskerSettings().limits(),
                progress=progress,
            )
            return result_to_proto(result)

    def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse:
        """What ``Detector.Detect`` does, in-process (``timeout`` as in :meth:`protect`)."""
        from faceoff.common.imaging import decode
        from faceoff.detector.convert import options_from_proto, result_to_proto

        with _as_sdk_errors():
            options = options_from_proto(request.options)
            # the photo is checked before the model loads: a bad file is refused at once
            photo = decode(
                request.image.data, max_pixels=self._max_pixels, max_side=self._detect_max_side
            )
            return result_to_proto(self.detector().detect_photo(photo, options))

    def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse:
        """What ``Evaluator.Evaluate`` does, in-process (the local recognisers, and the cloud APIs
        with ``cloud_apis``; ``timeout`` as in :meth:`protect`)."""
        from faceoff.evaluator.convert import request_from_proto, verdicts_to_proto

        with _as_sdk_errors():
            return verdicts_to_proto(self.evaluator().evaluate(request_from_proto(request)))

    def close(self) -> None:
        """Stop the evaluator's worker threads (the models stay loaded in this process)."""
        with self._lock:
            if self._evaluator is not None:
                self._evaluator.close()
                self._evaluator = None
