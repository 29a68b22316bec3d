"""Step (c): theta_agg, a small Transformer from per-entity maps to a spatio-temporal volume."""

from __future__ import annotations

import torch
from torch import nn


class AttentionAggregator(nn.Module):
    """Maps of one step -> volume A_hat_t ``(batch, frames, channels, s, s)``.

    Each (layer, head, frame) slice of the per-entity maps is one Transformer token: its maps
    flattened over (entity, y, x), projected, plus learned layer, head, frame and step
    embeddings. After the encoder, the tokens of each frame are averaged and decoded into
    ``out_channels`` maps; a linear skip from the mean entity maps keeps a direct path.
    """

    def __init__(self, num_layers: int, num_heads: int, max_entities: int, frames: int,
                 map_size: int, num_steps: int, out_channels: int, d_model: int = 64,
                 depth: int = 2, attn_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.shape = (num_layers, num_heads, max_entities, frames, map_size)
        self.out_channels = out_channels
        self.proj = nn.Linear(max_entities * map_size * map_size, d_model)
        self.layer_emb = nn.Parameter(torch.zeros(num_layers, 1, 1, d_model))
        self.head_emb = nn.Parameter(torch.zeros(1, num_heads, 1, d_model))
        self.frame_emb = nn.Parameter(torch.zeros(1, 1, frames, d_model))
        self.step_emb = nn.Embedding(num_steps, d_model)
        for p in (self.layer_emb, self.head_emb, self.frame_emb):
            nn.init.normal_(p, std=0.02)
        block = nn.TransformerEncoderLayer(d_model, attn_heads, 4 * d_model, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.decode = nn.Linear(d_model, out_channels * map_size * map_size)
        self.skip = nn.Linear(max_entities, out_channels)

    def forward(self, maps: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """``maps``: ``(batch, layers, heads, entities, frames, s, s)``; ``step``: ``(batch,)``
        indices into T. Returns ``(batch, frames, out_channels, s, s)``."""
        if tuple(maps.shape[1:6]) != self.shape:
            raise ValueError(f"maps of shape {tuple(maps.shape[1:])} do not fit this aggregator "
                             f"(layers, heads, entities, frames, s) = {self.shape}")
        b, L, H, E, Fr, s, _ = maps.shape
        tokens = self.proj(maps.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, L, H, Fr, E * s * s))
        tokens = tokens + self.layer_emb + self.head_emb + self.frame_emb
        tokens = tokens + self.step_emb(step)[:, None, None, None]
        encoded = self.encoder(tokens.reshape(b, L * H * Fr, -1)).reshape(b, L * H, Fr, -1)
        volume = self.decode(encoded.mean(1)).reshape(b, Fr, self.out_channels, s, s)
        skip = self.skip(maps.mean(dim=(1, 2)).permute(0, 2, 3, 4, 1))  # (b, F, s, s, C)
        return volume + skip.permute(0, 1, 4, 2, 3)
