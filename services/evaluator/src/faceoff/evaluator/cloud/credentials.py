"""Cloud credentials, read once from the environment or a mounted secret file.

Each backend is configured by environment variables, falling back to a secret file named by
``FACEOFF_CLOUD_SECRETS_FILE`` (a Kubernetes secret mounted as a file), JSON or INI, with one
section per backend::

    {"aws":    {"access_key_id": "...", "secret_access_key": "...", "session_token": "...",
                "region": "eu-west-1", "endpoint_url": "https://..."},
     "azure":  {"endpoint": "https://NAME.cognitiveservices.azure.com", "key": "..."},
     "facepp": {"key": "...", "secret": "...", "endpoint": "https://api-us.faceplusplus.com",
                "far": "1e-3"}}

An INI file has the same keys in ``[aws]``, ``[azure]`` and ``[facepp]`` sections. Variables win
over the file.

| backend | variables |
|---|---|
| rekognition | ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default us-east-1), ``FACEOFF_REKOGNITION_ENDPOINT``; without keys, ``AWS_PROFILE``, ``AWS_WEB_IDENTITY_TOKEN_FILE`` (Kubernetes service-account roles) or ``AWS_CONTAINER_CREDENTIALS_*`` select boto3's own credential chain, minus the EC2 instance-metadata lookup |
| azure | ``FACEOFF_AZURE_FACE_ENDPOINT``, ``FACEOFF_AZURE_FACE_KEY`` |
| facepp | ``FACEOFF_FACEPP_KEY``, ``FACEOFF_FACEPP_SECRET``, ``FACEOFF_FACEPP_ENDPOINT`` (default https://api-us.faceplusplus.com), ``FACEOFF_FACEPP_FAR`` (which of the returned thresholds is "the API's": 1e-3, 1e-4 or 1e-5; default 1e-3) |

A backend with no credentials at all is simply not configured (its verdicts say
``configured=false``); half a credential (a key without its secret), a bad URL or an unreadable
secret file is a :class:`~faceoff.common.settings.SettingsError` naming the variable, at start-up.
Secrets are kept out of ``repr`` so they cannot reach a log by accident.
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from faceoff.common.settings import SettingsError

SECRETS_FILE_VAR = "FACEOFF_CLOUD_SECRETS_FILE"
DEFAULT_AWS_REGION = "us-east-1"
DEFAULT_FACEPP_ENDPOINT = "https://api-us.faceplusplus.com"
FACEPP_FARS: tuple[str, ...] = ("1e-3", "1e-4", "1e-5")
#: Variables that mean "use boto3's credential chain" when no keys are given.
_AWS_CHAIN_VARS = (
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass(frozen=True)
class AwsConfig:
    """Rekognition's settings. ``configured`` is True with keys or a credential-chain variable."""

    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = DEFAULT_AWS_REGION
    endpoint_url: str | None = None
    use_default_chain: bool = False

    @property
    def configured(self) -> bool:
        """Keys were given, or boto3's credential chain was asked for."""
        return bool(self.access_key_id) or self.use_default_chain


@dataclass(frozen=True)
class AzureConfig:
    """Azure Face's endpoint and key."""

    endpoint: str | None = None
    key: str | None = field(default=None, repr=False)

    @property
    def configured(self) -> bool:
        """Both endpoint and key are there."""
        return bool(self.endpoint and self.key)


@dataclass(frozen=True)
class FaceppConfig:
    """Face++'s key, secret, endpoint and which false-accept rate its own threshold is taken at."""

    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    endpoint: str = DEFAULT_FACEPP_ENDPOINT
    far: str = "1e-3"

    @property
    def configured(self) -> bool:
        """Both key and secret are there."""
        return bool(self.key and self.secret)


