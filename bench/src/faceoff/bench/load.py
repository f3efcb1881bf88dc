"""``faceoff bench load``: many concurrent clients against a masker (or a detector) on this machine.

An asyncio gRPC client keeps at most ``concurrency`` calls in flight for ``duration`` seconds:
each of ``concurrency`` workers sends a request, waits for its answer and sends the next. A
request refused with RESOURCE_EXHAUSTED was not accepted; its worker waits what the server's
retry hint says (``grpc-retry-pushback-ms`` / ``retry-after``, 1 s when there is none) before
its next request, as a well-behaved client does, so refusals do not turn into a busy loop. Any
other failure is an error of an accepted request. At ``duration`` no new request is sent and the
calls in flight are awaited (each has its own deadline, so the wait is bounded).

Printed: requests sent, accepted (not refused) and completed (OK), throughput (completed per
second of the whole run, the drain included), p50/p95/p99 latency of the completed requests,
the calls by status code, the retry hints seen, and whether every accepted request completed.

Load is generated only against loopback addresses (127.0.0.0/8, ::1, ``localhost``): this is a
benchmark of one's own machine, never a tool to flood someone else's server. Without
``--target`` it starts ``faceoff serve all --free-ports`` itself (the evaluator with no local
recognisers, since it is not used), runs against it and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from faceoff.bench.report import emit, print_table
from faceoff.cli.paths import CELEBS
from faceoff.common.memory import reset_peak, status_bytes
from faceoff.sdk import DEFAULT_PROFILE

DEFAULT_PHOTO = CELEBS / "photos/bill/bill_03.jpg"
#: Wait after a refusal without a retry hint, and after any other failure (no busy loop).
NO_HINT_WAIT_SECONDS = 1.0
ERROR_WAIT_SECONDS = 0.1
RPCS = ("protect", "detect")


class LoadError(Exception):
    """A bad option or an unusable target; the message says what is accepted."""


def check_loopback(target: str) -> None:
    """Refuse ``target`` (``host:port``) unless every address it names is on this machine."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LoadError(f"--target must be HOST:PORT, got {target!r}")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise LoadError(f"--target {target}: cannot resolve {host!r} ({exc.strerror})") from None
    # An IPv4 or IPv6 socket address starts with the host as a string.
    addresses = {cast(str, info[4][0]) for info in infos}
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if outside:
        raise LoadError(
            f"--target {target} resolves to {', '.join(outside)}, which is not loopback; faceoff bench load only "
            "runs against this machine (127.0.0.0/8, ::1 or localhost)"
        )


@dataclass
class Tally:
    """What the workers saw."""

    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    hints: list[float] = field(default_factory=list)
    refused_without_hint: int = 0
    messages: dict[str, str] = field(default_factory=dict)  # one example message per failing code


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ascending ``sorted_values``; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


#: Seeds are below this (the contract's bound).
SEED_LIMIT = 2**63


def build_request(
    rpc: str, photo: bytes, profile: str | None, iterations: int | None, seed: int
) -> Any:
    """The one request every call sends: a ProtectRequest or a DetectRequest of ``photo``."""
    from faceoff.v1 import common_pb2, detector_pb2, masker_pb2

    image = common_pb2.Image(data=photo)
    if rpc == "detect":
        return detector_pb2.DetectRequest(image=image)
    options = masker_pb2.ProtectOptions(profile=profile or "", seed=seed)
    if iterations is not None:
        options.iterations = iterations
    return masker_pb2.ProtectRequest(image=image, options=options)


