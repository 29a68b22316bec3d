"""A model-free stand-in generator for testing the harness's plumbing."""

from __future__ import annotations

import time

import numpy as np
import torch

from cvg_bench.generators.base import GenerationOutput, Generator, StepContext, StepHook
from cvg_bench.registry import register
from cvg_bench.types import PromptSpec


@register("generator", "dummy")
class DummyGenerator(Generator):
    """Seeded noise videos from a fake denoising loop: tests plumbing, is not a model."""

    def __init__(self, frames: int = 8, size: int = 32, num_steps: int = 4,
                 delay_s: float = 0.0) -> None:
        if frames < 1 or size < 2 or num_steps < 1:
            raise ValueError(f"frames={frames}, size={size}, num_steps={num_steps} must be >= 1 (size >= 2)")
        self.frames, self.size, self.num_steps, self.delay_s = frames, size, num_steps, delay_s

    def version(self) -> str:
        return f"dummy-{self.frames}x{self.size}"

    def sample(self, spec: PromptSpec, seed: int, hook: StepHook | None = None) -> GenerationOutput:
        gen = torch.Generator().manual_seed(int(seed))
        latents = torch.randn(1, 3, self.frames, self.size, self.size, generator=gen)
        guidance_s = 0.0
        for i in range(self.num_steps):
            if hook is not None:
                t0 = time.perf_counter()
                latents = hook(StepContext(i, self.num_steps, torch.tensor(self.num_steps - i),
                                           latents, spec))
                guidance_s += time.perf_counter() - t0
            latents = 0.9 * latents  # a stand-in for one denoising update
        if self.delay_s:
            time.sleep(self.delay_s)  # lets tests kill a run mid-way
        video = torch.sigmoid(latents[0]).permute(1, 2, 3, 0).numpy()
        return GenerationOutput((video * 255).round().astype(np.uint8), guidance_s)
