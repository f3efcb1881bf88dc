"""Where the checkout's folders are, for the defaults of commands run from a source checkout.

``CHECKOUT`` is the repository this package was installed from (editable installs; a wheel
installed elsewhere has no checkout, and the commands then need their paths given).
``SHARED`` is the shared data folder beside it, or ``$FACEOFF_SHARED_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

#: cli/src/faceoff/cli/paths.py -> the repository root.
CHECKOUT = Path(__file__).resolve().parents[4]
#: The shared data (the celebrity photos and crops) the benchmarks default to.
SHARED = Path(os.environ.get("FACEOFF_SHARED_DIR") or CHECKOUT.parent / "shared")
#: The photo files a folder argument picks up (the formats the services decode).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: The shared celebrity set.
CELEBS = SHARED / "data" / "faceoff-celebs"
