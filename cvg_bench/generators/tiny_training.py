"""Train the tiny shapes-world generator (v-prediction DDPM) with checkpoints and resume.

    python -m cvg_bench.generators.tiny_training [key=value ...]     # keys: configs/component/generator.yaml
    python -m cvg_bench train component=generator [component.key=value ...]

Re-running the same command resumes from the last checkpoint in ``checkpoint_dir``: a
session is killed after at most 3 hours, so every ``checkpoint_every`` steps the weights
(safetensors), EMA, optimizer and step are written atomically (a temp folder renamed into
place, then the ``latest`` pointer replaced). Each step's data and noise are seeded by
(seed, step), so a resumed run draws exactly what an uninterrupted one would.
At the end (or with ``export_only=true``) the EMA weights are exported as a pipeline folder
(``save_pretrained``, safetensors) with TRAINING.json/TRAINING.md beside them.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from cvg_bench.config import flatten
from cvg_bench.generators.pretrained_text import encode_texts
from cvg_bench.generators.tiny import build_tiny_pipeline, load_tiny_pipeline, save_tiny_pipeline

CONFIG_PATH = Path(__file__).resolve().parent.parent.parent / "configs" / "component" / "generator.yaml"
LOG_COLUMNS = ["step", "loss", "eval_loss", "lr", "seconds_per_step", "elapsed_min"]
EVAL_STEP0 = 10**9  # data "steps" of the fixed evaluation batches (never trained on)


# --- configuration ------------------------------------------------------------------------
def default_config() -> DictConfig:
    path = CONFIG_PATH
    if not path.is_file():  # installed package: configs/ is mapped to cvg_bench.configs
        import cvg_bench.configs as configs_pkg

        path = Path(configs_pkg.__file__).parent / "component" / "generator.yaml"
    return OmegaConf.load(path)


def load_config(cfg: Any = None, overrides: list[str] | None = None) -> DictConfig:
    """The defaults of configs/component/generator.yaml, then ``cfg``, then ``key=value`` overrides;
    an unknown key is an error naming it."""
    base = default_config()
    OmegaConf.set_struct(base, True)
    OmegaConf.set_struct(base.model, False)  # free-form overrides, checked by build_tiny_pipeline
    layers = [c for c in (cfg, OmegaConf.from_dotlist(overrides or [])) if c is not None]
    for layer in layers:
        layer = layer if isinstance(layer, DictConfig) else OmegaConf.create(layer)
        try:
            base = OmegaConf.merge(base, layer)
        except Exception as exc:  # omegaconf names the key; add where the accepted ones are
            raise ValueError(f"bad training config: {exc}. Accepted keys: {CONFIG_PATH}") from exc
    return base


# --- data ---------------------------------------------------------------------------------
class DataSource(Protocol):
    """Yields training batches: a deterministic function of (seed, step)."""

    def batch(self, step: int, batch_size: int) -> tuple[list[str], np.ndarray]:
        """Prompts and uint8 videos (batch, frames, H, W, 3)."""

    def vocabulary(self) -> set[str]:
        """Every word the prompts can contain (held-out compositions included)."""


class ShapesData:
    """Seen-split prompts from the shapes grammar, rendered on the fly (no dataset on disk)."""

    def __init__(self, data_cfg: Any, seed: int) -> None:
        from cvg_bench.shapes.grammar import CATEGORIES, sample_spec
        from cvg_bench.shapes.render import RenderConfig, render

        self.sample_spec, self.render, self.seed = sample_spec, render, seed
        self.split = data_cfg.split
        weights = dict(data_cfg.categories) if data_cfg.categories else {c: 1.0 for c in CATEGORIES}
        bad = sorted(set(weights) - set(CATEGORIES))
        if bad:
            raise ValueError(f"data.categories has unknown categories {bad}; accepted: {list(CATEGORIES)}")
        self.categories = [c for c in weights if weights[c] > 0]
        p = np.array([weights[c] for c in self.categories], dtype=float)
        self.p = p / p.sum()
        self.render_cfg = _render_config(RenderConfig, data_cfg)
        self.vocab_samples = int(data_cfg.vocab_samples)

    def batch(self, step: int, batch_size: int) -> tuple[list[str], np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        prompts, videos = [], []
        for _ in range(batch_size):
            category = self.categories[rng.choice(len(self.categories), p=self.p)]
            spec = self.sample_spec(rng, category, split=self.split)
            prompts.append(spec.prompt)
            videos.append(self.render(spec, int(rng.integers(2**31)), self.render_cfg))
        return prompts, np.stack(videos)

    def vocabulary(self) -> set[str]:
        """Every word of every composition of the grammar (held-out ones included: a word is
        not a composition), plus the synonyms the grammar accepts."""
        from cvg_bench.shapes import grammar

        words = {"turning", "to", ".", ","}
        if hasattr(grammar, "compositions") and hasattr(grammar, "to_prompt"):
            for category in grammar.CATEGORIES:
                for comp in grammar.compositions(category, "all"):
                    words.update(_words(grammar.to_prompt(comp)))
            return words
        rng = np.random.default_rng([self.seed, 2**31])
        for category in self.categories:
            for _ in range(self.vocab_samples):
                words.update(_words(self.sample_spec(rng, category, split="all").prompt))
        return words


def _render_config(cls: type, data_cfg: Any) -> Any:
    """The renderer's config for ``data_cfg``'s frames and (square) size."""
    if int(data_cfg.height) != int(data_cfg.width):
        raise ValueError(f"the shapes renderer draws square frames: data.height={data_cfg.height} "
                         f"must equal data.width={data_cfg.width}")
    return cls(frames=int(data_cfg.num_frames), size=int(data_cfg.height))


def _words(prompt: str) -> list[str]:
    import re

    return re.findall(r"\w+|[^\w\s]+", prompt.lower())


def make_data_source(cfg: DictConfig) -> DataSource:
    """The configured data source (tests monkeypatch this)."""
    if cfg.data.source != "shapes":
        raise ValueError(f"data.source={cfg.data.source!r} is not supported; accepted: 'shapes'")
    return ShapesData(cfg.data, cfg.seed)


# --- checkpoints --------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _named(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


@dataclass
class Trainer:
    """Everything one training run holds; built fresh or from the latest checkpoint."""

    cfg: DictConfig
    pipe: Any
    optimizer: torch.optim.Optimizer
    ema: Any
    step: int
    elapsed_s: float
    device: torch.device

    @property
    def params(self) -> list[torch.nn.Parameter]:
        """The trained parameters (optimizer, EMA, checkpoint): a frozen text encoder's are not."""
        return [*self.pipe.unet.parameters(), *([] if _frozen(self.cfg) else self.pipe.text_encoder.parameters())]

    def train_mode(self, mode: bool = True) -> None:
        """UNet (and a trained text encoder) in train mode; a frozen encoder stays in eval
        mode (no dropout: it computes what it computes at sampling)."""
        self.pipe.unet.train(mode)
        self.pipe.text_encoder.train(mode and not _frozen(self.cfg))


def _frozen(cfg: DictConfig) -> bool:
    return bool(cfg.get("freeze_text_encoder", False))


def _ckpt_root(cfg: DictConfig) -> Path:
    return Path(cfg.checkpoint_dir).expanduser()


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{pointer} points at {path}, which holds no complete checkpoint")
    return path


def save_checkpoint(tr: Trainer, losses: list[float]) -> Path:
    root = _ckpt_root(tr.cfg)
    name = f"step_{tr.step:07d}"
    final, tmp = root / name, root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    text = {} if _frozen(tr.cfg) else _named("text_encoder", tr.pipe.text_encoder)  # a frozen one lives in init/
    save_file({**_named("unet", tr.pipe.unet), **text}, tmp / "model.safetensors")
    shadow = {f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(tr.ema.shadow_params)}
    save_file(shadow, tmp / "ema.safetensors")
    ema_scalars = {k: v for k, v in tr.ema.state_dict().items() if k != "shadow_params"}
    # the global RNG drives the UNet's dropout (its temporal convolutions): saved, so a resumed
    # run draws the masks an uninterrupted one would, whichever way its pipeline was made
    rng = {"rng": torch.get_rng_state()}
    if tr.device.type == "cuda":
        rng["cuda_rng"] = torch.cuda.get_rng_state(tr.device)
    torch.save({"optimizer": tr.optimizer.state_dict(), "ema": ema_scalars, **rng}, tmp / "training_state.pt")
    state = {"step": tr.step, "elapsed_s": tr.elapsed_s, "recent_loss": float(np.mean(losses[-50:])) if losses else None}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _atomic_write_text(root / "latest", name + "\n")
    _prune(root, keep=int(tr.cfg.keep_checkpoints), current=name)
    return final


