"""Wiring of the detector service: settings, the shared server factory, the servicer."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from faceoff.common.imaging import DEFAULT_MAX_PIXELS
from faceoff.common.server import RunningServer, ServiceSpec, run, start_server
from faceoff.common.settings import ServerSettings, SettingsError, from_env, split_overrides
from faceoff.detector.detection import FaceDetector
from faceoff.detector.servicer import DetectorServicer
from faceoff.v1 import detector_pb2_grpc

SERVICE_NAME = "faceoff.v1.Detector"
DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9101


@dataclass(frozen=True)
class DetectorSettings:
    """Detector-specific settings (``FACEOFF_MAX_PIXELS``, ``FACEOFF_DETECT_MAX_SIDE``).

    Attributes:
        max_pixels: Largest photo accepted, width x height (default 50 megapixels).
        detect_max_side: Longer side of the reduced copy MTCNN runs on (default 1024 px).
        onednn: Let TensorFlow run MTCNN's convolutions with oneDNN (``FACEOFF_ONEDNN``,
            default off). oneDNN keeps compiled primitives for every input shape it has seen,
            and MTCNN's shapes change with every photo size and crowd: with it the detector
            grew from 0.6 to 1.6 GB over ``faceoff bench chaos`` (a 49-megapixel reference
            and a 197-face photo) and kept it (docs/reliability.md has both runs).
            Applied before TensorFlow is imported (``TF_ENABLE_ONEDNN_OPTS``), so only in a
            process of its own (``faceoff serve detector``).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    detect_max_side: int = 1024
    onednn: bool = False

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise SettingsError(f"FACEOFF_MAX_PIXELS must be >= 1, got {self.max_pixels}")
        if self.detect_max_side < 64:
            raise SettingsError(
                f"FACEOFF_DETECT_MAX_SIDE must be >= 64, got {self.detect_max_side}"
            )


def build_spec(settings: DetectorSettings) -> ServiceSpec:
    """The detector's plug-in for the shared server."""
    if "tensorflow" not in sys.modules:  # else TensorFlow has read its setting already
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1" if settings.onednn else "0")
    servicer = DetectorServicer(
        functools.partial(
            FaceDetector, detect_max_side=settings.detect_max_side, max_pixels=settings.max_pixels
        )
    )
    return ServiceSpec(
        name=SERVICE_NAME,
        namespace="faceoff_detector",
        register=lambda server: detector_pb2_grpc.add_DetectorServicer_to_server(servicer, server),
        load=servicer.load,
    )


def load_settings(
    env: Mapping[str, str] | None = None, **overrides: object
) -> tuple[ServerSettings, DetectorSettings]:
    """Server and detector settings: command-line overrides, then the environment, then defaults."""
    server, rest = split_overrides(overrides)
    defaults = {"port": DEFAULT_PORT, "metrics_port": DEFAULT_METRICS_PORT}
    return from_env(ServerSettings, env, defaults=defaults, **server), from_env(
        DetectorSettings, env, **rest
    )


async def serve(
    server_settings: ServerSettings,
    settings: DetectorSettings,
    *,
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    """Start the detector (tests pass ``port=0``); returns before the model has loaded."""
    return await start_server(server_settings, build_spec(settings), registry=registry)


async def serve_forever(server_settings: ServerSettings, settings: DetectorSettings) -> None:
    """Run the detector until SIGTERM/SIGINT."""
    await run(server_settings, build_spec(settings))
