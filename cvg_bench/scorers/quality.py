"""Scorer ``quality``: model-free per-video temporal quality, plus a Fréchet video distance.

Per video (VBench's definitions, without its models):

- ``temporal_flickering``: the mean absolute difference between consecutive frames, in 0-255
  units (VBench ``temporal_flickering.py``: ``mean(absdiff(f_t, f_t+1))``); normalised
  ``(255 - x) / 255``.
- ``motion_smoothness``: how well each odd frame ``t`` is predicted from its neighbours. VBench
  drops the odd frames, re-creates them with a learned interpolator (AMT) and takes the mean
  absolute error against the real ones; here the interpolator is the plain average
  ``(f_{t-1} + f_{t+1}) / 2`` (no model, no weights), on the same frames (odd ``t`` with both
  neighbours present); normalised ``(255 - x) / 255``.

Both raw values are errors (lower is better); both normalised values are in [0, 1], higher is
better. The primary metric is ``motion_smoothness``: the neighbour average penalises slow,
smooth motion about half as much as frame differencing does, while flicker (frame-to-frame noise)
costs both alike. Note that both reward static videos; read them next to a faithfulness score.

The Fréchet video distance is a SET metric (one number per pair of video sets), so it is not a
per-video scorer: :func:`frechet_video_distance` and :func:`fvd_against_shapes` (a run's videos
against rendered shapes-world videos of the same prompts). Encoders: :class:`RandomVideoEncoder`
(a fixed-seed random 3D conv net; needs nothing, used for the shapes world and tests) and
:class:`R3D18Encoder` (torchvision's Kinetics-400 R3D-18, from a local state dict or torchvision's
download). docs/scorers.md says why.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from cvg_bench.registry import register
from cvg_bench.scorers._common import check_video
from cvg_bench.scorers.base import Scorer, ScoreResult
from cvg_bench.types import PromptSpec, Video

log = logging.getLogger(__name__)

VERSION = "quality-v1"


# ---------------------------------------------------------------------------------------
# Per-video metrics
def flicker_error(video: Video) -> float:
    """Mean absolute difference of consecutive frames (0-255); 0.0 for a 1-frame video."""
    v = check_video(video).astype(np.float32)
    if len(v) < 2:
        return 0.0
    return float(np.abs(v[1:] - v[:-1]).mean())


def interpolation_error(video: Video) -> float:
    """Mean absolute error (0-255) of predicting each odd frame ``t`` (with ``t + 1`` present)
    by ``(f_{t-1} + f_{t+1}) / 2``; needs at least 3 frames."""
    v = check_video(video).astype(np.float32)
    if len(v) < 3:
        raise ValueError(f"motion smoothness needs at least 3 frames, got {len(v)}")
    t = np.arange(1, len(v) - 1, 2)
    predicted = 0.5 * (v[t - 1] + v[t + 1])
    return float(np.abs(v[t] - predicted).mean())


def to_unit(error: float) -> float:
    """VBench's normalisation of a 0-255 error: ``(255 - x) / 255``, clipped to [0, 1]."""
    return float(min(1.0, max(0.0, (255.0 - error) / 255.0)))


@register("scorer", "quality")
class QualityScorer(Scorer):
    """Model-free temporal quality: temporal flickering and motion smoothness (VBench-style)."""

    role: ClassVar[str] = "quality"
    primary: ClassVar[str] = "motion_smoothness"
    # raw values are 0-255 errors
    higher_is_better: ClassVar[dict[str, bool]] = {"motion_smoothness": False,
                                                   "temporal_flickering": False}

    def __init__(self) -> None:
        pass

    def version(self) -> str:
        return VERSION

    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        flicker = flicker_error(video)
        interp = interpolation_error(video)
        raw = {"motion_smoothness": interp, "temporal_flickering": flicker}
        norm = {"motion_smoothness": to_unit(interp), "temporal_flickering": to_unit(flicker)}
        return ScoreResult(raw=raw, normalised=norm, details={"frames": int(len(video))})


# ---------------------------------------------------------------------------------------
# Fréchet video distance (a set metric)
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians (FID/FVD)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected with few samples
        warnings.simplefilter("ignore")
        covmean = np.asarray(linalg.sqrtm(s1 @ s2))
        if not np.isfinite(covmean).all():  # regularise, as pytorch-fid does
            offset = np.eye(s1.shape[0]) * eps
            covmean = np.asarray(linalg.sqrtm((s1 + offset) @ (s2 + offset)))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            log.warning("Fréchet distance: sqrtm has a large imaginary part (%.3g); using the "
                        "real part", np.abs(covmean.imag).max())
        covmean = covmean.real
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (n >= 2, dim) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