def _prune(root: Path, keep: int, current: str) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != current)
    for old in steps[: max(0, len(steps) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def _init_pipeline(cfg: DictConfig, data: DataSource) -> Any:
    """A fresh pipeline, saved once as ``checkpoint_dir/init`` (config, tokenizer, scheduler)
    so a resumed run rebuilds exactly the same model and vocabulary."""
    root = _ckpt_root(cfg)
    init = root / "init"
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if (init / "model_index.json").is_file():
        saved = json.loads((root / "run.json").read_text())["model"]
        if saved != model_cfg:
            raise ValueError(
                f"checkpoint_dir {root} was started with model={saved}, not model={model_cfg}; "
                "use a new checkpoint_dir for a different model"
            )
        return load_tiny_pipeline(init)
    words = data.vocabulary()
    pipe = build_tiny_pipeline(model_cfg, words=sorted(words), seed=int(cfg.seed))
    if cfg.init_from:
        warm_start(pipe, Path(cfg.init_from).expanduser())
    if float(cfg.position_init_std) > 0:
        init_position(pipe, float(cfg.position_init_std), int(cfg.seed))
    tmp = root / f".init.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_tiny_pipeline(pipe, tmp)
    _atomic_write_text(root / "run.json", json.dumps({"model": model_cfg, "vocab_size": len(pipe.tokenizer),
                                                      "init_from": cfg.init_from}, indent=1))
    os.replace(tmp, init)
    return pipe


def warm_start(pipe: Any, folder: Path) -> None:
    """Copy a saved tiny pipeline's weights into ``pipe`` (same vocabulary and layers). Only
    parameters the source lacks and that start at zero may stay new (``position_proj``)."""
    src = load_tiny_pipeline(folder)
    if src.tokenizer.get_vocab() != pipe.tokenizer.get_vocab():
        raise ValueError(f"init_from={folder}: its tokenizer vocabulary differs from this run's")
    pipe.text_encoder.load_state_dict(src.text_encoder.state_dict(), strict=True)
    mine, theirs = pipe.unet.state_dict(), src.unet.state_dict()
    new = sorted(k for k in set(mine) - set(theirs) if not k.startswith("position_proj."))
    unexpected = sorted(set(theirs) - set(mine))
    reshaped = sorted(k for k in set(mine) & set(theirs) if mine[k].shape != theirs[k].shape)
    if new or unexpected or reshaped:
        raise ValueError(f"init_from={folder}: UNet weights do not match this model (missing {new[:5]}, "
                         f"unexpected {unexpected[:5]}, other shapes {reshaped[:5]}); only position_proj.* may be new")
    pipe.unet.load_state_dict(theirs, strict=False)


def init_position(pipe: Any, std: float, seed: int) -> None:
    """Draw a positional UNet's ``position_proj`` weights from N(0, std^2), so that position
    reaches the attention from the first step. From zero, "where" and "which word" must be
    learnt together (the gradient of a position term alone averages out over prompts whose
    layouts mirror each other). Neither start taught the warm-started model the relation
    words in ~1,000 CPU steps (README Status)."""
    proj = getattr(pipe.unet, "position_proj", None)
    if proj is None:
        raise ValueError("position_init_std > 0 needs a positional UNet (model.position_frequencies > 0)")
    with torch.no_grad():
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=torch.Generator().manual_seed(seed)) * std)


def _take_lock(root: Path) -> None:
    """One trainer per checkpoint_dir; a lock left by a killed run is taken over."""
    lock = root / "LOCK"
    if lock.is_file():
        try:
            pid = int(lock.read_text().split()[0])
            if pid != os.getpid():
                os.kill(pid, 0)  # raises if that process is gone
                raise RuntimeError(f"{root} is in use by a running training (pid {pid}); wait for it or stop it")
        except (ProcessLookupError, ValueError, IndexError):
            pass
    _atomic_write_text(lock, f"{os.getpid()}\n")
    for stale in [*root.glob(".step_*.tmp-*"), *root.glob(".init.tmp-*")]:  # from killed runs
        shutil.rmtree(stale, ignore_errors=True)


def _release_lock(root: Path) -> None:
    lock = root / "LOCK"
    if lock.is_file() and lock.read_text().split()[:1] == [str(os.getpid())]:
        lock.unlink()


