"""``faceoff serve detector|masker|evaluator|all``: run a gRPC service (``all``: the three as local
child processes, :mod:`faceoff.cli.serve_all`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from faceoff.cli.flags import (
    DETECTOR_CLIENT_SECURITY,
    SERVER_SECURITY,
    add_detector_client_flags,
    add_security_flags,
    add_server_flags,
)


def register(sub: Any, loud: argparse.ArgumentParser) -> None:
    """Add ``serve`` and its services' sub-parsers."""
    p = sub.add_parser("serve", help="run a gRPC service")
    serve_sub = p.add_subparsers(dest="service", required=True)
    ps = serve_sub.add_parser("detector", help="the MTCNN face detector")
    add_server_flags(ps)
    ps.add_argument(
        "--max-pixels", type=int, help="largest photo in pixels (FACEOFF_MAX_PIXELS; default 50e6)"
    )
    ps.add_argument(
        "--detect-max-side",
        type=int,
        help="detect on a copy this long at most (FACEOFF_DETECT_MAX_SIDE)",
    )
    ps = serve_sub.add_parser("masker", help="the Face-Off mask generator (needs a detector)")
    add_server_flags(ps)
    ps.add_argument(
        "--detector", dest="detector_address", help="detector host:port (FACEOFF_DETECTOR_ADDRESS)"
    )
    ps.add_argument(
        "--max-batch-faces",
        type=int,
        help="faces per attack batch (FACEOFF_MAX_BATCH_FACES; default 8)",
    )
    ps.add_argument(
        "--max-queue-faces",
        type=int,
        help="faces allowed to wait (FACEOFF_MAX_QUEUE_FACES; default 64)",
    )
    add_detector_client_flags(ps)
    ps = serve_sub.add_parser("evaluator", help="local recognisers and cloud-API adapters")
    add_server_flags(ps)
    ps.add_argument(
        "--max-pixels", type=int, help="largest photo in pixels (FACEOFF_MAX_PIXELS; default 50e6)"
    )
    ps.add_argument(
        "--local-recognizers",
        help="local recognisers to run, of dlib,sface,facenet,facenet512,mobilefacenet "
        "(FACEOFF_LOCAL_RECOGNIZERS; default dlib,sface,facenet)",
    )
    ps.add_argument(
        "--backend-timeout",
        dest="backend_timeout_seconds",
        type=float,
        help="seconds each backend gets (FACEOFF_BACKEND_TIMEOUT_SECONDS; default 60)",
    )
    _all(serve_sub)
    p.set_defaults(run=run)


def _all(serve_sub: Any) -> None:
    ps = serve_sub.add_parser("all", help="detector, masker and evaluator as local child processes")
    ps.add_argument("--host", help="interface the three listen on (default 127.0.0.1)")
    ps.add_argument(
        "--base-port",
        type=int,
        default=50051,
        help="gRPC ports: detector, masker, evaluator on this one and the next two (default 50051)",
    )
    ps.add_argument(
        "--metrics-base-port",
        type=int,
        default=9101,
        help="Prometheus ports, likewise (default 9101; -1 for none)",
    )
    ps.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of the base ports"
    )
    ps.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (FACEOFF_LOG_LEVEL)")
    ps.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="the children's log format: text, or json lines (FACEOFF_LOG_FORMAT)",
    )
    ps.add_argument(
        "--local-recognizers", help="the evaluator's local recognisers (default dlib,sface,facenet)"
    )
    ps.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for all three to be SERVING (default 600)",
    )
    add_security_flags(ps)
    add_detector_client_flags(ps)


#: Each service: its server module and the flags of its own beyond the common ones (host, ports,
#: logs, ``SERVER_SECURITY``), each passed to the server's ``load_settings`` under its name.
SERVICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "detector": ("faceoff.detector.server", ("max_pixels", "detect_max_side")),
    "masker": (
        "faceoff.masker.server",
        ("detector_address", "max_batch_faces", "max_queue_faces", *DETECTOR_CLIENT_SECURITY),
    ),
    "evaluator": (
        "faceoff.evaluator.server",
        ("max_pixels", "local_recognizers", "backend_timeout_seconds"),
    ),
}


def run(args: argparse.Namespace) -> int:
    if args.service == "all":
        from faceoff.cli import serve_all

        return serve_all.main(args)
    import importlib

    from faceoff.common import tracing
    from faceoff.common.server import configure_logging
    from faceoff.common.settings import SettingsError

    module_name, own = SERVICES[args.service]
    flags: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "log_level": args.log_level,
        "log_format": args.log_format,
        **{name: getattr(args, name) for name in SERVER_SECURITY},
        **{name: getattr(args, name) for name in own},
    }
    try:
        server = importlib.import_module(module_name)
        server_settings, settings = server.load_settings(**flags)
        configure_logging(server_settings.log_level, server_settings.log_format, args.service)
        tracing.configure(args.service)
        asyncio.run(server.serve_forever(server_settings, settings))
        return 0
    except SettingsError as exc:
        print(f"faceoff serve {args.service}: bad setting: {exc}", file=sys.stderr)
        return 2
    finally:
        tracing.shutdown()  # the last spans out before the process ends
