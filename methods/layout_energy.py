"""Layout and motion energies on attention centroids (self-guidance style)."""

from __future__ import annotations

import re
from typing import Any

import torch

from cvg_bench.generators.base import AttentionMaps, StepContext
from cvg_bench.guidance import EnergyGuidance, mean_token_maps, spatial_distribution
from cvg_bench.registry import register

# relation -> (axis, sign): entity 1's coordinate minus entity 2's must be sign * margin or more.
# Coordinates run in [0, 1], x to the right and y downwards.
RELATIONS = {"on the left of": (0, -1), "left": (0, -1), "on the right of": (0, 1), "right": (0, 1),
             "above": (1, -1), "on top of": (1, -1), "on": (1, -1), "below": (1, 1), "under": (1, 1)}
# direction -> (axis, sign) of the displacement from the first to the last frame.
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}
# action -> sign of the change of the map's spread from the first to the last frame.
ACTIONS = {"growing": 1, "shrinking": -1}
# interaction -> sign of the change of the entities' distance (hitting: they close in).
INTERACTIONS = {"hitting": -1, "approaching": -1, "moving away from": 1}


def centroids(maps: torch.Tensor) -> torch.Tensor:
    """(E, F, h, w) maps -> (E, F, 2) centroids (x, y) in [0, 1]."""
    p = spatial_distribution(maps)
    h, w = maps.shape[-2:]
    ys = (torch.arange(h, dtype=maps.dtype, device=maps.device) + 0.5) / h
    xs = (torch.arange(w, dtype=maps.dtype, device=maps.device) + 0.5) / w
    return torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)


def spread(maps: torch.Tensor) -> torch.Tensor:
    """(E, F, h, w) -> (E, F): the RMS distance of the map's mass from its centroid."""
    p = spatial_distribution(maps)
    h, w = maps.shape[-2:]
    ys = ((torch.arange(h, dtype=maps.dtype, device=maps.device) + 0.5) / h)[:, None]
    xs = ((torch.arange(w, dtype=maps.dtype, device=maps.device) + 0.5) / w)[None, :]
    c = centroids(maps)
    d2 = (xs - c[..., 0, None, None]) ** 2 + (ys - c[..., 1, None, None]) ** 2
    return (p * d2).sum(dim=(-2, -1)).clamp_min(1e-8).sqrt()


LOOKUPS = {"spatial_relationships": RELATIONS, "motion_binding": DIRECTIONS,
           "action_binding": ACTIONS, "object_interactions": INTERACTIONS}


def label_parts(label: str) -> list[str]:
    """Per-entity parts of a label: "left/right" (shapes world), "left|right" (T2V-CompBench)."""
    return re.split(r"[/|]", label)


def hinge(x: torch.Tensor, margin: float) -> torch.Tensor:
    return torch.relu(margin - x)


@register("method", "layout_energy")
class LayoutEnergy(EnergyGuidance):
    """Layout/motion energies on attention centroids: relations, directions, actions."""

    supported_categories = ("spatial_relationships", "motion_binding", "action_binding",
                            "object_interactions")

    def __init__(self, guided_steps: int = 2, eta: float = 0.1, eta_schedule: str = "constant",
                 grad_norm: str = "normalize", max_grad_norm: float = 1.0, iterations: int = 1,
                 energy_threshold: float | None = None, layers: list[str] | None = None,
                 heads: list[int] | None = None, margin: float = 0.2) -> None:
        super().__init__(guided_steps, eta, eta_schedule, grad_norm, max_grad_norm, iterations,
                         energy_threshold, layers, heads)
        self.margin = margin

    def check_spec(self, spec) -> None:
        """Refuse, before any generation, a category or label no energy here expresses."""
        super().check_spec(spec)
        lookup = LOOKUPS[spec.category]
        unknown = [p for p in label_parts(spec.label)
                   if p not in lookup] if spec.label else [spec.label]
        needed = 1 if spec.category in ("motion_binding", "action_binding") else 2
        if unknown or len(spec.entities) < needed:
            raise ValueError(
                f"layout_energy cannot guide prompt {spec.prompt_id!r} ({spec.category}, label "
                f"{spec.label!r}, {len(spec.entities)} entities): accepted labels "
                f"{', '.join(lookup)} with at least {needed} entities")

    def energy(self, attn: AttentionMaps, state: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        spec = ctx.spec
        maps = mean_token_maps(attn, state["tokens"].entity_tokens)  # (E, F, h, w)
        parts = label_parts(spec.label)
        if spec.category == "spatial_relationships":
            axis, sign = RELATIONS[spec.label]
            c = centroids(maps)
            return hinge(sign * (c[0, :, axis] - c[1, :, axis]), self.margin).mean()
        if spec.category == "motion_binding":
            c = centroids(maps)
            terms = [hinge(sign * (c[e, -1, axis] - c[e, 0, axis]), self.margin)
                     for e, (axis, sign) in enumerate(DIRECTIONS[p] for p in parts)]
            return torch.stack(terms).mean()
        if spec.category == "action_binding":
            s = spread(maps)
            terms = [hinge(ACTIONS[p] * (s[e, -1] - s[e, 0]), self.margin / 4)
                     for e, p in enumerate(parts)]
            return torch.stack(terms).mean()
        c = centroids(maps)
        dist = (c[0] - c[1]).norm(dim=-1)  # (F,)
        return hinge(INTERACTIONS[spec.label] * (dist[-1] - dist[0]), self.margin)
