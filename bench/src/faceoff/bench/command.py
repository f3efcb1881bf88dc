"""``faceoff bench ...``: the benchmarks that print figures, one module each in this package.

The ``faceoff`` command finds this sub-command through the entry point group
``faceoff.commands`` (``bench/pyproject.toml``), so the user's ``faceoff`` distribution neither
ships nor imports the benchmarks; without ``faceoff-bench`` installed, ``faceoff bench`` says how
to get it.
"""

from __future__ import annotations

import argparse
from typing import Any

from faceoff.sdk import DEFAULT_PROFILE, PROFILES


def register(sub: Any, loud: argparse.ArgumentParser) -> None:
    """Add ``bench`` and each benchmark's sub-parser."""
    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = p.add_subparsers(dest="bench", required=True)
    _detector(bench_sub)
    _speed(bench_sub)
    _startup(bench_sub)
    _transfer(bench_sub)
    _frontier(bench_sub)
    _load(bench_sub)
    _chaos(bench_sub)
    _fuzz(bench_sub)
    p.set_defaults(run=run)


def _detector(bench_sub: Any) -> None:
    pb = bench_sub.add_parser("detector", help="detector latency on a ~12 MP and a ~1 MP photo")
    pb.add_argument("--photo", help="source photo (default: a shared celebrity photo)")
    pb.add_argument("--repeats", type=int, default=10)
    pb.add_argument("--detect-max-side", type=int, default=1024)
    pb.add_argument("--json", dest="json_out", help="also write the JSON here")


def _speed(bench_sub: Any) -> None:
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


def _startup(bench_sub: Any) -> None:
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


def _transfer(bench_sub: Any) -> None:
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


def _frontier(bench_sub: Any) -> None:
    pb = bench_sub.add_parser(
        "frontier", help="several `bench transfer` runs (their --json files) on one frontier plot"
    )
    pb.add_argument("runs", nargs="+", metavar="RUN.json", help="JSON written by bench transfer")
    pb.add_argument("--plot", required=True, help="the frontier plot (PNG) to write")


def _load(bench_sub: Any) -> None:
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


def _chaos(bench_sub: Any) -> None:
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


def _fuzz(bench_sub: Any) -> None:
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


def run(args: argparse.Namespace) -> int:
    if args.bench == "detector":
        from faceoff.bench import detector

        return detector.main(args.photo, args.repeats, args.json_out, args.detect_max_side)
    if args.bench == "speed":
        from faceoff.bench import speed

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
        from faceoff.bench import startup

        return startup.main(args.profile, args.photo, args.photos, args.json_out)
    if args.bench == "transfer":
        from faceoff.bench import transfer

        return transfer.main(args)
    if args.bench == "frontier":
        from faceoff.bench import transfer

        return transfer.frontier_main(args)
    if args.bench == "load":
        from faceoff.bench import load

        return load.main(args)
    if args.bench == "chaos":
        from faceoff.bench import chaos

        return chaos.main(args)
    if args.bench == "fuzz":
        from faceoff.bench import fuzz

        return fuzz.main(args.duration, args.seed, args.json_out, args.crashes)
    return 2
