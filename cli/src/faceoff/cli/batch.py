"""``faceoff protect`` over many photos: output names, resuming, progress, receipts, the summary.

The command protects each photo with an SDK client (remote with ``--server``, else embedded)
and writes ``NAME.protected.EXT`` into the output folder in the photo's own format (a GIF comes
back as PNG, so its output is ``NAME.protected.png``). A batch is resumable: an output that
exists is a finished photo and is skipped, and each output is written to a temporary file in
the output folder and renamed into place when complete, so an interrupted run loses only the
photo in flight (its temporary file is removed by the next run). With one input photo and an
``-o`` that names a file, that file is written (and overwritten).

Progress goes to standard error: bars (per photo and per attack iteration) on a terminal,
one plain line per photo otherwise. Standard output gets the summary, or JSON receipts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceoff.cli.paths import IMAGE_SUFFIXES
from faceoff.cli.progress import Bars, Lines, Reporter
from faceoff.cli.verdicts import verdict_word
from faceoff.sdk import Client, FaceOffError, Progress, ProtectedPhoto

#: Marks an output's name; folder inputs skip such files so an output folder can be the input one.
MARK = ".protected"
#: Errors that are not about one photo: the batch stops (and can be resumed) instead of failing each.
FATAL_CODES = frozenset(
    {"UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED", "DEADLINE_EXCEEDED"}
)
#: ``protect(client, source, on_progress)``: protects one photo.
ProtectFn = Callable[[Client, Path, Callable[[Progress], None]], ProtectedPhoto]


class PlanError(ValueError):
    """The inputs or the output cannot be paired up; the message says why."""


@dataclass
class Item:
    """One photo to protect and where its output goes."""

    source: Path
    output: Path
    receipt: dict[str, Any] | None = None


def output_name(source: Path) -> str:
    """``NAME.protected.EXT`` in the format the masker writes (GIF becomes PNG)."""
    suffix = ".png" if source.suffix.lower() == ".gif" else source.suffix
    return f"{source.stem}{MARK}{suffix}"


def photos_in(folder: Path) -> list[Path]:
    """The photos directly in ``folder`` (sorted), leaving out hidden files and earlier outputs."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not p.name.startswith(".")
        and MARK not in p.stem
    )


def plan(inputs: Sequence[Path], output: Path) -> tuple[list[Item], bool]:
    """Pair every input photo with its output path, and say whether ``output`` is a folder.

    ``output`` names a file when there is one input, a photo, and ``output`` is not an existing
    folder, does not end with a separator and has a suffix; else it is a folder.

    Raises:
        PlanError: an input that does not exist, a folder without photos, or two inputs that
            would write the same output.
    """
    sources: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = photos_in(path)
            if not found:
                raise PlanError(f"{path} holds no photos ({', '.join(IMAGE_SUFFIXES)})")
            sources += found
        elif path.is_file():
            sources.append(path)
        else:
            raise PlanError(f"{path} does not exist")
    unique: dict[Path, Path] = {}
    for source in sources:  # a photo named twice (itself and its folder) is protected once
        unique.setdefault(source.resolve(), source)
    sources = list(unique.values())
    single_file = (
        len(inputs) == 1
        and not inputs[0].is_dir()
        and not output.is_dir()
        and not str(output).endswith(os.sep)
        and output.suffix != ""
    )
    if single_file:
        return [Item(sources[0], output)], False
    items = [Item(s, output / output_name(s)) for s in sources]
    seen: dict[Path, Path] = {}
    for item in items:
        if item.output in seen:
            raise PlanError(
                f"{seen[item.output]} and {item.source} would both be written to {item.output}; "
                "protect them in separate runs"
            )
        seen[item.output] = item.source
    return items, True


def remove_leftovers(output: Path) -> None:
    """Delete temporary files an interrupted run left for ``output`` (see ``ProtectedPhoto.save``)."""
    if output.parent.is_dir():
        for leftover in output.parent.glob(f".{output.name}.*.part"):
            leftover.unlink(missing_ok=True)