def param_groups(pipe: Any, cfg: DictConfig) -> list[dict[str, Any]]:
    """AdamW groups, each with its ``lr_scale``: the UNet (1), the text encoder
    (``text_encoder_lr_scale``: its words may need to move faster than the UNet that reads
    them) and, in a positional UNet, ``position_proj`` (``position_lr_scale``: warm-started
    from zero, it has the most to learn). The groups are contiguous runs of one fixed
    parameter order, so a state saved with another split still loads (``load_optimizer_state``)."""
    position = [p for n, p in pipe.unet.named_parameters() if n.startswith("position_proj.")]
    rest = [p for n, p in pipe.unet.named_parameters() if not n.startswith("position_proj.")]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if not _frozen(cfg):  # a frozen encoder is no parameter of the optimizer (nor of the EMA)
        groups.append({"params": list(pipe.text_encoder.parameters()), "lr_scale": float(cfg.text_encoder_lr_scale)})
    if position:
        groups.append({"params": position, "lr_scale": float(cfg.position_lr_scale)})
    return groups


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Loads ``saved`` into ``optimizer`` whatever group split it was saved with, keeping the
    current groups' settings: torch's own load brings back the saved groups' settings, so a
    ``*_lr_scale`` changed on resume would be silently dropped."""
    flat = [i for g in saved["param_groups"] for i in g["params"]]
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if len(flat) != sum(sizes):
        raise ValueError(f"saved optimizer state has {len(flat)} parameters, the model {sum(sizes)}; "
                         "was the checkpoint made with another model config?")
    groups, start = [], 0
    for group, n in zip(optimizer.param_groups, sizes):
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": flat[start : start + n]})
        start += n
    optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})


def build_trainer(cfg: DictConfig, data: DataSource) -> Trainer:
    from diffusers.training_utils import EMAModel

    root = _ckpt_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    _take_lock(root)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu")
    pipe = _init_pipeline(cfg, data)
    pipe.unet.to(device)
    pipe.text_encoder.to(device)
    if _frozen(cfg):
        pipe.text_encoder.requires_grad_(False)
    if device.type == "cuda":  # fixed shapes: let cuDNN pick its fastest convolutions
        torch.backends.cudnn.benchmark = True
    params = [*pipe.unet.parameters(), *([] if _frozen(cfg) else pipe.text_encoder.parameters())]
    optimizer = torch.optim.AdamW(param_groups(pipe, cfg), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    # foreach: one kernel per update instead of one per tensor (GPU); the CPU keeps the loop
    ema = EMAModel(params, decay=float(cfg.ema_decay), use_ema_warmup=True, power=0.75,
                   foreach=device.type == "cuda")
    tr = Trainer(cfg, pipe, optimizer, ema, step=0, elapsed_s=0.0, device=device)
    tr.train_mode(True)
    ckpt = latest_checkpoint(root)
    if ckpt is not None:
        _load_checkpoint(tr, ckpt)
    return tr


def _load_checkpoint(tr: Trainer, ckpt: Path) -> None:
    weights = load_file(ckpt / "model.safetensors")
    modules = [("unet", tr.pipe.unet)] + ([] if _frozen(tr.cfg) else [("text_encoder", tr.pipe.text_encoder)])
    if _frozen(tr.cfg) and any(k.startswith("text_encoder.") for k in weights):
        raise ValueError(f"{ckpt} was saved with a trained text encoder; resume it without freeze_text_encoder=true")
    for prefix, module in modules:
        sub = {k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(prefix + ".")}
        module.load_state_dict(sub, strict=True)
    state = torch.load(ckpt / "training_state.pt", map_location=tr.device, weights_only=True)
    load_optimizer_state(tr.optimizer, state["optimizer"])
    if "rng" in state:  # checkpoints from before it was saved resume with the process's RNG
        torch.set_rng_state(state["rng"].cpu())
    if "cuda_rng" in state and tr.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), tr.device)
    shadow = load_file(ckpt / "ema.safetensors")
    tr.ema.load_state_dict({**state["ema"], "shadow_params": [shadow[f"ema.{i}"] for i in range(len(shadow))]})
    tr.ema.to(tr.device)
    info = json.loads((ckpt / "state.json").read_text())
    tr.step, tr.elapsed_s = int(info["step"]), float(info["elapsed_s"])


# --- the training step --------------------------------------------------------------------
def lr_at(cfg: DictConfig, step: int) -> float:
    base, warm = float(cfg.lr), int(cfg.warmup_steps)
    if step < warm:
        return base * (step + 1) / warm
    if cfg.lr_schedule == "constant":
        return base
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - warm) / max(1, int(cfg.steps) - warm))
        return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(f"lr_schedule={cfg.lr_schedule!r}; accepted: constant, cosine")


def videos_to_latents(pipe: Any, videos: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, F, H, W, 3) -> folded latents (B, C, F, h, w), exactly as the sampler decodes them."""
    b, f = videos.shape[:2]
    x = torch.from_numpy(videos).to(device).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)
    z = pipe.vae.encode(x.reshape(b * f, *x.shape[2:])).latent_dist.mode() * pipe.vae.config.scaling_factor
    return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)


