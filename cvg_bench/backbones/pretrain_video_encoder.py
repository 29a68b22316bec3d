"""Pre-train the `video-encoder` backbone on rendered shapes layouts, then it stays frozen.

Input: what CVG's aggregator writes for the backbone, a short low-resolution video
``(frames, 3, s, s)``; here each channel is one entity's exact object mask (from the
oracle's colour segmentation of a rendered shapes video), area-resized to ``s``.
Target: per channel, where the object is and how it changes, in units of the frame:
present, mean x / y over the first and the last half of the frames, log area ratio
(last / first half) and the number of connected components. These are the quantities every
composition category is judged on, so the frozen features carry layout, motion, size and
count, without ever seeing CVG's labels.

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
from scipy import ndimage
from tqdm import tqdm

from cvg_bench.backbones.video_encoder import DEFAULT_WEIGHTS, VideoEncoder
from cvg_bench.records import atomic_write_text

log = logging.getLogger(__name__)

TARGETS = ("present", "x_first", "y_first", "x_last", "y_last", "log_area_ratio", "components")


def mask_targets(mask: np.ndarray) -> np.ndarray:
    """``mask`` (frames, H, W) bool -> the targets of :data:`TARGETS` (zeros when empty)."""
    frames, h, w = mask.shape
    half = frames // 2
    area = mask.reshape(frames, -1).sum(1).astype(np.float64)
    if area.sum() == 0:
        return np.zeros(len(TARGETS), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]

    def centre(fs: slice) -> tuple[float, float]:
        m = mask[fs]
        n = max(m.sum(), 1)
        return float((m * xs).sum() / n / w), float((m * ys).sum() / n / h)

    (x0, y0), (x1, y1) = centre(slice(0, half)), centre(slice(half, frames))
    ratio = np.log((area[half:].mean() + 1) / (area[:half].mean() + 1))
    comps = np.mean([ndimage.label(f)[1] for f in mask])
    return np.asarray([1.0, x0, y0, x1, y1, ratio, comps / 3.0], np.float32)


def make_examples(n: int, seed: int, frames: int, size: int, map_size: int,
                  channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (volume, target) pairs from every shapes category in turn."""
    from cvg_bench.generators.localisation import entity_masks
    from cvg_bench.shapes.grammar import CATEGORIES, sample_spec
    from cvg_bench.shapes.render import RenderConfig, render

    rng = np.random.default_rng(seed)
    cfg = RenderConfig(frames=frames, size=size)
    vols = np.zeros((n, frames, channels, map_size, map_size), np.float32)
    tgts = np.zeros((n, channels, len(TARGETS)), np.float32)
    for i in tqdm(range(n), desc=f"render {n} examples", leave=False):
        spec = sample_spec(rng, CATEGORIES[i % len(CATEGORIES)], "all")
        video = render(spec, seed=seed * 1_000_003 + i, cfg=cfg)
        masks = entity_masks(video, spec)
        if any(m is None for m in masks):  # e.g. a colour change: the whole foreground
            from cvg_bench.shapes.oracle import MIN_CHROMA

            fg = (video.max(-1).astype(np.int16) - video.min(-1)) >= MIN_CHROMA * 255
            masks = [fg if m is None else m for m in masks]
        for c, m in enumerate(masks[:channels]):
            small = F.interpolate(torch.from_numpy(m.astype(np.float32))[:, None],
                                  size=(map_size, map_size), mode="area")[:, 0]
            vols[i, :, c] = small.numpy()
            tgts[i, c] = mask_targets(m)
    return torch.from_numpy(vols), torch.from_numpy(tgts)


def _loss(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """MSE; the geometry of an absent channel is not asked for."""
    err = (pred - tgt) ** 2
    present = tgt[..., :1]
    return (err[..., :1].mean() + (err[..., 1:] * present).sum() / present.sum().clamp_min(1)
            / (len(TARGETS) - 1))


def r2_per_target(pred: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
    """R^2 per target over present channels (``present`` over all channels)."""
    out = {}
    present = tgt[..., 0] > 0.5
    for j, name in enumerate(TARGETS):
        p, t = (pred[..., j], tgt[..., j]) if j == 0 else (pred[..., j][present], tgt[..., j][present])
        out[name] = float(1 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum().clamp_min(1e-12))
    return out


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
    head = torch.nn.Linear(cfg.out_dim, cfg.channels * len(TARGETS))  # dropped after pre-training
    x, y = make_examples(int(cfg.train), int(cfg.seed), cfg.frames, cfg.size, cfg.map_size, cfg.channels)
    vx, vy = make_examples(int(cfg.val), int(cfg.seed) + 1, cfg.frames, cfg.size, cfg.map_size, cfg.channels)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=float(cfg.lr), weight_decay=0.01)
    gen = torch.Generator().manual_seed(int(cfg.seed))

    def predict(v: torch.Tensor) -> torch.Tensor:
        return head(enc(v)).view(len(v), cfg.channels, len(TARGETS))

    history = []
    for epoch in tqdm(range(int(cfg.epochs)), desc="video-encoder"):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), int(cfg.batch_size)):
            idx = order[i:i + int(cfg.batch_size)]
            loss = _loss(predict(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            val = float(_loss(predict(vx), vy))
        history.append({"epoch": epoch + 1, "train_loss": total / len(x), "val_loss": val})
    with torch.no_grad():
        r2 = r2_per_target(predict(vx), vy)
    out = Path(cfg.out) if cfg.out else DEFAULT_WEIGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(out))
    report = {"val_r2": r2, "history": history, "minutes": (time.time() - started) / 60,
              "config": OmegaConf.to_container(cfg, resolve=True),
              "command": "python -m cvg_bench train component=video_encoder " + " ".join(_overrides())}
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1))
    log.info("video-encoder pre-trained: val R^2 %s", {k: round(v, 3) for k, v in r2.items()})
    return report
