"""The generator's own sampling, unguided."""

from __future__ import annotations

from cvg_bench.registry import register
from cvg_bench.methods.base import GuidanceMethod


@register("method", "vanilla")
class Vanilla(GuidanceMethod):
    """No guidance: the generator's plain sampler (the baseline every table starts from)."""

    def make_hook(self, generator, spec):
        return None
