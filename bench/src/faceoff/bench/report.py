"""Printing benchmark results: a short aligned table on stdout and, on request, a JSON file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` under ``headers`` as a plain aligned table (floats to 3 significant places)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def emit(result: dict[str, Any], json_path: str | None) -> None:
    """Print ``result`` as JSON on stdout and write it to ``json_path`` when given."""
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
