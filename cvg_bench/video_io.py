"""Video files in one place: mp4 through imageio + imageio-ffmpeg, GIF previews.

torchvision.io's video functions were removed upstream (0.28); do not use them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import imageio.v2 as iio
import numpy as np

from cvg_bench.types import Video


def check_video(video: np.ndarray) -> np.ndarray:
    """Validate the harness's video layout: uint8 (frames, H, W, 3)."""
    if not isinstance(video, np.ndarray) or video.ndim != 4 or video.shape[-1] != 3:
        shape = getattr(video, "shape", type(video).__name__)
        raise ValueError(f"video must be a uint8 array (frames, H, W, 3), got {shape}")
    if video.dtype != np.uint8:
        raise ValueError(f"video must be uint8, got {video.dtype}")
    return video


def _atomic_target(path: Path) -> tuple[Path, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    return path, Path(tmp)


def write_mp4(path: Path | str, video: Video, fps: int = 8, quality: int = 9) -> Path:
    """H.264 mp4 (yuv420p, plays in browsers), written atomically."""
    path, tmp = _atomic_target(Path(path))
    video = check_video(video)
    try:
        # macro_block_size=1: keep the true size (imageio would otherwise pad to x16).
        with iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=quality,
                            macro_block_size=1, pixelformat="yuv420p",
                            ffmpeg_log_level="error") as writer:
            for frame in video:
                writer.append_data(frame)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_video(path: Path | str) -> Video:
    """All frames of a video file as uint8 (frames, H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    reader = iio.get_reader(path, format="FFMPEG")
    try:
        frames = [np.asarray(f)[..., :3] for f in reader]
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"video file has no frames: {path}")
    return np.stack(frames).astype(np.uint8)


def write_gif(path: Path | str, video: Video, fps: int = 8, scale: int = 1) -> Path:
    """A looping GIF preview (nearest-neighbour upscaled by ``scale`` for tiny videos)."""
    path, tmp = _atomic_target(Path(path))
    video = check_video(video)
    if scale > 1:
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    try:
        iio.mimwrite(tmp, list(video), format="GIF", duration=1.0 / fps, loop=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
