"""Print the spans that OpenTelemetry's console exporter wrote, as one tree per trace.

The console exporter (``OTEL_TRACES_EXPORTER=console``) prints each finished span as an indented
JSON object on stdout; give this the files that captured those streams (a service's stdout, the
CLI's), in any order:

    python tools/trace_tree.py masker.out detector.out evaluator.out cli.out

Each line: the span's name, its service, its kind and how long it took, indented under its
parent; spans of one trace from several processes join up through their parent ids.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


def spans_in(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text`` that looks like a span (other lines are skipped)."""
    decoder = json.JSONDecoder()
    found, i = [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return found
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(obj, dict) and "context" in obj and "name" in obj:
            found.append(obj)
        i = end


def _seconds(span: dict[str, Any]) -> float:
    start, end = (
        datetime.fromisoformat(span[k].replace("Z", "+00:00")) for k in ("start_time", "end_time")
    )
    return (end - start).total_seconds()


def tree(spans: list[dict[str, Any]]) -> list[str]:
    by_id = {s["context"]["span_id"]: s for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s.get("parent_id")
        children.setdefault(parent if parent in by_id else None, []).append(s)
    lines: list[str] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        service = span.get("resource", {}).get("attributes", {}).get("service.name", "?")
        kind = span.get("kind", "").removeprefix("SpanKind.")
        lines.append(f"{'  ' * depth}{span['name']}  [{service}, {kind}]  {_seconds(span):.3f} s")
        for child in sorted(
            children.get(span["context"]["span_id"], []), key=lambda c: c["start_time"]
        ):
            walk(child, depth + 1)

    roots = sorted(children.get(None, []), key=lambda s: s["start_time"])
    for root in roots:
        lines.append(f"trace {root['context']['trace_id']}")
        walk(root, 1)
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    spans = [s for path in argv for s in spans_in(Path(path).read_text(errors="replace"))]
    print("\n".join(tree(spans)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