async def run_load(
    target: str,
    rpc: str,
    request: Any,
    concurrency: int,
    duration: float,
    deadline: float,
    distinct_seeds: bool = False,
) -> tuple[Tally, float]:
    """Drive the load; returns the tally and the wall time from the first request to the last answer.

    With ``distinct_seeds`` the k-th Protect request sent carries the seed of ``request`` plus k
    (requests that differ only in seed, as different users' would; they share attack batches).
    """
    import grpc

    from faceoff.common.retry_hint import retry_after_from
    from faceoff.v1 import detector_pb2_grpc, masker_pb2_grpc

    tally = Tally()
    loop = asyncio.get_running_loop()
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.enable_retries", 0),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = (
            masker_pb2_grpc.MaskerStub(channel).Protect
            if rpc == "protect"
            else detector_pb2_grpc.DetectorStub(channel).Detect
        )
        start = loop.time()
        stop_at = start + duration

        async def pause(seconds: float) -> None:
            await asyncio.sleep(max(0.0, min(seconds, stop_at - loop.time())))

        def next_request() -> Any:
            if not (distinct_seeds and rpc == "protect"):
                return request
            message = type(request)()
            message.CopyFrom(request)
            message.options.seed = (request.options.seed + tally.sent) % SEED_LIMIT
            return message

        async def worker() -> None:
            while loop.time() < stop_at:
                message = next_request()
                tally.sent += 1
                began = loop.time()
                try:
                    await call(message, timeout=deadline)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    tally.codes[code] += 1
                    tally.messages.setdefault(code, exc.details() or "")
                    if code == "RESOURCE_EXHAUSTED":
                        hint = retry_after_from(exc.trailing_metadata())
                        if hint is None:
                            tally.refused_without_hint += 1
                        else:
                            tally.hints.append(hint)
                        await pause(NO_HINT_WAIT_SECONDS if hint is None else hint)
                    else:
                        await pause(ERROR_WAIT_SECONDS)
                else:
                    tally.codes["OK"] += 1
                    tally.latencies.append(loop.time() - began)

        try:  # each call has its own deadline, so this bound is only a safety net
            await asyncio.wait_for(
                asyncio.gather(*(worker() for _ in range(concurrency))), duration + deadline + 30
            )
        except TimeoutError:
            raise LoadError(
                "calls in flight did not end within their deadline; the client channel is stuck"
            ) from None
        return tally, loop.time() - start


