"""A lossless stand-in VAE: fold each ``factor x factor`` pixel block into channels.

Pixel-space diffusion at 32x32 costs ~6x more per step than on the folded 12x16x16 input
(notes/measured-facts.md), and a trained VAE would be one more model to ship. The pipeline
reads ``vae.config.block_out_channels`` for its scale factor (2 ** (len - 1)) and
``scaling_factor`` for the latent scale, so both are config entries here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin


class PixelFoldVAE(ModelMixin, ConfigMixin):
    """``encode``: (N, C, H, W) in [-1, 1] -> (N, C*f*f, H/f, W/f); ``decode`` inverts it exactly."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        factor: int = 2,
        block_out_channels: tuple[int, ...] = (1, 1),
        scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if factor < 1 or 2 ** (len(block_out_channels) - 1) != factor:
            raise ValueError(
                f"factor={factor} must equal 2 ** (len(block_out_channels) - 1) = "
                f"{2 ** (len(block_out_channels) - 1)} (the pipeline derives its scale factor from it)"
            )
        # one buffer so save/load round-trips through safetensors like any other model
        self.register_buffer("_fold_factor", torch.tensor(float(factor)), persistent=True)

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.factor**2

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        z = F.pixel_unshuffle(x, self.config.factor)
        # deterministic: std 0, so .sample() == .mode() == the folded pixels
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, **kwargs) -> DecoderOutput | tuple:
        x = F.pixel_shuffle(z, self.config.factor)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample
