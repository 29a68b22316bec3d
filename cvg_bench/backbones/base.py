"""Base class of CVG's frozen classifier backbones."""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """A frozen feature extractor: phi (steps x frames x H x W x channels-like volume) -> vector.

    Subclasses set ``out_dim`` and implement ``forward``; :meth:`freeze` stops every update.
    """

    out_dim: int = 0

    def freeze(self) -> "Backbone":
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        return self

    def forward(self, phi: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
