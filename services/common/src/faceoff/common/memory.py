"""Giving memory back to the system after a costly request (glibc's allocator).

A masker's resident memory used to ratchet up over a hostile probe (1.6 GB to 7 GB) and never
come back: glibc keeps freed memory for reuse in up to 8 arenas per core, and after an mmapped
block is freed it raises its mmap threshold (up to 32 MiB), so later photo-sized arrays come
from the heap, whose free memory is returned only from its top. Two measures, applied at a
service's start and after its requests:

- :func:`configure`: ``mallopt`` at start: at most ``arenas`` arenas (``M_ARENA_MAX``, as the
  environment's ``MALLOC_ARENA_MAX`` would) and a fixed mmap threshold (``M_MMAP_THRESHOLD``,
  which also turns the dynamic one off), so every array of a photo, crop or batch above it is
  its own mapping and goes back to the system when freed;
- :func:`trim`: ``malloc_trim(0)`` after a request (at most once per ``interval``), which
  returns the free pages of every arena, not only the heap's top.

The server settings ``FACEOFF_MALLOC_ARENAS`` (default 2) and ``FACEOFF_MMAP_THRESHOLD_BYTES``
(default 1 MiB) set them; 0 leaves glibc's default. Where the C library is not glibc (macOS,
musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
import time
from pathlib import Path

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Shortest time between two trims.
TRIM_INTERVAL_SECONDS = 1.0

_lock = threading.Lock()
_last_trim = 0.0


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def configure(arenas: int, mmap_threshold: int) -> dict[str, int]:
    """Set glibc's arena limit and mmap threshold (0: leave that one alone).

    Returns what was set (empty where glibc is absent or both are 0).
    """
    done: dict[str, int] = {}
    if _LIBC is None:
        return done
    if arenas and _LIBC.mallopt(_M_ARENA_MAX, arenas) == 1:
        done["arenas"] = arenas
    if mmap_threshold and _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1:
        done["mmap_threshold"] = mmap_threshold
    return done


def trim(interval: float = TRIM_INTERVAL_SECONDS) -> bool:
    """Return free heap memory to the system (``malloc_trim(0)``), unless one ran within
    ``interval`` seconds or runs now; True if this call trimmed."""
    global _last_trim
    if _LIBC is None:
        return False
    now = time.monotonic()
    if not _lock.acquire(blocking=False):
        return False
    try:
        if now - _last_trim < interval:
            return False
        _LIBC.malloc_trim(0)
        _last_trim = time.monotonic()
        return True
    finally:
        _lock.release()


def status_bytes(pid: int, key: str) -> int | None:
    """``key`` of ``/proc/<pid>/status`` in bytes (``VmRSS``, ``VmHWM``: the peak), or None when
    the process or the field is not there (another OS, a process gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def reset_peak(pid: int) -> None:
    """Reset ``pid``'s ``VmHWM`` to its current RSS (``clear_refs`` 5), where allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