def draw_timesteps(gen: torch.Generator, batch: int, num_t: int, high_share: float = 0.0,
                   high_min_t: int = 600) -> torch.Tensor:
    """Uniform training timesteps, a ``high_share`` of them redrawn from [high_min_t, num_t):
    layout and motion are set in the first, noisiest sampling steps, which uniform draws
    visit rarely. With ``high_share=0`` the draws are those of earlier runs (same generator use)."""
    t = torch.randint(0, num_t, (batch,), generator=gen)
    if high_share > 0:
        if not 0 <= high_min_t < num_t:
            raise ValueError(f"high_noise_min_t={high_min_t} must be in [0, {num_t})")
        high = torch.rand(batch, generator=gen) < high_share
        t = torch.where(high, torch.randint(high_min_t, num_t, (batch,), generator=gen), t)
    return t


def training_loss(tr: Trainer, prompts: list[str], videos: np.ndarray, gen: torch.Generator,
                  p_uncond: float | None = None, high_noise_share: float | None = None) -> torch.Tensor:
    """The diffusion loss of one batch (v, epsilon or sample target, per the scheduler)."""
    from diffusers import DDPMScheduler

    pipe, cfg, device = tr.pipe, tr.cfg, tr.device
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    x0 = videos_to_latents(pipe, videos, device)
    b = x0.shape[0]
    p_drop = float(cfg.p_uncond) if p_uncond is None else p_uncond
    drop = torch.rand(b, generator=gen) < p_drop  # empty prompts teach CFG's unconditional branch
    texts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
    if cfg.get("noise_device", "cpu") == "cpu" or device.type == "cpu":
        noise = torch.randn(x0.shape, generator=gen).to(device)
    else:  # drawn on the GPU from (seed, step), so the GPU need not wait for the CPU to draw it
        dev_gen = torch.Generator(device).manual_seed(int(gen.initial_seed()) + 2**40)
        noise = torch.randn(x0.shape, generator=dev_gen, device=device)
    share = float(cfg.high_noise_share) if high_noise_share is None else high_noise_share
    t = draw_timesteps(gen, b, sched.config.num_train_timesteps, share, int(cfg.high_noise_min_t)).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16"):
        pred, target = prediction_and_target(pipe, sched, texts, x0, noise, t)
    return F.mse_loss(pred.float(), target.float())


