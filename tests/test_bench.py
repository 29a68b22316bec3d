"""The bench script's memory measurement reads what a step really allocates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

PROBE = """
import torch
from cvg_bench.bench import exact_memory_accounting, peak_rss
assert exact_memory_accounting()
def step(mb):
    x = torch.ones(mb * 2**20 // 4)
    return float(x.sum())
out = []
for mb in (64, 64, 128):  # the repeat reuses no freed pages: it must read 64 again
    with peak_rss() as mem:
        step(mb)
    out.append(mem["peak_mb"])
with peak_rss() as idle:
    pass
print(*out, idle["peak_mb"])
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_of_a_step_is_its_allocation_each_time():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, again, double, idle = map(float, proc.stdout.split())
    assert first == pytest.approx(64, rel=0.1)
    assert again == pytest.approx(64, rel=0.1)
    assert double == pytest.approx(128, rel=0.1)
    assert idle < 5


@pytest.mark.usefixtures("torch_one_thread")
def test_guided_step_breakdown_parts_and_early_exit_on_a_tiny_random_generator(tmp_path):
    from omegaconf import OmegaConf

    from cvg_bench.bench import _step_costs, guided_step_breakdown, random_classifier
    from cvg_bench.generators.tiny import TinyGenerator
    from cvg_bench.shapes.grammar import parse

    gen = TinyGenerator.random(num_frames=4, height=16, width=16, num_inference_steps=4)  # 4 heads
    spec = parse("a red circle on the left of a blue square")
    layers = gen.attention_layers()
    clf = random_classifier(gen, layers[:1], 1, tmp_path / "clf")
    out = guided_step_breakdown(OmegaConf.create({"repeats": 1}), gen, spec, clf)
    assert out["early_exit_maps_identical"] is True
    assert out["explicit_layers"] == 1 and out["fused_layers"] > 0  # only L is explicit
    assert 0 < out["forward_early_exit_s"] and 0 < out["guided_step_early_exit_s"]
    assert out["weights_mb"] > 0 and out["guided_step_peak_mb"] >= 0  # tiny: may fit freed pages
    costs = _step_costs(gen, spec, clf, 1)
    assert costs["plain_forward_s"] > 0 and costs["guided_step_s"] > 0
    sym = guided_step_breakdown(OmegaConf.create({"repeats": 1}), gen, spec, clf, symmetrize=True)
    assert sym["early_exit_maps_identical"] is True and sym["classifier_s"] > 0


def test_trained_cvg_rows_need_the_generator_the_classifier_was_trained_on():
    from omegaconf import OmegaConf

    from cvg_bench.bench import trained_cvg_methods

    cfg = OmegaConf.create({"generator": {"random": False},
                            "trained_cvg": {"enabled": True, "classifier": None,
                                            "guided_steps": 5, "eta": 0.2}})
    rows = trained_cvg_methods(cfg)
    assert [r["symmetrize"] for r in rows.values()] == [True, False]
    assert all(r["guided_steps"] == 5 and r["eta"] == 0.2 for r in rows.values())
    cfg.trained_cvg.enabled = False
    assert trained_cvg_methods(cfg) == {}
    cfg.trained_cvg.enabled, cfg.generator.random = True, True
    with pytest.raises(ValueError, match="generator.random=false"):
        trained_cvg_methods(cfg)


def test_bench_builds_the_committed_generator_when_not_random():
    from omegaconf import OmegaConf

    from cvg_bench.bench import build_generator

    gen = build_generator(OmegaConf.create({"generator": {"name": "tiny", "random": False,
                                                          "num_inference_steps": 4}}))
    assert gen.version().startswith("tiny:") and len(gen.timesteps()) == 4


@pytest.mark.usefixtures("torch_one_thread")
def test_bench_guided_step_is_the_step_run_takes(tmp_path):
    """The bench's guided step and the sampler's hook at step 0 give the same z_t' (one code path)."""
    from omegaconf import OmegaConf  # noqa: F401

    from cvg_bench import registry
    from cvg_bench.bench import GuidedStep, random_classifier
    from cvg_bench.generators.tiny import TinyGenerator
    from cvg_bench.shapes.grammar import parse

    gen = TinyGenerator.random(num_frames=4, height=16, width=16, num_inference_steps=4)
    spec = parse("a red circle on the left of a blue square")
    clf = random_classifier(gen, gen.attention_layers()[:1], 1, tmp_path / "clf")
    bench_z = GuidedStep(gen, spec, clf).update(early=True)

    seen = {}

    def spy(ctx):
        z = method_hook(ctx)
        if ctx.step_index == 0:
            seen["z"] = z.detach().clone()
        return z

    method = registry.build("method", {"name": "cvg", "classifier": str(clf), "guided_steps": 1})
    method_hook = method.make_hook(gen, spec)
    gen.sample(spec, 0, hook=spy)
    assert not torch.equal(bench_z, gen.initial_latents(0))  # the step moved z_t
    torch.testing.assert_close(bench_z.to(seen["z"].dtype), seen["z"])
