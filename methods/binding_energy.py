"""Attribute-binding energy on attention maps (SynGen style, Rassin et al. 2023)."""

from __future__ import annotations

from typing import Any

import torch

from cvg_bench.generators.base import AttentionMaps, AttentionSelection, StepContext
from cvg_bench.guidance import EnergyGuidance, mean_token_maps, spatial_distribution, word_tokens
from cvg_bench.registry import register


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Symmetric KL between spatial distributions (…, h, w) -> (…)."""
    p, q = p.clamp_min(1e-8), q.clamp_min(1e-8)
    return 0.5 * ((p * (p / q).log()).sum((-2, -1)) + (q * (q / p).log()).sum((-2, -1)))


@register("method", "binding_energy")
class BindingEnergy(EnergyGuidance):
    """Binding energy: each attribute's map overlaps its own noun's map, not other nouns'."""

    supported_categories = ("consistent_attribute_binding", "dynamic_attribute_binding")

    def prepare(self, generator, spec) -> dict[str, Any]:
        """Attribute words are the spec's relation spans (the colours that y binds), nouns the
        entities' words, in prompt order."""
        tokens = generator.prompt_tokens(spec)
        attrs = word_tokens(generator, spec, spec.relation_spans)
        if not attrs or not tokens.entity_tokens:
            raise ValueError(f"binding_energy needs attribute and noun words; prompt "
                             f"{spec.prompt!r} has relation spans {spec.relation_spans}")
        every = tuple(sorted({t for g in (*attrs, *tokens.entity_tokens) for t in g}))
        return {"tokens": tokens, "attrs": attrs, "selection":
                AttentionSelection(layers=self.layers, heads=self.heads, tokens=every)}

    def energy(self, attn: AttentionMaps, state: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        nouns = spatial_distribution(mean_token_maps(attn, state["tokens"].entity_tokens))
        attrs = spatial_distribution(mean_token_maps(attn, state["attrs"]))  # (A, F, h, w)
        if ctx.spec.category == "dynamic_attribute_binding":
            # "a square changing from red to blue": red binds early frames, blue late ones.
            frames = nouns.shape[1]
            half = max(frames // 2, 1)
            early = symmetric_kl(attrs[0, :half], nouns[0, :half]).mean()
            late = symmetric_kl(attrs[-1, frames - half:], nouns[0, frames - half:]).mean()
            return early + late
        terms = []
        for i in range(min(len(attrs), len(nouns))):  # attribute i belongs to noun i
            own = symmetric_kl(attrs[i], nouns[i]).mean()
            others = [symmetric_kl(attrs[i], nouns[j]).mean() for j in range(len(nouns)) if j != i]
            terms.append(own - (torch.stack(others).mean() if others else 0.0))
        return torch.stack(terms).mean()