VideoEncoderFn = Callable[[Sequence[Video]], np.ndarray]


def frechet_video_distance(videos_a: Sequence[Video], videos_b: Sequence[Video],
                           encoder: VideoEncoderFn) -> float:
    """Fréchet distance between the encoder features of two sets of uint8 (F, H, W, 3) videos.

    ``encoder`` maps a list of videos to an (n, dim) array (e.g. :class:`RandomVideoEncoder`,
    :class:`R3D18Encoder`). Both sets need at least 2 videos; with fewer videos than feature
    dimensions the covariances are singular and the value is biased upwards (compare sets of
    equal size only, and report the size)."""
    if len(videos_a) < 2 or len(videos_b) < 2:
        raise ValueError(f"FVD needs at least 2 videos per set, got {len(videos_a)} and {len(videos_b)}")
    fa, fb = np.asarray(encoder(list(videos_a))), np.asarray(encoder(list(videos_b)))
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"encoder gave {fa.shape[1]} and {fb.shape[1]} features for the two sets")
    if min(len(fa), len(fb)) <= fa.shape[1]:
        log.warning("FVD on %d and %d videos with %d-d features: covariances are singular, the "
                    "value is biased; compare only sets of equal size", len(fa), len(fb), fa.shape[1])
    return frechet_distance(*feature_statistics(fa), *feature_statistics(fb))


def _videos_to_tensor(videos: Sequence[Video], frames: int, size: int, mean: Sequence[float],
                      std: Sequence[float]):
    """(n, 3, frames, size, size) float tensor: frames resampled evenly, bilinear resize."""
    import torch
    import torch.nn.functional as F

    out = []
    for video in videos:
        v = check_video(video)
        idx = np.linspace(0, len(v) - 1, frames).round().astype(int)
        x = torch.from_numpy(np.ascontiguousarray(v[idx])).float().div(255.0)  # (T, H, W, 3)
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        out.append(x.permute(1, 0, 2, 3))  # (3, T, s, s)
    return torch.stack(out)


