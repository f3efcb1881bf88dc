"""Wiring of the masker service: settings, detector client, batcher, the shared server factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry

from faceoff.common import security
from faceoff.common.imaging import DEFAULT_MAX_PIXELS
from faceoff.common.server import RunningServer, ServiceSpec, run, start_server
from faceoff.common.settings import ServerSettings, SettingsError, from_env, split_overrides
from faceoff.masker.batching import AttackBatcher
from faceoff.masker.detector_client import DetectorClient
from faceoff.masker.metrics import MaskerMetrics
from faceoff.masker.pipeline import DEFAULT_MAX_REFERENCE_PHOTOS
from faceoff.masker.protection import Protector
from faceoff.masker.servicer import MaskerServicer
from faceoff.v1 import masker_pb2_grpc

SERVICE_NAME = "faceoff.v1.Masker"
DEFAULT_PORT = 50052
DEFAULT_METRICS_PORT = 9102


@dataclass(frozen=True)
class MaskerSettings:
    """Masker-specific settings (``FACEOFF_<NAME>``).

    Attributes:
        detector_address: ``host:port`` of the detector service.
        max_pixels: Largest photo accepted, width x height.
        max_batch_faces: Faces per attack batch across concurrent requests.
        max_wait_ms: How long a batch waits to fill, in milliseconds.
        max_queue_faces: Faces allowed to wait; beyond it requests get RESOURCE_EXHAUSTED.
        max_reference_photos: Most reference photos per request.
        surrogate: Surrogate model name.
        detector_tls_ca: PEM CA certificates the masker trusts for the detector; setting it (or
            ``detector_tls_cert``) makes the channel to the detector TLS.
        detector_tls_cert: PEM client certificate the masker presents to the detector (mutual TLS).
        detector_tls_key: PEM private key of ``detector_tls_cert``.
        detector_tls_server_name: Name to check the detector's certificate against, when the
            address is not in it (e.g. an IP address).
        detector_token_file: File holding the one bearer token the masker sends to the detector.
    """

    detector_address: str = "127.0.0.1:50051"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_faces: int = 8
    max_wait_ms: float = 20.0
    max_queue_faces: int = 64
    max_reference_photos: int = DEFAULT_MAX_REFERENCE_PHOTOS
    surrogate: str = "facenet"
    detector_tls_ca: str | None = None
    detector_tls_cert: str | None = None
    detector_tls_key: str | None = None
    detector_tls_server_name: str | None = None
    detector_token_file: str | None = None

    def __post_init__(self) -> None:
        if ":" not in self.detector_address:
            raise SettingsError(
                f"FACEOFF_DETECTOR_ADDRESS must be host:port, got {self.detector_address!r}"
            )
        for name in ("max_pixels", "max_batch_faces", "max_queue_faces", "max_reference_photos"):
            if getattr(self, name) < 1:
                raise SettingsError(
                    f"FACEOFF_{name.upper()} must be >= 1, got {getattr(self, name)}"
                )
        if self.max_wait_ms < 0:
            raise SettingsError(f"FACEOFF_MAX_WAIT_MS must be >= 0, got {self.max_wait_ms}")
        detector_credentials(self)  # the files exist and parse
        detector_token(self)

    @property
    def detector_tls(self) -> bool:
        """Whether the channel to the detector is TLS."""
        return self.detector_tls_ca is not None or self.detector_tls_cert is not None


def detector_credentials(settings: MaskerSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials for the channel to the detector, or None for plaintext."""
    if not settings.detector_tls and settings.detector_tls_key is None:
        return None
    return security.channel_credentials(
        settings.detector_tls_ca,
        settings.detector_tls_cert,
        settings.detector_tls_key,
        names=("FACEOFF_DETECTOR_TLS_CA", "FACEOFF_DETECTOR_TLS_CERT", "FACEOFF_DETECTOR_TLS_KEY"),
    )


def detector_token(settings: MaskerSettings) -> str | None:
    """The bearer token the masker sends to the detector, if any."""
    if settings.detector_token_file is None:
        return None
    return security.read_token("FACEOFF_DETECTOR_TOKEN_FILE", settings.detector_token_file)


def load_settings(
    env: Mapping[str, str] | None = None, **overrides: object
) -> tuple[ServerSettings, MaskerSettings]:
    """Server and masker settings: command-line overrides, then the environment, then defaults."""
    server, rest = split_overrides(overrides)
    defaults = {"port": DEFAULT_PORT, "metrics_port": DEFAULT_METRICS_PORT}
    return from_env(ServerSettings, env, defaults=defaults, **server), from_env(
        MaskerSettings, env, **rest
    )


def build_spec(
    server_settings: ServerSettings, settings: MaskerSettings, registry: CollectorRegistry
) -> ServiceSpec:
    """The masker's plug-in for the shared server (call inside the server's event loop)."""
    metrics = MaskerMetrics(registry, settings.max_queue_faces)

    def factory() -> Protector:
        from faceoff.faces.models import load_surrogate

        protector = Protector(load_surrogate(settings.surrogate), max_pixels=settings.max_pixels)
        protector.warm_up()
        return protector

    servicer = MaskerServicer(
        factory,
        DetectorClient(
            settings.detector_address,
            server_settings.max_message_bytes,
            credentials=detector_credentials(settings),
            token=detector_token(settings),
            server_name=settings.detector_tls_server_name,
        ),
        lambda protector: AttackBatcher(
            protector.attack,
            settings.max_batch_faces,
            settings.max_wait_ms / 1000.0,
            settings.max_queue_faces,
            metrics,
        ),
        settings.max_reference_photos,
        metrics.result,
        max_reply_bytes=server_settings.max_message_bytes,
    )
    return ServiceSpec(
        name=SERVICE_NAME,
        namespace="faceoff_masker",
        register=lambda server: masker_pb2_grpc.add_MaskerServicer_to_server(servicer, server),
        load=servicer.load,
        close=servicer.close,
    )


async def serve(
    server_settings: ServerSettings,
    settings: MaskerSettings,
    *,
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    """Start the masker (tests pass ``port=0``); returns before the surrogate has loaded."""
    registry = registry if registry is not None else CollectorRegistry()
    return await start_server(
        server_settings, build_spec(server_settings, settings, registry), registry=registry
    )


async def serve_forever(server_settings: ServerSettings, settings: MaskerSettings) -> None:
    """Run the masker until SIGTERM/SIGINT."""
    registry = CollectorRegistry()
    await run(server_settings, build_spec(server_settings, settings, registry), registry=registry)