def summary(items: Sequence[Item], checks: Sequence[str], seconds: float) -> str:
    """The table printed at the end of a batch, and a totals line.

    Each ``--check`` column says whether the photo is protected against that recogniser
    (:func:`faceoff.cli.verdicts.verdict_word`).
    """
    head = ["photo", "status", "faces", "PSNR min", "distance", "seconds", *checks, "output"]
    rows = [head]
    for item in items:
        r = item.receipt or {"status": "not run"}
        faces = r.get("faces") or []
        psnrs = [f["psnr"] for f in faces if f.get("psnr") is not None]
        before = [f["distance_before"] for f in faces]
        after = [f["distance_after"] for f in faces]
        verdicts = {v["recognizer"]: v for v in r.get("verdicts", [])}
        rows.append(
            [
                item.source.name,
                r["status"],
                f"{r['faces_protected']}/{r['faces_found']}" if "faces_found" in r else "",
                f"{min(psnrs):.1f}" if psnrs else "",
                f"{sum(before) / len(before):.2f} -> {sum(after) / len(after):.2f}"
                if before
                else "",
                f"{r['seconds']:.1f}" if "seconds" in r else "",
                *(verdict_word(verdicts[c]) if c in verdicts else "" for c in checks),
                str(item.output),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    counts = {
        s: sum(1 for i in items if (i.receipt or {}).get("status") == s)
        for s in ("protected", "skipped", "failed")
    }
    lines.append(
        f"{len(items)} photo(s): {counts['protected']} protected, {counts['skipped']} skipped, "
        f"{counts['failed']} failed in {seconds:.1f} s"
    )
    return "\n".join(lines)


def receipt_of(item: Item, protected: ProtectedPhoto, seconds: float) -> dict[str, Any]:
    """The JSON receipt of a protected photo (no image bytes)."""
    doc = protected.to_json()
    return {
        "input": str(item.source),
        "output": str(item.output),
        "status": "protected",
        "seconds": round(seconds, 3),
        **doc,
    }


def write_receipts(path: Path, items: Iterable[Item]) -> None:
    """Every receipt of the run as JSON lines, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text("".join(json.dumps(i.receipt) + "\n" for i in items if i.receipt is not None))
    os.replace(tmp, path)


def _failed(item: Item, code: str, message: str) -> dict[str, Any]:
    return {
        "input": str(item.source),
        "output": str(item.output),
        "status": "failed",
        "code": code,
        "error": message,
    }


def protect_one(
    client: Client, item: Item, protect: ProtectFn, on_progress: Callable[[Progress], None]
) -> tuple[dict[str, Any], str, bool]:
    """Protect and write one photo: its receipt, a line for the log, and whether the batch must stop."""
    began = time.perf_counter()
    try:
        protected = protect(client, item.source, on_progress)
    except FaceOffError as exc:
        return (
            _failed(item, exc.code, exc.message),
            f"{item.source}: {exc.message}",
            exc.code in FATAL_CODES,
        )
    except OSError as exc:
        message = f"cannot read it: {exc.strerror}"
        return _failed(item, "OS_ERROR", message), f"{item.source}: {message}", False
    try:
        protected.save(item.output)
    except OSError as exc:  # the output folder is not writable: every other photo would fail too
        message = f"cannot write {item.output}: {exc.strerror}"
        return _failed(item, "OS_ERROR", message), f"{item.source}: {message}", True
    receipt = receipt_of(item, protected, time.perf_counter() - began)
    line = f"{item.source} -> {item.output}: {len(protected.faces)} face(s) perturbed in {receipt['seconds']:.1f} s"
    return receipt, line, False


def run(
    client: Client,
    items: list[Item],
    protect: ProtectFn,
    *,
    resume: bool,
    json_lines: bool,
    receipts: Path | None,
    checks: Sequence[str],
    on_receipt: Callable[[dict[str, Any], Path], None] | None = None,
) -> int:
    """Protect every item (see the module docstring); returns the exit code.

    ``protect(client, source, on_progress)`` protects one photo; with ``resume``, an item whose
    output exists is skipped. Without ``json_lines``, one photo's receipt goes to ``on_receipt``
    and several photos get the summary table. Exit codes: 0 when every photo is protected or
    skipped, 1 when one failed or the batch stopped, 130 on Ctrl-C.
    """
    reporter: Reporter = Bars(len(items)) if sys.stderr.isatty() else Lines(len(items))
    started = time.perf_counter()
    code = 0
    try:
        for index, item in enumerate(items):
            remove_leftovers(item.output)
            if resume and item.output.exists():
                item.receipt = {
                    "input": str(item.source),
                    "output": str(item.output),
                    "status": "skipped",
                }
                line, stop = f"{item.source}: {item.output} exists, skipped", False
            else:
                reporter.start(index, item.source.name)
                item.receipt, line, stop = protect_one(client, item, protect, reporter.progress)
            if item.receipt["status"] == "failed":
                code = 1
                line = f"faceoff protect: {line}"
            reporter.done(index, line)
            if json_lines:
                print(json.dumps(item.receipt), flush=True)
            if stop:
                print(
                    "faceoff protect: stopping; run the same command again to resume",
                    file=sys.stderr,
                )
                break
    except KeyboardInterrupt:
        code = 130
    finally:
        reporter.close()
    if code == 130:
        print("faceoff protect: interrupted; run the same command again to resume", file=sys.stderr)
    if receipts is not None:
        write_receipts(receipts, items)
    if not json_lines:
        if len(items) > 1:
            print(summary(items, checks, time.perf_counter() - started))
        elif (
            items[0].receipt is not None
            and items[0].receipt["status"] == "protected"
            and on_receipt is not None
        ):
            on_receipt(items[0].receipt, items[0].output)
    return code
