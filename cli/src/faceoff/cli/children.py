"""The children of ``faceoff serve all``: which services, on which ports, with which command
lines; saying where they listen, and draining them."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

#: The services in the order they start and are listed: the data flows this way.
SERVICES: tuple[str, ...] = ("detector", "masker", "evaluator")
GRPC_NAMES = {
    "detector": "faceoff.v1.Detector",
    "masker": "faceoff.v1.Masker",
    "evaluator": "faceoff.v1.Evaluator",
}
DEFAULT_BASE_PORT = 50051
DEFAULT_METRICS_BASE_PORT = 9101
#: Time the supervisor gives the children beyond their own grace period before killing them.
KILL_MARGIN_SECONDS = 10.0


@dataclass
class Child:
    """One service process and where it listens."""

    name: str
    port: int
    metrics_port: int
    argv: list[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: Supervision: restart times in the window, failed checks in a row, whether it has served
    #: since its last start, when it was started, when it is due to start again, next check.
    restarts: list[float] = field(default_factory=list)
    failed_checks: int = 0
    ready: bool = True
    started: float = 0.0
    restart_at: float | None = None
    next_check: float = 0.0


def dial_host(host: str) -> str:
    """The host a client on this machine dials for a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host


def free_port(host: str) -> int:
    """A port on ``host`` that is free right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def plan(
    host: str,
    base_port: int,
    metrics_base_port: int,
    free_ports: bool,
    log_level: str | None,
    local_recognizers: str | None,
) -> list[Child]:
    """The three children: ports (consecutive from the bases, or free ones) and command lines."""
    children: list[Child] = []
    for i, name in enumerate(SERVICES):
        port = free_port(host) if free_ports else base_port + i
        if metrics_base_port < 0:
            metrics = -1
        else:
            metrics = free_port(host) if free_ports else metrics_base_port + i
        argv = [
            sys.executable,
            "-m",
            "faceoff.cli",
            "serve",
            name,
            "--host",
            host,
            "--port",
            str(port),
            "--metrics-port",
            str(metrics),
        ]
        if log_level:
            argv += ["--log-level", log_level]
        if name == "masker":
            argv += ["--detector", f"{dial_host(host)}:{children[0].port}"]
        if name == "evaluator" and local_recognizers is not None:
            argv += ["--local-recognizers", local_recognizers]
        children.append(Child(name, port, metrics, argv))
    return children


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the supervisor dies without draining it (e.g. SIGKILL)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: a hung or stopped process would not drain on SIGTERM."""
    process.kill()
    process.wait()


def announce(children: list[Child], host: str, metrics_port: int | None = None) -> None:
    """Print where each service listens: a table for people, then one JSON line for programs."""
    doc: dict[str, Any] = {}
    for c in children:
        address = f"{dial_host(host)}:{c.port}"
        assert c.process is not None
        metrics = (
            f"http://{dial_host(host)}:{c.metrics_port}/metrics" if c.metrics_port >= 0 else "off"
        )
        print(f"{c.name:9s} {address:21s} metrics {metrics}  (pid {c.process.pid})")
        doc[c.name] = {
            "address": address,
            "metrics_port": c.metrics_port if c.metrics_port >= 0 else None,
            "pid": c.process.pid,
        }
    if metrics_port is not None:
        print(f"{'supervisor':9s} restarts at http://{dial_host(host)}:{metrics_port}/metrics")
        doc["supervisor"] = {"metrics_port": metrics_port, "pid": os.getpid()}
    print("all three SERVING; Ctrl-C or SIGTERM drains them")
    print(json.dumps(doc), flush=True)


def drain(children: list[Child], grace: float) -> bool:
    """SIGTERM every running child, wait ``grace`` plus a margin, kill what is left; True if none was killed."""
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + KILL_MARGIN_SECONDS
    clean = True
    for p in running:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            clean = False
    return clean
