"""``faceoff serve all``: the detector, masker and evaluator as local child processes.

The whole service on one machine with one command, for platform-side integration and tests:
each service runs as ``faceoff serve NAME`` in its own process (each loads its own models, as in
a cluster), the masker wired to the detector's address. The supervisor waits until all three
answer gRPC health SERVING, prints their addresses and metrics ports (a human-readable table and
one JSON line), and on SIGTERM or Ctrl-C forwards SIGTERM to every child, waits for them to
drain and exits 0.

Once all three served, the supervisor keeps them serving: a child that exits, or that stops
answering its health check (``""``, liveness) :data:`HUNG_CHECKS` times in a row, every
:data:`HEALTH_INTERVAL_SECONDS` (a hung or SIGSTOPped process), is killed if need be and
started again on the same port after a back-off (1 s, doubling to :data:`MAX_BACKOFF_SECONDS`),
while the other two keep serving; each restart is a line on standard error and one more in
``faceoff_serve_all_restarts_total{service}`` on the supervisor's metrics port (the metrics base
port + 3). A child restarted :data:`MAX_RESTARTS` times within :data:`RESTART_WINDOW_SECONDS`
is given up on: the others are drained and the command exits 1, saying why.

Every ``FACEOFF_*`` variable of the environment reaches the three services; the flags given
here (host, ports, the detector's address, the security flags) take precedence. With TLS
(``FACEOFF_TLS_CERT``), the masker's ``FACEOFF_DETECTOR_TLS_*`` settings say how to reach the
detector, and this command's health probes use them too (health checks need no token).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from faceoff.cli.children import (
    GRPC_NAMES,
    SERVICES,
    Child,
    _die_with_parent,
    _kill,
    announce,
    dial_host,
    drain,
    free_port,
    plan,
)
from faceoff.cli.flags import DETECTOR_CLIENT_SECURITY, SERVER_SECURITY
from faceoff.cli.health import Probe, probe_for, serving

#: How often the supervisor checks a serving child's health (``""``), and how many failed
#: checks in a row (each with a 2 s deadline) make it hung.
HEALTH_INTERVAL_SECONDS = 2.0
HUNG_CHECKS = 3
#: Back-off before a restart: 1 s, doubling per restart in the window, at most this.
MAX_BACKOFF_SECONDS = 30.0
#: A child restarted this many times within the window is given up on.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 300.0


#: Flags of ``faceoff serve all`` that become the children's ``FACEOFF_*`` variables: the servers'
#: security flags and the masker's to reach the detector.
SECURITY_FLAGS: tuple[str, ...] = SERVER_SECURITY + DETECTOR_CLIENT_SECURITY


def _check(c: Child, host: str, probe: Probe, ready_timeout: float) -> str | None:
    """Why ``c`` must be started again (it exited, hung, or never came up), or None."""
    if c.restart_at is not None or c.process is None:
        return None  # waiting for its restart
    if c.process.poll() is not None:
        code = c.process.returncode
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                pass
        return f"exited with code {code}"
    now = time.monotonic()
    if now < c.next_check:
        return None
    c.next_check = now + HEALTH_INTERVAL_SECONDS
    ok = serving(f"{dial_host(host)}:{c.port}", "", probe)
    if not c.ready:  # started again: loading its models
        if ok:
            c.ready = True
            print(
                f"faceoff serve all: {c.name} SERVING again (pid {c.process.pid})",
                file=sys.stderr,
                flush=True,
            )
        elif now - c.started > ready_timeout:
            _kill(c.process)
            return f"was not SERVING {ready_timeout:g} s after it was started again; killed"
        return None
    c.failed_checks = 0 if ok else c.failed_checks + 1
    if c.failed_checks >= HUNG_CHECKS:
        _kill(c.process)
        return (
            f"failed {HUNG_CHECKS} health checks in a row (hung, or stopped); killed "
            f"(pid {c.process.pid})"
        )
    return None


def _restart_counter(host: str, port: int | None) -> Any:
    """``faceoff_serve_all_restarts_total{service}`` served on ``port`` (None: no metrics)."""
    if port is None:
        return None
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    registry = CollectorRegistry()
    counter = Counter(
        "restarts",
        "Children of faceoff serve all started again after they exited or hung.",
        ["service"],
        namespace="faceoff_serve_all",
        registry=registry,
    )
    for name in SERVICES:
        counter.labels(name)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        print(
            f"faceoff serve all: cannot serve the supervisor's metrics on {host}:{port} ({exc}); "
            "restarts are still printed here",
            file=sys.stderr,
        )
    return counter


def run(
    host: str,
    base_port: int,
    metrics_base_port: int,
    free_ports: bool,
    log_level: str | None,
    local_recognizers: str | None,
    ready_timeout: float,
    env_overrides: Mapping[str, str] | None = None,
) -> int:
    """Start the three services, wait for SERVING, announce them, and drain them on a signal.

    ``env_overrides`` are ``FACEOFF_*`` variables given as flags; they win over the environment.
    """
    from faceoff.common.settings import ServerSettings, SettingsError, from_env

    env = {**os.environ, **(env_overrides or {})}
    try:
        grace = from_env(ServerSettings, env).grace_seconds  # also checks the TLS and token files
        probe = probe_for(env)
    except SettingsError as exc:
        print(f"faceoff serve all: bad setting: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        children = plan(
            host, base_port, metrics_base_port, free_ports, log_level, local_recognizers
        )
    except OSError as exc:
        print(f"faceoff serve all: cannot pick ports on {host}: {exc}", file=sys.stderr)
        return 2
    preexec = _die_with_parent if sys.platform.startswith("linux") else None

    def start(c: Child) -> None:
        c.process = subprocess.Popen(c.argv, env=env, preexec_fn=preexec)  # noqa: PLW1509 - the child execs at once; prctl is all it runs
        c.started = time.monotonic()

    for c in children:
        start(c)
    metrics_port = (
        None
        if metrics_base_port < 0
        else (free_port(host) if free_ports else metrics_base_port + len(SERVICES))
    )
    try:
        return _supervise(
            children, host, grace, ready_timeout, stop, received, probe, start, metrics_port
        )
    finally:
        drain(children, grace)


def _supervise(
    children: list[Child],
    host: str,
    grace: float,
    ready_timeout: float,
    stop: threading.Event,
    received: list[int],
    probe: Probe,
    start: Callable[[Child], None],
    metrics_port: int | None = None,
) -> int:
    waiting = {c.name for c in children}
    deadline = time.monotonic() + ready_timeout
    while waiting and not stop.is_set():
        for c in children:
            assert c.process is not None
            if c.process.poll() is not None:
                print(
                    f"faceoff serve all: {c.name} exited with code {c.process.returncode} before it was ready",
                    file=sys.stderr,
                )
                return 1
            if c.name in waiting and serving(
                f"{dial_host(host)}:{c.port}", GRPC_NAMES[c.name], probe
            ):
                waiting.discard(c.name)
        if time.monotonic() > deadline:
            print(
                f"faceoff serve all: not SERVING after {ready_timeout:g} s: {', '.join(sorted(waiting))}",
                file=sys.stderr,
            )
            return 1
        stop.wait(0.5)
    if stop.is_set():
        return 0
    restarts = _restart_counter(host, metrics_port)
    announce(children, host, metrics_port)
    while not stop.wait(0.5):
        for c in children:
            why = _check(c, host, probe, ready_timeout)
            if why is None:
                continue
            now = time.monotonic()
            c.restarts = [t for t in c.restarts if now - t < RESTART_WINDOW_SECONDS]
            if len(c.restarts) >= MAX_RESTARTS:
                print(
                    f"faceoff serve all: {c.name} {why}, after {len(c.restarts)} restarts in "
                    f"{RESTART_WINDOW_SECONDS:g} s; giving up and stopping the others",
                    file=sys.stderr,
                )
                return 1
            backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** len(c.restarts))
            c.restarts.append(now)
            c.restart_at = now + backoff
            if restarts is not None:
                restarts.labels(c.name).inc()
            print(
                f"faceoff serve all: {c.name} {why}; starting it again in {backoff:g} s "
                f"(restart {len(c.restarts)} in {RESTART_WINDOW_SECONDS:g} s; the others keep serving)",
                file=sys.stderr,
                flush=True,
            )
        for c in children:
            if c.restart_at is not None and time.monotonic() >= c.restart_at:
                c.restart_at, c.ready, c.failed_checks = None, False, 0
                start(c)
    print(
        f"faceoff serve all: {signal.Signals(received[0]).name}: draining (grace {grace:g} s)",
        file=sys.stderr,
    )
    if drain(children, grace):
        print("faceoff serve all: stopped", file=sys.stderr)
        return 0
    print(
        "faceoff serve all: a service did not stop within its grace period and was killed",
        file=sys.stderr,
    )
    return 1


def main(args: Any) -> int:
    """Entry point of ``faceoff serve all`` (``args`` from the CLI parser)."""
    overrides = {
        f"FACEOFF_{name.upper()}": str(getattr(args, name))
        for name in SECURITY_FLAGS
        if getattr(args, name, None) is not None
    }
    if getattr(args, "log_format", None):
        overrides["FACEOFF_LOG_FORMAT"] = args.log_format  # the children's, through the environment
    return run(
        args.host or "127.0.0.1",
        args.base_port,
        args.metrics_base_port,
        args.free_ports,
        args.log_level,
        args.local_recognizers,
        args.ready_timeout,
        overrides,
    )