def summarise(
    tally: Tally,
    wall: float,
    *,
    target: str,
    rpc: str,
    concurrency: int,
    duration: float,
    deadline: float,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The JSON-ready result of a run."""
    refused = tally.codes.get("RESOURCE_EXHAUSTED", 0)
    completed = tally.codes.get("OK", 0)
    accepted = tally.sent - refused
    latencies = sorted(tally.latencies)
    hints = sorted(tally.hints)
    return {
        "benchmark": "load",
        "target": target,
        "rpc": rpc,
        "concurrency": concurrency,
        "duration_seconds": duration,
        "deadline_seconds": deadline,
        "request": settings,
        "sent": tally.sent,
        "accepted": accepted,
        "completed": completed,
        "refused": refused,
        "every_accepted_completed": accepted == completed,
        "wall_seconds": round(wall, 3),
        "throughput_per_second": round(completed / wall, 3) if wall > 0 else None,
        "latency_seconds": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else None,
        },
        "codes": dict(sorted(tally.codes.items())),
        "errors_other_than_resource_exhausted": sum(
            n for c, n in tally.codes.items() if c not in ("OK", "RESOURCE_EXHAUSTED")
        ),
        "refused_without_retry_hint": tally.refused_without_hint,
        "retry_hint_seconds": {"p50": percentile(hints, 50), "max": hints[-1] if hints else None},
        "example_messages": tally.messages,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


@contextmanager
def serve_all(log_level: str = "WARNING", ready_timeout: float = 600.0) -> Iterator[dict[str, Any]]:
    """``faceoff serve all --free-ports`` on 127.0.0.1 as a child process; yields its address JSON."""
    import queue

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    argv = [
        sys.executable,
        "-m",
        "faceoff.cli",
        "serve",
        "all",
        "--free-ports",
        "--host",
        "127.0.0.1",
        "--metrics-base-port",
        "-1",
        "--local-recognizers",
        "",
        "--log-level",
        log_level,
        "--ready-timeout",
        str(ready_timeout),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        info: dict[str, Any] = {}
        give_up = time.monotonic() + ready_timeout + 30
        while not info:
            try:
                line = lines.get(timeout=max(0.0, give_up - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise LoadError("faceoff serve all did not come up (see its log above)")
            if line.startswith("{"):
                info = json.loads(line)
        info["supervisor_pid"] = process.pid
        yield info
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: the services drain and exit
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def parse_levels(text: str | int) -> list[int]:
    """``--concurrency``: one level or a comma-separated sweep, e.g. ``1,4,8``."""
    try:
        levels = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        levels = []
    if not levels or any(not 1 <= c <= 10_000 for c in levels):
        raise LoadError(
            f"--concurrency must be 1..10000, or a list of them such as 1,4,8; got {text!r}"
        )
    return levels


SERVICES = ("detector", "masker", "evaluator")


def main(args: argparse.Namespace) -> int:
    """Run ``faceoff bench load`` (see the module docstring)."""
    try:
        levels = parse_levels(args.concurrency)
        if not 0 < args.duration <= 3600:
            raise LoadError(f"--duration must be in (0, 3600] seconds, got {args.duration}")
        if not args.deadline > 0:
            raise LoadError(f"--deadline must be > 0 seconds, got {args.deadline}")
        if args.iterations is not None and not 1 <= args.iterations <= 10_000:
            raise LoadError(f"--iterations must be 1..10000, got {args.iterations}")
        if not 0 <= args.seed < SEED_LIMIT:
            raise LoadError(f"--seed must be in 0..2^63-1, got {args.seed}")
        if args.target:
            check_loopback(args.target)
        photo_path = Path(args.photo) if args.photo else DEFAULT_PHOTO
        try:
            photo = photo_path.read_bytes()
        except OSError as exc:
            raise LoadError(f"cannot read --photo {photo_path}: {exc.strerror}") from None
        request = build_request(args.rpc, photo, args.profile, args.iterations, args.seed)
        settings = (
            {
                "photo": photo_path.name,
                "photo_bytes": len(photo),
                "profile": args.profile or DEFAULT_PROFILE,
                "iterations": args.iterations,
                "seed": args.seed,
                "seeds": args.seeds,
            }
            if args.rpc == "protect"
            else {"photo": photo_path.name, "photo_bytes": len(photo)}
        )

        def sweep(target: str, pids: dict[str, int]) -> list[dict[str, Any]]:
            results = []
            for concurrency in levels:
                for pid in pids.values():
                    reset_peak(pid)
                tally, wall = asyncio.run(
                    run_load(
                        target,
                        args.rpc,
                        request,
                        concurrency,
                        args.duration,
                        args.deadline,
                        distinct_seeds=args.seeds == "distinct",
                    )
                )
                result = summarise(
                    tally,
                    wall,
                    target=target,
                    rpc=args.rpc,
                    concurrency=concurrency,
                    duration=args.duration,
                    deadline=args.deadline,
                    settings=settings,
                )
                peaks = {name: status_bytes(pid, "VmHWM") for name, pid in pids.items()}
                result["peak_rss_mib"] = {
                    name: round(b / 2**20) for name, b in peaks.items() if b is not None
                }
                results.append(result)
            return results

        if args.target:
            results = sweep(args.target, {})
        else:
            print(
                "faceoff bench load: starting faceoff serve all on 127.0.0.1 (models load first)",
                file=sys.stderr,
            )
            with serve_all() as info:
                target = info["masker" if args.rpc == "protect" else "detector"]["address"]
                pids = {n: int(info[n]["pid"]) for n in SERVICES if "pid" in info.get(n, {})}
                results = sweep(target, pids)
    except LoadError as exc:
        print(f"faceoff bench load: {exc}", file=sys.stderr)
        return 2
    if len(results) == 1:
        emit(results[0], args.json_out)
    else:
        first, last = results[0]["throughput_per_second"], results[-1]["throughput_per_second"]
        emit(
            {
                "benchmark": "load",
                "levels": results,
                "throughput_last_to_first": round(last / first, 3) if first and last else None,
            },
            args.json_out,
        )
    print_table(
        [
            "concurrency",
            "sent",
            "accepted",
            "completed",
            "per s",
            "p50 s",
            "p95 s",
            "p99 s",
            "codes",
            "all accepted completed",
            "peak RSS MiB",
        ],
        [
            [
                r["concurrency"],
                r["sent"],
                r["accepted"],
                r["completed"],
                r["throughput_per_second"],
                *(
                    r["latency_seconds"][q] if r["latency_seconds"][q] is not None else "-"
                    for q in ("p50", "p95", "p99")
                ),
                " ".join(f"{c}={n}" for c, n in r["codes"].items()),
                "yes" if r["every_accepted_completed"] else "NO",
                " ".join(f"{n}={m}" for n, m in r["peak_rss_mib"].items()) or "-",
            ]
            for r in results
        ],
    )
    return 0 if all(r["every_accepted_completed"] for r in results) else 1
