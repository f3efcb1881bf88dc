"""``FACEOFF_DETERMINISTIC``: the same seed gives the same bytes in every process.

Setting it to 1 turns off TensorFlow's oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS=0``), whose
multithreaded gradients sum in an order that depends on thread scheduling, so under CPU
contention two runs of one attack can differ in a few pixel values. It must take effect before
TensorFlow is first imported, so :mod:`faceoff.common` applies it when it is imported, and every
package that uses TensorFlow imports :mod:`faceoff.common` first. It costs some speed on the CPU.
"""

from __future__ import annotations

import os
import sys
import warnings

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


def apply_determinism() -> None:
    """Honour ``FACEOFF_DETERMINISTIC`` before TensorFlow loads.

    Raises:
        ValueError: the variable holds something other than the accepted spellings.
    """
    value = os.environ.get("FACEOFF_DETERMINISTIC", "").strip().lower()
    if value in FALSE:
        return
    if value not in TRUE:
        raise ValueError(
            f"FACEOFF_DETERMINISTIC is {os.environ['FACEOFF_DETERMINISTIC']!r}; "
            f"use 1/true/yes/on, or 0/false/no/off (the default)"
        )
    if "tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        warnings.warn(
            "FACEOFF_DETERMINISTIC=1 has no effect: TensorFlow was imported before faceoff with its "
            "oneDNN kernels on; set TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow",
            RuntimeWarning,
            stacklevel=3,
        )
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
