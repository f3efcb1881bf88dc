"""``faceoff serve all``: the detector, masker and evaluator as local child processes.

The whole service on one machine with one command, for platform-side integration and tests:
each service runs as ``faceoff serve NAME`` in its own process (each loads its own models, as in
a cluster), the masker wired to the detector's address. The supervisor waits until all three
answer gRPC health SERVING, prints their addresses and metrics ports (a human-readable table and
one JSON line), and on SIGTERM or Ctrl-C forwards SIGTERM to every child, waits for them to
drain and exits 0. If a child dies on its own, the others are drained and it exits 1.

Every ``FACEOFF_*`` variable of the environment reaches the three services; the flags given
here (host, ports, the detector's address, the security flags) take precedence. With TLS
(``FACEOFF_TLS_CERT``), the masker's ``FACEOFF_DETECTOR_TLS_*`` settings say how to reach the
detector, and this command's health probes use them too (health checks need no token).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

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


#: Flags of ``faceoff serve all`` that become the children's ``FACEOFF_*`` variables.
SECURITY_FLAGS: tuple[str, ...] = (
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "auth_tokens_file",
    "rate_limit_per_client",
    "rate_limit_burst",
    "detector_tls_ca",
    "detector_tls_cert",
    "detector_tls_key",
    "detector_tls_server_name",
    "detector_token_file",
)


@dataclass(frozen=True)
class Probe:
    """How the supervisor dials its children's health service: plaintext, or TLS like the masker."""

    credentials: grpc.ChannelCredentials | None = None
    server_name: str | None = None


def probe_for(env: Mapping[str, str]) -> Probe:
    """The probe for children started with ``env``; SettingsError when TLS lacks a client side.

    With ``FACEOFF_TLS_CERT`` the three serve TLS, so the masker (and this probe) need the CA to
    trust (``FACEOFF_DETECTOR_TLS_CA``), and with ``FACEOFF_TLS_CLIENT_CA`` a client certificate
    (``FACEOFF_DETECTOR_TLS_CERT``/``_KEY``); with ``FACEOFF_AUTH_TOKENS_FILE`` the masker needs
    its token (``FACEOFF_DETECTOR_TOKEN_FILE``).
    """
    from faceoff.common import security
    from faceoff.common.settings import SettingsError

    def get(name: str) -> str | None:
        return env.get("FACEOFF_" + name) or None

    if get("AUTH_TOKENS_FILE") and not get("DETECTOR_TOKEN_FILE"):
        raise SettingsError(
            "FACEOFF_AUTH_TOKENS_FILE is set: the masker needs FACEOFF_DETECTOR_TOKEN_FILE "
            "(--detector-token-file) to call the detector"
        )
    if not get("TLS_CERT"):
        return Probe()
    if not get("DETECTOR_TLS_CA") and not get("DETECTOR_TLS_CERT"):
        raise SettingsError(
            "FACEOFF_TLS_CERT is set: the masker and the health probes need FACEOFF_DETECTOR_TLS_CA "
            "(--detector-tls-ca), the CA that signed it"
        )
    if get("TLS_CLIENT_CA") and not get("DETECTOR_TLS_CERT"):
        raise SettingsError(
            "FACEOFF_TLS_CLIENT_CA is set (mutual TLS): the masker and the health probes need "
            "FACEOFF_DETECTOR_TLS_CERT and FACEOFF_DETECTOR_TLS_KEY (--detector-tls-cert/--detector-tls-key)"
        )
    credentials = security.channel_credentials(
        get("DETECTOR_TLS_CA"),
        get("DETECTOR_TLS_CERT"),
        get("DETECTOR_TLS_KEY"),
        names=("FACEOFF_DETECTOR_TLS_CA", "FACEOFF_DETECTOR_TLS_CERT", "FACEOFF_DETECTOR_TLS_KEY"),
    )
    return Probe(credentials, get("DETECTOR_TLS_SERVER_NAME"))


def serving(address: str, service: str, probe: Probe = Probe()) -> bool:
    """Whether ``service`` at ``address`` answers health SERVING (over TLS when ``probe`` says so)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if probe.credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        options = (
            [("grpc.ssl_target_name_override", probe.server_name)] if probe.server_name else []
        )
        channel = grpc.secure_channel(address, probe.credentials, options)
    try:
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def announce(children: list[Child], host: str) -> None:
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
    for c in children:
        c.process = subprocess.Popen(c.argv, env=env, preexec_fn=preexec)  # noqa: PLW1509 - no threads exist yet
    try:
        return _supervise(children, host, grace, ready_timeout, stop, received, probe)
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
    announce(children, host)
    while not stop.wait(0.5):
        for c in children:
            assert c.process is not None
            if c.process.poll() is not None:
                print(
                    f"faceoff serve all: {c.name} exited with code {c.process.returncode}; stopping the others",
                    file=sys.stderr,
                )
                return 1
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
