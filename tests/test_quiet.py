"""A normal run prints no dependency warnings (cvg_bench/quiet.py says what is silenced, why)."""

from __future__ import annotations

import subprocess
import sys

LOAD = """
from cvg_bench import registry
gen = registry.build("generator", {"name": "tiny", "num_inference_steps": 2})
from cvg_bench.shapes.grammar import parse
gen.sample(parse("a red circle on the left of a blue square"), 0)
print("OK")
"""


def test_loading_and_sampling_the_tiny_generator_prints_nothing_else():
    proc = subprocess.run([sys.executable, "-W", "default", "-c", LOAD], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip() == "OK", proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_dtype_kwarg_uses_the_current_name():
    import torch

    from cvg_bench.quiet import dtype_kwarg

    (key,) = dtype_kwarg(torch.float16)
    assert key in ("dtype", "torch_dtype")
    from diffusers.utils import deprecation_utils

    if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE"):
        assert key == "dtype"
