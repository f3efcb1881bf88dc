"""Flags several commands share: the servers' listening and security flags, a client's TLS and
token flags, and how they become settings."""

from __future__ import annotations

import argparse
from typing import Any


def add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="interface to listen on (FACEOFF_HOST; default 0.0.0.0)")
    p.add_argument("--port", type=int, help="gRPC port, 0 for any free port (FACEOFF_PORT)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus port, 0 for any, -1 for none (FACEOFF_METRICS_PORT)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (FACEOFF_LOG_LEVEL)")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text, or json: one object per line (FACEOFF_LOG_FORMAT; default text)",
    )
    add_security_flags(p)


#: Server security settings that have flags (``--tls-cert`` -> ``tls_cert``).
SERVER_SECURITY = (
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "auth_tokens_file",
    "rate_limit_per_client",
    "rate_limit_burst",
)
#: The masker's settings for its channel to the detector.
DETECTOR_CLIENT_SECURITY = (
    "detector_tls_ca",
    "detector_tls_cert",
    "detector_tls_key",
    "detector_tls_server_name",
    "detector_token_file",
)


def add_security_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tls-cert", help="PEM certificate chain: serve TLS (FACEOFF_TLS_CERT; needs --tls-key)"
    )
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (FACEOFF_TLS_KEY)")
    p.add_argument(
        "--tls-client-ca",
        help="PEM CA: require client certificates it signed, mutual TLS (FACEOFF_TLS_CLIENT_CA)",
    )
    p.add_argument(
        "--auth-tokens-file",
        help="bearer tokens, one per line as name:token (FACEOFF_AUTH_TOKENS_FILE)",
    )
    p.add_argument(
        "--rate-limit-per-client",
        type=float,
        help="requests per second per client, 0 for no limit (FACEOFF_RATE_LIMIT_PER_CLIENT; default 0)",
    )
    p.add_argument(
        "--rate-limit-burst",
        type=int,
        help="requests a client may make at once (FACEOFF_RATE_LIMIT_BURST; default 10)",
    )


def add_detector_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detector-tls-ca",
        help="PEM CA the masker trusts for the detector: TLS (FACEOFF_DETECTOR_TLS_CA)",
    )
    p.add_argument(
        "--detector-tls-cert",
        help="PEM client certificate for the detector, mutual TLS (FACEOFF_DETECTOR_TLS_CERT)",
    )
    p.add_argument(
        "--detector-tls-key",
        help="PEM private key of --detector-tls-cert (FACEOFF_DETECTOR_TLS_KEY)",
    )
    p.add_argument(
        "--detector-tls-server-name",
        help="name in the detector's certificate, if not its address (FACEOFF_DETECTOR_TLS_SERVER_NAME)",
    )
    p.add_argument(
        "--detector-token-file",
        help="file with the bearer token for the detector (FACEOFF_DETECTOR_TOKEN_FILE)",
    )


def add_client_security_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tls", action="store_true", help="TLS to --server with the system's trusted roots"
    )
    p.add_argument("--ca", help="PEM CA to trust for --server (TLS with a private CA)")
    p.add_argument("--cert", help="PEM client certificate for mutual TLS (with --key)")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument(
        "--token-file", help="file with the bearer token to send (default: $FACEOFF_TOKEN, if set)"
    )


def client_security(args: argparse.Namespace) -> tuple[Any, str | None]:
    """``(tls, token)`` for the SDK from ``--tls/--ca/--cert/--key/--token-file`` and ``$FACEOFF_TOKEN``.

    Files are read and checked here, so a bad one stops the command before the first photo.
    """
    import os

    from faceoff.common import security
    from faceoff.sdk import TLSConfig

    tls: Any = None
    if args.ca or args.cert or args.key:
        if bool(args.cert) != bool(args.key):
            raise SystemExit("faceoff: --cert and --key go together (mutual TLS)")
        ca = security.read_certificates("--ca", args.ca) if args.ca else None
        cert, key = (
            security.read_pair("--cert", args.cert, "--key", args.key)
            if args.cert
            else (None, None)
        )
        tls = TLSConfig(ca=ca, cert=cert, key=key)
    elif args.tls:
        tls = True
    token = None
    if args.token_file:
        token = security.read_token("--token-file", args.token_file)
    elif os.environ.get("FACEOFF_TOKEN", "").strip():
        token = os.environ["FACEOFF_TOKEN"].strip()
    return tls, token
