"""`bench` on a diffusers backend (wan, cogvideox, zeroscope, modelscope): what a guided step
costs next to a plain one, at tiny size on a CPU or at the published size on a GPU.

    python -m cvg_bench bench generator=wan generator.size=real          # GPU, bf16
    python -m cvg_bench bench generator=wan generator.size=tiny device=cpu  # the same script, tiny

The denoiser only: no VAE decode and no text encoder in any timed region (a real run adds both
to every method alike, so the ratios below are upper bounds of a whole run's ratios). Every
guided step is the method's own hook, the code ``run`` calls (CVG's classifier, the energy
baselines' maps, the gradient-norm control). Rows, each the median of ``repeats`` calls after
a warm-up, on synchronised timers:

- plain step: one sampler step's prediction (classifier-free guidance: batch 2, no grad);
- CVG's guided step in parts: forward to the deepest selected layer (early exit) and the full
  forward, the classifier, the backward (the rest of the guided step);
- every method's guided step (its hook at step 0), with and without activation checkpointing
  of the guidance pass (``guidance_checkpointing``), and its peak memory with the plain step
  that follows it (torch.cuda max allocated, reset per measurement; on a CPU the RSS peak);
- whole-video ratio at g guided steps of N: ``(N x plain + g x guided) / (N x plain)``.

A row that runs out of GPU memory is recorded as such, and the bench goes on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import statistics
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from cvg_bench import registry
from cvg_bench.bench import exact_memory_accounting, peak_rss, random_classifier
from cvg_bench.generators.base import AttentionSelection, StepContext
from cvg_bench.records import atomic_write_json, atomic_write_text, library_versions

log = logging.getLogger(__name__)

SIZES = ("tiny", "real")
BACKENDS = ("wan", "cogvideox", "zeroscope", "modelscope")


# --- measuring --------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}; accepted: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device; use device=cpu (or auto)")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` synchronised calls, after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """``peak_mb``: the peak of memory in use during the block (GPU: max allocated, weights
    included; CPU: the resident set's high-water mark); ``extra_mb``: that peak above the
    level at entry (what the block itself needed)."""
    out = {"peak_mb": float("nan"), "extra_mb": float("nan")}
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
        try:
            yield out
        finally:
            _sync(device)
            out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            out["extra_mb"] = out["peak_mb"] - base
        return
    with peak_rss() as rss:
        yield out
    out["extra_mb"] = rss["peak_mb"]
    out["peak_mb"] = rss["base_mb"] + rss["peak_mb"]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def guarded(fn: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """``fn()``; an out-of-memory error becomes the row ``{"oom": message}`` (memory freed)."""
    try:
        return fn()
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc):
            raise
        log.warning("out of memory: %s", str(exc).splitlines()[0])
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"oom": str(exc).splitlines()[0][:200]}


# --- building ---------------------------------------------------------------------------------
def build_generator(gcfg: DictConfig, device: torch.device, dtype: str | None = None) -> Any:
    """The configured backend with random weights: ``size=tiny`` the test-size model (the
    backend's ``random()``), ``size=real`` the published denoiser
    (:mod:`cvg_bench.generators.published`) at the config's video size, in ``dtype`` (default:
    the config's ``torch_dtype``)."""
    name, size = str(gcfg.name), str(gcfg.get("size", "tiny"))
    if not gcfg.get("random", True):  # the configured weights (a cluster with the checkpoint)
        cfg = {k: v for k, v in OmegaConf.to_container(gcfg).items() if k not in ("random", "size")}
        return registry.build("generator", {**cfg, "device": str(device)})
    if size not in SIZES:
        raise ValueError(f"generator.size={size!r}; accepted: {', '.join(SIZES)}")
    if name not in BACKENDS:
        raise ValueError(f"the denoiser bench runs generator in {', '.join(BACKENDS)}, not {name!r} "
                         "(generator=tiny has its own bench: python -m cvg_bench bench)")
    common = {"attention_early_exit": bool(gcfg.get("attention_early_exit", True)),
              "num_inference_steps": int(gcfg.get("num_inference_steps", 50))}
    if name == "cogvideox":
        common["attention_chunk_size"] = int(gcfg.get("attention_chunk_size", 1024))
    if size == "tiny":
        return registry.get("generator", name).random(device=str(device), **common)
    if name == "modelscope":
        raise ValueError("generator.size=real: no published config for 'modelscope' here; "
                         "accepted: wan, cogvideox, zeroscope (ZeroScope is ModelScope's UNet3D)")
    from cvg_bench.generators.published import real_size_generator

    return real_size_generator(
        name, device=str(device), dtype=str(dtype or gcfg.get("torch_dtype") or "bfloat16"),
        num_frames=int(gcfg.num_frames), height=int(gcfg.height), width=int(gcfg.width),
        guidance_scale=float(gcfg.guidance_scale), **common)


def method_config(name: str, **overrides: Any) -> dict[str, Any]:
    """A method's packaged config (``configs/method/<name>.yaml``, what ``run`` uses) with overrides."""
    text = resources.files("cvg_bench.configs").joinpath("method", f"{name}.yaml").read_text()
    cfg = OmegaConf.to_container(OmegaConf.create(text))
    return {**cfg, **overrides}


class StepBench:
    """One prompt, one first-step latent, and the generator's plain and guided steps on it."""

    def __init__(self, generator, spec, device: torch.device, repeats: int) -> None:
        self.g, self.spec, self.device, self.repeats = generator, spec, device, repeats
        self.t = generator.timesteps()[0]
        self.n_steps = len(generator.timesteps())
        self.z0 = generator.initial_latents(0)
        self.cond = generator.encode_prompt(spec)
        self.uncond = (generator.encode_prompt(generator.negative_prompt)
                       if generator.guidance_scale > 1.0 else None)
        self.tokens = generator.prompt_tokens(spec)

    def plain(self) -> torch.Tensor:
        with torch.no_grad():
            return self.g.predict(self.z0, self.t, self.cond, self.uncond, self.g.guidance_scale)

    def context(self) -> StepContext:
        """Step 0 as the sampler hands it to a hook (see ``UNet3DGenerator._denoise``)."""
        return StepContext(step_index=0, num_steps=self.n_steps, timestep=self.t, latents=self.z0, spec=self.spec,
                           run_attention=self.g._runner(self.t, self.cond), tokens=self.tokens,
                           extra={"generator": self.g, "guidance_scale": self.g.guidance_scale})

    def plain_row(self) -> dict[str, Any]:
        with peak_memory(self.device) as mem:
            self.plain()
        return {"plain_step_s": timed(self.plain, self.repeats, self.device), **_prefixed("plain_", mem)}

    def guided_row(self, method, checkpointing: bool) -> dict[str, Any]:
        """The method's guided step (its hook at step 0) and, for memory, the plain step after it."""
        self.g.guidance_checkpointing = checkpointing
        hook = method.make_hook(self.g, self.spec)
        ctx = self.context()

        def guided_sampler_step() -> None:
            z = hook(ctx).detach()
            with torch.no_grad():
                self.g.predict(z, self.t, self.cond, self.uncond, self.g.guidance_scale)

        try:
            with peak_memory(self.device) as mem:
                guided_sampler_step()
            seconds = timed(lambda: hook(ctx), self.repeats, self.device)
        finally:
            self.g.guidance_checkpointing = False
        return {"guided_step_s": seconds, **_prefixed("guided_", mem)}

    def cvg_parts(self, method) -> dict[str, Any]:
        """CVG's guided step in parts: forward (early exit / full), classifier, backward."""
        state = method.prepare(self.g, self.spec)
        ctx = self.context()

        def forward(early: bool):
            z = self.z0.detach().requires_grad_(True)
            return z, self.g.capture(z, self.t, self.spec, state["selection"], early_exit=early)

        def step(early: bool) -> torch.Tensor:
            z, attn = forward(early)
            (grad,) = torch.autograd.grad(method.energy(attn, state, ctx), z)
            return grad

        _, attn = forward(True)
        row = {
            "forward_early_exit_s": timed(lambda: forward(True), self.repeats, self.device),
            "forward_full_s": timed(lambda: forward(False), self.repeats, self.device),
            "classifier_s": timed(lambda: method.energy(attn, state, ctx), self.repeats, self.device),
            "forward_backward_early_exit_s": timed(lambda: step(True), self.repeats, self.device),
            "explicit_layers": attn.stats.get("explicit_layers"), "fused_layers": attn.stats.get("fused_layers"),
        }
        row["backward_s"] = max(row["forward_backward_early_exit_s"] - row["forward_early_exit_s"]
                                - row["classifier_s"], 0.0)
        row["early_exit_over_full"] = row["forward_early_exit_s"] / row["forward_full_s"]
        return row


def _prefixed(prefix: str, mem: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in mem.items()}


def _weights_mb(generator) -> float:
    return sum(p.numel() * p.element_size() for p in generator.denoiser.parameters()) / 2**20


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# --- the bench ----------------------------------------------------------------------------------
def run_denoiser_bench(cfg: DictConfig) -> dict[str, Any]:
    from cvg_bench.shapes.grammar import parse

    device = resolve_device(str(cfg.generator.get("device", "auto")))
    if device.type == "cpu":
        torch.set_num_threads(int(cfg.num_threads))
        exact_memory_accounting()  # an RSS peak that follows live allocations
    dcfg = cfg.denoiser
    t0 = time.perf_counter()
    generator = build_generator(cfg.generator, device, dcfg.get("dtype"))
    build_s = time.perf_counter() - t0
    spec = parse(cfg.prompts[0])
    bench = StepBench(generator, spec, device, int(dcfg.repeats))
    layers_all = generator.attention_layers()
    n_cvg = len(layers_all) if cfg.cvg_layers == "all" else max(1, len(layers_all) // 2)
    cvg_layers = layers_all[:n_cvg]
    guided = sorted(int(g) for g in dcfg.guided_steps)

    probe = generator.capture(bench.z0, bench.t, spec, AttentionSelection(layers=tuple(cvg_layers), tokens=(0,)),
                              early_exit=True)
    frames = next(iter(probe.maps.values())).shape[2]
    n_heads = min(4, *(m.shape[0] for m in probe.maps.values()))
    del probe
    out_dir = Path(cfg.out_dir)
    clf = random_classifier(generator, cvg_layers, max(guided), out_dir / f"clf_{cfg.generator.name}",
                            frames=frames, heads=n_heads, backbone=str(dcfg.backbone))
    report: dict[str, Any] = {
        "generator": generator.version(), "backend": str(cfg.generator.name), "size": str(cfg.generator.get("size")),
        "device": _device_name(device), "dtype": str(generator.dtype).replace("torch.", ""),
        "date": dt.date.today().isoformat(), "versions": library_versions(),
        "video": {"frames": generator.num_frames, "height": generator.height, "width": generator.width},
        "latent_shape": list(bench.z0.shape), "map_frames": int(frames),
        "text_keys": int(bench.cond.shape[1]), "num_inference_steps": bench.n_steps,
        "denoiser_params_m": sum(p.numel() for p in generator.denoiser.parameters()) / 1e6,
        "weights_mb": _weights_mb(generator), "build_s": build_s,
        "cross_attention_layers": len(layers_all), "cvg_layers": n_cvg, "cvg_heads": n_heads, "prompt": spec.prompt,
        "classifier_backbone": str(dcfg.backbone), "guided_steps": guided,
    }
    log.info("%s: %s", report["generator"], {k: report[k] for k in ("latent_shape", "text_keys", "denoiser_params_m")})
    report["plain"] = bench.plain_row()

    methods = {"cvg": method_config("cvg", classifier=str(clf), guided_steps=max(guided))}
    for name in dcfg.methods:
        if name != "cvg":
            methods[str(name)] = method_config(str(name), guided_steps=max(guided))
    built = {name: registry.build("method", mcfg) for name, mcfg in methods.items()}
    report["cvg_parts"] = guarded(lambda: bench.cvg_parts(built["cvg"]), device)
    rows: dict[str, Any] = {}
    for name, method in built.items():
        for ck in dcfg.checkpointing:
            key = f"{name}{'+ckpt' if ck else ''}"
            rows[key] = guarded(lambda: bench.guided_row(method, bool(ck)), device)
            rows[key]["checkpointing"] = bool(ck)
            log.info("%s: %s", key, rows[key])
    plain = report["plain"]
    for row in rows.values():
        if "oom" in row:
            continue
        row["step_ratio"] = row["guided_step_s"] / plain["plain_step_s"]
        row["memory_ratio"] = row["guided_peak_mb"] / plain["plain_peak_mb"]
        row["video_ratio"] = {str(g): 1 + g * row["guided_step_s"] / (bench.n_steps * plain["plain_step_s"])
                              for g in guided}
    report["methods"] = rows
    name = f"bench_{cfg.generator.name}_{cfg.generator.get('size', 'tiny')}"
    report["file"] = f"{name}.json"
    atomic_write_json(out_dir / f"{name}.json", report)
    atomic_write_text(out_dir / f"{name}.md", to_markdown(report))
    return report


def to_markdown(r: dict[str, Any]) -> str:
    v, p = r["video"], r["plain"]
    lines = [f"`{r['generator']}` ({r['denoiser_params_m']:.0f} M parameters, {r['dtype']}) on {r['device']}, "
             f"{r['date']}: {v['frames']} frames of {v['height']}x{v['width']}, latent {r['latent_shape']}, "
             f"{r['text_keys']} text keys, {r['num_inference_steps']} steps; CVG layers: the first "
             f"{r['cvg_layers']} of {r['cross_attention_layers']} cross-attention layers, heads "
             f"0-{r.get('cvg_heads', 4) - 1}, backbone "
             f"`{r['classifier_backbone']}`.", "",
             f"plain step (CFG, batch 2): {p['plain_step_s'] * 1e3:.1f} ms, peak {p['plain_peak_mb']:.0f} MB "
             f"(weights {r['weights_mb']:.0f} MB)", ""]
    c = r.get("cvg_parts", {})
    if "oom" in c:
        lines += [f"CVG parts: out of memory ({c['oom']})", ""]
    elif c:
        lines += ["| CVG part | ms |", "|---|---|",
                  f"| forward to the deepest selected layer | {c['forward_early_exit_s'] * 1e3:.1f} |",
                  f"| full forward (no early exit) | {c['forward_full_s'] * 1e3:.1f} |",
                  f"| classifier | {c['classifier_s'] * 1e3:.1f} |",
                  f"| backward | {c['backward_s'] * 1e3:.1f} |",
                  f"| early exit / full forward | {c['early_exit_over_full']:.2f}x |", ""]
    g = r["guided_steps"]
    head = " | ".join(f"video x vanilla, {n} of {r['num_inference_steps']} guided" for n in g)
    lines += [f"| method | activation checkpointing | guided step ms | x plain step | peak MB | x plain peak | {head} |",
              "|---|---|---|---|---|---|" + "---|" * len(g)]
    for name, m in r["methods"].items():
        label = name.split("+")[0]
        if "oom" in m:
            lines.append(f"| {label} | {m['checkpointing']} | out of memory |" + " |" * (3 + len(g)))
            continue
        ratios = " | ".join(f"{m['video_ratio'][str(n)]:.3f}" for n in g)
        lines.append(f"| {label} | {m['checkpointing']} | {m['guided_step_s'] * 1e3:.1f} | {m['step_ratio']:.2f} | "
                     f"{m['guided_peak_mb']:.0f} | {m['memory_ratio']:.2f} | {ratios} |")
    return "\n".join(lines) + "\n"
