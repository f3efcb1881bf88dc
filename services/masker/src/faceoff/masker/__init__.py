"""Adversarial mask generation: the Face-Off attacks on surrogate embedding models, behind gRPC."""

import faceoff.common  # noqa: F401  (applies FACEOFF_DETERMINISTIC before TensorFlow loads)
