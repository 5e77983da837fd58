"""``mlepi.ml.memory.keep_freed_memory``: freed memory stays in the process for the next prediction."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
import numpy as np
from mlepi.ml.memory import keep_freed_memory

def rss_mib():
    with open("/proc/self/status") as f:
        return next(float(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))

kept = keep_freed_memory() if sys.argv[1] == "keep" else None
before = rss_mib()
block = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
del block
print(kept, rss_mib() - before)
"""


def freed_memory_still_held(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    kept, held = out.stdout.split()
    return kept, float(held)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc and /proc: Linux only")
def test_freed_memory_is_kept_only_when_asked():
    kept, held = freed_memory_still_held("keep")
    assert kept == "True"
    assert held > 350, f"only {held:.0f} MiB of a freed 400 MiB block stayed in the process"
    _, default = freed_memory_still_held("default")
    assert default < 50, f"glibc's default kept {default:.0f} MiB (expected the block back in the OS)"
