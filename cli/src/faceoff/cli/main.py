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
import sys
from typing import Any

from faceoff.cli._version import __version__
from faceoff.cli.commands import detect, evaluate, models, protect, serve

#: The sub-commands in the order ``faceoff --help`` lists them; then the plugins' (entry point
#: group ``faceoff.commands``: ``bench`` from faceoff-bench), then deploy.
COMMANDS = (detect, protect, evaluate, serve, models)
#: Plugins whose absence gets a sub-command that says how to install them.
PLUGINS = {
    "bench": "the benchmarks are the project's dev tooling: pip install ./bench (faceoff-bench)"
}

# Kept importable from here, where they used to live.
print_receipt = protect.print_receipt


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
    for command in COMMANDS:
        command.register(sub, loud)
    _add_plugins(sub, loud)
    from faceoff.cli.deploy.commands import add_deploy_parser, run  # argparse only until used

    add_deploy_parser(sub)
    sub.choices["deploy"].set_defaults(run=run)
    return parser


def _add_plugins(sub: Any, loud: argparse.ArgumentParser) -> None:
    """The sub-commands other distributions provide (``register(sub, loud)`` modules named in the
    entry point group ``faceoff.commands``); a missing one of :data:`PLUGINS` says how to get it."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="faceoff.commands"):
        if entry.name not in sub.choices:
            entry.load().register(sub, loud)
    for name, hint in PLUGINS.items():
        if name not in sub.choices:
            p = sub.add_parser(name, help=f"(not installed) {hint}")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(run=lambda args, name=name, hint=hint: _missing(name, hint))


def _missing(name: str, hint: str) -> int:
    print(f"faceoff {name}: not installed here; {hint}", file=sys.stderr)
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
    if getattr(args, "traced", False):
        return _traced(args.command, args.run, args)
    return int(args.run(args))


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
