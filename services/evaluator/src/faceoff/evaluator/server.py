"""Wiring of the evaluator service: settings, the shared server factory, the servicer, metrics."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from faceoff.common.imaging import DEFAULT_MAX_PIXELS
from faceoff.common.server import RunningServer, ServiceSpec, run, start_server
from faceoff.common.settings import ServerSettings, SettingsError, from_env, split_overrides
from faceoff.evaluator.cloud.credentials import CloudConfig
from faceoff.evaluator.cloud.retry import RetryPolicy
from faceoff.evaluator.evaluation import Evaluator
from faceoff.evaluator.metrics import NAMESPACE, BackendMetrics
from faceoff.evaluator.servicer import EvaluatorServicer
from faceoff.faces.recognizers import DEFAULT_LOCAL_RECOGNIZERS, LOCAL_RECOGNIZERS
from faceoff.v1 import evaluator_pb2_grpc

SERVICE_NAME = "faceoff.v1.Evaluator"
DEFAULT_PORT = 50053
DEFAULT_METRICS_PORT = 9103


@dataclass(frozen=True)
class EvaluatorSettings:
    """Evaluator-specific settings (``FACEOFF_<FIELD>``; cloud credentials come from their own variables).

    Attributes:
        max_pixels: Largest photo accepted, width x height (default 50 megapixels).
        evaluate_max_side: Longer side of the decoded copies recognisers see (default 2048 px).
        local_recognizers: Comma-separated local recognisers to load and run (default
            dlib,sface,facenet; facenet512 and mobilefacenet too when named; empty for none).
        backend_timeout_seconds: Time each backend gets per evaluation (default 60 s).
        cloud_request_timeout_seconds: Timeout of one cloud HTTP request (default 10 s).
        cloud_max_attempts: Attempts per cloud call, retries of throttling included (default 4).
        cloud_backoff_seconds: First backoff before a retry, at most (default 0.5 s; doubles,
            with full jitter).
        cloud_backoff_max_seconds: Longest backoff (default 8 s).
        cloud: Credentials, read by :meth:`CloudConfig.from_env` (see
            :mod:`faceoff.evaluator.cloud.credentials`).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    evaluate_max_side: int = 2048
    local_recognizers: str = ",".join(DEFAULT_LOCAL_RECOGNIZERS)
    backend_timeout_seconds: float = 60.0
    cloud_request_timeout_seconds: float = 10.0
    cloud_max_attempts: int = 4
    cloud_backoff_seconds: float = 0.5
    cloud_backoff_max_seconds: float = 8.0
    cloud: CloudConfig = field(default_factory=CloudConfig)

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise SettingsError(f"FACEOFF_MAX_PIXELS must be >= 1, got {self.max_pixels}")
        if self.evaluate_max_side < 64:
            raise SettingsError(
                f"FACEOFF_EVALUATE_MAX_SIDE must be >= 64, got {self.evaluate_max_side}"
            )
        unknown = [n for n in self.local_names if n not in LOCAL_RECOGNIZERS]
        if unknown:
            raise SettingsError(
                f"FACEOFF_LOCAL_RECOGNIZERS names unknown recognisers {unknown}; known: {', '.join(LOCAL_RECOGNIZERS)}"
            )
        if self.backend_timeout_seconds <= 0:
            raise SettingsError(
                f"FACEOFF_BACKEND_TIMEOUT_SECONDS must be > 0, got {self.backend_timeout_seconds}"
            )
        try:
            self.retry_policy()
        except ValueError as exc:
            raise SettingsError(f"FACEOFF_CLOUD_* retry settings: {exc}") from None

    @property
    def local_names(self) -> list[str]:
        """:attr:`local_recognizers` as a list."""
        return [n.strip().lower() for n in self.local_recognizers.split(",") if n.strip()]

    def retry_policy(self) -> RetryPolicy:
        """The cloud adapters' retry policy."""
        return RetryPolicy(
            max_attempts=self.cloud_max_attempts,
            base_delay=self.cloud_backoff_seconds,
            max_delay=self.cloud_backoff_max_seconds,
            request_timeout=self.cloud_request_timeout_seconds,
        )


def build_spec(settings: EvaluatorSettings) -> ServiceSpec:
    """The evaluator's plug-in for the shared server."""
    metrics: list[BackendMetrics] = []

    def observe(backend: str, outcome: str, seconds: float) -> None:
        for m in metrics:
            m.observe(backend, outcome, seconds)

    servicer = EvaluatorServicer(
        functools.partial(
            Evaluator,
            local=settings.local_names,
            cloud_config=settings.cloud,
            retry_policy=settings.retry_policy(),
            backend_timeout=settings.backend_timeout_seconds,
            max_pixels=settings.max_pixels,
            max_side=settings.evaluate_max_side,
            observer=observe,
        )
    )

    async def close() -> None:
        servicer.close()

    return ServiceSpec(
        name=SERVICE_NAME,
        namespace=NAMESPACE,
        register=lambda server: evaluator_pb2_grpc.add_EvaluatorServicer_to_server(
            servicer, server
        ),
        load=servicer.load,
        setup_metrics=lambda registry: metrics.append(BackendMetrics(registry)),
        close=close,
    )


def load_settings(
    env: Mapping[str, str] | None = None, **overrides: object
) -> tuple[ServerSettings, EvaluatorSettings]:
    """Server and evaluator settings: command-line overrides, then the environment, then defaults."""
    server, rest = split_overrides(overrides)
    defaults = {"port": DEFAULT_PORT, "metrics_port": DEFAULT_METRICS_PORT}
    cloud = rest.pop("cloud", None) or CloudConfig.from_env(env)
    settings = from_env(EvaluatorSettings, env, **rest)
    return from_env(ServerSettings, env, defaults=defaults, **server), dataclasses.replace(
        settings, cloud=cloud
    )


async def serve(
    server_settings: ServerSettings,
    settings: EvaluatorSettings,
    *,
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    """Start the evaluator (tests pass ``port=0``); returns before the models have loaded."""
    return await start_server(server_settings, build_spec(settings), registry=registry)


async def serve_forever(server_settings: ServerSettings, settings: EvaluatorSettings) -> None:
    """Run the evaluator until SIGTERM/SIGINT."""
    await run(server_settings, build_spec(settings))
