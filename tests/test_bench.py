"""The bench script's memory measurement reads what a step really allocates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import torch
from cvg_bench.bench import exact_memory_accounting, peak_rss
assert exact_memory_accounting()
def step(mb):
    x = torch.ones(mb * 2**20 // 4)
    return float(x.sum())
out = []
for mb in (64, 64, 128):  # the repeat reuses no freed pages: it must read 64 again
    with peak_rss() as mem:
        step(mb)
    out.append(mem["peak_mb"])
with peak_rss() as idle:
    pass
print(*out, idle["peak_mb"])
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_of_a_step_is_its_allocation_each_time():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, again, double, idle = map(float, proc.stdout.split())
    assert first == pytest.approx(64, rel=0.1)
    assert again == pytest.approx(64, rel=0.1)
    assert double == pytest.approx(128, rel=0.1)
    assert idle < 5