@dataclass(frozen=True)
class CloudConfig:
    """Every cloud backend's settings."""

    aws: AwsConfig = AwsConfig()
    azure: AzureConfig = AzureConfig()
    facepp: FaceppConfig = FaceppConfig()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CloudConfig:
        """Read the variables (and the secret file they may name) once; see the module docstring."""
        env = os.environ if env is None else env
        secrets = _read_secrets(env.get(SECRETS_FILE_VAR, "").strip())

        def pick(var: str | None, section: str, key: str) -> str | None:
            value = env.get(var, "").strip() if var else ""
            if value:
                return value
            from_file = secrets.get(section, {}).get(key)
            return str(from_file).strip() if from_file not in (None, "") else None

        aws = AwsConfig(
            access_key_id=pick("AWS_ACCESS_KEY_ID", "aws", "access_key_id"),
            secret_access_key=pick("AWS_SECRET_ACCESS_KEY", "aws", "secret_access_key"),
            session_token=pick("AWS_SESSION_TOKEN", "aws", "session_token"),
            region=pick("AWS_REGION", "aws", "region")
            or pick("AWS_DEFAULT_REGION", "aws", "region")
            or DEFAULT_AWS_REGION,
            endpoint_url=_url(
                pick("FACEOFF_REKOGNITION_ENDPOINT", "aws", "endpoint_url"),
                "FACEOFF_REKOGNITION_ENDPOINT",
            ),
            use_default_chain=any(env.get(v, "").strip() for v in _AWS_CHAIN_VARS),
        )
        _pair(
            aws.access_key_id, aws.secret_access_key, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
        )
        azure = AzureConfig(
            endpoint=_url(
                pick("FACEOFF_AZURE_FACE_ENDPOINT", "azure", "endpoint"),
                "FACEOFF_AZURE_FACE_ENDPOINT",
            ),
            key=pick("FACEOFF_AZURE_FACE_KEY", "azure", "key"),
        )
        _pair(azure.endpoint, azure.key, "FACEOFF_AZURE_FACE_ENDPOINT", "FACEOFF_AZURE_FACE_KEY")
        far = pick("FACEOFF_FACEPP_FAR", "facepp", "far") or "1e-3"
        if far not in FACEPP_FARS:
            raise SettingsError(
                f"FACEOFF_FACEPP_FAR must be one of {', '.join(FACEPP_FARS)}, got {far!r}"
            )
        facepp = FaceppConfig(
            key=pick("FACEOFF_FACEPP_KEY", "facepp", "key"),
            secret=pick("FACEOFF_FACEPP_SECRET", "facepp", "secret"),
            endpoint=_url(
                pick("FACEOFF_FACEPP_ENDPOINT", "facepp", "endpoint"), "FACEOFF_FACEPP_ENDPOINT"
            )
            or DEFAULT_FACEPP_ENDPOINT,
            far=far,
        )
        _pair(facepp.key, facepp.secret, "FACEOFF_FACEPP_KEY", "FACEOFF_FACEPP_SECRET")
        return cls(aws=aws, azure=azure, facepp=facepp)


def _pair(a: str | None, b: str | None, name_a: str, name_b: str) -> None:
    """Refuse half a credential (from the environment or the secret file)."""
    if bool(a) != bool(b):
        given, missing = (name_a, name_b) if a else (name_b, name_a)
        raise SettingsError(
            f"{given} is set but {missing} is not; set both or neither (as variables or in {SECRETS_FILE_VAR})"
        )


def _url(value: str | None, var: str) -> str | None:
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"{var} must be an http(s) URL such as https://host, got {value!r}")
    return value.rstrip("/")


def _read_secrets(path: str) -> dict[str, dict[str, str]]:
    """Sections of the secret file (empty when no file is named)."""
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{SECRETS_FILE_VAR}={path!r} cannot be read: {exc.strerror}") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"{SECRETS_FILE_VAR}={path!r} is not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from None
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise SettingsError(
                f"{SECRETS_FILE_VAR}={path!r} must be a JSON object of sections (aws, azure, facepp)"
            )
        return {str(k): {str(kk): vv for kk, vv in v.items()} for k, v in doc.items()}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise SettingsError(f"{SECRETS_FILE_VAR}={path!r} is neither JSON nor INI: {exc}") from None
    return {s: dict(parser.items(s)) for s in parser.sections()}
