"""The installed version of ``faceoff-sdk`` (sent in the gRPC user agent)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("faceoff-sdk")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
