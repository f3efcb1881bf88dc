"""Typed settings read once from the environment, failing fast on bad values.

Each service declares a frozen dataclass of its settings; :func:`from_env` fills it from
``FACEOFF_<FIELD>`` variables (``FACEOFF_PORT``, ``FACEOFF_MAX_PIXELS`` ...), with explicit
overrides (command-line flags) taking precedence. A value that does not parse, or that the
dataclass's ``__post_init__`` rejects, raises :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

# defined beside the other errors (security.py raises it too); re-exported here, its old home
from faceoff.common.errors import SettingsError as SettingsError

T = TypeVar("T")

ENV_PREFIX = "FACEOFF_"
MIB = 1024 * 1024


def _parse(name: str, raw: str, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw.strip() == "":
            return None
        kind = args[0]
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw.strip())
        if kind is float:
            return float(raw.strip())
        if kind is str:
            return raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    raise SettingsError(f"{name}: unsupported setting type {kind}")


def from_env(
    cls: type[T],
    env: Mapping[str, str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> T:
    """Build settings of dataclass ``cls`` from ``overrides``, then ``env``, then ``defaults``.

    ``env`` defaults to ``os.environ``. Overrides whose value is None are ignored, so unset
    command-line flags fall through to the environment, then to ``defaults`` (per-service
    defaults such as the port), then to the dataclass default.
    """
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        var = ENV_PREFIX + f.name.upper()
        if overrides.get(f.name) is not None:
            values[f.name] = overrides[f.name]
        elif var in env:
            values[f.name] = _parse(var, env[var], hints[f.name])
        elif defaults and f.name in defaults:
            values[f.name] = defaults[f.name]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise SettingsError(f"unknown settings: {sorted(unknown)}")
    try:
        return cls(**values)
    except SettingsError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc)) from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SettingsError(message)


@dataclass(frozen=True)
class ServerSettings:
    """What every Face-Off server needs.

    Attributes:
        host: Interface to listen on (``FACEOFF_HOST``).
        port: gRPC port; 0 picks a free one (``FACEOFF_PORT``).
        metrics_port: Prometheus ``/metrics`` port; 0 picks a free one, -1 disables it.
        max_message_bytes: Largest request or response message, in bytes (default 20 MiB).
        grace_seconds: How long SIGTERM waits for in-flight RPCs before cancelling them.
        max_concurrent_rpcs: RPCs handled at once; more are refused with RESOURCE_EXHAUSTED.
        log_level: Logging level of the entry point (DEBUG, INFO, WARNING, ERROR).
        log_format: ``text`` (people) or ``json`` (one object per line, for log collectors;
            ``FACEOFF_LOG_FORMAT``; see :mod:`faceoff.common.logs`).
        tls_cert: PEM certificate chain the server presents; with ``tls_key``, gRPC is served over
            TLS (``FACEOFF_TLS_CERT``). The metrics port stays plain HTTP.
        tls_key: PEM private key of ``tls_cert`` (``FACEOFF_TLS_KEY``).
        tls_client_ca: PEM CA certificates; when set, clients must present a certificate signed by
            one of them (mutual TLS, ``FACEOFF_TLS_CLIENT_CA``).
        auth_tokens_file: File of bearer tokens, one per line (``name:token`` or ``token``; ``#``
            comments); when set, every RPC but health checks needs ``authorization: Bearer <token>``.
        rate_limit_per_client: Requests per second each client may make (token bucket); 0 is off.
        rate_limit_burst: Requests a client may make at once before the rate applies.
        rate_limit_max_clients: Clients tracked at once by the rate limiter (bounded memory).
        keepalive_seconds: How often the server pings an idle client connection (HTTP/2 PING),
            so dead peers and silently dropped NAT/LB connections are noticed; 0 is off.
        max_connection_age_seconds: A client connection older than this is asked to reconnect
            (GOAWAY; gRPC clients do so transparently): the reconnect re-resolves and re-balances,
            so pods an autoscaler adds get traffic. 0 is off.
        max_connection_age_grace_seconds: How long calls on such a connection may still run
            before it is closed (longer than the slowest protection).
        malloc_arenas: glibc malloc arenas at most (``M_ARENA_MAX``); 0 is glibc's default
            (8 per core). See :mod:`faceoff.common.memory`.
        mmap_threshold_bytes: Allocations from this size up are their own mappings, returned
            to the system when freed (``M_MMAP_THRESHOLD``, fixed); 0 is glibc's dynamic one.
    """

    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9100
    max_message_bytes: int = 20 * MIB
    grace_seconds: float = 20.0
    max_concurrent_rpcs: int = 64
    log_level: str = "INFO"
    log_format: str = "text"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_tokens_file: str | None = None
    rate_limit_per_client: float = 0.0
    rate_limit_burst: int = 10
    rate_limit_max_clients: int = 10000
    keepalive_seconds: float = 60.0
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 600.0
    malloc_arenas: int = 2
    mmap_threshold_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, f"FACEOFF_PORT must be 0..65535, got {self.port}")
        _check(
            -1 <= self.metrics_port <= 65535,
            f"FACEOFF_METRICS_PORT must be -1..65535, got {self.metrics_port}",
        )
        _check(
            1024 <= self.max_message_bytes <= 2**31 - 1,
            f"FACEOFF_MAX_MESSAGE_BYTES must be 1024..2147483647, got {self.max_message_bytes}",
        )
        _check(
            self.grace_seconds >= 0, f"FACEOFF_GRACE_SECONDS must be >= 0, got {self.grace_seconds}"
        )
        _check(
            self.max_concurrent_rpcs >= 1,
            f"FACEOFF_MAX_CONCURRENT_RPCS must be >= 1, got {self.max_concurrent_rpcs}",
        )
        _check(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            f"FACEOFF_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}",
        )
        for name in (
            "keepalive_seconds",
            "max_connection_age_seconds",
            "malloc_arenas",
            "mmap_threshold_bytes",
        ):
            value = getattr(self, name)
            _check(value >= 0, f"FACEOFF_{name.upper()} must be >= 0 (0: off), got {value}")
        _check(
            self.max_connection_age_grace_seconds >= 0,
            "FACEOFF_MAX_CONNECTION_AGE_GRACE_SECONDS must be >= 0, "
            f"got {self.max_connection_age_grace_seconds}",
        )
        _check(
            self.log_format in ("text", "json"),
            f"FACEOFF_LOG_FORMAT must be text or json, got {self.log_format!r}",
        )
        self._check_security()

    def _check_security(self) -> None:
        """TLS, token and rate-limit settings; the files must exist and parse (read again at start)."""
        _check(
            (self.tls_cert is None) == (self.tls_key is None),
            "FACEOFF_TLS_CERT and FACEOFF_TLS_KEY go together: set both to serve TLS, or neither",
        )
        _check(
            self.tls_client_ca is None or self.tls_cert is not None,
            "FACEOFF_TLS_CLIENT_CA (mutual TLS) needs FACEOFF_TLS_CERT and FACEOFF_TLS_KEY too",
        )
        _check(
            self.rate_limit_per_client >= 0,
            f"FACEOFF_RATE_LIMIT_PER_CLIENT must be >= 0 requests per second (0: off), got {self.rate_limit_per_client}",
        )
        _check(
            self.rate_limit_burst >= 1,
            f"FACEOFF_RATE_LIMIT_BURST must be >= 1, got {self.rate_limit_burst}",
        )
        _check(
            self.rate_limit_max_clients >= 1,
            f"FACEOFF_RATE_LIMIT_MAX_CLIENTS must be >= 1, got {self.rate_limit_max_clients}",
        )
        from faceoff.common import security

        if self.tls_cert is not None and self.tls_key is not None:
            security.server_credentials(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.auth_tokens_file is not None:
            security.read_tokens("FACEOFF_AUTH_TOKENS_FILE", self.auth_tokens_file)


#: Names of the :class:`ServerSettings` fields.
SERVER_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerSettings))


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split command-line overrides into server settings and service-specific ones."""
    server = {k: v for k, v in overrides.items() if k in SERVER_FIELDS}
    rest = {k: v for k, v in overrides.items() if k not in SERVER_FIELDS}
    return server, rest
