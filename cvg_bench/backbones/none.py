"""The ablation without a backbone: the head reads phi directly."""

from __future__ import annotations

import torch

from cvg_bench.backbones.base import Backbone
from cvg_bench.registry import register


@register("backbone", "none")
class NoBackbone(Backbone):
    """No backbone (ablation): the head is linear on the flattened volume phi."""

    def __init__(self, frames: int, map_size: int, channels: int = 3) -> None:
        super().__init__(frames, map_size)
        self.in_channels = channels
        self.out_dim = frames * channels * map_size * map_size

    def config(self):
        return {"channels": self.in_channels}

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return volume.flatten(1)
