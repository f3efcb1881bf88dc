"""How ``faceoff serve all`` asks its children whether they serve: gRPC health, plaintext or TLS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


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
