"""Where ``faceoff protect`` reports progress over a batch: bars on a terminal, plain lines
otherwise (both on standard error)."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from faceoff.sdk import Progress


class Reporter(Protocol):
    """Where progress goes."""

    def start(self, index: int, name: str) -> None: ...
    def progress(self, event: Progress) -> None: ...
    def done(self, index: int, line: str) -> None: ...
    def close(self) -> None: ...


class Lines:
    """One plain line per photo on standard error (for logs and pipes)."""

    def __init__(self, total: int) -> None:
        self.total = total

    def start(self, index: int, name: str) -> None:
        pass

    def progress(self, event: Progress) -> None:
        pass

    def done(self, index: int, line: str) -> None:
        print(f"[{index + 1}/{self.total}] {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class Bars:
    """tqdm bars on a terminal: photos done, and the current photo's attack iterations."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.photos = tqdm(
            total=total, unit="photo", position=0, file=sys.stderr, dynamic_ncols=True
        )
        self.iterations: Any = None

    def start(self, index: int, name: str) -> None:
        self.iterations = self._tqdm(
            total=0,
            desc=name,
            unit="it",
            position=1,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def progress(self, event: Progress) -> None:
        bar = self.iterations
        if bar is None:
            return
        bar.set_postfix_str(event.stage, refresh=False)
        if event.iterations and bar.total != event.iterations:
            bar.reset(total=event.iterations)
        if event.iterations:
            bar.n = event.iteration
        bar.refresh()

    def done(self, index: int, line: str) -> None:
        if self.iterations is not None:
            self.iterations.close()
            self.iterations = None
        self.photos.update(1)
        self._tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.iterations is not None:
            self.iterations.close()
        self.photos.close()
