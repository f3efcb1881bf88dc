"""Face detection (MTCNN) behind gRPC: boxes and landmarks in the photo's display coordinates."""

import faceoff.common  # noqa: F401  (applies FACEOFF_DETERMINISTIC before TensorFlow loads)