def prediction_and_target(pipe: Any, sched: Any, texts: list[str], x0: torch.Tensor, noise: torch.Tensor,
                          t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser's output on ``x0`` noised to ``t`` under ``texts``, and what it should be
    (v, epsilon or the sample, per the scheduler's prediction type)."""
    target = {"epsilon": noise, "sample": x0}.get(sched.config.prediction_type)
    if target is None:
        target = sched.get_velocity(x0, noise, t)
    embeds = encode_texts(pipe.text_encoder, pipe.tokenizer, texts, x0.device)
    pred = pipe.unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=embeds, return_dict=False)[0]
    return pred, target


@torch.no_grad()
def eval_loss(tr: Trainer, data: DataSource) -> float:
    """Loss on fixed batches with fixed noise and timesteps: a smooth curve to watch, unlike
    the per-step loss whose timestep draw makes it jump."""
    was_training = tr.pipe.unet.training
    tr.train_mode(False)
    try:
        losses = []
        for i in range(int(tr.cfg.eval_batches)):
            prompts, videos = data.batch(EVAL_STEP0 + i, int(tr.cfg.batch_size))
            gen = torch.Generator().manual_seed(EVAL_STEP0 + i)
            losses.append(float(training_loss(tr, prompts, videos, gen, p_uncond=0.0, high_noise_share=0.0)))
    finally:
        tr.train_mode(was_training)
    return float(np.mean(losses))


class _StepBatches(torch.utils.data.Dataset):
    """Batch ``i`` is the data of step ``start + i``: worker processes render ahead in step
    order, and the batches equal those drawn in the training process."""

    def __init__(self, data: DataSource, start: int, stop: int, batch_size: int) -> None:
        self.data, self.start, self.stop, self.batch_size = data, start, stop, batch_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> tuple[int, list[str], np.ndarray]:
        step = self.start + i
        return (step, *self.data.batch(step, self.batch_size))


def step_batches(data: DataSource, start: int, stop: int, batch_size: int,
                 num_workers: int = 0) -> Iterator[tuple[int, list[str], np.ndarray]]:
    """(step, prompts, videos) for steps start..stop-1. ``num_workers`` > 0 renders them in
    that many processes ahead of the model (a GPU outruns one rendering core)."""
    if num_workers <= 0:
        for step in range(start, stop):
            yield (step, *data.batch(step, batch_size))
        return
    loader = torch.utils.data.DataLoader(
        _StepBatches(data, start, stop, batch_size), batch_size=None, shuffle=False,
        num_workers=num_workers, prefetch_factor=4, collate_fn=lambda item: item,
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG (dropout) untouched
        worker_init_fn=_ignore_stop_signals)
    yield from loader


def _ignore_stop_signals(worker_id: int) -> None:
    """Data workers ignore SIGTERM/SIGINT: a signal to the whole process group (``timeout``,
    SLURM, Ctrl-C) reaches the trainer, which saves a checkpoint and closes the loader, which
    ends its workers. A worker killed by it instead would make the loader raise in the middle
    of a step, and the run would end without its checkpoint."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def train_step(tr: Trainer, data: DataSource, batch: tuple[list[str], np.ndarray] | None = None) -> float:
    """One optimizer step on ``batch`` (default: the data of step ``tr.step``)."""
    cfg = tr.cfg
    prompts, videos = batch if batch is not None else data.batch(tr.step, int(cfg.batch_size))
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + tr.step)
    for group in tr.optimizer.param_groups:
        group["lr"] = lr_at(cfg, tr.step) * group.get("lr_scale", 1.0)
    loss = training_loss(tr, prompts, videos, gen)
    tr.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(tr.params, float(cfg.grad_clip))
    tr.optimizer.step()
    tr.ema.step(tr.params)
    tr.step += 1
    return float(loss.detach())


# --- logging, previews, export ------------------------------------------------------------
def _open_log(root: Path, step: int) -> tuple[Any, Any, list[float]]:
    """Open loss.csv for appending, dropping rows past the resumed step (they were redone)."""
    path = root / "loss.csv"
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open() as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    tmp = path.with_name(".loss.csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    fh = path.open("a", newline="")
    return fh, csv.DictWriter(fh, LOG_COLUMNS), [float(r["loss"]) for r in rows if r.get("loss")]


def ema_pipeline(tr: Trainer) -> Any:
    """A copy of the pipeline holding the EMA weights, on the CPU, in eval mode."""
    tr.ema.store(tr.params)
    tr.ema.copy_to(tr.params)
    try:
        pipe = copy.deepcopy(tr.pipe).to("cpu")
    finally:
        tr.ema.restore(tr.params)
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return pipe


def write_preview(tr: Trainer, data: DataSource) -> Path:
    """A PNG grid (one row per prompt, one column per frame) of EMA samples, for eyeballing."""
    from PIL import Image

    from cvg_bench.generators.tiny import TinyGenerator
    from cvg_bench.types import PromptSpec

    cfg = tr.cfg
    prompts, _ = data.batch(10**9, int(cfg.preview_prompts))  # a fixed set of prompts
    gen = TinyGenerator(pipeline=ema_pipeline(tr), num_frames=int(cfg.data.num_frames), height=int(cfg.data.height),
                        width=int(cfg.data.width), num_inference_steps=25, guidance_scale=float(cfg.preview_guidance))
    rows = [np.concatenate(list(gen.sample(PromptSpec("p", p, "preview"), seed=i).video), axis=1)
            for i, p in enumerate(prompts)]
    out = _ckpt_root(cfg) / "previews" / f"step_{tr.step:07d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    (out.parent / f"step_{tr.step:07d}.txt").write_text("\n".join(prompts) + "\n")
    return out


def export(tr: Trainer, losses: list[float]) -> Path:
    """Save the EMA pipeline to ``export_dir`` (replaced atomically) with TRAINING.json/.md."""
    cfg = tr.cfg
    out = Path(cfg.export_dir).expanduser()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tiny_pipeline(ema_pipeline(tr), tmp)
    final_loss = float(np.mean(losses[-100:])) if losses else None
    record = {
        "command": _command_line(),
        "seed": int(cfg.seed), "steps": tr.step, "minutes": round(tr.elapsed_s / 60, 1),
        "final_loss_mean_last_100": final_loss, "final_eval_loss": _last_logged(Path(cfg.checkpoint_dir), "eval_loss"), "weights": "EMA",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "torch": torch.__version__, "device": str(tr.device),
        "segments": [{k: v for k, v in seg.items() if k != "config"} for seg in read_segments(Path(cfg.checkpoint_dir))],
    }
    (tmp / "TRAINING.json").write_text(json.dumps(record, indent=1))
    (tmp / "TRAINING.md").write_text(_training_md(record))
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def record_segment(root: Path, cfg: DictConfig, start_step: int) -> list[dict[str, Any]]:
    """Append this run to ``root/segments.jsonl`` (its start step, command and config): a model
    trained over several resumed runs, perhaps with other keys each time, keeps every
    command in its TRAINING.json. A segment whose steps are redone (killed before its first
    checkpoint) is dropped."""
    segments = [s for s in read_segments(root) if int(s["start_step"]) < start_step]
    segments.append({"start_step": start_step, "command": _command_line(),
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "overrides": _overrides(cfg), "config": OmegaConf.to_container(cfg, resolve=True)})
    _atomic_write_text(root / "segments.jsonl", "".join(json.dumps(s) + "\n" for s in segments))
    return segments


def _overrides(cfg: DictConfig) -> list[str]:
    """``key=value`` for every key that differs from configs/component/generator.yaml."""
    base = flatten(OmegaConf.to_container(default_config(), resolve=True))
    mine = flatten(OmegaConf.to_container(cfg, resolve=True))
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in mine.items()
            if base.get(k, object()) != v]


def read_segments(root: Path) -> list[dict[str, Any]]:
    path = root.expanduser() / "segments.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _lr_jump_warning(cfg: DictConfig, step: int, last_lr: float | None) -> str | None:
    """A resumed run whose lr differs from the last logged one by > 1.5x was probably started
    without the previous run's schedule keys (steps, lr, lr_schedule)."""
    if last_lr is None or last_lr <= 0 or step == 0:
        return None
    now = lr_at(cfg, step)
    if max(now / last_lr, last_lr / now) <= 1.5:
        return None
    return (f"warning: resuming at step {step} with lr {now:.3g}, but the last logged lr was {last_lr:.3g} "
            f"(lr={cfg.lr}, lr_schedule={cfg.lr_schedule}, steps={cfg.steps}); pass the previous run's "
            "schedule keys to continue its schedule")


def _last_logged(root: Path, column: str) -> float | None:
    """The last value of ``column`` in ``root/loss.csv`` (rows leave columns empty)."""
    path = root.expanduser() / "loss.csv"
    if not path.is_file():
        return None
    with path.open() as fh:
        vals = [float(r[column]) for r in csv.DictReader(fh) if r.get(column)]
    return vals[-1] if vals else None


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("tiny_training.py"):
        argv[0] = "-m cvg_bench.generators.tiny_training"
    elif argv and argv[0].endswith(("cvg_bench/__main__.py", "cvg-bench")):
        argv[0] = "-m cvg_bench"
    return " ".join(["python", *argv])


def _training_md(r: dict[str, Any]) -> str:
    loss = "n/a" if r["final_loss_mean_last_100"] is None else f"{r['final_loss_mean_last_100']:.4f}"
    return (
        "# Tiny shapes-world generator\n\n"
        f"Made by `{r['command']}` (resumable; see cvg_bench/generators/tiny_training.py).\n\n"
        f"- seed: {r['seed']}\n- steps: {r['steps']}\n- training minutes: {r['minutes']} on {r['device']}\n"
        f"- eval loss (fixed batches, noise and timesteps): {r['final_eval_loss']}\n"
        f"- final loss (mean of the last 100 steps, {r['config']['model'].get('scheduler', {}).get('prediction_type', 'v_prediction')} target): {loss}\n"
        f"- weights: EMA (decay {r['config']['ema_decay']})\n- torch {r['torch']}\n\n"
        + _segments_md(r.get("segments", []), r["steps"])
        + "Full configuration: TRAINING.json.\n"
    )


def _segments_md(segments: list[dict[str, Any]], steps: int) -> str:
    if not segments:
        return ""
    ends = [int(s["start_step"]) for s in segments[1:]] + [steps]
    lines = [f"- steps {int(s['start_step']):,}-{end:,} ({s['started_at']}): `{s['command']}`"
             for s, end in zip(segments, ends)]
    first = int(segments[0]["start_step"])
    if first > 0:
        lines.insert(0, f"- steps 0-{first:,}: earlier runs, from before this record was kept")
    return "Runs (recorded in the checkpoint folder's segments.jsonl):\n\n" + "\n".join(lines) + "\n\n"


# --- the loop -----------------------------------------------------------------------------
class _StopFlag:
    """SIGTERM/SIGINT ask for a checkpoint at the end of the current step, then a clean exit."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.stop = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train_tiny_generator(cfg: Any = None, data: DataSource | None = None) -> Path:
    """Train (or resume) and export the tiny generator; returns the export folder."""
    from tqdm.auto import tqdm

    cfg = load_config(cfg)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    data = data or make_data_source(cfg)
    tr = build_trainer(cfg, data)
    root = _ckpt_root(cfg)
    fh, log, losses = _open_log(root, tr.step)  # drops rows past the checkpoint
    last_lr = _last_logged(root, "lr")
    total = int(cfg.steps)
    if cfg.export_only:
        fh.close()
        _release_lock(root)
        return export(tr, losses)
    if tr.step < total:
        record_segment(root, cfg, tr.step)
    warning = _lr_jump_warning(cfg, tr.step, last_lr)
    if warning:
        print(warning, file=sys.stderr)
    if tr.step == 0 and cfg.eval_every:
        log.writerow({"step": 0, "eval_loss": f"{eval_loss(tr, data):.6f}"})
        fh.flush()
    bar = tqdm(total=total, initial=min(tr.step, total), desc="tiny generator", dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    last_saved = tr.step
    batches = step_batches(data, tr.step, total, int(cfg.batch_size), int(cfg.data.num_workers))
    try:
        with _StopFlag() as flag:
            while not flag.stop:
                try:
                    step, prompts, videos = next(batches)
                except StopIteration:
                    break
                except Exception:  # a signal to the process group also ends the data workers
                    if flag.stop:
                        break
                    raise
                if flag.stop:
                    break
                if step != tr.step:
                    raise RuntimeError(f"data of step {step} arrived for training step {tr.step}")
                t0 = time.perf_counter()
                loss = train_step(tr, data, (prompts, videos))
                dt = time.perf_counter() - t0
                tr.elapsed_s += dt
                losses.append(loss)
                evaluate = bool(cfg.eval_every) and (tr.step % int(cfg.eval_every) == 0 or tr.step == total)
                if evaluate or tr.step % int(cfg.log_every) == 0 or tr.step == total:
                    log.writerow({"step": tr.step, "loss": f"{loss:.6f}", "lr": f"{lr_at(cfg, tr.step - 1):.3g}",
                                  "eval_loss": f"{eval_loss(tr, data):.6f}" if evaluate else "",
                                  "seconds_per_step": f"{dt:.3f}", "elapsed_min": f"{tr.elapsed_s / 60:.2f}"})
                    fh.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", s_per_step=f"{dt:.2f}")
                if tr.step % int(cfg.checkpoint_every) == 0:
                    save_checkpoint(tr, losses)
                    last_saved = tr.step
                if cfg.preview_every and tr.step % int(cfg.preview_every) == 0:
                    write_preview(tr, data)
                if cfg.export_every and tr.step % int(cfg.export_every) == 0:
                    export(tr, losses)
            if tr.step != last_saved:
                save_checkpoint(tr, losses)
    finally:
        batches.close()
        bar.close()
        fh.close()
        _release_lock(root)
    if tr.step < total:
        print(f"stopped at step {tr.step}/{total}; re-run the same command to resume from {root}")
        return root
    return export(tr, losses)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        print(OmegaConf.to_yaml(default_config()))
        return
    bad = [a for a in args if "=" not in a]
    if bad:
        raise SystemExit(f"arguments must be key=value (see configs/component/generator.yaml), got {bad}")
    out = train_tiny_generator(load_config(None, args))
    print(f"done: {out}")


if __name__ == "__main__":
    main()
