"""Attend-and-Excite (Chefer et al. 2023) on video: excite the most neglected entity."""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F

from cvg_bench.generators.base import AttentionMaps, AttentionSelection, StepContext
from cvg_bench.guidance import EnergyGuidance, mean_token_maps, word_tokens
from cvg_bench.registry import register


def gaussian_smooth(maps: torch.Tensor, sigma: float = 0.5, size: int = 3) -> torch.Tensor:
    """A&E's Gaussian smoothing of each (h, w) map, so one noisy pixel cannot satisfy it."""
    x = torch.arange(size, dtype=maps.dtype, device=maps.device) - size // 2
    k1 = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (k1[:, None] * k1[None, :]) / (k1.sum() ** 2)
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    out = F.conv2d(F.pad(flat, (size // 2,) * 4, mode="reflect"), kernel[None, None])
    return out.reshape(maps.shape)


@register("method", "attend_excite")
class AttendExcite(EnergyGuidance):
    """Attend-and-Excite: raise the max attention of the most neglected entity, every frame."""

    def __init__(self, guided_steps: int = 2, eta: float = 0.1, eta_schedule: str = "constant",
                 grad_norm: str = "normalize", max_grad_norm: float = 1.0, iterations: int = 1,
                 energy_threshold: float | None = None, layers: list[str] | None = None,
                 heads: list[int] | None = None, sigma: float = 0.5) -> None:
        super().__init__(guided_steps, eta, eta_schedule, grad_norm, max_grad_norm, iterations,
                         energy_threshold, layers, heads)
        self.sigma = sigma

    def prepare(self, generator, spec) -> dict[str, Any]:
        """A&E reads every word token of the prompt (start/end/padding tokens excluded)."""
        tokens = generator.prompt_tokens(spec)
        if not tokens.entity_tokens:
            raise ValueError(f"attend_excite needs entity tokens; prompt {spec.prompt!r} has none")
        spans = tuple(m.span() for m in re.finditer(r"\S+", spec.prompt))
        words = tuple(sorted({t for group in word_tokens(generator, spec, spans) for t in group}))
        selection = AttentionSelection(layers=self.layers, heads=self.heads, tokens=words)
        return {"tokens": tokens, "selection": selection, "words": words}

    def energy(self, attn: AttentionMaps, state: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """max over entities of (1 - mean over frames of max over pixels of the smoothed map).

        As in A&E each entity's map is renormalised by the attention mass of all the
        prompt's word tokens at that pixel (A&E re-softmaxes without the start token)."""
        maps = mean_token_maps(attn, state["tokens"].entity_tokens)  # (E, F, h, w)
        total = mean_token_maps(attn, tuple((t,) for t in state["words"])).sum(0)
        maps = maps / (total + 1e-8)
        peak = gaussian_smooth(maps, self.sigma).amax(dim=(-2, -1))  # (E, F)
        return (1.0 - peak.mean(1)).max()
