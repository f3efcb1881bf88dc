"""The installed version of the ``faceoff`` application (``faceoff --version``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("faceoff")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
