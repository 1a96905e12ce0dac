"""keep_freed_memory: freed buffers are served again from the heap, without new page faults (glibc only)."""
import platform
import subprocess
import sys

import pytest

from mst_lava.resources import keep_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# a 64 MiB buffer (above glibc's largest automatic mmap threshold, 32 MiB), freed, then allocated and written again:
# minor page faults of the second allocation. Transparent huge pages are turned off for the child
# (PR_SET_THP_DISABLE), so that a fresh mapping faults in 4 KiB pages whatever the kernel's THP setting.
CHILD = """
import ctypes, resource, sys
import numpy as np
if ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) != 0:
    print(-1)
    sys.exit()
if sys.argv[1] == "1":
    from mst_lava.resources import keep_freed_memory
    assert keep_freed_memory()
a = np.ones(16 << 20, dtype=np.float32)
del a
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(16 << 20, dtype=np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(kept: bool) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if kept else "0"], capture_output=True, text=True,
                         check=True)
    faults = int(out.stdout.strip())
    if faults < 0:
        pytest.skip("prctl(PR_SET_THP_DISABLE) refused: page faults would depend on the kernel's THP setting")
    return faults


@pytest.mark.skipif(not GLIBC, reason="glibc on Linux only")
def test_freed_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    assert _faults(kept=False) > pages // 2       # glibc as is: a fresh mmap, faulted in page by page
    assert _faults(kept=True) < pages // 20       # kept: the freed heap memory again


def test_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
