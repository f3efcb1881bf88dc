"""TLS material and bearer tokens, read from files (Kubernetes Secrets mounted as files).

Servers and their clients (the masker's detector client, ``faceoff serve all``'s health probe)
share these readers. Each file is read and checked when the settings are built, so that a
missing file, a file that is not PEM, a key that does not belong to its certificate or an empty
token file stops the service at start with a :class:`~faceoff.common.settings.SettingsError`
naming the variable and the file, never at the first handshake.

Token files hold one token per line, optionally named ``name:token`` (the name is what logs and
the rate limiter see; a bare token is named ``token-<line>``). Blank lines and lines starting
with ``#`` are ignored. Tokens are at least :data:`MIN_TOKEN_LENGTH` characters without
whitespace. :class:`TokenTable` compares a presented token with every configured one in constant
time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from pathlib import Path

import grpc

from faceoff.common.errors import SettingsError

__all__ = [
    "MIN_TOKEN_LENGTH",
    "TokenTable",
    "channel_credentials",
    "read_certificates",
    "read_pair",
    "read_private_key",
    "read_token",
    "read_tokens",
    "server_credentials",
]

#: Shortest token accepted: a token is a secret, not a password to remember.
MIN_TOKEN_LENGTH = 16
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _read(var: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{var}={path}: cannot read the file ({exc.strerror or exc})") from None


def read_certificates(var: str, path: str) -> bytes:
    """The PEM bytes of ``path``, after checking that it holds one or more X.509 certificates."""
    from cryptography import x509

    data = _read(var, path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise SettingsError(
            f"{var}={path}: not a PEM certificate file (expected '-----BEGIN CERTIFICATE-----' blocks)"
        )
    return data


def read_private_key(var: str, path: str) -> bytes:
    """The PEM bytes of ``path``, after checking that it holds an unencrypted private key."""
    from cryptography.hazmat.primitives import serialization

    data = _read(var, path)
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            f"{var}={path}: not an unencrypted PEM private key ({exc}); "
            "expected '-----BEGIN PRIVATE KEY-----' or '-----BEGIN EC/RSA PRIVATE KEY-----'"
        ) from None
    return data


def _check_pair(
    cert_var: str, cert_path: str, cert_pem: bytes, key_var: str, key_path: str, key_pem: bytes
) -> None:
    """Refuse a key that does not belong to the (first) certificate of the chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise SettingsError(
            f"{key_var}={key_path} is not the private key of the certificate {cert_var}={cert_path}"
        )


def read_pair(cert_var: str, cert_path: str, key_var: str, key_path: str) -> tuple[bytes, bytes]:
    """A certificate chain and its private key, checked to belong together."""
    cert = read_certificates(cert_var, cert_path)
    key = read_private_key(key_var, key_path)
    _check_pair(cert_var, cert_path, cert, key_var, key_path, key)
    return cert, key


def server_credentials(
    cert: str, key: str, client_ca: str | None, *, prefix: str = "FACEOFF_"
) -> grpc.ServerCredentials:
    """TLS server credentials; with ``client_ca``, clients must present a certificate it signed (mTLS)."""
    cert_pem, key_pem = read_pair(f"{prefix}TLS_CERT", cert, f"{prefix}TLS_KEY", key)
    ca_pem = read_certificates(f"{prefix}TLS_CLIENT_CA", client_ca) if client_ca else None
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )


def channel_credentials(
    ca: str | None, cert: str | None, key: str | None, *, names: tuple[str, str, str]
) -> grpc.ChannelCredentials:
    """TLS channel credentials: trust ``ca`` (else the system's roots); ``cert``/``key`` for mTLS.

    ``names`` are the three settings' names, for error messages.
    """
    ca_var, cert_var, key_var = names
    if (cert is None) != (key is None):
        raise SettingsError(
            f"{cert_var} and {key_var} go together: set both for mutual TLS, or neither"
        )
    ca_pem = read_certificates(ca_var, ca) if ca else None
    cert_pem = key_pem = None
    if cert is not None and key is not None:
        cert_pem, key_pem = read_pair(cert_var, cert, key_var, key)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def read_tokens(var: str, path: str) -> dict[str, str]:
    """``{name: token}`` from a token file (see the module docstring); at least one token."""
    try:
        text = _read(var, path).decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{var}={path}: not a UTF-8 text file of tokens") from None
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = f"token-{number}", line
        where = f"{var}={path} line {number}"  # never the token itself: the message may reach a log
        if not _NAME_RE.match(name):
            raise SettingsError(
                f"{where}: the name must be 1-64 letters, digits or _.@- (format 'name:token' or 'token')"
            )
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise SettingsError(
                f"{where}: a token is at least {MIN_TOKEN_LENGTH} characters without spaces"
            )
        if name in tokens:
            raise SettingsError(f"{where}: the name {name!r} is used twice")
        tokens[name] = token
    if not tokens:
        raise SettingsError(
            f"{var}={path}: holds no token (one per line, 'name:token' or 'token'; '#' comments)"
        )
    return tokens


def read_token(var: str, path: str) -> str:
    """The one token of a client's token file (same format; exactly one token)."""
    tokens = read_tokens(var, path)
    if len(tokens) != 1:
        raise SettingsError(
            f"{var}={path}: a client's token file holds exactly one token, found {len(tokens)}"
        )
    return next(iter(tokens.values()))


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode("utf-8") if isinstance(token, str) else token).digest()


class TokenTable:
    """The configured bearer tokens, checked in constant time.

    :meth:`match` compares SHA-256 digests (so the comparison does not depend on the lengths)
    with :func:`hmac.compare_digest` against *every* token, without stopping at a match, so the
    time taken says nothing about which token, or how much of one, was right.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise ValueError("TokenTable needs at least one token")
        self._digests = [(name, _digest(token)) for name, token in tokens.items()]

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: str | bytes) -> str | None:
        """The name of the token equal to ``presented``, or None."""
        digest = _digest(presented)
        found: str | None = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = name
        return found
