"""`bench`: what guidance costs, measured side by side on one generator.

Same generator, prompts and seeds for every method; seconds per video and peak memory, each
also as a ratio to vanilla (absolute seconds on a shared 2-core machine are noisy; ratios
are the claim); a breakdown of one guided step; early exit against the full forward; one
inversion; and the floor: one extra partial forward + backward per guided step.
"""

from __future__ import annotations

import ctypes
import json
import logging
import re
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from cvg_bench import registry
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec
from cvg_bench.generators.base import StepContext
from cvg_bench.guidance import EnergyHook
from cvg_bench.records import atomic_write_json, atomic_write_text, library_versions

log = logging.getLogger(__name__)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def exact_memory_accounting() -> bool:
    """Make resident memory follow live allocations, so a peak of RSS is a peak of use.

    glibc keeps freed blocks for reuse (and raises its mmap threshold as it goes), so after a
    warm-up a step's tensors reuse old pages and RSS does not move. A fixed, small mmap
    threshold maps every block >= 64 KiB on its own and unmaps it on free. Linux/glibc only.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024))
    except OSError:
        return False


def _proc_status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) / 1024


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident memory above the level at entry (MB): the kernel's high-water mark
    (VmHWM), reset on entry through /proc/self/clear_refs. Call
    :func:`exact_memory_accounting` once first, or freed-and-reused pages hide the peak."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _proc_status_mb("VmRSS")
    out = {"peak_mb": 0.0, "base_mb": base}
    try:
        yield out
    finally:
        out["peak_mb"] = max(_proc_status_mb("VmHWM") - base, 0.0)


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_generator(cfg: DictConfig):
    if cfg.generator.get("size", "tiny") != "tiny":
        raise ValueError(f"generator.size={cfg.generator.size!r}: the tiny generator has one size; "
                         "generator.size=real is for generator=wan|cogvideox|zeroscope")
    if cfg.generator.get("random", False):
        from cvg_bench.generators.tiny import TinyGenerator

        kwargs = {k: v for k, v in OmegaConf.to_container(cfg.generator).items()
                  if k not in ("name", "random", "path", "size")}
        return TinyGenerator.random(**kwargs)
    return registry.build("generator", {k: v for k, v in OmegaConf.to_container(cfg.generator).items()
                                        if k not in ("random", "size")})


def random_classifier(generator, layers: list[str], guided_steps: int, folder: Path,
                      frames: int | None = None, heads: int = 4, backbone: str = "video-encoder") -> Path:
    """A CVG classifier of the shipped architecture with random weights over ``layers`` (its
    cost is a trained one's): heads 0..heads-1, 8x8 maps, 2 entities, steps 0..guided_steps-1,
    ``frames`` the maps' frames (default: the generator's; a 3D VAE's latent has fewer)."""
    from cvg_bench.shapes.grammar import CATEGORIES, label_set

    features = FeatureSpec(steps=tuple(range(max(guided_steps, 1))), layers=tuple(layers),
                           heads=tuple(range(heads)), num_inference_steps=len(generator.timesteps()),
                           map_size=8, max_entities=2)
    labels = {c: list(label_set(c)) + [y for y in _two(c, label_set) if y not in label_set(c)]
              for c in CATEGORIES}
    model = CVGClassifier(features, labels, {"name": backbone, "weights": None},
                          num_layer_heads=heads, frames=frames or generator.num_frames)
    return model.save(folder)


def _two(category: str, label_set) -> tuple[str, ...]:
    try:
        return label_set(category, 2)
    except ValueError:
        return ()


def method_costs(cfg: DictConfig, generator, specs, methods: dict[str, dict]) -> dict[str, dict]:
    # One untimed video first: the first sample of a process pays one-off set-up (allocator,
    # kernels), which would otherwise be billed to whichever method is measured first.
    generator.sample(specs[0], 0)
    out = {}
    for name, mcfg in methods.items():
        method = registry.build("method", mcfg)
        usable = [s for s in specs if method.supported_categories is None
                  or s.category in method.supported_categories]
        secs, guid, peaks = [], [], []
        for spec in usable:
            for seed in range(cfg.seeds):
                hook = method.make_hook(generator, spec)
                with peak_rss() as mem:
                    t0 = time.perf_counter()
                    result = generator.sample(spec, seed, hook=hook)
                    secs.append(time.perf_counter() - t0)
                guid.append(result.guidance_seconds)
                peaks.append(mem["peak_mb"])
        out[name] = {"sec_per_video": statistics.mean(secs), "guidance_sec": statistics.mean(guid),
                     "peak_mb": max(peaks), "videos": len(secs),
                     "categories": sorted({s.category for s in usable})}
    return out


class GuidedStep:
    """One CVG guided step at the first timestep, from seed 0's initial latents, in parts; its
    loss is the `cvg` method's own energy (so the bench times what guidance runs)."""

    def __init__(self, generator, spec, clf_path: Path, symmetrize: bool = False) -> None:
        self.generator, self.spec = generator, spec
        self.method = registry.build("method", {"name": "cvg", "classifier": str(clf_path),
                                                "guided_steps": 1, "symmetrize": symmetrize})
        self.clf = self.method.classifier
        self.state = self.method.prepare(generator, spec)
        self.t, self.z0 = generator.timesteps()[0], generator.initial_latents(0)
        self.ctx = StepContext(step_index=0, num_steps=len(generator.timesteps()), timestep=self.t,
                               latents=self.z0, spec=spec)

    def forward(self, early: bool):
        """The generator's forward (to the deepest selected layer if ``early``) -> (z, maps)."""
        z = self.z0.detach().requires_grad_(True)
        return z, self.generator.capture(z, self.t, self.spec, self.state["selection"], early_exit=early)

    def loss(self, attn) -> torch.Tensor:
        """Aggregator + backbone + head: -log s_t[y] (read symmetrised if the method does)."""
        return self.method.energy(attn, self.state, self.ctx)

    def update(self, early: bool) -> torch.Tensor:
        """forward + loss + backward + the update of z_t: the method's own hook at step 0, the
        code ``run`` calls (gradient-norm control and step size included)."""
        hook = EnergyHook(self.method, self.state)

        def run_attention(z: torch.Tensor, selection=None):
            return self.generator.capture(z, self.t, self.spec, selection, early_exit=early)

        ctx = StepContext(step_index=0, num_steps=self.ctx.num_steps, timestep=self.t, latents=self.z0,
                          spec=self.spec, run_attention=run_attention, tokens=self.state["tokens"])
        return hook(ctx)


def guided_step_breakdown(cfg: DictConfig, generator, spec, clf_path: Path,
                          symmetrize: bool = False) -> dict[str, float]:
    """One CVG guided step, split into its parts, with and without early exit."""
    step = GuidedStep(generator, spec, clf_path, symmetrize)
    reps = cfg.repeats

    attn = step.forward(True)[1]
    out = {
        "forward_early_exit_s": timed(lambda: step.forward(True), reps),
        "forward_full_s": timed(lambda: step.forward(False), reps),
        "classifier_s": timed(lambda: step.loss(attn), reps),
        "guided_step_early_exit_s": timed(lambda: step.update(True), reps),
        "guided_step_full_s": timed(lambda: step.update(False), reps),
    }
    out["backward_s"] = max(out["guided_step_early_exit_s"] - out["forward_early_exit_s"]
                            - out["classifier_s"], 0.0)
    early_maps = step.forward(True)[1]
    full_maps = step.forward(False)[1]
    out["early_exit_maps_identical"] = all(torch.equal(early_maps.maps[k], full_maps.maps[k])
                                           for k in early_maps.maps)
    out["explicit_layers"] = early_maps.stats.get("explicit_layers")
    out["fused_layers"] = early_maps.stats.get("fused_layers")
    del attn, early_maps, full_maps  # free before measuring memory
    # A plain sampler step is one classifier-free-guided prediction (batch of 2, no grad); a
    # guided step runs the guidance pass, then that same prediction.
    cond, uncond = generator.encode_prompt(spec), generator.encode_prompt(generator.negative_prompt)
    with torch.no_grad(), peak_rss() as plain_mem:
        generator.predict(step.z0, step.t, cond, uncond, generator.guidance_scale)
    with peak_rss() as guided_mem:
        z_new = step.update(True).detach()
        with torch.no_grad():
            generator.predict(z_new, step.t, cond, uncond, generator.guidance_scale)
    out["plain_step_peak_mb"] = plain_mem["peak_mb"]
    out["guided_step_peak_mb"] = guided_mem["peak_mb"]
    out["process_base_mb"] = plain_mem["base_mb"]  # weights, code, allocator: paid by both
    out["process_peak_ratio"] = ((plain_mem["base_mb"] + guided_mem["peak_mb"])
                                 / (plain_mem["base_mb"] + plain_mem["peak_mb"]))
    # What an accelerator's allocator would count: weights (generator + classifier) + the step.
    out["weights_mb"] = _weights_mb(generator) + _weights_mb(step.clf)
    out["model_peak_ratio"] = ((out["weights_mb"] + guided_mem["peak_mb"])
                               / (out["weights_mb"] + plain_mem["peak_mb"]))
    return out


def _weights_mb(obj) -> float:
    """Parameter + buffer bytes of a module, or of a generator's pipeline components."""
    pipe = getattr(obj, "pipe", None)
    modules = ([m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
               if pipe is not None else [obj])
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def _step_costs(generator, spec, clf_path: Path, repeats: int) -> dict[str, float]:
    """One plain denoising forward (no grad) and one CVG guided step (early exit)."""
    step = GuidedStep(generator, spec, clf_path)

    def plain():
        with torch.no_grad():
            generator.capture(step.z0, step.t, spec, None, early_exit=False)

    return {"plain_forward_s": timed(plain, repeats),
            "guided_step_s": timed(lambda: step.update(True), repeats)}


def scaling(cfg: DictConfig, spec, out_dir: Path) -> list[dict[str, Any]]:
    """Guided-step cost against frames, resolution and |L|, one factor at a time from the
    default; and whole-video cost against the number of guided steps."""
    from cvg_bench.generators.tiny import TinyGenerator

    sc, rows = cfg.scaling, []
    base = {"num_frames": 8, "height": 32, "width": 32,
            "num_inference_steps": int(cfg.generator.num_inference_steps)}
    grid = ([("frames", f, {**base, "num_frames": f}, None) for f in sc.frames]
            + [("size", r, {**base, "height": r, "width": r}, None) for r in sc.sizes]
            + [("layers", n, base, n) for n in sc.layers])
    for factor, value, kwargs, n_layers in grid:
        gen = TinyGenerator.random(**kwargs)
        layers = gen.attention_layers()
        chosen = layers[: n_layers or max(1, len(layers) // 2)]
        clf = random_classifier(gen, chosen, 1, out_dir / f"clf_scaling_{factor}_{value}")
        costs = _step_costs(gen, spec, clf, int(sc.repeats))
        rows.append({"factor": factor, "value": value, "layers": len(chosen), **costs,
                     "guided_over_plain": costs["guided_step_s"] / costs["plain_forward_s"]})
    gen = TinyGenerator.random(**base)
    layers = gen.attention_layers()
    clf = random_classifier(gen, layers[: len(layers) // 2], max(sc.guided_steps), out_dir / "clf_scaling_g")
    van = timed(lambda: gen.sample(spec, 0), 1)
    for g in sc.guided_steps:
        method = registry.build("method", {"name": "cvg", "classifier": str(clf), "guided_steps": g})
        sec = timed(lambda: gen.sample(spec, 0, hook=method.make_hook(gen, spec)), 1)
        rows.append({"factor": "guided_steps", "value": g, "layers": len(layers) // 2,
                     "sec_per_video": sec, "vanilla_sec_per_video": van, "time_ratio": sec / van})
    return rows


def trained_cvg_methods(cfg: DictConfig) -> dict[str, dict]:
    """The committed (or a given) CVG classifier at a chosen setting, read symmetrised and
    plainly: what guidance costs as shipped (its layers L and steps T are its own)."""
    tc = cfg.get("trained_cvg")
    if not tc or not tc.enabled:
        return {}
    if cfg.generator.get("random", False):
        raise ValueError("trained_cvg.enabled=true needs the generator the classifier was trained "
                         "on: set generator.random=false (random weights: trained_cvg.enabled=false)")
    from cvg_bench.methods.cvg import DEFAULT_CLASSIFIER

    base = {"name": "cvg", "classifier": str(tc.classifier or DEFAULT_CLASSIFIER),
            "guided_steps": int(tc.guided_steps), "eta": float(tc.eta)}
    return {"cvg_trained": {**base, "symmetrize": True},
            "cvg_trained_plain": {**base, "symmetrize": False}}


def training_throughput(generator, spec, features_layers: list[str]) -> dict[str, float]:
    """Dual inversion + feature capture of one video (what the classifier's cache costs)."""
    from cvg_bench.cvg.training import featurize
    from cvg_bench.shapes.render import RenderConfig, render

    features = FeatureSpec(steps=(0, 1), layers=tuple(features_layers), heads=(0, 1, 2, 3),
                           num_inference_steps=len(generator.timesteps()), map_size=8, max_entities=2)
    video = render(spec, 0, RenderConfig(frames=generator.num_frames, size=generator.height))
    sec = timed(lambda: (featurize(generator, video, spec, features),
                         featurize(generator, video, spec, features)), 1)
    return {"dual_inversion_s_per_video": sec, "videos_per_hour_per_task": 3600 / sec}


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    from cvg_bench.shapes.grammar import parse

    torch.set_num_threads(int(cfg.num_threads))
    if not exact_memory_accounting():
        log.warning("glibc mallopt unavailable: peak memory columns may read low")
    generator = build_generator(cfg)
    specs = [parse(p) for p in cfg.prompts]
    out_dir = Path(cfg.out_dir)
    layers_all = generator.attention_layers()
    layer_sets = {"all": layers_all, "first_half": layers_all[: max(1, len(layers_all) // 2)]}
    report: dict[str, Any] = {"generator": generator.version(), "threads": cfg.num_threads,
                              "guided_steps": cfg.guided_steps, "versions": library_versions(),
                              "num_inference_steps": len(generator.timesteps())}
    clf_paths = {k: random_classifier(generator, v, cfg.guided_steps, out_dir / f"clf_{k}")
                 for k, v in layer_sets.items()}
    base = {"guided_steps": cfg.guided_steps, "eta": 0.1}
    methods = {"vanilla": {"name": "vanilla"},
               "attend_excite": {"name": "attend_excite", **base},
               "layout_energy": {"name": "layout_energy", **base},
               "binding_energy": {"name": "binding_energy", **base},
               "cvg": {"name": "cvg", "classifier": str(clf_paths[cfg.cvg_layers]), **base}}
    trained = trained_cvg_methods(cfg)
    methods.update(trained)
    report["methods"] = method_costs(cfg, generator, specs, methods)
    van = report["methods"]["vanilla"]
    for row in report["methods"].values():
        row["time_ratio"] = row["sec_per_video"] / van["sec_per_video"]
        # The sampler's own work is the same with and without guidance, so this ratio does not
        # carry the video-to-video timing noise of a shared machine (ratios < 1 above are noise).
        row["guidance_time_ratio"] = 1 + row["guidance_sec"] / van["sec_per_video"]
        row["peak_ratio"] = row["peak_mb"] / max(van["peak_mb"], 1e-9)
    report["step"] = {k: guided_step_breakdown(cfg, generator, specs[0], p) for k, p in clf_paths.items()}
    for name, mcfg in trained.items():
        report["step"][name] = guided_step_breakdown(cfg, generator, specs[0], Path(mcfg["classifier"]),
                                                     mcfg["symmetrize"])
    step = report["step"][cfg.cvg_layers]
    report["floor_time_ratio"] = 1 + cfg.guided_steps * step["guided_step_early_exit_s"] / van["sec_per_video"]
    report["early_exit_ratio"] = {k: s["forward_early_exit_s"] / s["forward_full_s"] for k, s in report["step"].items()}
    video = generator.sample(specs[0], 0).video
    report["inversion_s"] = timed(lambda: generator.invert(video, specs[0]), 1)
    report["training"] = training_throughput(generator, specs[0], layer_sets[cfg.cvg_layers])
    if cfg.scaling.enabled:
        report["scaling"] = scaling(cfg, specs[0], out_dir)
    atomic_write_json(out_dir / "bench.json", report)
    atomic_write_text(out_dir / "bench.md", to_markdown(report))
    return report


def to_markdown(r: dict[str, Any]) -> str:
    lines = [f"generator `{r['generator']}`, {r['num_inference_steps']} steps, "
             f"{r['guided_steps']} guided, torch threads {r['threads']}", "",
             "| method | s/video | x vanilla | guidance s | 1 + guidance / vanilla | peak MB | x vanilla "
             "| videos |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in r["methods"].items():
        lines.append(f"| {name} | {m['sec_per_video']:.3f} | {m['time_ratio']:.2f} | "
                     f"{m['guidance_sec']:.3f} | {m.get('guidance_time_ratio', float('nan')):.3f} | "
                     f"{m['peak_mb']:.0f} | {m['peak_ratio']:.2f} | {m['videos']} |")
    lines += ["", f"floor (1 + guided steps x one partial forward+backward / vanilla video): "
                  f"{r['floor_time_ratio']:.3f}x", "",
              "| CVG layers | fwd early-exit s | fwd full s | early/full | classifier s | "
              "backward s | guided step s | maps identical | explicit/fused layers | "
              "extra MB plain / guided step | weights MB | (weights + step) guided / plain | "
              "process peak guided / plain |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, s in r["step"].items():
        lines.append(f"| {k} | {s['forward_early_exit_s']:.4f} | {s['forward_full_s']:.4f} | "
                     f"{r['early_exit_ratio'][k]:.2f} | {s['classifier_s']:.4f} | {s['backward_s']:.4f} | "
                     f"{s['guided_step_early_exit_s']:.4f} | {s['early_exit_maps_identical']} | "
                     f"{s['explicit_layers']}/{s['fused_layers']} | "
                     f"{s['plain_step_peak_mb']:.0f} / {s['guided_step_peak_mb']:.0f} | "
                     f"{s['weights_mb']:.1f} | {s['model_peak_ratio']:.2f} | {s['process_peak_ratio']:.2f} |")
    lines += ["", f"one DDIM inversion: {r['inversion_s']:.2f} s"]
    tr = r.get("training")
    if tr:
        lines += [f"classifier cache: dual inversion + capture {tr['dual_inversion_s_per_video']:.1f} s "
                  f"per video = {tr['videos_per_hour_per_task']:.0f} videos/hour per task"]
    rows = r.get("scaling") or []
    step_rows = [x for x in rows if x["factor"] != "guided_steps"]
    if step_rows:
        lines += ["", "| factor | value | layers | plain forward s | guided step s | guided / plain |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {x['factor']} | {x['value']} | {x['layers']} | {x['plain_forward_s']:.4f} | "
                  f"{x['guided_step_s']:.4f} | {x['guided_over_plain']:.2f} |" for x in step_rows]
    g_rows = [x for x in rows if x["factor"] == "guided_steps"]
    if g_rows:
        lines += ["", "| guided steps | s/video | vanilla s/video | x vanilla |", "|---|---|---|---|"]
        lines += [f"| {x['value']} | {x['sec_per_video']:.2f} | {x['vanilla_sec_per_video']:.2f} | "
                  f"{x['time_ratio']:.2f} |" for x in g_rows]
    return "\n".join(lines) + "\n"


def main(cfg: DictConfig) -> int:
    if cfg.generator.name != "tiny":
        from cvg_bench import bench_denoiser

        report = bench_denoiser.run_denoiser_bench(cfg)
        print(bench_denoiser.to_markdown(report))
        print(f"written: {Path(cfg.out_dir) / report['file']}")
        return 0
    report = run_bench(cfg)
    print(to_markdown(report))
    print(f"written: {Path(cfg.out_dir) / 'bench.json'}")
    return 0
