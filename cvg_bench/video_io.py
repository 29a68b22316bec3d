"""Video files in one place: mp4 through imageio + imageio-ffmpeg, GIF previews.

torchvision.io's video functions were removed upstream (0.28); do not use them.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as iio
import numpy as np

from cvg_bench.records import make_temp
from cvg_bench.types import Video


class VideoWriteError(OSError):
    """The writer failed (a full disk, a killed ffmpeg) or what it wrote does not read back."""


def check_video(video: np.ndarray) -> np.ndarray:
    """Validate the harness's video layout: uint8 (frames, H, W, 3), at least one frame."""
    if not isinstance(video, np.ndarray) or video.ndim != 4 or video.shape[-1] != 3 \
            or 0 in video.shape:
        shape = getattr(video, "shape", type(video).__name__)
        raise ValueError(f"video must be a uint8 array (frames, H, W, 3), got {shape}")
    if video.dtype != np.uint8:
        raise ValueError(f"video must be uint8, got {video.dtype}")
    return video


def write_mp4(path: Path | str, video: Video, fps: int = 8, quality: int = 9) -> Path:
    """H.264 mp4 (yuv420p, plays in browsers), written atomically with the umask's mode.

    Raises ``VideoWriteError`` when the writer fails or the file does not read back with every
    frame at the right size (ffmpeg can report "No space left on device" and still exit
    cleanly); then nothing is left at ``path`` but what was there before."""
    video = check_video(video)
    path = Path(path)
    tmp = make_temp(path.parent, path.stem, suffix=path.suffix)
    try:
        try:
            # macro_block_size=1: keep the true size (imageio would otherwise pad to x16).
            with iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264",
                                quality=quality, macro_block_size=1, pixelformat="yuv420p",
                                ffmpeg_log_level="error") as writer:
                for frame in video:
                    writer.append_data(frame)
        except Exception as exc:  # noqa: BLE001 - imageio raises several kinds; one for callers
            raise VideoWriteError(f"could not write {path}: {type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                                  ) from exc
        try:
            back = read_video(tmp)
        except Exception as exc:  # noqa: BLE001
            raise VideoWriteError(f"{path} was written but does not read back (a full disk?): "
                                  f"{type(exc).__name__}") from exc
        if back.shape != video.shape:
            raise VideoWriteError(f"{path} was written but reads back as {back.shape}, not "
                                  f"{video.shape} (a full disk?)")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
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
    video = check_video(video)
    path = Path(path)
    tmp = make_temp(path.parent, path.stem, suffix=path.suffix)
    if scale > 1:
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    try:
        iio.mimwrite(tmp, list(video), format="GIF", duration=1.0 / fps, loop=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
