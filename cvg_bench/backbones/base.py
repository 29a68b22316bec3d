"""Base class of CVG's frozen classifier backbones."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    """A frozen feature extractor over a volume ``(batch, frames, channels, s, s)``.

    The aggregator writes ``in_channels`` channels per frame for it; ``forward`` returns
    ``(batch, out_dim)`` features for the trainable head. Constructed with the volume's
    geometry (``frames``, ``map_size``) from the classifier, plus its own config keys.
    """

    in_channels: int = 3
    out_dim: int = 0

    def __init__(self, frames: int, map_size: int) -> None:
        super().__init__()
        self.frames, self.map_size = frames, map_size

    def freeze(self) -> "Backbone":
        """No parameter of a backbone is ever updated by CVG's training."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> "Backbone":
        return super().train(False)  # frozen: dropout/BN stay in eval mode

    def config(self) -> dict[str, Any]:
        """Constructor keys to rebuild this backbone (saved with the classifier)."""
        return {}

    def forward(self, volume: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
