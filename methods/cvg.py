"""CVG guided sampling (inference steps (a)-(e) of shared/seed/cvg-method.txt)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import entity_maps
from cvg_bench.generators.base import StepContext
from cvg_bench.methods.base import GuidanceMethod
from cvg_bench.registry import register
from cvg_bench.types import PromptSpec

DEFAULT_CLASSIFIER = Path(__file__).resolve().parent.parent / "cvg_bench" / "assets" / "cvg_classifier"
ETA_SCHEDULES = ("constant", "linear")
GRAD_NORMS = ("normalize", "clip", "none")


@dataclass
class GuidanceStats:
    """What happened in one sample's guidance (stored in the sample's record)."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    nonfinite_skips: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "losses": self.losses, "grad_norms": self.grad_norms,
                "nonfinite_skips": self.nonfinite_skips}


def update_direction(grad: torch.Tensor, latents: torch.Tensor, mode: str, max_norm: float) -> torch.Tensor:
    """Gradient-norm control. ``normalize`` rescales the gradient to the latent's RMS, so eta is
    a fraction of the latent's scale at every step; ``clip`` caps its norm at ``max_norm``."""
    if mode == "none":
        return grad
    norm = grad.norm()
    if mode == "clip":
        return grad * min(1.0, max_norm / (float(norm) + 1e-12))
    return grad / (norm + 1e-12) * latents.detach().norm()


class CVGHook:
    """The per-step hook: z_t <- z_t - eta_t * grad(-log s_t[y]) on the guided steps."""

    def __init__(self, method: "CVG", generator, spec: PromptSpec) -> None:
        self.method, self.spec = method, spec
        self.tokens = generator.prompt_tokens(spec)
        self.selection = method.classifier.features.selection(self.tokens)
        self.target = method.classifier.label_index(spec.category, spec.label)
        self.stats = GuidanceStats()

    def eta(self, step_index: int) -> float:
        m = self.method
        if m.eta_schedule == "linear":  # decays to 0 after the last guided step
            return m.eta * (1.0 - step_index / m.guided_steps)
        return m.eta

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        if ctx.step_index >= self.method.guided_steps:
            return ctx.latents
        clf = self.method.classifier
        latents = ctx.latents.detach().requires_grad_(True)
        attn = ctx.run_attention(latents, self.selection)
        maps, _ = entity_maps(attn, self.tokens, clf.features)
        slot = torch.tensor([clf.step_slot(ctx.step_index)])
        log_s = clf.log_probs(maps[None], slot, self.spec.category, self.spec.label_set)
        loss = -log_s[0, self.target]
        (grad,) = torch.autograd.grad(loss, latents)
        self.stats.steps.append(ctx.step_index)
        self.stats.losses.append(float(loss))
        if not torch.isfinite(grad).all():  # never propagate NaN/inf into the sample
            self.stats.nonfinite_skips += 1
            self.stats.grad_norms.append(float("nan"))
            return ctx.latents
        self.stats.grad_norms.append(float(grad.norm()))
        step = update_direction(grad, latents, self.method.grad_norm, self.method.max_grad_norm)
        return (latents - self.eta(ctx.step_index) * step).detach()


@register("method", "cvg")
class CVG(GuidanceMethod):
    """CVG: gradient of a cross-attention classifier's -log s_t[y] on the first steps."""

    def __init__(self, classifier: str | None = None, guided_steps: int = 2, eta: float = 0.1,
                 eta_schedule: str = "constant", grad_norm: str = "normalize",
                 max_grad_norm: float = 1.0) -> None:
        if eta_schedule not in ETA_SCHEDULES:
            raise ValueError(f"eta_schedule={eta_schedule!r}; accepted: {', '.join(ETA_SCHEDULES)}")
        if grad_norm not in GRAD_NORMS:
            raise ValueError(f"grad_norm={grad_norm!r}; accepted: {', '.join(GRAD_NORMS)}")
        if guided_steps < 0 or not math.isfinite(eta):
            raise ValueError(f"guided_steps={guided_steps} must be >= 0 and eta={eta} finite")
        self.classifier = CVGClassifier.load(classifier or DEFAULT_CLASSIFIER)
        self.classifier.requires_grad_(False)
        missing = [s for s in range(guided_steps) if s not in self.classifier.features.steps]
        if missing:
            raise ValueError(f"guided_steps={guided_steps} needs classifier steps {missing}, but the "
                             f"classifier was trained on T = {list(self.classifier.features.steps)}")
        self.guided_steps, self.eta, self.eta_schedule = guided_steps, eta, eta_schedule
        self.grad_norm, self.max_grad_norm = grad_norm, max_grad_norm
        self.supported_categories = tuple(self.classifier.label_sets)

    def make_hook(self, generator, spec: PromptSpec) -> CVGHook | None:
        self.check_spec(spec)
        trained, n_steps = self.classifier.features.num_inference_steps, len(generator.timesteps())
        if trained != n_steps:
            raise ValueError(f"classifier was trained for a {trained}-step sampler; the generator "
                             f"samples with {n_steps} steps")
        return CVGHook(self, generator, spec) if self.guided_steps else None