class RandomVideoEncoder:
    """A frozen 3D-conv net with weights drawn from a fixed seed: features for FVD that need no
    download. Random convolutional features are a weak but honest distribution embedding (they
    see colour, texture, edges and their motion, not semantics); identity = (seed, sizes) and a
    hash of the weights, so two machines can check they measure with the same encoder.
    """

    def __init__(self, seed: int = 0, frames: int = 8, size: int = 32, width: int = 16,
                 dim: int = 64) -> None:
        import torch
        from torch import nn

        self.seed, self.frames, self.size, self.width, self.dim = seed, frames, size, width, dim
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv3d(3, width, 3, padding=1, stride=(1, 2, 2)), nn.ReLU(),
            nn.Conv3d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv3d(2 * width, dim, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Conv3d):
                    fan_in = m.in_channels * int(np.prod(m.kernel_size))
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                    m.bias.zero_()
        self.net.eval().requires_grad_(False)
        weights = torch.cat([p.flatten() for p in self.net.parameters()]).numpy().tobytes()
        self.fingerprint = hashlib.sha256(weights).hexdigest()[:12]

    @property
    def identity(self) -> str:
        return (f"random-conv3d(seed={self.seed}, frames={self.frames}, size={self.size}, "
                f"width={self.width}, dim={self.dim})@{self.fingerprint}")

    def __call__(self, videos: Sequence[Video], batch_size: int = 16) -> np.ndarray:
        import torch

        feats = []
        with torch.no_grad():
            for i in range(0, len(videos), batch_size):
                x = _videos_to_tensor(videos[i:i + batch_size], self.frames, self.size,
                                      (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
                feats.append(self.net(x).numpy())
        return np.concatenate(feats).astype(np.float64)


class R3D18Encoder:
    """torchvision's R3D-18 (Kinetics-400) penultimate features (512-d), frozen.

    ``weights``: a local state-dict file (``.pth``/``.pt``, e.g. torchvision's
    ``r3d_18-b3b3357e.pth``), or ``"kinetics400"`` for torchvision's own download (needs
    download.pytorch.org). The standard FVD uses an I3D network from TF-Hub; this is a PyTorch
    stand-in, so its values are not comparable to published FVDs.
    """

    MEAN = (0.43216, 0.394666, 0.37645)
    STD = (0.22803, 0.22145, 0.216989)

    def __init__(self, weights: str = "kinetics400", frames: int = 16, size: int = 112,
                 device: str = "cpu") -> None:
        import torch
        from torchvision.models.video import R3D_18_Weights, r3d_18

        self.frames, self.size, self.device, self.weights = frames, size, device, weights
        if weights == "kinetics400":
            try:
                model = r3d_18(weights=R3D_18_Weights.KINETICS400_V1)
            except Exception as exc:  # noqa: BLE001 - no internet: say how to get the file
                raise FileNotFoundError(
                    f"cannot download torchvision's R3D-18 Kinetics-400 weights ({exc}); fetch "
                    f"{R3D_18_Weights.KINETICS400_V1.url} elsewhere and pass its path as weights=")
            self.fingerprint = "torchvision-KINETICS400_V1"
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"R3D-18 weights file {path} not found; download "
                    f"{R3D_18_Weights.KINETICS400_V1.url} and pass its path as weights=")
            model = r3d_18(weights=None)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            from cvg_bench.scorers._common import file_fingerprint

            self.fingerprint = file_fingerprint(path)
        model.fc = torch.nn.Identity()
        self.net = model.eval().requires_grad_(False).to(device)

    @property
    def identity(self) -> str:
        return f"r3d_18(frames={self.frames}, size={self.size})@{self.fingerprint}"

    def __call__(self, videos: Sequence[Video], batch_size: int = 8) -> np.ndarray:
        import torch

        feats = []
        with torch.no_grad():
            for i in range(0, len(videos), batch_size):
                x = _videos_to_tensor(videos[i:i + batch_size], self.frames, self.size,
                                      self.MEAN, self.STD).to(self.device)
                feats.append(self.net(x).float().cpu().numpy())
        return np.concatenate(feats).astype(np.float64)


def run_videos(run_dir: str | Path) -> list[tuple[dict[str, Any], Video]]:
    """(record, video) of every sample of a run directory whose video was saved, in record order."""
    from cvg_bench.records import iter_records
    from cvg_bench.video_io import read_video

    root = Path(run_dir)
    out = []
    for record in iter_records(root):
        if record.get("error") is None and record.get("video_path"):
            out.append((record, read_video(root / record["video_path"])))
    return out


def fvd_against_shapes(run_dir: str | Path, encoder: VideoEncoderFn | None = None,
                       render_cfg: Any = None, seed_offset: int = 0,
                       categories: Iterable[str] | None = None) -> dict[str, Any]:
    """FVD between a run's saved videos and rendered shapes-world videos of the same prompts.

    Each generated video gets one reference: ``render(parse(prompt), seed + seed_offset)`` at the
    generated video's frame count and size (unless ``render_cfg`` says otherwise), so both sets
    have the same size and the same prompt mix. Returns ``{"fvd", "n", "encoder", "per_category"}``
    (per-category values where a category has at least 2 videos)."""
    from dataclasses import replace

    from cvg_bench.shapes.grammar import parse
    from cvg_bench.shapes.render import RenderConfig, render

    encoder = encoder or RandomVideoEncoder()
    wanted = set(categories) if categories is not None else None
    gen, ref, cats = [], [], []
    for record, video in run_videos(run_dir):
        spec = parse(record["prompt"], record["prompt_id"])
        if wanted is not None and spec.category not in wanted:
            continue
        cfg = render_cfg or RenderConfig()
        if render_cfg is None:
            if video.shape[1] != video.shape[2]:
                raise ValueError(f"{record['video_path']}: shapes videos are square, got {video.shape}")
            cfg = replace(cfg, frames=int(video.shape[0]), size=int(video.shape[1]))
        gen.append(video)
        ref.append(render(spec, int(record["seed"]) + seed_offset, cfg))
        cats.append(spec.category)
    if len(gen) < 2:
        raise ValueError(f"{run_dir}: FVD needs at least 2 saved videos, found {len(gen)}")
    fg, fr = np.asarray(encoder(gen)), np.asarray(encoder(ref))
    per_category = {}
    for cat in sorted(set(cats)):
        idx = [i for i, c in enumerate(cats) if c == cat]
        if len(idx) >= 2:
            per_category[cat] = frechet_distance(*feature_statistics(fg[idx]),
                                                 *feature_statistics(fr[idx]))
    return {
        "fvd": frechet_distance(*feature_statistics(fg), *feature_statistics(fr)),
        "n": len(gen),
        "encoder": getattr(encoder, "identity", type(encoder).__name__),
        "per_category": per_category,
    }
