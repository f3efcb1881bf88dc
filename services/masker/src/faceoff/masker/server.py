"""Wiring of the masker service: settings, detector client, batcher, the shared server factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from faceoff.common import security
from faceoff.common.imaging import DEFAULT_MAX_PIXELS
from faceoff.common.server import (
    NOT_SERVING,
    SERVING,
    RunningServer,
    ServiceSpec,
    run,
    start_server,
)
from faceoff.common.settings import ServerSettings, SettingsError, from_env, split_overrides
from faceoff.masker.batching import DEFAULT_MAX_QUEUE_WORK, AttackBatcher
from faceoff.masker.cost import DEFAULT_MAX_REQUEST_PIXELS, DEFAULT_MAX_REQUEST_WORK
from faceoff.masker.detector_client import DetectorClient
from faceoff.masker.devices import DEVICES, resolve_device
from faceoff.masker.metrics import MaskerMetrics
from faceoff.masker.pipeline import DEFAULT_MAX_FACES, DEFAULT_MAX_REFERENCE_PHOTOS, RequestLimits
from faceoff.masker.protection import Protector
from faceoff.masker.servicer import MaskerServicer
from faceoff.v1 import masker_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "faceoff.v1.Masker"
#: Failed detector health checks in a row after which the masker reports NOT_SERVING.
DETECTOR_HEALTH_FAILURES = 2
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
        max_queue_work: Face-steps (faces x iterations x surrogates) allowed to wait; beyond
            it requests get RESOURCE_EXHAUSTED.
        max_request_pixels: Decoded pixels one request may cost, photo and references at the
            size they are decoded to (:mod:`faceoff.masker.cost`); more is INVALID_ARGUMENT
            from the headers, before any detection.
        max_request_work: Face-steps one request may cost; more is INVALID_ARGUMENT after
            detection and before any attack.
        interleave: Run a cheaper waiting attack batch between the chunks of a running one
            (:mod:`faceoff.masker.batching`), so a cheap call is not stuck behind a huge one.
        max_reference_photos: Most reference photos per request.
        max_faces_per_request: Most faces one request may have protected (more is refused
            with INVALID_ARGUMENT before any attack, naming both numbers).
        surrogate: Surrogate model name.
        detector_tls_ca: PEM CA certificates the masker trusts for the detector; setting it (or
            ``detector_tls_cert``) makes the channel to the detector TLS.
        detector_tls_cert: PEM client certificate the masker presents to the detector (mutual TLS).
        detector_tls_key: PEM private key of ``detector_tls_cert``.
        detector_tls_server_name: Name to check the detector's certificate against, when the
            address is not in it (e.g. an IP address).
        detector_token_file: File holding the one bearer token the masker sends to the detector.
        detect_timeout_seconds: Deadline of the masker's call to the detector when its own
            caller sent none (with one, the caller's remaining time is passed on).
        detector_health_seconds: How often the masker checks the detector's health once loaded;
            after :data:`DETECTOR_HEALTH_FAILURES` failed checks in a row (unreachable, hung
            past the check's deadline, or NOT_SERVING) the masker's own service
            (``faceoff.v1.Masker``, the readiness probe) turns NOT_SERVING until a check
            passes; ``""`` (liveness) stays SERVING. 0 turns the watch off.
        warm_up: What is traced at start: ``profiles`` (default: the default profile before
            SERVING, every other loaded profile right after, in the background), ``default``
            or ``off`` (:data:`faceoff.masker.protection.WARM_UP_MODES`).
        device: Where attacks run: ``auto`` (a GPU when TensorFlow sees one), ``gpu`` (refused
            at start when there is none) or ``cpu`` (:mod:`faceoff.masker.devices`).
    """

    detector_address: str = "127.0.0.1:50051"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_faces: int = 8
    max_wait_ms: float = 20.0
    max_queue_faces: int = 64
    max_queue_work: int = DEFAULT_MAX_QUEUE_WORK
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
    max_request_work: int = DEFAULT_MAX_REQUEST_WORK
    interleave: bool = True
    max_reference_photos: int = DEFAULT_MAX_REFERENCE_PHOTOS
    max_faces_per_request: int = DEFAULT_MAX_FACES
    surrogate: str = "facenet"
    detector_tls_ca: str | None = None
    detector_tls_cert: str | None = None
    detector_tls_key: str | None = None
    detector_tls_server_name: str | None = None
    detector_token_file: str | None = None
    detect_timeout_seconds: float = 30.0
    detector_health_seconds: float = 5.0
    warm_up: str = "profiles"
    device: str = "auto"

    def __post_init__(self) -> None:
        if ":" not in self.detector_address:
            raise SettingsError(
                f"FACEOFF_DETECTOR_ADDRESS must be host:port, got {self.detector_address!r}"
            )
        for name in (
            "max_pixels",
            "max_batch_faces",
            "max_queue_faces",
            "max_reference_photos",
            "max_faces_per_request",
            "max_queue_work",
            "max_request_pixels",
            "max_request_work",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(
                    f"FACEOFF_{name.upper()} must be >= 1, got {getattr(self, name)}"
                )
        if not self.detect_timeout_seconds > 0:
            raise SettingsError(
                f"FACEOFF_DETECT_TIMEOUT_SECONDS must be > 0, got {self.detect_timeout_seconds}"
            )
        if not self.detector_health_seconds >= 0:
            raise SettingsError(
                "FACEOFF_DETECTOR_HEALTH_SECONDS must be >= 0 (0: no watch), "
                f"got {self.detector_health_seconds}"
            )
        if self.warm_up not in ("profiles", "default", "off"):
            raise SettingsError(
                f"FACEOFF_WARM_UP must be profiles, default or off, got {self.warm_up!r}"
            )
        if self.device not in DEVICES:
            raise SettingsError(
                f"FACEOFF_DEVICE must be one of {', '.join(DEVICES)}, got {self.device!r}"
            )
        if self.max_wait_ms < 0:
            raise SettingsError(f"FACEOFF_MAX_WAIT_MS must be >= 0, got {self.max_wait_ms}")
        detector_credentials(self)  # the files exist and parse
        detector_token(self)

    def limits(self) -> RequestLimits:
        """What one request may ask, as the pipeline checks it."""
        return RequestLimits(
            max_reference_photos=self.max_reference_photos,
            max_faces=self.max_faces_per_request,
            max_request_pixels=self.max_request_pixels,
            max_request_work=self.max_request_work,
        )

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
    metrics = MaskerMetrics(registry, settings.max_queue_faces, settings.max_queue_work)

    def factory() -> Protector:
        from faceoff.faces.models import load_surrogate

        try:
            device = resolve_device(settings.device)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        protector = Protector(
            load_surrogate(settings.surrogate), max_pixels=settings.max_pixels, device=device
        )
        # "profiles": the default profile before SERVING, the others right after (below), so a
        # masker that was restarted serves again in about 40 s instead of 70
        protector.warm_up_as("default" if settings.warm_up == "profiles" else settings.warm_up)
        return protector

    detector = DetectorClient(
        settings.detector_address,
        server_settings.max_message_bytes,
        credentials=detector_credentials(settings),
        token=detector_token(settings),
        server_name=settings.detector_tls_server_name,
        default_timeout=settings.detect_timeout_seconds,
    )
    servicer = MaskerServicer(
        factory,
        detector,
        lambda protector: AttackBatcher(
            protector.attack,
            settings.max_batch_faces,
            settings.max_wait_ms / 1000.0,
            settings.max_queue_faces,
            metrics,
            max_queue_work=settings.max_queue_work,
            interleave=settings.interleave,
        ),
        settings.limits(),
        metrics.result,
        max_reply_bytes=server_settings.max_message_bytes,
    )
    return ServiceSpec(
        name=SERVICE_NAME,
        namespace="faceoff_masker",
        register=lambda server: masker_pb2_grpc.add_MaskerServicer_to_server(servicer, server),
        load=servicer.load,
        close=servicer.close,
        monitor=lambda health: _after_serving(health, servicer, detector, settings),
    )


async def _after_serving(
    health: Any, servicer: MaskerServicer, detector: DetectorClient, settings: MaskerSettings
) -> None:
    """Once SERVING: trace the other profiles' attacks in the background (``profiles``), and
    keep the masker's health in step with its detector's. Runs until cancelled."""
    if settings.warm_up == "profiles":
        warming = asyncio.ensure_future(asyncio.to_thread(servicer.warm_up_rest))
        warming.add_done_callback(_report_warm_up)
        servicer.hold(warming)
    if settings.detector_health_seconds > 0:
        await watch_detector(health, detector, settings.detector_health_seconds)


def _report_warm_up(done: asyncio.Future[None]) -> None:
    if done.cancelled():
        return
    if done.exception() is not None:  # the first request of such a profile traces it instead
        log.warning("tracing the other profiles after start failed: %s", done.exception())
    else:
        log.info("the other profiles' attacks are traced")


async def watch_detector(health: Any, detector: DetectorClient, interval: float) -> None:
    """Keep ``faceoff.v1.Masker``'s health in step with the detector's (see MaskerSettings).

    Each check has ``interval`` (at most 5 s) to answer, so a hung detector fails it like an
    absent one. Runs until cancelled.
    """
    failed, serving = 0, True
    while True:
        await asyncio.sleep(interval)
        ok = await detector.serving(timeout=min(interval, 5.0))
        failed = 0 if ok else failed + 1
        if serving and failed >= DETECTOR_HEALTH_FAILURES:
            serving = False
            await health.set(SERVICE_NAME, NOT_SERVING)
            log.warning(
                "the detector at %s failed %d health checks in a row: %s is NOT_SERVING until "
                "it answers",
                detector.address,
                failed,
                SERVICE_NAME,
            )
        elif not serving and ok:
            serving = True
            await health.set(SERVICE_NAME, SERVING)
            log.info(
                "the detector at %s answers again: %s is SERVING", detector.address, SERVICE_NAME
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
