"""The denoiser cost bench (real-size on a GPU) runs at tiny size on the CPU, the published
configs build the published denoisers, and activation checkpointing leaves guidance unchanged."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("torch_one_thread")
PROMPT = "a red circle on the left of a blue square"


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from cvg_bench.config import CONFIG_MODULE, register_schemas

    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="bench", overrides=list(overrides))


def _tiny(name: str):
    from cvg_bench import registry

    return registry.get("generator", name).random()


@pytest.mark.parametrize("name", ["wan", "cogvideox", "zeroscope"])
@pytest.mark.parametrize("early_exit", [True, False])
def test_activation_checkpointing_gives_the_same_maps_and_gradient(name, early_exit):
    """The guidance pass with checkpointed blocks recomputes them in backward with the capture
    processors of the forward: same maps, same gradient wrt z_t, and the pass still exits early."""
    from cvg_bench.generators.base import AttentionSelection

    gen = _tiny(name)
    t, z0 = gen.timesteps()[0], gen.initial_latents(0)
    layers = gen.attention_layers()
    sel = AttentionSelection(layers=(layers[0],), heads=(0,), tokens=(1, 2))
    out = {}
    for ck in (False, True):
        gen.guidance_checkpointing = ck
        z = z0.detach().clone().requires_grad_(True)
        maps = gen.capture(z, t, PROMPT, sel, early_exit=early_exit)
        loss = sum((m.float() ** 2).sum() for m in maps.maps.values())
        (grad,) = torch.autograd.grad(loss, z)
        out[ck] = (maps.maps[layers[0]].detach(), grad, maps.stats["early_exit"])
    assert torch.equal(out[False][0], out[True][0])
    assert out[False][1].abs().max() > 0
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-7)
    assert out[True][2] is out[False][2] is early_exit
    assert "forward" not in vars(gen.checkpoint_units()[0])  # the wrap is gone after the pass


def test_published_denoisers_have_the_published_sizes():
    """Built on the meta device (no memory): the configs give the published parameter counts."""
    from diffusers import CogVideoXTransformer3DModel, UNet3DConditionModel, WanTransformer3DModel

    from cvg_bench.generators import published as pub

    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in cls(**cfg).parameters()) / 1e9 for name, cls, cfg in (
            ("wan", WanTransformer3DModel, pub.WAN_2_1_T2V_1_3B),
            ("cogvideox", CogVideoXTransformer3DModel, pub.COGVIDEOX_2B),
            ("zeroscope", UNet3DConditionModel, pub.ZEROSCOPE_V2_576W))}
    assert counts["wan"] == pytest.approx(1.419, abs=0.005)  # "1.3B"
    assert counts["cogvideox"] == pytest.approx(1.694, abs=0.005)  # "2B"
    assert counts["zeroscope"] == pytest.approx(1.413, abs=0.005)  # ModelScope's UNet3D


def test_cast_like_from_pretrained_keeps_the_fp32_modules():
    from diffusers import WanTransformer3DModel

    from cvg_bench.generators.published import cast_like_from_pretrained

    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                  out_channels=4, text_dim=16, freq_dim=16, ffn_dim=16, num_layers=1)
    cast_like_from_pretrained(model, torch.bfloat16)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16
    assert dtypes["blocks.0.scale_shift_table"] == torch.float32  # _keep_in_fp32_modules
    assert dtypes["condition_embedder.time_embedder.linear_1.weight"] == torch.float32


@pytest.mark.parametrize("name", ["wan", "zeroscope"])
def test_denoiser_bench_runs_at_tiny_size_on_cpu(name, tmp_path):
    """The script the GPU runs at real size, at tiny size: every row present and consistent."""
    from cvg_bench.bench_denoiser import run_denoiser_bench, to_markdown

    cfg = compose(f"generator={name}", "generator.size=tiny", "generator.device=cpu", f"out_dir={tmp_path}",
                  "denoiser.repeats=1", "num_threads=1")
    r = run_denoiser_bench(cfg)
    assert r["device"] == "cpu" and r["num_inference_steps"] == cfg.generator.num_inference_steps
    assert r["cvg_layers"] == max(1, r["cross_attention_layers"] // 2)
    parts = r["cvg_parts"]
    assert parts["forward_early_exit_s"] > 0 and parts["forward_full_s"] > 0 and parts["classifier_s"] > 0
    assert parts["explicit_layers"] == r["cvg_layers"]
    assert set(r["methods"]) == {"cvg", "cvg+ckpt", "attend_excite", "attend_excite+ckpt",
                                 "layout_energy", "layout_energy+ckpt"}
    n, plain = r["num_inference_steps"], r["plain"]["plain_step_s"]
    for row in r["methods"].values():
        assert row["guided_step_s"] > 0 and row["guided_peak_mb"] > 0
        for g in (2, 5):
            assert row["video_ratio"][str(g)] == pytest.approx(1 + g * row["guided_step_s"] / (n * plain))
    saved = json.loads((tmp_path / f"bench_{name}_tiny.json").read_text())
    assert saved["methods"].keys() == r["methods"].keys()
    md = (tmp_path / f"bench_{name}_tiny.md").read_text()
    assert md == to_markdown(r) and "forward to the deepest selected layer" in md
    assert to_markdown(saved).count("\n") == md.count("\n")  # the saved record renders too


def test_denoiser_bench_rejects_bad_sizes_and_generators(tmp_path):
    from cvg_bench.bench import build_generator as build_tiny
    from cvg_bench.bench_denoiser import build_generator, resolve_device

    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"generator.size='huge'; accepted: tiny, real"):
        build_generator(compose("generator=wan", "generator.size=huge").generator, cpu)
    with pytest.raises(ValueError, match="no published config for 'modelscope'"):
        build_generator(compose("generator=modelscope", "generator.size=real").generator, cpu)
    with pytest.raises(ValueError, match="generator.size=real is for generator=wan"):
        build_tiny(compose("generator.size=real"))
    with pytest.raises(ValueError, match="device='tpu'; accepted: auto, cpu, cuda"):
        resolve_device("tpu")


def test_guided_row_records_out_of_memory_and_goes_on():
    from cvg_bench.bench_denoiser import guarded

    def boom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    assert guarded(boom, torch.device("cpu"))["oom"].startswith("CUDA out of memory")
    with pytest.raises(RuntimeError, match="not memory"):
        guarded(lambda: (_ for _ in ()).throw(RuntimeError("not memory")), torch.device("cpu"))
