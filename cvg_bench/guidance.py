"""Gradient guidance on the first denoising steps, shared by CVG and the energy baselines.

A method defines a differentiable ``energy`` of the captured cross-attention maps; the hook
updates z_t <- z_t - eta_t * D(grad_z energy) on the guided steps only, where D is the
gradient-norm control. Same steps, same schedule, same control for every method, so
comparisons between them are fair.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from cvg_bench.generators.base import AttentionMaps, AttentionSelection, PromptTokens, StepContext
from cvg_bench.methods.base import GuidanceMethod
from cvg_bench.types import PromptSpec

ETA_SCHEDULES = ("constant", "linear")
GRAD_NORMS = ("normalize", "clip", "none")


@dataclass
class GuidanceStats:
    """What happened in one sample's guidance (stored in the sample's record)."""

    steps: list[int] = field(default_factory=list)
    energies: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    nonfinite_skips: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "energies": self.energies, "grad_norms": self.grad_norms,
                "nonfinite_skips": self.nonfinite_skips}


def update_direction(grad: torch.Tensor, latents: torch.Tensor, mode: str, max_norm: float) -> torch.Tensor:
    """Gradient-norm control. ``normalize`` rescales the gradient to the latent's norm, so eta
    is a fraction of the latent's scale at every step; ``clip`` caps its norm at ``max_norm``."""
    if mode == "none":
        return grad
    norm = grad.norm()
    if mode == "clip":
        return grad * min(1.0, max_norm / (float(norm) + 1e-12))
    return grad / (norm + 1e-12) * latents.detach().norm()


class EnergyGuidance(GuidanceMethod):
    """Base of gradient-guidance methods: subclasses define ``energy`` (and ``prepare``).

    ``guided_steps``: the first N sampler steps are guided. ``iterations``: gradient steps per
    guided step (Attend-and-Excite's iterative refinement uses more than one, stopping early
    once the energy is below ``energy_threshold``).
    """

    def __init__(self, guided_steps: int = 2, eta: float = 0.1, eta_schedule: str = "constant",
                 grad_norm: str = "normalize", max_grad_norm: float = 1.0, iterations: int = 1,
                 energy_threshold: float | None = None, layers: list[str] | None = None,
                 heads: list[int] | None = None) -> None:
        if eta_schedule not in ETA_SCHEDULES:
            raise ValueError(f"eta_schedule={eta_schedule!r}; accepted: {', '.join(ETA_SCHEDULES)}")
        if grad_norm not in GRAD_NORMS:
            raise ValueError(f"grad_norm={grad_norm!r}; accepted: {', '.join(GRAD_NORMS)}")
        if guided_steps < 0 or iterations < 1 or not math.isfinite(eta):
            raise ValueError(f"guided_steps={guided_steps} (>= 0), iterations={iterations} (>= 1) "
                             f"and eta={eta} (finite) are out of range")
        self.guided_steps, self.eta, self.eta_schedule = guided_steps, eta, eta_schedule
        self.grad_norm, self.max_grad_norm = grad_norm, max_grad_norm
        self.iterations, self.energy_threshold = iterations, energy_threshold
        self.layers = tuple(layers) if layers else None
        self.heads = tuple(heads) if heads else None

    def eta_at(self, step_index: int) -> float:
        if self.eta_schedule == "linear":  # decays towards 0 at the last guided step
            return self.eta * (1.0 - step_index / max(self.guided_steps, 1))
        return self.eta

    def selection(self, tokens: PromptTokens) -> AttentionSelection:
        return AttentionSelection(layers=self.layers, heads=self.heads, tokens=tokens.key_tokens)

    def prepare(self, generator, spec: PromptSpec) -> dict[str, Any]:
        """Per-sample state for ``energy`` (token indices, the target...)."""
        tokens = generator.prompt_tokens(spec)
        return {"tokens": tokens, "selection": self.selection(tokens)}

    @abstractmethod
    def energy(self, attn: AttentionMaps, state: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """A scalar to minimise, differentiable through ``attn``."""

    def make_hook(self, generator, spec: PromptSpec) -> "EnergyHook | None":
        self.check_spec(spec)
        return EnergyHook(self, self.prepare(generator, spec)) if self.guided_steps else None


class EnergyHook:
    """The per-step hook of an :class:`EnergyGuidance` method for one sample."""

    def __init__(self, method: EnergyGuidance, state: dict[str, Any]) -> None:
        self.method, self.state = method, state
        self.stats = GuidanceStats()

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        m = self.method
        if ctx.step_index >= m.guided_steps:
            return ctx.latents
        latents = ctx.latents
        for _ in range(m.iterations):
            z = latents.detach().requires_grad_(True)
            energy = m.energy(ctx.run_attention(z, self.state["selection"]), self.state, ctx)
            self.stats.steps.append(ctx.step_index)
            self.stats.energies.append(energy.item())
            if m.energy_threshold is not None and energy.item() < m.energy_threshold:
                break
            (grad,) = torch.autograd.grad(energy, z)
            if not torch.isfinite(grad).all():  # never propagate NaN/inf into the sample
                self.stats.nonfinite_skips += 1
                self.stats.grad_norms.append(float("nan"))
                break
            self.stats.grad_norms.append(float(grad.norm()))
            step = update_direction(grad, z, m.grad_norm, m.max_grad_norm)
            latents = (z - m.eta_at(ctx.step_index) * step).detach()
        return latents


def mean_token_maps(attn: AttentionMaps, groups: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """One map per token group (an entity's or a word's tokens): the mean over its tokens,
    heads and layers, at the largest captured resolution: ``(groups, frames, h, w)``."""
    slot = {tok: i for i, tok in enumerate(attn.tokens)}
    size = max((tuple(m.shape[-2:]) for m in attn.maps.values()), key=lambda s: s[0] * s[1])
    per_layer = []
    for maps in attn.maps.values():  # (heads, tokens, frames, h, w)
        groups_maps = torch.stack([maps[:, [slot[t] for t in g]].mean(1) for g in groups], 1)
        m = groups_maps.mean(0)  # (groups, frames, h, w)
        if tuple(m.shape[-2:]) != size:
            m = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
        per_layer.append(m)
    return torch.stack(per_layer).mean(0)


def spatial_distribution(maps: torch.Tensor) -> torch.Tensor:
    """Each (…, h, w) map normalised to sum to 1 over space."""
    return maps / (maps.sum(dim=(-2, -1), keepdim=True) + 1e-8)


def word_tokens(generator, spec: PromptSpec, spans: tuple[tuple[int, int], ...]) -> tuple[tuple[int, ...], ...]:
    """Token indices of each character span, through the generator's own span lookup."""
    from dataclasses import replace

    from cvg_bench.types import Entity

    probe = replace(spec, entities=tuple(Entity(phrase=spec.prompt[a:b], noun=spec.prompt[a:b],
                                                span=(a, b), word_spans=((a, b),))
                                         for a, b in spans))
    return generator.prompt_tokens(probe).entity_tokens
