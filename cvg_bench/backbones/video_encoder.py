"""The embedded default backbone: a small 3D-conv video encoder, pre-trained, then frozen."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from cvg_bench.backbones.base import Backbone
from cvg_bench.registry import register

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "video_encoder.safetensors"


@register("backbone", "video-encoder")
class VideoEncoder(Backbone):
    """Small 3D-conv video encoder pre-trained on rendered shapes layouts, frozen (default)."""

    def __init__(self, frames: int, map_size: int, channels: int = 3, width: int = 32,
                 out_dim: int = 128, weights: str | None = "default") -> None:
        super().__init__(frames, map_size)
        self.in_channels, self.width, self.out_dim = channels, width, out_dim
        self.net = nn.Sequential(
            nn.Conv3d(channels, width, 3, padding=1), nn.GELU(),
            nn.Conv3d(width, width, 3, padding=1, stride=(1, 2, 2)), nn.GELU(),
            nn.Conv3d(width, 2 * width, 3, padding=1, stride=(2, 2, 2)), nn.GELU(),
            nn.AdaptiveAvgPool3d((2, 2, 2)), nn.Flatten(),
            nn.Linear(2 * width * 8, out_dim),
        )
        self.weights = weights
        if weights:
            path = DEFAULT_WEIGHTS if weights == "default" else Path(weights)
            if not path.is_file():
                raise FileNotFoundError(
                    f"video-encoder weights not found at {path}; pre-train them with "
                    "`python -m cvg_bench train component=video_encoder`, or set "
                    "backbone.weights=null for a random (untrained) encoder")
            self.load_state_dict(load_file(path))

    def config(self):
        return {"channels": self.in_channels, "width": self.width, "out_dim": self.out_dim,
                "weights": None}  # the classifier file carries the frozen weights itself

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.net(volume.transpose(1, 2))  # (b, F, C, s, s) -> (b, C, F, s, s)
