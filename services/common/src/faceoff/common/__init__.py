"""What the Face-Off services share: settings, server factory, health, metrics, errors, photo
decoding, crop geometry and paste-back, and the model files.

Importing it applies ``FACEOFF_DETERMINISTIC`` (:mod:`faceoff.common.determinism`) before any
TensorFlow import of the packages built on it.
"""

from faceoff.common.determinism import apply_determinism

apply_determinism()
