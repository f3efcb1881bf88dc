"""Cloud-API adapters (AWS Rekognition, Azure Face, Face++) behind the recogniser interface.

:func:`build_cloud` makes an adapter by name from :class:`~faceoff.evaluator.cloud.credentials.CloudConfig`;
an adapter without credentials is still built and says ``configured == False``. Importing this
package imports no HTTP client or SDK until an adapter is built.
"""

from __future__ import annotations

from faceoff.common.errors import InvalidOption
from faceoff.evaluator.cloud.base import CloudRecognizer
from faceoff.evaluator.cloud.credentials import CloudConfig
from faceoff.evaluator.cloud.retry import RetryPolicy

__all__ = ["CLOUD_BACKENDS", "CloudConfig", "CloudRecognizer", "RetryPolicy", "build_cloud"]

#: Names of the cloud backends, in the order they are reported.
CLOUD_BACKENDS: tuple[str, ...] = ("rekognition", "azure", "facepp")


def build_cloud(
    name: str, config: CloudConfig, policy: RetryPolicy | None = None
) -> CloudRecognizer:
    """The adapter ``name`` with its credentials from ``config``.

    Raises:
        InvalidOption: ``name`` is not a cloud backend (the message lists those that are).
    """
    if name == "rekognition":
        from faceoff.evaluator.cloud.rekognition import RekognitionRecognizer

        return RekognitionRecognizer(config.aws, policy)
    if name == "azure":
        from faceoff.evaluator.cloud.azure import AzureFaceRecognizer

        return AzureFaceRecognizer(config.azure, policy)
    if name == "facepp":
        from faceoff.evaluator.cloud.facepp import FaceppRecognizer

        return FaceppRecognizer(config.facepp, policy)
    raise InvalidOption(f"unknown cloud backend {name!r}; accepted: {', '.join(CLOUD_BACKENDS)}")
