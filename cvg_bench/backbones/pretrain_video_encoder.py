"""Pre-train the `video-encoder` backbone without labels, then it stays frozen.

Input: what CVG's aggregator writes for the backbone, a short low-resolution video
``(frames, channels, s, s)``; here each channel is the coverage of one colour of a rendered
shapes video of a *seen* composition, as the renderer drew it (``shapes.render.coverage``:
by construction, no segmentation, nothing of the evaluation oracle).
Objective (self-supervised, masked reconstruction): half of the frames (at random, per video)
and the channel order (at random) are hidden or shuffled in the input; the encoder's
``out_dim`` features alone must reconstruct the whole volume through a linear decoder that
is dropped after pre-training. No label, no position, motion or count target: the features
carry layout and motion only because reconstructing the hidden frames needs them.

    python -m cvg_bench train component=video_encoder
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from tqdm import tqdm

from cvg_bench.backbones.video_encoder import DEFAULT_WEIGHTS, VideoEncoder
from cvg_bench.records import atomic_write_text

log = logging.getLogger(__name__)

OBJECTIVE = "masked_frame_reconstruction"


def make_examples(n: int, seed: int, frames: int, size: int, map_size: int,
                  channels: int) -> torch.Tensor:
    """``n`` coverage volumes ``(n, frames, channels, map_size, map_size)`` of seen
    compositions, every shapes category in turn."""
    from cvg_bench.shapes.grammar import CATEGORIES, sample_spec
    from cvg_bench.shapes.render import coverage, plan_scene

    rng = np.random.default_rng(seed)
    vols = np.zeros((n, frames, channels, map_size, map_size), np.float32)
    for i in tqdm(range(n), desc=f"render {n} examples", leave=False):
        spec = sample_spec(rng, CATEGORIES[i % len(CATEGORIES)], "seen")
        plan = plan_scene(spec, np.random.default_rng([seed * 1_000_003 + i, 0]), frames)
        cov = torch.from_numpy(coverage(plan, size, channels))  # (frames, channels, size, size)
        vols[i] = F.interpolate(cov, size=(map_size, map_size), mode="area").numpy()
    return torch.from_numpy(vols)


def hide(x: torch.Tensor, gen: torch.Generator, frame_share: float = 0.5) -> torch.Tensor:
    """The input of the objective: channels shuffled per video, ``frame_share`` of the
    frames zeroed per video (at least one frame kept)."""
    b, frames, channels = x.shape[:3]
    perm = torch.stack([torch.randperm(channels, generator=gen) for _ in range(b)])
    out = torch.gather(x, 2, perm[:, None, :, None, None].expand_as(x)).clone()
    keep = torch.rand(b, frames, generator=gen) >= frame_share
    keep[torch.arange(b), torch.randint(frames, (b,), generator=gen)] = True
    return out * keep[:, :, None, None, None], perm


class Reconstructor(torch.nn.Module):
    """Encoder + a linear decoder from its features to the whole (unshuffled) volume."""

    def __init__(self, enc: VideoEncoder, frames: int, channels: int, map_size: int) -> None:
        super().__init__()
        self.enc, self.shape = enc, (frames, channels, map_size, map_size)
        self.dec = torch.nn.Linear(enc.out_dim, int(np.prod(self.shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x)).view(len(x), *self.shape)


def reconstruction_loss(model: Reconstructor, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """MSE of the reconstruction of ``x`` (in the shuffled channel order the input has)."""
    hidden, perm = hide(x, gen)
    target = torch.gather(x, 2, perm[:, None, :, None, None].expand_as(x))
    return F.mse_loss(model(hidden), target)


def _overrides() -> list[str]:
    """The command line's overrides when run through hydra (for the report's command)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [o for o in HydraConfig.get().overrides.task if not o.startswith("component=")]
    except ValueError:  # not under hydra
        return []


def pretrain_video_encoder(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """Pre-train, save the encoder weights (safetensors) and a report beside them."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    torch.manual_seed(int(cfg.seed))
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    started = time.time()
    enc = VideoEncoder(cfg.frames, cfg.map_size, channels=cfg.channels, width=cfg.width,
                       out_dim=cfg.out_dim, weights=None)
    model = Reconstructor(enc, int(cfg.frames), int(cfg.channels), int(cfg.map_size))
    x = make_examples(int(cfg.train), int(cfg.seed), cfg.frames, cfg.size, cfg.map_size, cfg.channels)
    vx = make_examples(int(cfg.val), int(cfg.seed) + 1, cfg.frames, cfg.size, cfg.map_size, cfg.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr), weight_decay=0.01)
    gen = torch.Generator().manual_seed(int(cfg.seed))

    def val_loss() -> float:
        with torch.no_grad():
            return float(reconstruction_loss(model, vx, torch.Generator().manual_seed(1)))

    history = [{"epoch": 0, "val_loss": val_loss()}]
    for epoch in tqdm(range(int(cfg.epochs)), desc="video-encoder"):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), int(cfg.batch_size)):
            idx = order[i:i + int(cfg.batch_size)]
            loss = reconstruction_loss(model, x[idx], gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "train_loss": total / len(x), "val_loss": val_loss()})
    # the baseline a useful encoder must beat: predicting every video as the mean volume
    mean_baseline = float(F.mse_loss(x.mean(0, keepdim=True).expand_as(vx), vx))
    out = Path(cfg.out) if cfg.out else DEFAULT_WEIGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(out))
    report = {"objective": OBJECTIVE, "labels": "none (rendered seen compositions, no targets)",
              "val_loss": history[-1]["val_loss"], "val_loss_mean_volume": mean_baseline,
              "history": history, "minutes": (time.time() - started) / 60,
              "config": OmegaConf.to_container(cfg, resolve=True),
              "command": "python -m cvg_bench train component=video_encoder " + " ".join(_overrides())}
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1))
    log.info("video-encoder pre-trained (%s): val MSE %.5f (mean-volume baseline %.5f)",
             OBJECTIVE, report["val_loss"], mean_baseline)
    return report
