"""Recognition checks behind gRPC: local recognisers and cloud-API adapters."""

import faceoff.common  # noqa: F401  (applies FACEOFF_DETERMINISTIC before TensorFlow loads)
