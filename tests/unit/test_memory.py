"""Memory goes back to the system after photo-sized work (glibc arenas, mmap threshold, trim).

A masker's RSS ratcheted from 1.6 to 7 GB over a hostile probe and was never returned: freed
photo-sized arrays stayed in glibc's per-thread arenas.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from faceoff.common import memory
from faceoff.common.settings import ServerSettings, SettingsError

glibc = pytest.mark.skipif(memory._LIBC is None, reason="needs glibc")

#: Eight threads each allocate and free 120 arrays of 0.2-30 MB among many small ones, as
#: concurrent requests' photos, crops and batches do; prints RSS growth in MiB afterwards.
_WORKLOAD = textwrap.dedent(
    """
    import re, sys, threading
    import numpy as np
    from faceoff.common import memory

    def rss():
        return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024

    if sys.argv[1] == "on":
        memory.configure(2, 1 << 20)
    start = rss()

    def work(seed):
        rng = np.random.default_rng(seed)
        keep = []
        for _ in range(120):
            keep.append(np.ones(int(rng.integers(200_000, 30_000_000)), np.uint8))
            if len(keep) > 8:
                keep.pop(0)
            _small = [np.ones(int(rng.integers(1000, 100_000)), np.uint8) for _ in range(50)]

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sys.argv[1] == "on":
        memory.trim(0)
    print(rss() - start)
    """
)


def _growth(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, mode], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@glibc
def test_configured_malloc_gives_photo_sized_memory_back() -> None:
    default, configured = _growth("off"), _growth("on")
    assert configured < 100, f"{configured} MiB kept after the work (glibc's defaults: {default})"
    assert configured < default / 2


@glibc
def test_configure_sets_what_it_is_given_and_zero_leaves_glibc_alone() -> None:
    assert memory.configure(0, 0) == {}
    assert memory.configure(2, 1 << 20) == {"arenas": 2, "mmap_threshold": 1 << 20}


@glibc
def test_trim_runs_at_most_once_per_interval() -> None:
    assert memory.trim(0.0)
    assert not memory.trim(3600.0)


def test_the_malloc_settings_are_server_settings() -> None:
    assert ServerSettings().malloc_arenas == 2
    assert ServerSettings().mmap_threshold_bytes == 1 << 20
    with pytest.raises(SettingsError, match="FACEOFF_MALLOC_ARENAS"):
        ServerSettings(malloc_arenas=-1)
