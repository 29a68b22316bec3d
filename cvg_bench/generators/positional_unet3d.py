"""``UNet3DConditionModel`` with a Fourier embedding of each pixel's (x, y, frame) position.

The diffusers UNet3D has no positional embeddings: its spatial and temporal attention are
permutation-equivariant and position reaches it only through the convolutions' zero
padding. The tiny generator's denoiser ignores layout and direction words entirely, so this
was the first suspect; measured (README "Status"), it was not the cause: a plain UNet3D
trained on relation-heavy data at high noise learns them too. It stays an option
(``model.position_frequencies``) for experiments.

This subclass adds, after ``conv_in``, a 1x1 projection of sin/cos features of the pixel's
normalised coordinates (x, y in [-1, 1], frame in [0, 1], so any size and frame count
works). The projection starts at zero, so a model warm-started from plain UNet3D weights
computes exactly what it did before and learns to use position from there. Everything else
(the module names the attention capture relies on, ``attn2`` cross-attention) is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import ModelMixin, UNet3DConditionModel
from diffusers.configuration_utils import ConfigMixin
from torch import nn

# diffusers' pipeline loader checks a passed component against the base classes (ModelMixin,
# ...) that the component's own module exposes, so this module must expose ModelMixin.
__all__ = ["ModelMixin", "PositionalUNet3DConditionModel", "fourier_coordinates"]


def fourier_coordinates(frames: int, height: int, width: int, frequencies: int,
                        device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """sin/cos of (x, y, frame) at ``frequencies`` octaves: ``(frames, 6 * frequencies, H, W)``."""
    t = torch.linspace(0.0, 1.0, frames, device=device, dtype=dtype) if frames > 1 else \
        torch.zeros(1, device=device, dtype=dtype)
    y = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    x = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    tt, yy, xx = torch.meshgrid(t, y, x, indexing="ij")
    coords = torch.stack([xx, yy, tt], dim=1)  # (F, 3, H, W)
    scales = (2.0 ** torch.arange(frequencies, device=device, dtype=dtype)) * (math.pi / 2)
    angles = coords[:, :, None] * scales[None, None, :, None, None]  # (F, 3, K, H, W)
    feats = torch.cat([angles.sin(), angles.cos()], dim=2)
    return feats.flatten(1, 2)


class PositionalUNet3DConditionModel(UNet3DConditionModel):
    """UNet3D whose first feature map gets a learned function of the (x, y, frame) position."""

    def __init__(self, position_frequencies: int = 4, **unet3d_config: Any) -> None:
        if position_frequencies < 1:
            raise ValueError(f"position_frequencies={position_frequencies} must be >= 1 "
                             "(use UNet3DConditionModel for no position embedding)")
        super().__init__(**unet3d_config)  # registers UNet3D's own config keys
        self.register_to_config(position_frequencies=position_frequencies)
        self.position_proj = nn.Conv2d(6 * position_frequencies, self.config.block_out_channels[0], 1)
        nn.init.zeros_(self.position_proj.weight)  # warm start: the same function as without it
        nn.init.zeros_(self.position_proj.bias)
        self._num_frames = 1
        # conv_in sees (batch * frames, C, H, W) in (batch, frame) order: add position there,
        # keeping conv_in's own weights and state-dict names.
        self.conv_in.register_forward_hook(self._add_position)

    @staticmethod
    def _get_init_keys(input_class: type) -> set[str]:
        """The config keys ``from_pretrained`` passes to ``__init__``: ours plus UNet3D's (our
        ``__init__`` takes those as ``**unet3d_config``, which signature inspection cannot see)."""
        keys = ConfigMixin._get_init_keys(input_class)
        if isinstance(input_class, type) and issubclass(input_class, PositionalUNet3DConditionModel):
            keys = (keys | ConfigMixin._get_init_keys(UNet3DConditionModel)) - {"unet3d_config"}
        return keys

    def _add_position(self, module: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        frames = self._num_frames
        if out.shape[0] % frames:
            raise RuntimeError(f"conv_in batch {out.shape[0]} is not a multiple of {frames} frames")
        feats = fourier_coordinates(frames, out.shape[-2], out.shape[-1], self.config.position_frequencies,
                                    device=out.device, dtype=self.position_proj.weight.dtype)
        pos = self.position_proj(feats).to(out.dtype)  # (F, C, H, W)
        return out + pos.repeat(out.shape[0] // frames, 1, 1, 1)

    def forward(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self._num_frames = int(sample.shape[2])
        return super().forward(sample, *args, **kwargs)
