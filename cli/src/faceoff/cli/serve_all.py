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

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
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
#: How often the supervisor checks a serving child's health (``""``), and how many failed
#: checks in a row (each with a 2 s deadline) make it hung.
HEALTH_INTERVAL_SECONDS = 2.0
HUNG_CHECKS = 3
#: Back-off before a restart: 1 s, doubling per restart in the window, at most this.
MAX_BACKOFF_SECONDS = 30.0
#: A child restarted this many times within the window is given up on.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 300.0


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


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: a hung or stopped process would not drain on SIGTERM."""
    process.kill()
    process.wait()


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
